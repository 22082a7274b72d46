"""`python -m lib.bench` (or `make bench`): our SASRec on ML-100K, timed, as one JSON line.

Prints seconds per epoch, seconds to the best epoch, evaluation seconds, peak memory (resident set size of
this process) and test metrics under the suite's protocol, for the default configuration
(`lib.models.sasrec.DEFAULTS`) and one seed.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch

from lib import data, train
from lib.models.sasrec import DEFAULTS, SASRec, TRAIN_DEFAULTS
from lib.utils import set_seed


def bench(dataset: str = "ml-100k", seed: int = 0, threads: int | None = None, epochs: int | None = None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    ds = data.load_dataset(dataset)
    split = data.leave_one_out(ds)
    cfg = dict(TRAIN_DEFAULTS)
    if epochs:
        cfg["epochs"] = epochs
    set_seed(seed)                       # the seed fixes the initial weights too, as in notebook 01
    model = SASRec(ds.n_items, **DEFAULTS)
    fit = train.fit(model, split, max_len=DEFAULTS["max_len"], seed=seed, progress=False, **cfg)
    t0 = time.perf_counter()
    test = train.evaluate_model(model, split, DEFAULTS["max_len"], "test", groups=False)["overall"]
    eval_s = time.perf_counter() - t0
    epochs_run = len(fit.history)
    return {"model": "SASRec", "dataset": ds.name, "seed": seed, "threads": torch.get_num_threads(),
            "epochs_run": epochs_run, "best_epoch": fit.best_epoch,
            "seconds_per_epoch": round(sum(h["train_seconds"] for h in fit.history) / epochs_run, 3),
            "seconds_to_best": round(fit.seconds_to_best, 2), "seconds_total": round(fit.seconds, 2),
            "eval_seconds": round(eval_s, 4),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "valid_NDCG@10": round(fit.best_valid["NDCG@10"], 4),
            **{f"test_{k}": round(v, 4) for k, v in test.items() if k != "users"},
            "config": {**DEFAULTS, **cfg}}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m lib.bench", description=__doc__)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--epochs", type=int, default=None, help="cap on epochs (default: early stopping decides)")
    a = ap.parse_args(argv)
    print(json.dumps(bench(a.dataset, a.seed, a.threads, a.epochs)))


if __name__ == "__main__":
    sys.exit(main())
