"""lib.metrics against hand-computed answers, ties and masking included."""
import math

import numpy as np
import pytest
import torch

from lib import metrics
from lib.data import Split


def test_ranks_ties_count_against_the_model():
    s = torch.tensor([[0.0, 3.0, 2.0, 2.0, 1.0],
                      [0.0, 1.0, 1.0, 1.0, 1.0]])
    assert metrics.ranks(s, torch.tensor([2, 1])).tolist() == [3, 4]   # tie with item 3 -> rank 3; all tied -> last
    assert metrics.ranks(s, torch.tensor([1, 4])).tolist() == [1, 4]


def test_metrics_closed_form():
    r = torch.tensor([1, 3, 7, 15])
    m = metrics.metrics_from_ranks(r)
    assert m["HR@5"] == pytest.approx(2 / 4)
    assert m["HR@10"] == pytest.approx(3 / 4)
    assert m["HR@20"] == pytest.approx(1.0)
    assert m["NDCG@5"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert m["NDCG@10"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 4)          # log2(8) = 3
    assert m["NDCG@20"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)  # log2(16) = 4
    assert m["MRR@10"] == pytest.approx((1 + 1 / 3 + 1 / 7) / 4)
    assert m["MRR@20"] == pytest.approx((1 + 1 / 3 + 1 / 7 + 1 / 15) / 4)


def toy_split():
    # 3 users, items 1..5 (0 = padding)
    return Split(train=[np.array([1, 2]), np.array([3]), np.array([1])],
                 valid=np.array([3, 4, 2]), test=np.array([4, 5, 5]), n_items=6)


def test_history_is_masked_before_ranking():
    sp = toy_split()
    base = torch.tensor([9.0, 8.0, 7.0, 6.0, 5.0, 4.0])     # padding best, then item 1 > 2 > ... > 5

    def score_fn(users, stage):
        return base.expand(len(users), -1).clone()
    # test: user 0 history {1,2,3} masked -> item 4 rank 1; user 1 history {3,4} -> 5 after 1,2 -> rank 3;
    # user 2 history {1,2} -> 5 after 3,4 -> rank 3
    assert metrics.rank_targets(score_fn, sp, "test").tolist() == [1, 3, 3]
    # validation masks train only: user 0 {1,2} -> 3 first; user 1 {3} -> 4 after 1,2 -> 3; user 2 {1} -> 2 first
    assert metrics.rank_targets(score_fn, sp, "valid").tolist() == [1, 3, 1]
    # unmasked (only padding removed): ranks are item ids
    assert metrics.rank_targets(score_fn, sp, "test", mask=False).tolist() == [4, 5, 5]
    res = metrics.evaluate(score_fn, sp, "test", groups=False)
    assert res["overall"]["MRR@5"] == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)


def test_groups():
    sp = Split(train=[np.array([1, 1, 1, 2]), np.array([1, 3]), np.array([2, 1, 1, 4, 5]), np.array([1])],
               valid=np.array([2, 2, 2, 2]), test=np.array([1, 5, 3, 2]), n_items=6)
    # popularity of items 1..5: [6, 2, 1, 1, 1]; 20% of 5 items = 1 -> tail = item 3 (lowest, tie by id), head = 1
    m = metrics.group_masks(sp, stage="test")
    assert m["tail"].tolist() == [False, False, True, False]
    assert m["head"].tolist() == [True, False, False, False]
    # history lengths (test): [5, 3, 6, 2]; 20% of 4 users rounds to 1: cold = user 3, hot = user 2
    assert m["cold"].tolist() == [False, False, False, True]
    assert m["hot"].tolist() == [False, False, True, False]


def test_summarize_mean_and_spread():
    runs = [{"overall": {"NDCG@10": v}} for v in (0.1, 0.2, 0.3)]
    s = metrics.summarize(runs, metrics=("NDCG@10",))["NDCG@10"]
    assert s["mean"] == pytest.approx(0.2) and s["std"] == pytest.approx(0.1)


def test_full_ranking_is_fast():
    rng = np.random.default_rng(0)
    n_users, n_items = 943, 1683
    sp = Split(train=[rng.integers(1, n_items, 100) for _ in range(n_users)],
               valid=rng.integers(1, n_items, n_users), test=rng.integers(1, n_items, n_users), n_items=n_items)
    scores = torch.randn(n_users, n_items)

    def score_fn(users, stage):
        return scores[users]
    res = metrics.evaluate(score_fn, sp, "test", ranks=True)
    r = np.array(res["ranks"])
    assert 0 <= res["overall"]["HR@20"] <= 1 and res["tail"]["users"] > 0
    assert r.shape == (n_users,) and r.min() >= 1
    assert res["overall"]["NDCG@10"] == pytest.approx(metrics.per_user(r, "NDCG@10").mean())


def test_nan_target_score_is_an_error_naming_the_users():
    s = torch.tensor([[0.0, 1.0, 2.0], [0.0, float("nan"), 1.0], [0.0, float("inf"), 1.0]])
    with pytest.raises(ValueError, match=r"2 user\(s\), user ids \[11, 12\]"):
        metrics.ranks(s, torch.tensor([1, 1, 1]), users=torch.tensor([10, 11, 12]))
    # a target masked to -inf (a repeat of a history item) is a miss, ranked last
    m = torch.tensor([[0.0, -math.inf, 2.0, 1.0]])
    assert metrics.ranks(m, torch.tensor([1])).tolist() == [4]


def test_per_user_metric_by_hand():
    r = np.array([1, 3, 12, np.nan])
    assert metrics.per_user(r, "HR@10")[:3].tolist() == [1, 1, 0]
    assert metrics.per_user(r, "NDCG@10")[:3] == pytest.approx([1, 0.5, 0])
    assert metrics.per_user(r, "MRR@20")[:3] == pytest.approx([1, 1 / 3, 1 / 12])
    assert np.isnan(metrics.per_user(r, "HR@10")[3])
    with pytest.raises(ValueError, match="unknown metric 'AUC'.*HR@k, NDCG@k, MRR@k"):
        metrics.per_user(r, "AUC")


def test_compare_paired_difference_ci_and_verdicts():
    rng = np.random.default_rng(0)
    b = rng.integers(1, 60, 500)
    better = np.maximum(1, b - 5)                           # every user's rank improves (or stays at 1)
    c = metrics.compare(better, b, "NDCG@10")
    d = metrics.per_user(better, "NDCG@10") - metrics.per_user(b, "NDCG@10")
    assert c["diff"] == pytest.approx(d.mean()) and c["n_users"] == 500
    assert c["ci"][0] > 0 and c["verdict"] == "holds" and c["seed_std"] is None
    assert metrics.compare(b, better)["verdict"] == "reversed"
    assert metrics.compare(b, b)["verdict"] == "not here" and metrics.compare(b, b)["diff"] == 0
    # the bootstrap is seeded: the same call gives the same interval
    assert metrics.compare(better, b, seed=3)["ci"] == metrics.compare(better, b, seed=3)["ci"]
    # several seeds: per-user values averaged over seeds, one paired difference per seed; one seed that
    # loses turns "holds" into "partly"
    seeds_a = [better, better, b - 0]                        # third seed no better than B's
    seeds_b = [b, b, np.minimum(59, b + 30)]
    c3 = metrics.compare(seeds_a, seeds_b)
    assert len(c3["seed_diffs"]) == 3 and c3["seed_std"] is not None and c3["n_seeds"] == [3, 3]
    assert c3["ci"][0] > 0 and c3["seed_diffs"][2] > 0 and c3["verdict"] == "holds"
    c4 = metrics.compare([better, b], [b, better])          # seed 2 reverses seed 1: per-user mean equal
    assert c4["verdict"] == "not here"
    c5 = metrics.compare([better, better, better], [b, b, better])
    assert c5["ci"][0] > 0 and c5["seed_diffs"][2] == 0 and c5["verdict"] == "partly"


def test_compare_uses_only_users_both_evaluated():
    a = np.array([1.0, 1.0, np.nan, 50.0])
    b = np.array([50.0, 50.0, 1.0, np.nan])
    c = metrics.compare(a, b)
    assert c["n_users"] == 2 and c["mean_a"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one length"):
        metrics.compare(a, b[:3])
    # runs as evaluate's dicts, None for a user not evaluated; a list of dicts is a list of seeds
    da, db = {"ranks": [1, 1, None, 50]}, {"ranks": [50, 50, 1, None]}
    assert metrics.compare(da, db)["diff"] == pytest.approx(c["diff"])
    assert metrics.compare([da, da], [db])["n_seeds"] == [2, 1]
    with pytest.raises(ValueError, match="ranks=True"):
        metrics.compare({"overall": {}}, db)
