"""`python -m lib.bench`: one JSON line with the promised fields; the seed fixes the initial weights, so two
runs with one seed in one process give the same numbers."""
import json

from lib import bench

KEYS = {"seconds_per_epoch", "seconds_to_best", "eval_seconds", "peak_rss_mb", "best_epoch", "epochs_run",
        "valid_NDCG@10", "test_HR@10", "test_NDCG@10", "test_MRR@10", "test_NDCG@20", "config"}


def test_bench_prints_one_json_line_and_repeats(capsys):
    bench.main(["--epochs", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    a = json.loads(lines[0])
    assert KEYS <= set(a), KEYS - set(a)
    assert a["epochs_run"] == 1 and a["best_epoch"] == 1 and a["config"]["epochs"] == 1
    assert 0 < a["test_NDCG@10"] <= a["test_HR@10"] <= a["test_HR@20"] <= 1
    b = bench.bench(epochs=1)              # same seed, same process, the RNG already advanced by the first run
    assert b["valid_NDCG@10"] == a["valid_NDCG@10"] and b["test_NDCG@10"] == a["test_NDCG@10"]


def test_notebook_01_defaults_are_the_library_defaults():
    """The bench's "seed 0 is notebook 01's seed 0" rests on notebook 01's parameters being sasrec.DEFAULTS and
    TRAIN_DEFAULTS: one source, checked here."""
    import ast

    import papermill as pm

    from lib import run
    from lib.models.sasrec import DEFAULTS, TRAIN_DEFAULTS
    p = {k: ast.literal_eval(v["default"])
         for k, v in pm.inspect_notebook(str(run.NOTEBOOKS / "evidence" / "01_sasrec_baseline.ipynb")).items()}
    for k in ("hidden", "n_layers", "n_heads", "max_len", "dropout"):
        assert p[k] == DEFAULTS[k], k
    assert DEFAULTS["attn_dropout"] == DEFAULTS["dropout"] and DEFAULTS["inner"] == 4 * DEFAULTS["hidden"]
    for k, v in TRAIN_DEFAULTS.items():
        assert p[k] == v, k
