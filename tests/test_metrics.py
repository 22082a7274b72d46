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
    assert c["ci"][0] > 0 and c["verdict"] == "holds" and c["seed_std"] is None and c["p_value"] < 0.01
    assert metrics.compare(b, better)["verdict"] == "reversed"
    same = metrics.compare(b, b)                            # identical models: the interval is [0, 0], inside +/- 1 %
    assert same["verdict"] == "negligible" and same["diff"] == 0 and same["p_value"] == 1.0
    # the bootstrap is seeded: the same call gives the same interval
    assert metrics.compare(better, b, seed=3)["ci"] == metrics.compare(better, b, seed=3)["ci"]
    # a noisy difference whose interval contains 0 is "undecided", never a refutation
    flip = rng.random(500) < 0.5                            # each user: A better, or B better by the same amount
    u = metrics.compare(np.where(flip, better, b), np.where(flip, b, better))
    assert u["ci"][0] < 0 < u["ci"][1] and u["verdict"] == "undecided" and u["mde"] > abs(u["diff"])


def test_compare_seeds_widen_the_interval_and_the_rule_is_symmetric():
    rng = np.random.default_rng(0)
    b = rng.integers(1, 60, 500)
    better = np.maximum(1, b - 5)
    worse = np.minimum(59, b + 5)
    # three seeds that agree: holds, each seed's difference positive
    c3 = metrics.compare([better, better, better], [b, b, b])
    assert c3["n_seeds"] == [3, 3] and len(c3["seed_diffs"]) == 3 and c3["verdict"] == "holds"
    # the same mean difference from seeds that disagree gives a wider interval (the seed level is resampled)
    one_off = metrics.compare([better, better, b], [b, b, b])
    assert one_off["seed_diffs"][2] == 0
    assert one_off["ci"][1] - one_off["ci"][0] > c3["ci"][1] - c3["ci"][0]
    assert one_off["verdict"] in ("partly", "undecided")
    # symmetric: every seed negative is "reversed", some seed not negative is "partly reversed" (or undecided)
    assert metrics.compare([b, b, b], [better, better, better])["verdict"] == "reversed"
    flipped = metrics.compare([worse, worse, worse, worse, worse, worse, b], [b] * 7)
    assert flipped["ci"][1] < 0 and flipped["seed_diffs"][-1] == 0 and flipped["verdict"] == "partly reversed"
    pos = metrics.compare([better] * 6 + [b], [b] * 7)
    assert pos["ci"][0] > 0 and pos["verdict"] == "partly"
    c4 = metrics.compare([better, b], [b, better])           # seed 2 reverses seed 1: per-user mean equal
    assert c4["verdict"] in ("undecided", "negligible") and c4["diff"] == 0


def test_compare_not_testable_size_words_and_users_needed():
    none = np.full(300, 500)                                 # no user has a hit at 10 under either model
    c = metrics.compare(none, none + 1, "HR@10", paper_effect=0.5)
    assert c["verdict"] == "not testable" and c["size"] is None and c["n_needed"] is None
    rng = np.random.default_rng(1)
    b = rng.integers(1, 60, 800)
    a = np.maximum(1, b - 5)
    base = metrics.compare(a, b)
    # a paper effect far below our interval, one inside it, one above it (relative to B's mean)
    lo, hi, mb = base["ci"][0], base["ci"][1], base["mean_b"]
    assert metrics.compare(a, b, paper_effect=0.5 * lo / mb)["size"] == "above the paper's effect"
    assert metrics.compare(a, b, paper_effect=base["diff"] / mb)["size"] == "includes the paper's effect"
    above = metrics.compare(a, b, paper_effect=2 * hi / mb)
    assert above["size"] == "below the paper's effect"
    # users needed: the detectable effect scales as 1 / sqrt(n), so n_needed = n (mde / effect)^2
    eff = 0.25 * base["mde"] / mb
    c = metrics.compare(a, b, paper_effect=eff)
    assert c["n_needed"] == pytest.approx(800 * 16, rel=0.01)


def test_a_tiny_difference_between_near_identical_models_is_negligible_not_holds():
    """The issue's case: two nearly identical models, +0.0006 with an interval above 0 but inside +/- 2 % of B."""
    rng = np.random.default_rng(0)
    b = np.where(rng.random(943) < 0.15, rng.integers(1, 21, 943), 500)
    a = b.copy()
    idx = np.flatnonzero((b > 3) & (b <= 20))[:25]
    a[idx] = b[idx] - 1                                       # 25 of 943 users move up one place
    c = metrics.compare(a, b, "NDCG@20")
    assert c["ci"][0] > 0 and c["ci"][1] > 0.01 * c["mean_b"]  # "holds" under a 1 % margin
    assert c["ci"][1] < metrics.NEGLIGIBLE_REL * c["mean_b"] and c["verdict"] == "negligible"


def test_holm_against_hand_numbers():
    # p sorted: 0.01 (x4 = 0.04), 0.03 (x3 = 0.09), 0.04 (x2 = 0.08 -> kept monotone 0.09), 0.5 (x1)
    assert metrics.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert metrics.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])            # capped at 1
    assert metrics.holm([]) == []


def test_forest_comparisons_can_skip_the_permutation_test():
    rng = np.random.default_rng(0)
    b = rng.integers(1, 60, 300)
    assert metrics.compare(np.maximum(1, b - 5), b, n_perm=0)["p_value"] is None


def test_mde_for_users_against_the_formula():
    # (1.96 + 0.8416) * sd / sqrt(n): the numbers, sd 0.14 and 943 users -> about 0.0128
    assert float(metrics.mde_for_users(0.14, 943)) == pytest.approx(2.8016 * 0.14 / np.sqrt(943), rel=1e-3)
    assert float(metrics.mde_for_users(0.14, 943)) == pytest.approx(0.0128, abs=2e-4)
    four = metrics.mde_for_users(0.1, [100, 400])
    assert four[0] == pytest.approx(2 * four[1])                          # four times the users, half the effect


# ------------------------------------------------------------------ calibration on synthetic per-user ranks
def _synthetic(rng, n, p_hit_a, p_hit_b):
    """Per-user ranks with a hit at 10 with the given probabilities (rank 1..10 uniform on a hit, 100 otherwise)."""
    def draw(p):
        hit = rng.random(n) < p
        return np.where(hit, rng.integers(1, 11, n), 100)
    return draw(p_hit_a), draw(p_hit_b)


def test_calibration_aa_comparisons_are_decided_about_5_percent_of_the_time():
    rng = np.random.default_rng(0)
    trials, decided = 300, 0
    for t in range(trials):
        a, b = _synthetic(rng, 400, 0.3, 0.3)                  # A and B the same model: any "better" is chance
        v = metrics.compare(a, b, "HR@10", n_boot=400, n_perm=200, seed=t)["verdict"]
        decided += v in ("holds", "partly", "reversed", "partly reversed")
    assert 0.01 <= decided / trials <= 0.10                    # 5 % expected; binomial sd 1.3 % at 300 trials


def test_calibration_power_and_coverage_match_the_formula():
    rng = np.random.default_rng(1)
    n, pa, pb = 400, 0.36, 0.30
    true_diff = pa - pb                                         # HR@10 difference in expectation
    found, covered, mdes = 0, 0, []
    trials = 200
    for t in range(trials):
        a, b = _synthetic(rng, n, pa, pb)
        c = metrics.compare(a, b, "HR@10", n_boot=400, n_perm=200, seed=t)
        found += c["ci"][0] > 0
        covered += c["ci"][0] <= true_diff <= c["ci"][1]
        mdes.append(c["mde"])
    # predicted power for this true difference from the mean standard error: Phi(diff / se - 1.96)
    from scipy.stats import norm
    se = np.mean(mdes) / 2.8016
    predicted = norm.cdf(true_diff / se - 1.96)
    assert abs(found / trials - predicted) < 0.12               # detected about as often as the power formula says
    assert 0.90 <= covered / trials <= 0.99                     # the 95 % interval covers the truth ~95 % of the time


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
