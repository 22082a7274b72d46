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
* Claims are decided by one rule, `compare`: the paired per-user difference of a metric between two models
  with a seeded two-level bootstrap 95 % interval (seeds, then users), a sign-flip permutation p-value, the
  smallest effect the test can detect, and a direction word (VERDICTS) with, for a paper's number, a size word
  (SIZES). `lib.claims` names every claim the suite decides.
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


def metrics_from_ranks(r: torch.Tensor, ks=KS) -> dict[str, float]:
    """Mean HR/NDCG/MRR at each k from a (N,) tensor of ranks (1 = best)."""
    r = r.double()
    out = {}
    for k in ks:
        hit = (r <= k).double()
        out[f"HR@{k}"] = hit.mean().item() if len(r) else float("nan")
        out[f"NDCG@{k}"] = (hit / torch.log2(r + 1)).mean().item() if len(r) else float("nan")
        out[f"MRR@{k}"] = (hit / r).mean().item() if len(r) else float("nan")
    return out


def group_masks(split, frac: float = 0.2, stage: str = "test") -> dict[str, np.ndarray]:
    """Boolean (U,) masks of users in each LLMDiRec Table 3 group for one stage.

    Item popularity = number of training interactions; items are ordered by popularity with ties broken
    by item id, and the bottom / top `frac` of real items are tail / head. Users are ordered by history
    length (ties by user id); the shortest / longest `frac` are cold / hot.
    """
    pop = split.item_popularity()[1:]                         # real items 1..n-1
    n = len(pop)
    order = np.lexsort((np.arange(n), pop))                   # ascending popularity, stable by id
    k = max(1, int(round(frac * n)))
    tail_items = np.zeros(split.n_items, bool)
    head_items = np.zeros(split.n_items, bool)
    tail_items[order[:k] + 1] = True
    head_items[order[-k:] + 1] = True
    lens = np.array([len(h) for h in split.history(stage)])
    u_order = np.lexsort((np.arange(len(lens)), lens))
    ku = max(1, int(round(frac * len(lens))))
    cold = np.zeros(len(lens), bool)
    hot = np.zeros(len(lens), bool)
    cold[u_order[:ku]] = True
    hot[u_order[-ku:]] = True
    tgt = split.targets(stage)
    return {"overall": np.ones(len(lens), bool), "tail": tail_items[tgt], "head": head_items[tgt],
            "cold": cold, "hot": hot}


@torch.no_grad()
def rank_targets(score_fn, split, stage: str = "test", batch_size: int = 1024, mask: bool = True) -> torch.Tensor:
    """(U,) rank of each user's target under the protocol.

    score_fn(user_ids: LongTensor (B,), stage) -> (B, n_items) scores; it sees the user ids so that any
    model (sequential or not) fits. mask=False skips history masking (only to show why papers differ).
    """
    history = split.history(stage)
    targets = torch.from_numpy(split.targets(stage))
    out = []
    for start in range(0, split.n_users, batch_size):
        users = torch.arange(start, min(start + batch_size, split.n_users))
        scores = score_fn(users, stage).float().cpu().clone()  # (B, n_items)
        if mask:
            mask_history(scores, [history[u] for u in users.tolist()])
        else:
            scores[:, 0] = -math.inf
        out.append(ranks(scores, targets[users], users))
    return torch.cat(out)


def evaluate(score_fn, split, stage: str = "test", groups: bool = True, ks=KS, mask: bool = True,
             batch_size: int = 1024, ranks: bool = False) -> dict:
    """{"overall": {"HR@10": ...}, "tail": {...}, ...}; groups=False gives "overall" only.

    ranks=True adds "ranks": the (U,) list of each user's target rank, what `compare` pairs (results files keep
    it, so any two runs evaluated on the same users can be compared later)."""
    r = rank_targets(score_fn, split, stage, batch_size=batch_size, mask=mask)
    if not groups:
        out = {"overall": metrics_from_ranks(r, ks)}
    else:
        masks = group_masks(split, stage=stage)
        out = {g: metrics_from_ranks(r[torch.from_numpy(m)], ks) for g, m in masks.items()}
        for g, m in masks.items():
            out[g]["users"] = int(m.sum())
    if ranks:
        out["ranks"] = r.tolist()
    return out


# --------------------------------------------------------------------------- comparing two models
# The one rule of the suite. For "A beats B" on a metric, with d_u = A's metric on user u minus B's (averaged over
# A's and B's seeds), mean d, and a seeded two-level bootstrap 95 % interval (seeds, then users: see `compare`):
VERDICTS = {
    "holds": "the 95 % interval lies above 0 and every seed's difference is positive",
    "partly": "the 95 % interval lies above 0 but at least one seed's difference is not positive",
    "undecided": "the 95 % interval contains 0: this test cannot tell A from B (see the detectable effect beside "
                 "it: an effect smaller than that would mostly go unseen here); not a refutation",
    "negligible": "the whole 95 % interval lies inside +/- the smallest effect that matters (NEGLIGIBLE_REL, 2 % of "
                  "B's mean): A and B are the same for practical purposes",
    "partly reversed": "the 95 % interval lies below 0 but at least one seed's difference is not negative",
    "reversed": "the 95 % interval lies below 0 and every seed's difference is negative: B beats A",
    "not testable": "no user of the compared group has a hit under either model: the group cannot show a difference",
}
# the size word, beside the direction word, for a claim whose paper gives a number (its relative effect)
SIZES = {
    "includes the paper's effect": "the paper's effect lies inside our 95 % interval",
    "below the paper's effect": "our whole 95 % interval lies below the paper's effect",
    "above the paper's effect": "our whole 95 % interval lies above the paper's effect",
}
NEGLIGIBLE_REL = 0.02     # the smallest effect that matters: 2 % of B's mean, the smallest gain any of the four
                          # papers reports as an improvement (LLMDiRec, ML-1M, HR@10 +2.0 %): a difference whose
                          # whole interval lies inside +/- 2 % is smaller than anything the papers claim
POWER = 0.80              # the detectable effect is the true difference found with this probability (two-sided 5 %)
_Z = 1.959963984540054 + 0.8416212335729143      # z_{0.975} + z_{0.80}: 2.80 standard errors (mde_for_users too)


def per_user(r, metric: str = "NDCG@10") -> np.ndarray:
    """(U,) value of `metric` (HR@k, NDCG@k, MRR@k) for each user from its rank; NaN where the rank is NaN
    (a user the run did not evaluate)."""
    name, _, k = metric.partition("@")
    if name not in ("HR", "NDCG", "MRR") or not k.isdigit():
        raise ValueError(f"unknown metric {metric!r}; valid: HR@k, NDCG@k, MRR@k with an integer k")
    r = np.asarray(r, dtype=float)
    hit = (r <= int(k)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        v = {"HR": hit, "NDCG": hit / np.log2(r + 1), "MRR": hit / r}[name]
    v[np.isnan(r)] = np.nan
    return v


def _runs(x) -> list[np.ndarray]:
    """One run or a list of runs (one per seed) -> list of (U,) float rank arrays. A run is a (U,) array of
    ranks or a dict from `evaluate(..., ranks=True)` (its "ranks"; None entries = users not evaluated)."""
    def one(v):
        if isinstance(v, dict):
            if "ranks" not in v:
                raise ValueError("compare needs per-user ranks: evaluate with ranks=True (this run has keys "
                                 f"{sorted(v)[:6]})")
            v = v["ranks"]
        return np.array([np.nan if e is None else float(e) for e in v], dtype=float)
    if isinstance(x, dict):
        return [one(x)]
    if isinstance(x, np.ndarray) or torch.is_tensor(x):
        return [one(x)] if x.ndim == 1 else [one(v) for v in x]
    if len(x) and (isinstance(x[0], (dict, list, tuple, np.ndarray)) or torch.is_tensor(x[0])):
        return [one(v) for v in x]                         # a list of runs
    return [one(x)]                                        # a list of ranks


def _size_word(lo: float, hi: float, effect_abs: float) -> str:
    if effect_abs < lo:
        return "above the paper's effect"
    if effect_abs > hi:
        return "below the paper's effect"
    return "includes the paper's effect"


def size_of(c: dict, paper_effect: float) -> dict:
    """The size reading of a decided comparison `c` against a paper's relative effect (A / B - 1): paper_effect,
    paper_diff (that effect at our B's mean), size (a word of SIZES; None where no user of the group has a hit) and
    n_needed (the users the test needs to detect that effect with POWER: n (mde / effect)^2)."""
    eff = float(paper_effect) * c["mean_b"]
    testable = c["verdict"] != "not testable"
    return {"paper_effect": float(paper_effect), "paper_diff": eff,
            "size": _size_word(c["ci"][0], c["ci"][1], eff) if testable else None,
            "n_needed": int(math.ceil(c["n_users"] * (c["mde"] / eff) ** 2)) if eff and c["se"] > 0 and testable else None}


def _verdict(lo, hi, seed_diffs, margin, all_zero) -> str:
    if all_zero:
        return "not testable"
    if margin > 0 and -margin < lo and hi < margin:
        return "negligible"
    if lo > 0:
        return "holds" if all(x > 0 for x in seed_diffs) else "partly"
    if hi < 0:
        return "reversed" if all(x < 0 for x in seed_diffs) else "partly reversed"
    return "undecided"


def compare(a, b, metric: str = "NDCG@10", n_boot: int = 2000, seed: int = 0, level: float = 0.95,
            users=None, paper_effect: float | None = None, n_perm: int = 2000) -> dict:
    """Paired comparison of model A against model B, the suite's one rule for a claim "A beats B".

    a, b: one run or a list of runs (one per seed); a run is the dict of `evaluate(..., ranks=True)` or a (U,)
    array of per-user ranks; NaN (None) marks a user a run did not evaluate. Only users evaluated by every run of
    both enter. users: optional (U,) boolean mask (a group of `group_masks`, say) restricting the comparison.
    paper_effect: the paper's relative effect (A / B - 1, e.g. 0.027 for +2.7 %), for the size word.

    The interval is a seeded two-level bootstrap: each resample draws A's seeds and B's seeds with replacement
    (independently: seed i of A and seed i of B are different models), averages each user's metric over the drawn
    seeds, then draws users with replacement; so a seed that disagrees with the others widens the interval (with
    one seed per model it is the plain paired bootstrap over users). With three seeds the seed level has only ten
    distinct draws: coarse, but it counts the training draw, which averaging seeds first hides.
    The p-value is a paired sign-flip permutation test (scipy.stats.permutation_test) of the seed-averaged per-user
    differences (users are its unit: unlike the interval it does not count the seed spread; n_perm=0 skips it); mde is the smallest true difference this test detects with POWER (80 %), 2.80 bootstrap
    standard errors; n_needed (paper claims) scales the number of users until the paper's effect is that size.

    Returns a dict: metric, n_users, mean_a, mean_b, diff, rel (diff / mean_b; None when mean_b is 0), ci, se,
    p_value, mde, mde_rel, seed_diffs (A's seed i minus B's seed i, or minus B's mean when B has one run),
    seed_std, n_seeds, verdict (a word of VERDICTS) and rule (its sentence), margin (the negligible band),
    and, with paper_effect: paper_effect, paper_diff (its absolute size here), size (a word of SIZES), n_needed.
    """
    from scipy import stats

    A, B = _runs(a), _runs(b)
    if {len(x) for x in A + B} != {len(A[0])}:
        raise ValueError(f"compare needs per-user arrays of one length (users); got lengths "
                         f"{sorted({len(x) for x in A + B})}")
    va = np.stack([per_user(r, metric) for r in A])                  # (Sa, U)
    vb = np.stack([per_user(r, metric) for r in B])                  # (Sb, U)
    keep = ~np.isnan(va).any(0) & ~np.isnan(vb).any(0)
    if users is not None:
        keep &= np.asarray(users, dtype=bool)
    users = keep
    if not users.any():
        raise ValueError("compare: no user is evaluated by every run of both models")
    va, vb = va[:, users], vb[:, users]
    d = va.mean(0) - vb.mean(0)                                      # (U',) paired per-user difference
    g = np.random.default_rng(seed)
    ia = g.integers(0, len(va), size=(n_boot, len(va)))              # A's seeds drawn, (n_boot, Sa)
    ib = g.integers(0, len(vb), size=(n_boot, len(vb)))              # B's seeds drawn, (n_boot, Sb)
    iu = g.integers(0, len(d), size=(n_boot, len(d)))                # users drawn, (n_boot, U')
    boots = np.empty(n_boot)
    for k0 in range(0, n_boot, 250):                                 # chunks keep memory at 250 x Sa x U'
        k = slice(k0, k0 + 250)
        d_k = va[ia[k]].mean(1) - vb[ib[k]].mean(1)                  # (chunk, U') per-user diff of drawn seeds
        boots[k] = np.take_along_axis(d_k, iu[k], 1).mean(1)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    se = float(boots.std(ddof=1))
    if len(A) == len(B):
        seed_diffs = (va.mean(1) - vb.mean(1)).tolist()
    else:
        seed_diffs = (va.mean(1) - vb.mean()).tolist() if len(B) == 1 else (va.mean() - vb.mean(1)).tolist()
    all_zero = not va.any() and not vb.any()
    if not n_perm:
        p = None                                                     # not asked for (the leaderboard's forest)
    elif all_zero or not d.any():
        p = 1.0
    else:
        p = float(stats.permutation_test((d,), np.mean, permutation_type="samples", vectorized=True,
                                         n_resamples=n_perm, rng=np.random.default_rng(seed + 1)).pvalue)
    mb = float(vb.mean())
    margin = NEGLIGIBLE_REL * abs(mb)
    verdict = _verdict(lo, hi, seed_diffs, margin, all_zero)
    mde = _Z * se
    out = {"metric": metric, "n_users": int(users.sum()), "mean_a": float(va.mean()), "mean_b": mb,
           "diff": float(d.mean()), "rel": float(d.mean() / mb) if mb else None,
           "ci": [float(lo), float(hi)], "se": se, "p_value": p, "mde": float(mde),
           "mde_rel": float(mde / mb) if mb else None, "margin": margin, "seed_diffs": seed_diffs,
           "seed_std": float(np.std(seed_diffs, ddof=1)) if len(seed_diffs) > 1 else None,
           "n_seeds": [len(A), len(B)], "verdict": verdict, "rule": VERDICTS[verdict]}
    if paper_effect is not None:
        out.update(size_of(out, paper_effect))
    return out


def holm(p_values) -> list[float]:
    """Holm's step-down adjustment of p-values (family-wise error): the k-th smallest p times (m - k + 1), made
    monotone, capped at 1. Chosen over Benjamini-Hochberg because each paper claim is read on its own, as "the paper
    says X; does it hold here?": a reader needs the chance that *any* of our "holds" is wrong to stay at 5 %, not
    the expected share of wrong ones among many discoveries."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj.tolist()


def mde_for_users(sd: float, n_users):
    """The smallest paired mean difference a test on n_users detects with POWER (80 %, two-sided 5 %; normal
    approximation), from the per-user standard deviation sd of the paired difference: 2.80 sd / sqrt(n)."""
    return _Z * sd / np.sqrt(np.asarray(n_users, dtype=float))


def row(claim: str, c: dict) -> dict:
    """A claims-table row from a decided comparison `c` (the output of `compare` or `lib.claims.decide`)."""
    spread = "" if c["seed_std"] is None else f" (seed sd {c['seed_std']:.4f})"
    out = {"claim": claim, "metric": c["metric"], "A": round(c["mean_a"], 4), "B": round(c["mean_b"], 4),
           "A - B [95 % CI]": f"{c['diff']:+.4f} [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]{spread}",
           "rel": pct(c["rel"]), "detectable": pct(c["mde_rel"]).lstrip("+"),
           "p": "—" if c["p_value"] is None else f"{c['p_value']:.3f}",
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
