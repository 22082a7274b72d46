"""By hand, not collected by pytest: measure `metrics.events_power` on ML-100K (issue 34, item 5's numbers).

    PYTHONPATH=$PWD .venv/bin/python tests/measure_events_power.py [epochs] [K]

Fits SASRec with 2 blocks and with 1 block (seed 0) and a 1-block SASRec with seed 1 on `data.last_k_events(ds, K)`
(default K = 20, so k = 1, 2, 5, 10 and 20 can be read from one fit), the suite's schedule compressed to `epochs`
(default 30, the suite's; fewer when the CPU is shared), and prints, for 2 vs 1 block and for seed 0 vs seed 1, the
intra-user correlation of the per-event NDCG@10 differences and the detectable effect when each user contributes its
last k events. Fits are cached under data/cache like any other.
"""
import sys
import time

from lib import data, metrics, train
from lib.models.sasrec import DEFAULTS, TRAIN_DEFAULTS, SASRec

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else TRAIN_DEFAULTS["decay_epochs"]
K = int(sys.argv[2]) if len(sys.argv) > 2 else 20
ds = data.load_dataset("ml-100k")
split = data.last_k_events(ds, K)
fit_kw = dict(TRAIN_DEFAULTS, epochs=epochs, decay_epochs=epochs, warmup_epochs=min(TRAIN_DEFAULTS["warmup_epochs"],
                                                                                      max(1, epochs // 10)))
runs = {}
for name, layers, seed in [("2 blocks, seed 0", 2, 0), ("1 block, seed 0", 1, 0), ("1 block, seed 1", 1, 1)]:
    t0 = time.time()
    cfg = dict(DEFAULTS, n_layers=layers)
    model, fit, _ = train.fit_cached(lambda: SASRec(ds.n_items, **cfg), split, seed=seed, progress=False,
                                     key={"model": "SASRec", "dataset": ds.name, **cfg}, max_len=cfg["max_len"], **fit_kw)
    runs[name] = train.evaluate_model(model, split, cfg["max_len"], "test")
    print(f"{name}: {time.time() - t0:.0f} s, test NDCG@10 {runs[name]['overall']['NDCG@10']:.4f}", flush=True)
for a, b in [("2 blocks, seed 0", "1 block, seed 0"), ("1 block, seed 0", "1 block, seed 1")]:
    p = metrics.events_power(runs[a], runs[b], "NDCG@10", ks=tuple(k for k in (1, 2, 5, 10, 20) if k <= K))
    print(f"{a} vs {b}: intra-user correlation {p['icc']:.4f}")
    for r in p["by_k"]:
        print(f"  last {r['k']:2d} events: detectable {100 * r['mde_rel']:.1f} % of B's NDCG@10 ({r['mde']:.4f}), "
              f"{r['ratio']:.2f} x k = 1's (predicted from the correlation: {r['predicted_ratio']:.2f})")
