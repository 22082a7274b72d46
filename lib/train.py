"""A small, generic fit loop (notebook 01): seeded, progress bar, early stopping on validation NDCG@10.

Any model with RecBole's contract trains here: ``calculate_loss(batch)`` on batches of whole-sequence
windows ``{"item_seq": (B, L), "target_seq": (B, L)}`` and ``full_sort_predict({"item_seq": (B, L)})``.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from lib import data, metrics, utils
from lib.utils import set_seed


@dataclass
class FitResult:
    best_epoch: int                       # 1-based epoch with the best validation NDCG@10
    best_valid: dict                      # validation metrics (overall) at that epoch
    history: list = field(default_factory=list)  # one dict per epoch: epoch, loss, valid metrics, seconds
    seconds: float = 0.0                  # wall time of the whole fit
    seconds_to_best: float = 0.0          # wall time until the end of the best epoch (its evaluation included)

    def summary(self) -> dict:
        """The line a results file keeps of a fit: best epoch, epochs run, seconds, best validation NDCG@10."""
        return {"best_epoch": self.best_epoch, "epochs_run": len(self.history), "seconds": self.seconds,
                "valid_NDCG@10": self.best_valid["NDCG@10"]}


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
                   mask: bool = True, ranks: bool = True) -> dict:
    """metrics.evaluate of a sequential model; with per-user "ranks" (for metrics.compare) by default."""
    return metrics.evaluate(sequence_scorer(model, split, max_len, device), split, stage, groups=groups, mask=mask,
                            ranks=ranks)


def lr_factor(step: int, warmup_steps: int, decay_steps: int | None, min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimiser step `step` (0-based).

    Linear warm-up from 1/warmup_steps to 1 over the first warmup_steps steps, then (decay_steps given) a
    half-cosine from 1 down to min_ratio at step decay_steps, held there after; decay_steps None = constant."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay_steps is None:
        return 1.0
    u = min(1.0, (step - warmup_steps) / max(1, decay_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * u))


def fit(model, split, *, max_len: int, epochs: int = 200, batch_size: int = 128, lr: float = 1e-3,
        weight_decay: float = 0.0, patience: int = 10, seed: int = 0, device="cpu", progress: bool = True,
        batches=None, on_epoch=None, warmup_epochs: float = 0.0, decay_epochs: float | None = None,
        min_lr_ratio: float = 0.0, max_batches: int | None = None, max_history: int | None = None) -> FitResult:
    """Train with AdamW (Adam when weight_decay = 0); after each epoch evaluate NDCG@10 on validation; stop
    after `patience` epochs without improvement, or when the learning-rate schedule has ended (decay_epochs
    reached: the model has converged by construction), and load the best weights back into `model`.

    Learning rate (per optimiser step): linear warm-up over `warmup_epochs`, then a cosine decay to
    `min_lr_ratio * lr` at `decay_epochs` (None: constant after warm-up), see `lr_factor`.
    max_batches: stop each epoch after that many batches (smoke runs).
    max_history: train on each user's last max_history training transitions only (inputs: the last max_history
    items before each target; ADARec's sparse regime). Evaluation reads the last max_len items of a history.

    batches: optional callable(epoch, generator) -> iterable of batch dicts, for models that need more
    than item_seq/target_seq; by default whole-sequence windows of the train split, reshuffled each epoch.
    on_epoch: optional callable(epoch, model) -> dict of extra numbers to log (e.g. a gate's mean).
    Raises FloatingPointError naming the epoch, step and loss when the loss is not finite.
    """
    set_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    seqs = split.train if not max_history else [s[-(max_history + 1):] for s in split.train]
    X, Y = data.training_windows(seqs, max_len)
    steps_per_epoch = max(1, math.ceil(len(X) / batch_size))     # of the default batches; a schedule's unit
    if max_batches:
        steps_per_epoch = min(steps_per_epoch, max_batches)
    warm = int(round(warmup_epochs * steps_per_epoch))
    decay = None if decay_epochs is None else int(round(decay_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_factor(k, warm, decay, min_lr_ratio))

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
            if max_batches and step >= max_batches:
                break
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            loss = model.calculate_loss(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, step {step}: training "
                                         f"diverged; lower lr (now {lr}) or check the inputs")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + loss.item(), n + 1
        train_s = time.perf_counter() - te
        valid = evaluate_model(model, split, max_len, "valid", groups=False, device=device, ranks=False)["overall"]
        row = {"epoch": epoch, "loss": total / max(n, 1), "train_seconds": train_s, "lr": opt.param_groups[0]["lr"],
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
        if decay is not None and sched.last_epoch >= decay and min_lr_ratio == 0:
            break                                                     # lr is 0 from here: nothing would change
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - t0
    model.eval()
    return result


def fit_cached(build, split, *, seed: int, key: dict, use_cache: bool = True, progress: bool = True,
               device="cpu", fit_fn=None, **fit_kwargs):
    """(model, FitResult, cached) for `build()` trained by `fit(model, split, seed=seed, **fit_kwargs)`, through
    data/cache: the state and the FitResult (history included) are stored under a hash of `key` (what names the
    model: its class, configuration and dataset), the seed and the fit arguments, so another notebook (or a
    re-run) asking for the same fit loads it in a second instead of training again. Notebook 01's seed-0 SASRec
    is the one notebook 06 reads.

    `build` is called right after set_seed(seed), as notebook 01 builds its models, so a cached and a fresh fit
    start from the same weights. The cache is written atomically; an unreadable one is retrained, not a crash.
    fit_fn: the training loop when it is not `fit` (LightGCN's, which scores by user id; CPU only), called the same
    way and returning a FitResult; a module-level function, since its name is part of the key."""
    data_md5 = hashlib.md5()
    for part in (*split.train, split.valid, split.test):
        data_md5.update(np.asarray(part, dtype=np.int64).tobytes() + b"|")
    fit_fn = None if fit_fn is fit else fit_fn            # passing `fit` itself keys like the default
    name = getattr(fit_fn, "__qualname__", "<no name>")
    if fit_fn is not None and ("<lambda>" in name or "<locals>" in name or name == "<no name>"):
        raise ValueError(f"fit_fn must be a module-level function, got {fit_fn!r}: its name is part of the cache key, "
                         "so a lambda, closure or functools.partial could read another one's fit; pass its arguments "
                         "to fit_cached as keywords instead")
    named = {} if fit_fn is None else {"fit_fn": f"{fit_fn.__module__}.{name}"}
    ident = json.dumps({"key": key, "seed": seed, "fit": fit_kwargs, "data": data_md5.hexdigest(), **named},
                       sort_keys=True, default=str)
    path = utils.CACHE / f"fit_{hashlib.md5(ident.encode()).hexdigest()[:16]}.pt"
    set_seed(seed)
    model = build()
    if use_cache and path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if blob.get("ident") != ident:
                raise ValueError("the stored key differs")
            model.load_state_dict(blob["state"])
            return model.to(device).eval(), FitResult(**blob["fit"]), True
        except Exception as e:                                   # a corrupt cache is recomputed, not a crash
            print(f"cache {path.name} unreadable ({type(e).__name__}: {e}); training again")
            set_seed(seed)
            model = build()
    result = (fit_fn or fit)(model, split, seed=seed, device=device, progress=progress, **fit_kwargs)
    if use_cache:
        utils.atomic_torch_save({"ident": ident, "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                                 "fit": dict(result.__dict__)}, path)
    return model, result, False
