"""lib.metrics against hand-computed answers, ties and masking included."""
import math
import time

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
    t0 = time.perf_counter()
    res = metrics.evaluate(score_fn, sp, "test")
    assert time.perf_counter() - t0 < 0.5
    assert 0 <= res["overall"]["HR@20"] <= 1 and res["tail"]["users"] > 0
