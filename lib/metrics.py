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


def ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) rank of each target: 1 + #{j != target : scores[j] >= scores[target]} (ties pessimistic)."""
    t = scores.gather(1, targets.view(-1, 1))                 # (B, 1)
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
        out.append(ranks(scores, targets[users]))
    return torch.cat(out)


def evaluate(score_fn, split, stage: str = "test", groups: bool = True, ks=KS, mask: bool = True,
             batch_size: int = 1024) -> dict[str, dict[str, float]]:
    """{"overall": {"HR@10": ...}, "tail": {...}, ...}; groups=False gives "overall" only."""
    r = rank_targets(score_fn, split, stage, batch_size=batch_size, mask=mask)
    if not groups:
        return {"overall": metrics_from_ranks(r, ks)}
    masks = group_masks(split, stage=stage)
    out = {g: metrics_from_ranks(r[torch.from_numpy(m)], ks) for g, m in masks.items()}
    for g, m in masks.items():
        out[g]["users"] = int(m.sum())
    return out


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
