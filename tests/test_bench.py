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
