"""One evaluation protocol for the whole suite (taught in notebook 01).

* Leave-one-out by time (lib.data.leave_one_out): predict each user's validation item from the train
  part, or the test item from train + validation.
* Full ranking over all items. Before ranking, the padding item 0 and every item in the user's history
  (train for validation, train + validation for test) get score -inf, as RecBole does for general models.
* Rank of the target = 1 + number of *other* items scoring >= the target. Ties count against the model:
  a model that gives every item the same score ranks the target last, not first.
* HR@k = [rank <= k]; NDCG@k = [rank <= k] / log2(rank + 1); MRR@k = [rank <= k] / rank. With one target
  per user the ideal DCG is 1, so NDCG needs no normalisation.
* Groups as in LLMDiRec Table 3: tail / head items (target among the least / most popular 20% of items by
  training interactions) and cold / hot users (the 20% of users with the shortest / longest history).
* Claims are decided by one rule, `compare`: the paired per-user difference of a metric between two models, with a
  95 % interval and a two-sided p-value from one model (users resampled, in closed form, plus the seed level counted
  once; an exact sign-flip test where few users differ), the smallest effect the test can detect, and a direction
  word (VERDICTS) with, for a paper's number, a size word (SIZES). `lib.claims` names every claim the suite decides.
* Every held-out event (`lib.data.last_k_events`): each user's last K items are test events, each predicted from its
  full prefix; ranks come back per user as lists, and `compare` averages each user's events before resampling users.
"""
from __future__ import annotations

import math

import numpy as np
import torch

KS = (5, 10, 20)
GROUPS = ("overall", "tail", "head", "cold", "hot")


def mask_history(scores: torch.Tensor, history: list[np.ndarray]) -> torch.Tensor:
    """Set the padding item and each row's history items to -inf, in place. scores: (B, n_items)."""
    rows = np.repeat(np.arange(len(history)), [len(h) for h in history])
    cols = np.concatenate(history) if len(history) else np.zeros(0, dtype=np.int64)
    scores[:, 0] = -math.inf
    scores[torch.from_numpy(rows), torch.from_numpy(cols.astype(np.int64))] = -math.inf
    return scores


def ranks(scores: torch.Tensor, targets: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) rank of each target: 1 + #{j != target : scores[j] >= scores[target]} (ties pessimistic).

    A target scored NaN or +inf has no meaningful rank (NaN would give rank 0, HR = 1): ValueError naming the
    rows (or `users`, their ids, when given). A target at -inf (masked because the user had already consumed
    it, on datasets with repeats) ranks last: a miss."""
    t = scores.gather(1, targets.view(-1, 1))                 # (B, 1)
    bad = torch.isnan(t[:, 0]) | torch.isposinf(t[:, 0])
    if bad.any():
        rows = bad.nonzero(as_tuple=True)[0]
        who = (users[rows] if users is not None else rows).tolist()
        raise ValueError(f"the target score is not finite ({t[rows[0], 0].item()}) for {len(who)} user(s), "
                         f"{'user ids' if users is not None else 'rows'} {who[:10]}{' ...' if len(who) > 10 else ''}: "
                         f"a model must give every target item a real score (NaN or +inf means a broken model: "
                         f"check the loss and the scores for overflow)")
    return (scores >= t).sum(1)                               # counts the target itself, hence 1 + others


def metrics_from_ranks(r: torch.Tensor, ks=KS, weights=None) -> dict[str, float]:
    """Mean HR/NDCG/MRR at each k from a (N,) tensor of ranks (1 = best). weights: optional (N,) weights of the mean
    (`evaluate` gives each of a user's several events 1 / its number of events, so each user counts once)."""
    r = r.double()
    w = None if weights is None else torch.as_tensor(np.asarray(weights, dtype=float))
    mean = (lambda x: x.mean().item()) if w is None else (lambda x: float((x * w).sum() / w.sum()))
    out = {}
    for k in ks:
        hit = (r <= k).double()
        out[f"HR@{k}"] = mean(hit) if len(r) else float("nan")
        out[f"NDCG@{k}"] = mean(hit / torch.log2(r + 1)) if len(r) else float("nan")
        out[f"MRR@{k}"] = mean(hit / r) if len(r) else float("nan")
    return out


def _row_users(split, stage: str) -> np.ndarray:
    """(R,) the user of each row of a stage: one row per user, or (a several-event split's test stage) per event."""
    f = getattr(split, "rows_user", None)
    return f(stage) if f is not None else np.arange(split.n_users)


def group_masks(split, frac: float = 0.2, stage: str = "test") -> dict[str, np.ndarray]:
    """Boolean masks over the rows of a stage (one per user; on a split with several test events per user,
    `lib.data.last_k_events`, one per test event, users' events in order) of each LLMDiRec Table 3 group.

    Item popularity = number of training interactions; items are ordered by popularity with ties broken
    by item id, and the bottom / top `frac` of real items are tail / head: a row is tail / head by its target.
    Users are ordered by training-history length (ties by user id); the shortest / longest `frac` are cold / hot, and
    every row of a cold user is cold. `compare(..., users=mask)` takes these masks as they are.
    """
    pop = split.item_popularity()[1:]                         # real items 1..n-1
    n = len(pop)
    order = np.lexsort((np.arange(n), pop))                   # ascending popularity, stable by id
    k = max(1, int(round(frac * n)))
    tail_items = np.zeros(split.n_items, bool)
    head_items = np.zeros(split.n_items, bool)
    tail_items[order[:k] + 1] = True
    head_items[order[-k:] + 1] = True
    lens = np.array([len(h) for h in split.train])           # the same order as the history before any target
    u_order = np.lexsort((np.arange(len(lens)), lens))
    ku = max(1, int(round(frac * len(lens))))
    cold = np.zeros(len(lens), bool)
    hot = np.zeros(len(lens), bool)
    cold[u_order[:ku]] = True
    hot[u_order[-ku:]] = True
    tgt = split.targets(stage)
    who = _row_users(split, stage)
    return {"overall": np.ones(len(tgt), bool), "tail": tail_items[tgt], "head": head_items[tgt],
            "cold": cold[who], "hot": hot[who]}


@torch.no_grad()
def rank_targets(score_fn, split, stage: str = "test", batch_size: int = 1024, mask: bool = True) -> torch.Tensor:
    """(R,) rank of each row's target under the protocol: a row is a user, or (the test stage of a split with several
    test events per user) one event, whose history is everything the user had before it.

    score_fn(rows: LongTensor (B,), stage) -> (B, n_items) scores; it gets row indices into `split.history(stage)`
    and `split.targets(stage)` (user ids where each user has one row; a scorer by user id maps rows to users with
    `split.rows_user(stage)`). mask=False skips history masking (only to show why papers differ).
    """
    history = split.history(stage)
    targets = torch.from_numpy(np.asarray(split.targets(stage), dtype=np.int64))
    out = []
    for start in range(0, len(targets), batch_size):
        users = torch.arange(start, min(start + batch_size, len(targets)))
        scores = score_fn(users, stage).float().cpu().clone()  # (B, n_items)
        if mask:
            mask_history(scores, [history[u] for u in users.tolist()])
        else:
            scores[:, 0] = -math.inf
        out.append(ranks(scores, targets[users], users))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def evaluate(score_fn, split, stage: str = "test", groups: bool = True, ks=KS, mask: bool = True,
             batch_size: int = 1024, ranks: bool = False) -> dict:
    """{"overall": {"HR@10": ...}, "tail": {...}, ...}; groups=False gives "overall" only.

    A metric is the mean over users; a user with several test events (`lib.data.last_k_events`) counts once, with
    the mean over its events (in a group: its events in the group), as `compare` counts it. Each group also has
    "users" (users with a row in it) and, with several events per user, "events".
    ranks=True adds "ranks": one entry per user (results files keep it, so any two runs evaluated on the same users
    can be compared later): its target's rank, or with several test events per user the list of its events' ranks,
    oldest first."""
    r = rank_targets(score_fn, split, stage, batch_size=batch_size, mask=mask)
    who = _row_users(split, stage)
    several = stage == "test" and getattr(split, "test_user", None) is not None

    def summary(m):
        if not several:
            return metrics_from_ranks(r[torch.from_numpy(m)], ks)
        per = np.bincount(who[m], minlength=split.n_users)
        out = metrics_from_ranks(r[torch.from_numpy(m)], ks, weights=1.0 / per[who[m]])
        out["events"] = int(m.sum())
        return out

    if not groups:
        out = {"overall": summary(np.ones(len(who), bool))}
    else:
        masks = group_masks(split, stage=stage)
        out = {g: summary(m) for g, m in masks.items()}
        for g, m in masks.items():
            out[g]["users"] = int(len(np.unique(who[m])))
    if ranks:
        if several:
            bounds = np.cumsum(np.bincount(who, minlength=split.n_users))[:-1]
            out["ranks"] = [x.tolist() for x in np.split(r.numpy(), bounds)]
        else:
            out["ranks"] = r.tolist()
    return out


# --------------------------------------------------------------------------- comparing two models
# The one rule of the suite. For "A beats B" on a metric, with d_u = A's metric on user u minus B's (each user's
# events averaged, then A's and B's seeds averaged), the mean difference, its 95 % interval and two-sided p-value from
# one model (users resampled, the seed level added once: see `compare`), and every A seed against every B seed:
MIN_DIFFERING = 6         # below this many users whose A and B differ, no two-sided test at 5 % can decide: the
                          # smallest exact sign-flip p with n differing users is 2 / 2^n (n = 5: 0.0625, n = 6: 0.031)
EXACT_MAX = 16            # up to this many differing users the exact sign-flip test over all 2^n sign patterns runs
                          # (65,536 patterns: milliseconds) and must agree (p < 0.05) before a direction is decided
VERDICTS = {
    "holds": "the 95 % interval lies above 0 (so p < 0.05) and every seed of A beats every seed of B",
    "partly": "the 95 % interval lies above 0 (so p < 0.05) but some seed of A does not beat some seed of B",
    "undecided": "the 95 % interval contains 0 (p >= 0.05): this test cannot tell A from B (see the detectable effect "
                 "beside it: an effect smaller than that would mostly go unseen here); not a refutation",
    "negligible": "the whole 95 % interval lies inside +/- the claim's negligible band (`margin`: NEGLIGIBLE_REL, 2 % of "
                  "the two models' mean level, or half the paper's effect where that is smaller): A and B are the same "
                  "for practical purposes",
    "partly reversed": "the 95 % interval lies below 0 (so p < 0.05) but some seed of A is not beaten by some seed of B",
    "reversed": "the 95 % interval lies below 0 (so p < 0.05) and every seed of B beats every seed of A: B beats A",
    "not testable": f"fewer than {MIN_DIFFERING} users differ between A and B in the compared group (`n_differ` says how "
                    f"many; none has a hit under either model is the extreme case): no two-sided test at 5 % can "
                    f"decide a direction from so few users, whatever they show",
    "not run": "the notebook that decides this claim has no results here (or did not decide it): the claim stays in "
               "the family (counted with p = 1), so the other claims' adjusted verdicts do not depend on what ran",
}
# the size word, beside the direction word, for a claim whose paper gives a number (its relative effect)
SIZES = {
    "includes the paper's effect": "the paper's effect lies inside our 95 % interval",
    "below the paper's effect": "our whole 95 % interval lies below the paper's effect",
    "above the paper's effect": "our whole 95 % interval lies above the paper's effect",
}
NEGLIGIBLE_REL = 0.02     # the widest band of effects too small to matter: 2 % of the two models' mean level, the
                          # smallest gain any of the four papers reports as an improvement (LLMDiRec, ML-1M, HR@10
                          # +2.0 %); a claim whose paper gives a smaller effect gets half that effect (`compare`)
POWER = 0.80              # the detectable effect is the true difference found with this probability (two-sided 5 %)
_Z = 1.959963984540054 + 0.8416212335729143      # z_{0.975} + z_{0.80}: 2.80 standard errors (mde_for_users too)


def per_user(r, metric: str = "NDCG@10") -> np.ndarray:
    """(N,) value of `metric` (HR@k, NDCG@k, MRR@k) for each rank (one per user, or one per event); NaN where the
    rank is NaN (a user the run did not evaluate)."""
    name, _, k = metric.partition("@")
    if name not in ("HR", "NDCG", "MRR") or not k.isdigit():
        raise ValueError(f"unknown metric {metric!r}; valid: HR@k, NDCG@k, MRR@k with an integer k")
    r = np.asarray(r, dtype=float)
    hit = (r <= int(k)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = {"HR": hit, "NDCG": hit / np.log2(r + 1), "MRR": hit / r}[name]
    v[np.isnan(r)] = np.nan
    return v


def _one_run(v) -> tuple[np.ndarray, np.ndarray]:
    """One run -> (flat ranks (N,), counts (U,)): a user's events in order, counts[u] = its number of events (-1: the
    run did not evaluate the user). A run is a dict of `evaluate(..., ranks=True)` or its "ranks": one entry per user,
    a rank (one event), a list of ranks (that user's events, oldest first) or None (not evaluated)."""
    if isinstance(v, dict):
        if "ranks" not in v:
            raise ValueError("compare needs per-user ranks: evaluate with ranks=True (this run has keys "
                             f"{sorted(v)[:6]})")
        v = v["ranks"]
    if torch.is_tensor(v):
        v = v.detach().cpu().numpy()
    if isinstance(v, np.ndarray) and v.dtype != object:
        r = v.astype(float).ravel()
        ok = ~np.isnan(r)
        return r[ok], np.where(ok, 1, -1)
    flat, counts = [], np.empty(len(v), dtype=np.int64)
    for u, e in enumerate(v):
        if e is None:
            counts[u] = -1
        elif isinstance(e, (list, tuple, np.ndarray)) or torch.is_tensor(e):
            e = [float(x) for x in e]
            counts[u] = len(e)
            flat += e
        elif math.isnan(float(e)):
            counts[u] = -1
        else:
            counts[u] = 1
            flat.append(float(e))
    return np.asarray(flat, dtype=float), counts


def _runs(x) -> list[tuple[np.ndarray, np.ndarray]]:
    """One run or a list of runs (one per seed) -> [(flat ranks, counts), ...] (see `_one_run`). A list whose entries
    are dicts, arrays, tensors or lists is a list of runs; give a single run of per-user event lists as its dict
    ({"ranks": [...]}, what `evaluate` returns)."""
    if isinstance(x, dict):
        return [_one_run(x)]
    if isinstance(x, np.ndarray) or torch.is_tensor(x):
        return [_one_run(x)] if x.ndim == 1 else [_one_run(v) for v in x]
    if len(x) and (isinstance(x[0], (dict, list, tuple, np.ndarray)) or torch.is_tensor(x[0])):
        return [_one_run(v) for v in x]                    # a list of runs
    return [_one_run(x)]                                   # a list of ranks


def _per_user_matrix(runs, metric: str, users) -> tuple[np.ndarray, np.ndarray]:
    """(S, U) each run's per-user metric (the mean over the user's events; NaN: not evaluated, or no event of the user
    in an event mask) and the (U,) user mask asked for. users: None, a (U,) user mask, or a mask over every event
    (users' events in order: what `group_masks` gives for a split with several test events per user)."""
    n_users = {len(c) for _, c in runs}
    if len(n_users) != 1:
        raise ValueError(f"compare needs per-user arrays of one length (users); got lengths {sorted(n_users)}")
    U = n_users.pop()
    canon = np.max(np.stack([c for _, c in runs]), axis=0)                     # each user's event count (-1: unknown)
    for _, c in runs:
        both = (c >= 0) & (canon >= 0)
        if (c[both] != canon[both]).any():
            u = int(np.flatnonzero(c[both] != canon[both])[0])
            raise ValueError(f"compare: runs disagree on the number of test events of user {u}: they were "
                             f"evaluated on different splits")
    user_mask, event_mask = np.ones(U, bool), None
    if users is not None:
        m = np.asarray(users, dtype=bool).ravel()
        if len(m) == U:
            user_mask = m
        elif (canon >= 0).all() and len(m) == canon.sum():
            event_mask = m
        else:
            raise ValueError(f"compare: `users` has {len(m)} entries; give one per user ({U}) or one per test event "
                             f"({int(canon[canon >= 0].sum())} known)")
    offsets = np.concatenate([[0], np.cumsum(np.maximum(canon, 0))])
    out = np.full((len(runs), U), np.nan)
    for s, (r, c) in enumerate(runs):
        who = np.repeat(np.arange(U), np.maximum(c, 0))                       # (N,) the user of each event
        v = per_user(r, metric)
        w = np.ones(len(r))
        if event_mask is not None:
            pos = offsets[who] + (np.arange(len(r)) - np.repeat(np.cumsum(np.maximum(c, 0)) - np.maximum(c, 0),
                                                                np.maximum(c, 0)))
            w = event_mask[pos].astype(float)
        num = np.bincount(who, weights=v * w, minlength=U)
        den = np.bincount(who, weights=w, minlength=U)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s] = np.where(den > 0, num / den, np.nan)
    return out, user_mask


def _size_word(lo: float, hi: float, effect_abs: float) -> str:
    if effect_abs < lo:
        return "above the paper's effect"
    if effect_abs > hi:
        return "below the paper's effect"
    return "includes the paper's effect"


def size_of(c: dict, paper_effect: float) -> dict:
    """The size reading of a decided comparison `c` against a paper's relative effect (A / B - 1): paper_effect,
    paper_diff (that effect at our B's mean), size (a word of SIZES; None where the group is not testable),
    n_needed (the users the test needs to detect that effect with POWER) and reach (None, or why no number of users
    is enough).

    More users shrink only the per-user part of the standard error (se_users^2 n / n'); the seed part (se_seeds: the
    training draw's spread, which no number of users averages away) stays, so n_needed = n se_users^2 /
    ((effect / q)^2 - se_seeds^2) with q = mde / se, and where the seed part alone is as large as effect / q the effect
    is "not reachable with S seeds" (more seeds are the only way). A results file older than the split of se reads as
    all per-user."""
    eff = float(paper_effect) * c["mean_b"]
    testable = c["verdict"] not in ("not testable", "not run")
    se, se_u, se_s = c.get("se") or 0.0, c.get("se_users"), c.get("se_seeds") or 0.0
    se_u = se if se_u is None else se_u
    out = {"paper_effect": float(paper_effect), "paper_diff": eff,
           "size": _size_word(c["ci"][0], c["ci"][1], eff) if testable else None, "n_needed": None, "reach": None}
    if eff and se > 0 and testable:
        q = c["mde"] / se
        room = (eff / q) ** 2 - se_s ** 2
        if room <= 0 or se_u <= 0:
            seeds = "/".join(str(s) for s in c.get("n_seeds", []))
            out["reach"] = (f"not reachable with {seeds} seeds: the spread between training seeds alone hides an "
                            f"effect this size, whatever the number of users (more seeds would)")
        else:
            out["n_needed"] = int(math.ceil(c["n_users"] * se_u ** 2 / room))
    return out


def _seed_level(v: np.ndarray) -> tuple[float, float, int]:
    """(s2_m, ms_resid, df) of one model's (S, U) per-user values: the variance of its S per-seed means and the
    residual mean square of the two-way layout seeds x users (no replication). E[s2_m] = sigma_seed^2 + sigma_noise^2 / U
    and E[ms_resid] = sigma_noise^2, so s2_m - ms_resid / U estimates the seed level sigma_seed^2 (`compare` pools
    the two models, then truncates at 0). One seed: (0, 0, 0), nothing to estimate."""
    S, U = v.shape
    if S < 2 or U < 2:
        return 0.0, 0.0, 0
    m_s = v.mean(1)
    resid = v - m_s[:, None] - v.mean(0)[None, :] + v.mean()
    return float(m_s.var(ddof=1)), float((resid ** 2).sum()) / ((S - 1) * (U - 1)), S - 1


def _exact_sign_flip(x: np.ndarray) -> float:
    """Two-sided exact p of a paired sign-flip test on the non-zero differences x: the share of all 2^n sign patterns
    whose |sum| is at least the observed |sum| (with n equal magnitudes, the sign test)."""
    n = len(x)
    signs = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1) * 2 - 1        # (2^n, n)
    sums = np.abs(signs @ x)
    return float(np.mean(sums >= abs(x.sum()) - 1e-9 * np.abs(x).sum()))


def _verdict(lo, hi, p, alpha, pair_diffs, margin, no_hit, n_differ) -> str:
    if no_hit or 0 < n_differ < MIN_DIFFERING:
        return "not testable"
    if margin > 0 and -margin < lo and hi < margin:
        return "negligible"
    if lo > 0 and p < alpha:
        return "holds" if all(x > 0 for x in pair_diffs) else "partly"
    if hi < 0 and p < alpha:
        return "reversed" if all(x < 0 for x in pair_diffs) else "partly reversed"
    return "undecided"


def compare(a, b, metric: str = "NDCG@10", n_boot: int = 2000, seed: int = 0, level: float = 0.95,
            users=None, paper_effect: float | None = None, n_perm: int = 2000, negligible: float | None = None) -> dict:
    """Paired comparison of model A against model B, the suite's one rule for a claim "A beats B".

    a, b: one run or a list of runs (one per seed); a run is the dict of `evaluate(..., ranks=True)` or a (U,) array of
    per-user ranks; a user's entry is one rank, a list of its test events' ranks (a split with several test events per
    user, `lib.data.last_k_events`), or None/NaN (not evaluated). Only users evaluated by every run of both enter.
    users: optional mask restricting the comparison, one entry per user (cold / hot users, a subset) or one per test
    event (tail / head targets on a several-event split: `group_masks` gives it). paper_effect: the paper's relative
    effect (A / B - 1, e.g. 0.027 for +2.7 %), for the size word and the negligible band. negligible: the band's
    relative half-width (default NEGLIGIBLE_REL).

    **The one estimator.** Each user's metric is averaged over its events, then over each model's seeds; d_u is A's
    minus B's, and the difference is mean(d). Its variance has two parts, each counted once:
    * users: var(d_u) / n, exactly the variance of the mean over a resample of users (the user bootstrap), taken in
      closed form rather than drawn, so there is no Monte Carlo error and a p-value can be as small as the data say
      (Holm over ~50 paper claims needs p below 0.001). The user-by-seed noise is in d_u, averaged over seeds, once.
      A user with several events is one draw (the cluster): its events are averaged first.
    * seeds: the training draw. For each model the variance of its per-seed means minus their per-user-noise part
      (`_seed_level`), pooled over A and B (both models' training draws are taken to spread alike, so a model with one
      seed borrows the other's spread), times 1/S_a + 1/S_b. With one seed on each side it cannot be estimated: the
      interval is then conditional on the two fits (`se_seeds` = 0 says so).
    The interval is mean(d) +/- t se, with t from Student's t at the Welch-Satterthwaite degrees of freedom of the two
    parts (users: n_differ - 1, the users whose A and B differ; seeds: S_a + S_b - 2), so three seeds per model give
    t near 2.8 where the seed part dominates and near 1.96 where the users do. p is the two-sided p of the same t
    statistic, so "the interval excludes 0" and "p < 0.05" are one statement. Calibration (tests/test_metrics.py: A/A
    with a seed-level effect, coverage with seeds, correlated A and B, known exact p).
    Why not resample seeds: with three seeds the seed level has ten distinct draws, and redrawing each model's seeds
    before averaging per user adds the user-by-seed noise a second time on top of the user resampling.

    **Few differing users.** Fewer than MIN_DIFFERING users with d_u != 0: "not testable" (no two-sided 5 % test can
    decide). Up to EXACT_MAX of them: the exact sign-flip p over all sign patterns of the non-zero d_u (4 users hit
    under A and none under B: p = 0.125) is computed and p is the larger of the two, so a direction needs both.

    mde: the smallest true difference this test detects with POWER (80 %): (t_{0.975} + t_{0.80}) se.
    The per-seed reading compares every seed of A with every seed of B (pair_diffs, S_a x S_b; seed i of A and seed i
    of B are unrelated fits): "holds" needs all positive, else "partly". The negligible band (`margin`) is
    min(NEGLIGIBLE_REL, |paper_effect| / 2) times the mean of A's and B's levels: symmetric in A and B, and never so
    wide that it swallows the paper's own effect. n_boot and n_perm are kept for callers: the interval is closed form;
    n_perm=0 still leaves p None (the leaderboard's forest does not show it); seed is unused.

    Returns a dict: metric, n_users, n_differ, mean_a, mean_b, diff, rel (diff / mean_b; None when mean_b is 0), ci, se,
    se_users, se_seeds, df, p_value, p_exact (None unless the exact test ran), mde, mde_rel, margin, pair_diffs,
    seed_diffs (= pair_diffs), seed_std (their sd; None with one pair), n_seeds, verdict (a word of VERDICTS) and rule
    (its sentence), and, with paper_effect: paper_effect, paper_diff, size (a word of SIZES), n_needed, reach.
    """
    from scipy import stats

    A, B = _runs(a), _runs(b)
    v, user_mask = _per_user_matrix(A + B, metric, users)
    keep = ~np.isnan(v).any(0) & user_mask
    if not keep.any():
        raise ValueError("compare: no user is evaluated by every run of both models")
    va, vb = v[:len(A), keep], v[len(A):, keep]                      # (Sa, n), (Sb, n)
    n = int(keep.sum())
    d = va.mean(0) - vb.mean(0)                                      # (n,) paired per-user difference
    diff = float(d.mean())
    nz = np.abs(d) > 1e-12
    n_differ = int(nz.sum())
    var_users = float(d.var(ddof=1)) / n if n > 1 else 0.0
    (ma, ra, fa), (mb_, rb, fb) = _seed_level(va), _seed_level(vb)
    f_seed, scale = fa + fb, 1 / len(A) + 1 / len(B)
    gross = scale * (fa * ma + fb * mb_) / f_seed if f_seed else 0.0     # seed means' spread (noise part included)
    noise = scale * (fa * ra + fb * rb) / f_seed / n if f_seed else 0.0   # its per-user-noise part
    var_seed = max(0.0, gross - noise)
    se_total2 = var_users + var_seed
    se = math.sqrt(se_total2)
    f_users = max(n_differ - 1, 1)
    # Welch-Satterthwaite over the estimate's parts: the users' part, and the seed means' spread with only
    # S_a + S_b - 2 degrees of freedom (its noise part is known from (S-1)(n-1) of them: negligible)
    denom = var_users ** 2 / f_users + (gross ** 2 / f_seed if f_seed and var_seed > 0 else 0.0)
    df = float(se_total2 ** 2 / denom) if denom > 0 else float(f_users)
    alpha = 1 - level
    t_crit = float(stats.t.ppf(1 - alpha / 2, df))
    lo, hi = diff - t_crit * se, diff + t_crit * se
    if se > 0:
        p = float(2 * stats.t.sf(abs(diff) / se, df))
    else:
        p = 1.0 if diff == 0 else 0.0
    p_exact = _exact_sign_flip(d[nz]) if 0 < n_differ <= EXACT_MAX else None
    if p_exact is not None:
        p = max(p, p_exact)
    pair_diffs = (va.mean(1)[:, None] - vb.mean(1)[None, :]).ravel().tolist()
    mean_a, mb = float(va.mean()), float(vb.mean())
    rel_band = NEGLIGIBLE_REL if negligible is None else float(negligible)
    if paper_effect:
        rel_band = min(rel_band, abs(float(paper_effect)) / 2)
    margin = rel_band * (abs(mean_a) + abs(mb)) / 2
    no_hit = not va.any() and not vb.any()
    verdict = _verdict(lo, hi, p, alpha, pair_diffs, margin, no_hit, n_differ)
    mde = (t_crit + float(stats.t.ppf(POWER, df))) * se
    out = {"metric": metric, "n_users": n, "n_differ": n_differ, "mean_a": mean_a, "mean_b": mb, "diff": diff,
           "rel": diff / mb if mb else None, "ci": [float(lo), float(hi)], "se": se,
           "se_users": math.sqrt(var_users), "se_seeds": math.sqrt(var_seed), "df": df,
           "p_value": p if n_perm else None, "p_exact": p_exact, "mde": float(mde),
           "mde_rel": float(mde / mb) if mb else None, "margin": margin, "margin_rel": rel_band,
           "pair_diffs": pair_diffs, "seed_diffs": pair_diffs,
           "seed_std": float(np.std(pair_diffs, ddof=1)) if len(pair_diffs) > 1 else None,
           "n_seeds": [len(A), len(B)], "verdict": verdict, "rule": VERDICTS[verdict]}
    if paper_effect is not None:
        out.update(size_of(out, paper_effect))
    return out


def holm(p_values) -> list[float]:
    """Holm's step-down adjustment of p-values (family-wise error): the k-th smallest p times (m - k + 1), made
    monotone, capped at 1. None (a claim of the family that did not run) counts as p = 1: it stays in the family,
    so m, and every other claim's adjusted p, does not depend on what ran. Chosen over Benjamini-Hochberg because each
    paper claim is read on its own, as "the paper says X; does it hold here?": a reader needs the chance that *any* of
    our "holds" is wrong to stay at 5 %, not the expected share of wrong ones among many discoveries."""
    p = np.asarray([1.0 if x is None else x for x in p_values], dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj.tolist()


def mde_for_users(sd: float, n_users, seed_se: float = 0.0):
    """The smallest paired mean difference a test on n_users detects with POWER (80 %, two-sided 5 %; normal
    approximation), from the per-user standard deviation sd of the paired difference: 2.80 sqrt(sd^2 / n + seed_se^2).
    seed_se: the seed part of the standard error (`compare`'s se_seeds), which more users do not shrink; with it the
    detectable effect levels off at 2.80 seed_se however many users there are."""
    n = np.asarray(n_users, dtype=float)
    return _Z * np.sqrt(sd ** 2 / n + seed_se ** 2)


def events_power(ranks_a, ranks_b, metric: str = "NDCG@10", ks=(1, 2, 5, 10, 20)) -> dict:
    """How much more a test sees when each user contributes its last k test events instead of one (issue 34).

    ranks_a, ranks_b: one run of each model on a split with several test events per user (`lib.data.last_k_events`):
    `evaluate(..., ranks=True)`'s dict or its per-user list of event-rank lists (oldest first). For each k the users'
    last k events are averaged per user (a user with fewer events gives what it has), and the detectable effect is
    2.80 sd(d_u) / sqrt(n) (one seed: the per-user part only). The intra-user correlation rho of the per-event
    differences (one-way random-effects ANOVA over every event) predicts it: mde_k = mde_1 sqrt((1 + (k - 1) rho) / k),
    a third of mde_1 at k = 10 when rho is near 0.

    Returns {"metric", "users", "icc", "by_k": [{"k", "users", "events" (mean per user), "mean_b", "sd", "mde",
    "mde_rel" (mde / mean_b), "ratio" (mde / mde at k = 1), "predicted_ratio"}]}."""
    (ra, ca), = _runs(ranks_a if isinstance(ranks_a, dict) else {"ranks": ranks_a})
    (rb, cb), = _runs(ranks_b if isinstance(ranks_b, dict) else {"ranks": ranks_b})
    if len(ca) != len(cb) or (ca != cb).any():
        raise ValueError("events_power: the two runs must hold the same users' events (one split)")
    va, vb = per_user(ra, metric), per_user(rb, metric)
    c = np.maximum(ca, 0)
    who = np.repeat(np.arange(len(c)), c)
    pos_from_end = np.repeat(c, c) - (np.arange(len(ra)) - np.repeat(np.cumsum(c) - c, c))   # 1 = the last event
    d = va - vb
    users = np.flatnonzero(c > 0)
    # intra-user correlation of the per-event differences (one-way ANOVA, unequal group sizes)
    n_i = c[users].astype(float)
    sums = np.bincount(who, weights=d, minlength=len(c))[users]
    means = sums / n_i
    N, G = n_i.sum(), len(users)
    ss_within = float(((d - np.repeat(np.bincount(who, weights=d, minlength=len(c)) / np.maximum(c, 1), c)) ** 2).sum())
    ss_between = float((n_i * (means - d.mean()) ** 2).sum())
    ms_w = ss_within / max(N - G, 1)
    ms_b = ss_between / max(G - 1, 1)
    n0 = (N - (n_i ** 2).sum() / N) / max(G - 1, 1)
    icc = float((ms_b - ms_w) / (ms_b + (n0 - 1) * ms_w)) if ms_b + (n0 - 1) * ms_w > 0 else float("nan")
    rows = []
    for k in ks:
        w = (pos_from_end <= k).astype(float)
        den = np.bincount(who, weights=w, minlength=len(c))[users]
        du = np.bincount(who, weights=d * w, minlength=len(c))[users] / den
        mean_b = float(np.mean(np.bincount(who, weights=vb * w, minlength=len(c))[users] / den))
        sd = float(du.std(ddof=1))
        mde = float(_Z * sd / math.sqrt(len(du)))
        rows.append({"k": int(k), "users": int(len(du)), "events": float(den.mean()), "mean_b": mean_b, "sd": sd,
                     "mde": mde, "mde_rel": mde / mean_b if mean_b else None})
    for r in rows:
        r["ratio"] = r["mde"] / rows[0]["mde"] if rows[0]["mde"] else None
        kk = r["events"]
        r["predicted_ratio"] = math.sqrt((1 + (kk - 1) * icc) / kk) if not math.isnan(icc) else None
    return {"metric": metric, "users": int(G), "icc": icc, "by_k": rows}


def row(claim: str, c: dict) -> dict:
    """A claims-table row from a decided comparison `c` (the output of `compare` or `lib.claims.decide`)."""
    spread = "" if c["seed_std"] is None else f" (seed sd {c['seed_std']:.4f})"
    out = {"claim": claim, "metric": c["metric"], "A": round(c["mean_a"], 4), "B": round(c["mean_b"], 4),
           "A - B [95 % CI]": f"{c['diff']:+.4f} [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]{spread}",
           "rel": pct(c["rel"]), "detectable": pct(c["mde_rel"]).lstrip("+"),
           "p": "—" if c["p_value"] is None else ("<0.001" if c["p_value"] < 0.001 else f"{c['p_value']:.3f}"),
           "users": c["n_users"], "seeds": "{}, {}".format(*c["n_seeds"]), "verdict": c["verdict"]}
    if c.get("paper_effect") is not None:
        out["paper"] = pct(c["paper_effect"])
        out["size"] = c["size"]
    return out


def pct(rel) -> str:
    """A relative change as '+2.7%', or 'n/a' when there is none (the reference is 0)."""
    return "n/a" if rel is None else f"{rel:+.1%}"


def summarize(runs: list[dict], metrics=("HR@10", "NDCG@10", "MRR@10"), group: str = "overall") -> dict:
    """Mean and sample standard deviation over seeds: {"NDCG@10": {"mean":..., "std":..., "values": [...]}}."""
    out = {}
    for m in metrics:
        v = np.array([r[group][m] for r in runs], dtype=float)
        out[m] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                  "values": v.tolist()}
    return out


def popularity_scores(split):
    """Score function of the popularity baseline (Pop): every user gets training-interaction counts."""
    pop = torch.from_numpy(split.item_popularity()).float()

    def score_fn(users, stage):
        return pop.expand(len(users), -1)
    return score_fn


def table(results: dict[str, list[dict]], metrics=("HR@10", "NDCG@10", "MRR@10"), groups=GROUPS):
    """DataFrame of mean ± std over seeds: one row per model, columns (group, metric). results: model -> runs."""
    import pandas as pd

    rows = {}
    for name, runs in results.items():
        row = {}
        for g in groups:
            if g not in runs[0]:
                continue
            for m, s in summarize(runs, metrics, g).items():
                row[(g, m)] = f"{s['mean']:.4f} ± {s['std']:.4f}" if len(runs) > 1 else f"{s['mean']:.4f}"
        rows[name] = row
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    return df
