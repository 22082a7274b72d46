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
    same = metrics.compare(b, b)                            # identical models: the interval is [0, 0], inside the band
    assert same["verdict"] == "negligible" and same["diff"] == 0 and same["p_value"] == 1.0
    assert metrics.compare(better, b, seed=3)["ci"] == metrics.compare(better, b, seed=3)["ci"]
    # a noisy difference whose interval contains 0 is "undecided", never a refutation
    flip = rng.random(500) < 0.5                            # each user: A better, or B better by the same amount
    u = metrics.compare(np.where(flip, better, b), np.where(flip, b, better))
    assert u["ci"][0] < 0 < u["ci"][1] and u["verdict"] == "undecided" and u["mde"] > abs(u["diff"])


def test_compare_every_seed_of_a_against_every_seed_of_b():
    rng = np.random.default_rng(0)
    b = rng.integers(1, 60, 500)
    better = np.maximum(1, b - 5)
    worse = np.minimum(59, b + 5)
    c3 = metrics.compare([better, better, better], [b, b, b])
    assert c3["n_seeds"] == [3, 3] and len(c3["pair_diffs"]) == 9 and c3["verdict"] == "holds"
    # the per-seed reading does not depend on the order of B's runs (seed i of A and seed i of B are unrelated fits)
    mixed_b = [b, np.maximum(1, b - 4), b]
    one = metrics.compare([better, better, better], mixed_b)
    two = metrics.compare([better, better, better], mixed_b[::-1])
    assert one["verdict"] == two["verdict"] and sorted(one["pair_diffs"]) == sorted(two["pair_diffs"])
    # a B seed as good as an A seed: "partly", whatever its position
    tie = metrics.compare([better] * 3, [b, b, better])
    assert min(tie["pair_diffs"]) == 0 and tie["verdict"] in ("partly", "undecided")
    assert metrics.compare([b, b, b], [better, better, better])["verdict"] == "reversed"
    rev = metrics.compare([worse] * 3, [b, b, worse])
    assert max(rev["pair_diffs"]) == 0 and rev["verdict"] in ("partly reversed", "undecided")
    # A's seeds (ranks -6 x 4, -2) against B's (-4, 0 x 4): seed i against seed i says every seed wins ("holds");
    # every A seed against every B seed finds A's last seed below B's first: "partly"
    sh = lambda k: np.maximum(1, b - k)
    c = metrics.compare([sh(k) for k in (6, 6, 6, 6, 2)], [sh(k) for k in (4, 0, 0, 0, 0)])
    assert c["ci"][0] > 0 and min(c["pair_diffs"]) < 0 and c["verdict"] == "partly"
    c4 = metrics.compare([better, b], [b, better])           # the per-user means are equal
    assert c4["verdict"] in ("undecided", "negligible") and c4["diff"] == 0


def test_compare_not_testable_size_words_and_users_needed():
    none = np.full(300, 500)                                 # no user has a hit at 10 under either model
    c = metrics.compare(none, none + 1, "HR@10", paper_effect=0.5)
    assert c["verdict"] == "not testable" and c["size"] is None and c["n_needed"] is None
    rng = np.random.default_rng(1)
    b = rng.integers(1, 60, 800)
    a = np.maximum(1, b - 5)
    base = metrics.compare(a, b)
    lo, hi, mb = base["ci"][0], base["ci"][1], base["mean_b"]
    assert metrics.compare(a, b, paper_effect=0.5 * lo / mb)["size"] == "above the paper's effect"
    assert metrics.compare(a, b, paper_effect=base["diff"] / mb)["size"] == "includes the paper's effect"
    assert metrics.compare(a, b, paper_effect=2 * hi / mb)["size"] == "below the paper's effect"
    # one seed: the standard error is all per-user, so n_needed = n (mde / effect)^2
    eff = 0.25 * base["mde"] / mb
    c = metrics.compare(a, b, paper_effect=eff)
    assert c["n_needed"] == pytest.approx(800 * 16, rel=0.02) and c["reach"] is None


def test_users_needed_scale_only_the_per_user_part_and_say_when_seeds_alone_hide_the_effect():
    c = {"mean_b": 0.1, "ci": [0.0, 0.01], "verdict": "undecided", "n_users": 1000, "n_seeds": [3, 3],
         "se": 0.005, "se_users": 0.003, "se_seeds": 0.004, "mde": 0.014}
    q = 0.014 / 0.005
    s = metrics.size_of(c, 0.2)                              # effect 0.02: (0.02 / q)^2 - 0.004^2 > 0
    room = (0.02 / q) ** 2 - 0.004 ** 2
    assert s["n_needed"] == math.ceil(1000 * 0.003 ** 2 / room) and s["reach"] is None
    s = metrics.size_of(c, 0.1)                              # effect 0.01 < q * se_seeds = 0.0112: no number of users
    assert s["n_needed"] is None and s["reach"].startswith("not reachable with 3/3 seeds")
    # mde_for_users: the seed part stays, the user part shrinks as 1 / sqrt(n)
    far = float(metrics.mde_for_users(0.1, 10 ** 9, seed_se=0.004))
    assert far == pytest.approx(metrics._Z * 0.004, rel=1e-3)


def test_negligible_band_is_per_claim_symmetric_and_narrow():
    """A 3 % gain, tightly measured, is a gain (a 10 % band would call it negligible); the band is at most half the
    paper's effect and the same with A and B swapped."""
    rng = np.random.default_rng(0)
    n = 20000
    b = np.where(rng.random(n) < 0.5, 1, 100)                 # HR@10 = 0.5
    a = b.copy()
    a[np.flatnonzero(b == 100)[: int(0.015 * n)]] = 1        # +1.5 points of HR: +3 %
    c = metrics.compare(a, b, "HR@10")
    assert c["margin_rel"] == metrics.NEGLIGIBLE_REL == 0.02 and c["verdict"] == "holds"
    assert metrics.compare(b, a, "HR@10")["margin"] == pytest.approx(c["margin"])      # symmetric in A and B
    half = metrics.compare(a, b, "HR@10", paper_effect=0.0125)
    assert half["margin_rel"] == pytest.approx(0.00625)
    tiny = metrics.compare(a, b, "HR@10", paper_effect=0.50)
    assert tiny["margin_rel"] == 0.02


def test_a_tiny_difference_between_near_identical_models_is_negligible_not_holds():
    """Two nearly identical models, +0.0006 with an interval above 0 but inside +/- 2 % of their level."""
    rng = np.random.default_rng(0)
    b = np.where(rng.random(943) < 0.15, rng.integers(1, 21, 943), 500)
    a = b.copy()
    idx = np.flatnonzero((b > 3) & (b <= 20))[:25]
    a[idx] = b[idx] - 1                                       # 25 of 943 users move up one place
    c = metrics.compare(a, b, "NDCG@20")
    assert c["ci"][0] > 0 and c["ci"][1] > 0.01 * c["mean_b"]
    assert c["ci"][1] < c["margin"] and c["verdict"] == "negligible"


def test_holm_against_hand_numbers():
    # p sorted: 0.01 (x4 = 0.04), 0.03 (x3 = 0.09), 0.04 (x2 = 0.08 -> kept monotone 0.09), 0.5 (x1)
    assert metrics.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert metrics.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])            # capped at 1
    assert metrics.holm([]) == []
    assert metrics.holm([0.01, None]) == pytest.approx([0.02, 1.0])        # a claim that did not run counts, p = 1


def test_holm_can_pass_in_a_family_of_fifty():
    """The p-value is not floored by a resample count: a clear effect gets p far below 0.05 / 50."""
    rng = np.random.default_rng(0)
    b = rng.integers(1, 60, 943)
    c = metrics.compare(np.maximum(1, b - 3), b)
    assert c["p_value"] < 1e-6
    assert metrics.holm([c["p_value"]] + [0.5] * 49)[0] < 0.05


def test_forest_comparisons_can_skip_the_p_value():
    rng = np.random.default_rng(0)
    b = rng.integers(1, 60, 300)
    assert metrics.compare(np.maximum(1, b - 5), b, n_perm=0)["p_value"] is None


def test_mde_for_users_against_the_formula():
    assert float(metrics.mde_for_users(0.14, 943)) == pytest.approx(2.8016 * 0.14 / np.sqrt(943), rel=1e-3)
    assert float(metrics.mde_for_users(0.14, 943)) == pytest.approx(0.0128, abs=2e-4)
    four = metrics.mde_for_users(0.1, [100, 400])
    assert four[0] == pytest.approx(2 * four[1])                          # four times the users, half the effect


# ------------------------------------------------------------------ known p-values
def test_one_seed_interval_and_p_are_the_paired_t_test():
    """One seed per model, every user differing: the interval and p are exactly the paired t-test's (two-sided,
    95 %): a one-sided p, an unpaired p, a 90 % interval all fail here."""
    from scipy import stats
    rng = np.random.default_rng(3)
    b = rng.integers(5, 16, 200)                             # every rank inside the top 20: every user differs
    a = b.copy()
    a[:120] = np.maximum(1, b[:120] - rng.integers(1, 4, 120))
    a[120:] = b[120:] + rng.integers(1, 3, 80)
    c = metrics.compare(a, b, "MRR@20")
    d = metrics.per_user(a, "MRR@20") - metrics.per_user(b, "MRR@20")
    assert c["n_differ"] == len(d) == 200
    t = stats.ttest_1samp(d, 0.0)
    assert c["p_value"] == pytest.approx(t.pvalue, rel=1e-6)
    ci = t.confidence_interval(0.95)
    assert c["ci"] == pytest.approx([ci.low, ci.high], rel=1e-6)
    rev = metrics.compare(b, a, "MRR@20")                  # the same test the other way round: the same p
    assert rev["p_value"] == pytest.approx(c["p_value"]) and rev["diff"] == pytest.approx(-c["diff"])


def test_known_exact_p_for_few_differing_users():
    n = 60
    b = np.full(n, 100)
    # 8 users hit under A only: the exact sign-flip p is 2 / 2^8; decided
    a = b.copy(); a[:8] = 1
    c = metrics.compare(a, b, "HR@10")
    assert c["p_exact"] == pytest.approx(2 / 256) and c["n_differ"] == 8 and c["verdict"] == "holds"
    # 7 against 1: p = 2 (1 + 8) / 256 = 0.0703 > 0.05: not decided, though the t interval alone excludes 0
    a = b.copy(); a[:7] = 1
    bb = b.copy(); bb[7] = 1
    c = metrics.compare(a, bb, "HR@10")
    assert c["p_exact"] == pytest.approx(18 / 256) and c["p_value"] >= c["p_exact"] and c["verdict"] == "undecided"
    # 4 hit under A, none under B (the case): not testable, with the count
    a = b.copy(); a[:4] = 1
    c = metrics.compare(a, b, "HR@10")
    assert c["verdict"] == "not testable" and c["n_differ"] == 4 and c["p_exact"] == pytest.approx(0.125)


def test_small_sparse_groups_are_never_decided_by_the_interval_alone():
    """Groups of 30 users, hit rate 5 %, A and B the same model: a direction only where p < 0.05, never below 6
    differing users, and rarely (about 5 % at most) over 300 draws."""
    rng = np.random.default_rng(7)
    decided = 0
    for _ in range(300):
        u = rng.random((2, 30))
        a, b = (np.where(x < 0.05, 1, 100) for x in u)
        c = metrics.compare(a, b, "HR@10")
        dec = c["verdict"] in ("holds", "partly", "reversed", "partly reversed")
        decided += dec
        assert not dec or (c["p_value"] < 0.05 and c["n_differ"] >= metrics.MIN_DIFFERING)
    assert decided / 300 <= 0.05


# ------------------------------------------------------------------ calibration on synthetic per-user ranks
def _two_models(rng, n=400, seeds=3, effect=0.0, sigma_seed=0.02, sigma_user_seed=0.08, tau=0.0, events=1,
                trials=1, base=(0.15, 0.55)):
    """Per-user ranks of A and B, `trials` independent draws at once: arrays (trials, seeds, n) (events = 1) or
    (trials, seeds, n, events). Hit probability = the user's base (uniform over `base`) + the seed's shift (N(0,
    sigma_seed), the training draw: the same for every user) + a user-by-seed term (N(0, sigma_user_seed)) [+ for A: a
    per-user preference N(0, tau), mean 0, shared by the user's events, and `effect`]. A and B share each event's
    uniform draw (common random numbers): their per-user results are strongly correlated, as two models' are."""
    base = rng.uniform(*base, (trials, 1, n, 1))
    pref = rng.normal(0, tau, (trials, 1, n, 1)) if tau else 0.0
    draw = rng.random((trials, 1, n, events))
    pos = rng.integers(1, 11, (trials, 1, n, events))

    def model(extra):
        p = (base + rng.normal(0, sigma_seed, (trials, seeds, 1, 1)) +
             rng.normal(0, sigma_user_seed, (trials, seeds, n, 1)) + extra)
        r = np.where(draw < np.clip(p, 0.01, 0.99), pos, 100)
        return r[..., 0] if events == 1 else r
    return model(pref + effect), model(0.0)


def _aa_rates(trials=400, **kw):
    rng = np.random.default_rng(11)
    A, B = _two_models(rng, trials=trials, **kw)
    cs = [metrics.compare(A[t], B[t], "HR@10") for t in range(trials)]
    decided = np.mean([c["verdict"] in ("holds", "partly", "reversed", "partly reversed") for c in cs])
    return cs, decided, np.mean([c["p_value"] < 0.05 for c in cs]), np.mean([c["ci"][0] <= 0 <= c["ci"][1] for c in cs])


def test_calibration_three_seeds_aa_with_a_seed_level_effect():
    """A and B the same model, 3 seeds each, each training draw shifting every user's hit rate (sd 0.02): a direction
    is decided, and p < 0.05, in about 5 % of 400 draws (binomial sd 1.1 %: 2-9 % is +/- 3.5 sd); the interval covers
    0 about 95 % of the time. Ignoring the seed level (se from the users alone) decides in about a third here."""
    cs, decided, p05, cover = _aa_rates()
    assert 0.02 <= decided <= 0.09 and 0.02 <= p05 <= 0.09
    assert 0.91 <= cover <= 0.98
    for c in cs:                                                 # the direction and p < 0.05 are one statement
        assert (c["ci"][0] > 0 or c["ci"][1] < 0) == (c["p_value"] < 0.05)


def test_calibration_coverage_and_power_with_seeds():
    """With a true difference (+0.03 HR, 3 seeds, seed-level effect): the 95 % interval covers it about 95 % of the
    time, and a true difference equal to the detectable effect is found about 80 % of the time (300 draws each:
    binomial sd 1.3 % and 2.3 %)."""
    rng = np.random.default_rng(5)
    eff = 0.03
    A, B = _two_models(rng, effect=eff, trials=300)
    cs = [metrics.compare(A[t], B[t], "HR@10") for t in range(300)]
    cover = np.mean([c["ci"][0] <= eff <= c["ci"][1] for c in cs])
    assert 0.91 <= cover <= 0.98
    mde = float(np.mean([c["mde"] for c in cs]))
    A, B = _two_models(rng, effect=mde, trials=300)
    found = np.mean([metrics.compare(A[t], B[t], "HR@10")["ci"][0] > 0 for t in range(300)])
    assert 0.70 <= found <= 0.90


def test_calibration_pairing_is_used():
    """A and B strongly correlated per user, no seed effect, one seed: the paired interval covers 0 about 95 % of the
    time, not 100 % (an unpaired test, blind to the correlation, covers almost always and detects far less)."""
    rng = np.random.default_rng(9)
    A, B = _two_models(rng, seeds=1, sigma_seed=0.0, sigma_user_seed=0.02, trials=400)
    cs = [metrics.compare(A[t], B[t], "HR@10") for t in range(400)]
    cover = np.mean([c["ci"][0] <= 0 <= c["ci"][1] for c in cs])
    assert 0.91 <= cover <= 0.985


def test_calibration_clustered_events_resample_users():
    """Ten test events per user, each user's A/B preference (sd 0.15, mean 0) shared by its events (intra-user
    correlation near 0.15): A/A is decided in about 5 % of 300 draws; treating the events as independent users decides
    in about 20 %."""
    rng = np.random.default_rng(4)
    A, B = _two_models(rng, n=300, seeds=1, sigma_seed=0.0, sigma_user_seed=0.0, tau=0.15, events=10, trials=300,
                       base=(0.35, 0.65))
    cs = [metrics.compare({"ranks": A[t, 0].tolist()}, {"ranks": B[t, 0].tolist()}, "HR@10") for t in range(300)]
    assert all(c["n_users"] == 300 for c in cs)
    decided = np.mean([c["ci"][0] > 0 or c["ci"][1] < 0 for c in cs])
    assert 0.02 <= decided <= 0.09
    naive = np.mean([metrics.compare(A[t, 0].ravel(), B[t, 0].ravel(), "HR@10")["p_value"] < 0.05
                     for t in range(100)])
    assert naive > 0.15                                          # the events as users: the clusters matter here


def test_compare_uses_only_users_both_evaluated():
    a = np.array([1.0, 1.0, np.nan, 50.0])
    b = np.array([50.0, 50.0, 1.0, np.nan])
    c = metrics.compare(a, b)
    assert c["n_users"] == 2 and c["mean_a"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one length"):
        metrics.compare(a, b[:3])
    da, db = {"ranks": [1, 1, None, 50]}, {"ranks": [50, 50, 1, None]}
    assert metrics.compare(da, db)["diff"] == pytest.approx(c["diff"])
    assert metrics.compare([da, da], [db])["n_seeds"] == [2, 1]
    with pytest.raises(ValueError, match="ranks=True"):
        metrics.compare({"overall": {}}, db)


# ------------------------------------------------------------------ several test events per user
def test_compare_averages_each_users_events_and_takes_event_masks():
    a = {"ranks": [[1, 100], [1], [100, 100, 1], None]}
    b = {"ranks": [[100, 100], [100], [100, 100, 100], [1]]}
    c = metrics.compare(a, b, "HR@10")
    assert c["n_users"] == 3 and c["mean_a"] == pytest.approx((0.5 + 1 + 1 / 3) / 3) and c["mean_b"] == 0
    # an event mask (one entry per event, users' events in order): only user 0's second and user 2's last event
    ev = np.array([False, True, False, False, False, True, True])
    m = metrics.compare(a, b, "HR@10", users=ev)
    assert m["n_users"] == 2 and m["mean_a"] == pytest.approx(0.5)
    # a user mask works as before
    assert metrics.compare(a, b, "HR@10", users=np.array([True, True, False, True]))["n_users"] == 2
    with pytest.raises(ValueError, match="one per user"):
        metrics.compare(a, b, "HR@10", users=np.ones(5, bool))


def test_evaluate_on_a_k_event_split_gives_each_user_its_events():
    sp = Split(train=[np.array([1, 2]), np.array([3])], valid=np.array([3, 4]), test=np.array([4, 5, 1, 2]),
               n_items=6, test_user=np.array([0, 0, 1, 1]))
    base = torch.tensor([9.0, 8.0, 7.0, 6.0, 5.0, 4.0])
    seen = []

    def score_fn(rows, stage):
        seen.append(rows.tolist())
        return base.expand(len(rows), -1).clone()
    res = metrics.evaluate(score_fn, sp, "test", ranks=True)
    # user 0: history {1,2,3} -> 4 rank 1; then {1,2,3,4} -> 5 rank 1. user 1: {3,4} -> 1 rank 1; {3,4,1} -> 2 rank 1
    assert res["ranks"] == [[1, 1], [1, 1]] and seen == [[0, 1, 2, 3]]
    assert res["overall"]["users"] == 2 and res["overall"]["events"] == 4
    g = metrics.group_masks(sp, stage="test")
    assert all(len(m) == 4 for m in g.values()) and g["cold"].tolist() == [False, False, True, True]
    val = metrics.evaluate(score_fn, sp, "valid", ranks=True, groups=False)
    assert len(val["ranks"]) == 2 and not isinstance(val["ranks"][0], list)


def test_events_power_reads_the_gain_of_several_events():
    """Independent per-event differences (rho near 0): the detectable effect at k events is about mde_1 / sqrt(k)."""
    rng = np.random.default_rng(2)
    n, k = 943, 20
    ra = np.where(rng.random((n, k)) < 0.3, rng.integers(1, 11, (n, k)), 100)
    rb = np.where(rng.random((n, k)) < 0.3, rng.integers(1, 11, (n, k)), 100)
    out = metrics.events_power({"ranks": ra.tolist()}, {"ranks": rb.tolist()}, "NDCG@10")
    assert abs(out["icc"]) < 0.05 and [r["k"] for r in out["by_k"]] == [1, 2, 5, 10, 20]
    by = {r["k"]: r for r in out["by_k"]}
    assert by[10]["ratio"] == pytest.approx(1 / np.sqrt(10), rel=0.15)
    assert by[10]["predicted_ratio"] == pytest.approx(1 / np.sqrt(10), rel=0.1) and by[1]["events"] == 1
