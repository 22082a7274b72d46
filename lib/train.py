"""A small, generic fit loop (notebook 01): seeded, progress bar, early stopping on validation NDCG@10.

Any model with RecBole's contract trains here: ``calculate_loss(batch)`` on batches of whole-sequence
windows ``{"item_seq": (B, L), "target_seq": (B, L)}`` and ``full_sort_predict({"item_seq": (B, L)})``.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from lib import data, metrics
from lib.utils import set_seed


@dataclass
class FitResult:
    best_epoch: int                       # 1-based epoch with the best validation NDCG@10
    best_valid: dict                      # validation metrics (overall) at that epoch
    history: list = field(default_factory=list)  # one dict per epoch: epoch, loss, valid metrics, seconds
    seconds: float = 0.0                  # wall time of the whole fit
    seconds_to_best: float = 0.0          # wall time until the end of the best epoch (its evaluation included)


def sequence_scorer(model, split, max_len: int, device="cpu", batch_size: int = 512):
    """score_fn(users, stage) for lib.metrics: the model reads each user's history (last max_len items)."""
    def score_fn(users, stage):
        hist = split.history(stage)
        seq = data.pad_left([hist[u] for u in users.tolist()], max_len).to(device)
        model.eval()
        with torch.no_grad():
            return model.full_sort_predict({"item_seq": seq})
    return score_fn


def evaluate_model(model, split, max_len: int, stage: str = "test", groups: bool = True, device="cpu",
                   mask: bool = True) -> dict:
    return metrics.evaluate(sequence_scorer(model, split, max_len, device), split, stage, groups=groups, mask=mask)


def fit(model, split, *, max_len: int, epochs: int = 200, batch_size: int = 128, lr: float = 1e-3,
        weight_decay: float = 0.0, patience: int = 10, seed: int = 0, device="cpu", progress: bool = True,
        batches=None, on_epoch=None) -> FitResult:
    """Train with Adam; after each epoch evaluate NDCG@10 on validation; stop after `patience` epochs
    without improvement and load the best weights back into `model`.

    batches: optional callable(epoch, generator) -> iterable of batch dicts, for models that need more
    than item_seq/target_seq; by default whole-sequence windows of the train split, reshuffled each epoch.
    on_epoch: optional callable(epoch, model) -> dict of extra numbers to log (e.g. a gate's mean).
    Raises FloatingPointError naming the epoch, step and loss when the loss is not finite.
    """
    set_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    X, Y = data.training_windows(split.train, max_len)

    def default_batches(epoch, g):
        perm = torch.randperm(len(X), generator=g)
        for s in range(0, len(X), batch_size):
            idx = perm[s:s + batch_size]
            yield {"item_seq": X[idx], "target_seq": Y[idx]}

    make_batches = batches or default_batches
    best, best_state, result = -1.0, None, FitResult(0, {})
    t0, bad = time.perf_counter(), 0
    bar = tqdm(range(1, epochs + 1), desc="epochs", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        te, total, n = time.perf_counter(), 0.0, 0
        for step, batch in enumerate(make_batches(epoch, gen)):
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            loss = model.calculate_loss(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, step {step}: training "
                                         f"diverged; lower lr (now {lr}) or check the inputs")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + loss.item(), n + 1
        train_s = time.perf_counter() - te
        valid = evaluate_model(model, split, max_len, "valid", groups=False, device=device)["overall"]
        row = {"epoch": epoch, "loss": total / max(n, 1), "train_seconds": train_s,
               "seconds": time.perf_counter() - te, **{f"valid_{k}": v for k, v in valid.items()}}
        if on_epoch is not None:
            row.update(on_epoch(epoch, model) or {})
        result.history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.3f}", ndcg10=f"{valid['NDCG@10']:.4f}")
        if valid["NDCG@10"] > best:
            best, bad = valid["NDCG@10"], 0
            best_state = copy.deepcopy(model.state_dict())
            result.best_epoch, result.best_valid = epoch, valid
            result.seconds_to_best = time.perf_counter() - t0
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - t0
    model.eval()
    return result
