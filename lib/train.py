"""The suite's one training loop (notebook 01), its fit for sequential models, and scorers for lib.metrics.

* ``loop``: epochs of batches, validation NDCG@10 with early stopping, the best weights restored, a loss that is not
  finite refused with its epoch and batch, a progress bar, a ``FitResult``. Every model trains through it: SASRec-style
  models through ``fit``, LightGCN (``lightgcn.fit``), DeftRec's denoiser and regressor (``deftrec_train``) and HDRec's
  steps (``hdrec_train.train``) hand it their batches, their step and their validation.
* ``fit``: any model with RecBole's contract, ``calculate_loss(batch)`` on batches of whole-sequence windows
  ``{"item_seq": (B, L), "target_seq": (B, L)}`` and ``full_sort_predict({"item_seq": (B, L)})``, with the suite's
  SASRec schedule by default (``sasrec.TRAIN_DEFAULTS``); ``fit_cached`` keeps fits under data/cache.
* ``sequence_scorer`` / ``precomputed_scorer``: ``score_fn(users, stage)`` for lib.metrics from a sequential model or
  from score matrices computed beforehand.
"""
from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from lib import data, metrics, utils
from lib.models.sasrec import TRAIN_DEFAULTS
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


def precomputed_scorer(scores: dict):
    """score_fn(users, stage) for lib.metrics from score matrices computed beforehand: {stage: (U, n_items)}, rows
    in user order (LLM logits, sampled-and-retrieved scores)."""
    return lambda users, stage: scores[stage][users]


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


class NonFiniteLoss(FloatingPointError):
    """`update` refused a loss that is not finite; `loop` names the epoch and batch where it happened."""


def update(opt, loss: torch.Tensor) -> float:
    """One optimiser step down `loss`; a loss that is not finite is refused before any weight changes. Returns the
    loss as a float. Steps that `loop` runs update through here."""
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"loss is {loss.item()}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def _mean_logs(logs: list[dict]) -> dict:
    """Each logged number averaged over the batches that logged it (summed in order, then divided)."""
    out = {}
    for k in dict.fromkeys(k for lg in logs for k in lg):
        vals = [lg[k] for lg in logs if k in lg]
        total = 0.0
        for v in vals:
            total += v
        out[k] = total / len(vals)
    return out


def loop(model, batches, step, *, epochs: int, validate=None, patience: int | None = None, eval_every: int = 1,
         on_epoch=None, stop=None, max_batches: int | None = None, unit: str = "epoch", desc: str | None = None,
         progress: bool = True) -> FitResult:
    """Train `model` for up to `epochs` epochs; returns a FitResult (one history row per epoch).

    batches(epoch) -> the epoch's batches (epoch counts from 1; built afresh each epoch, e.g. reshuffled);
    step(batch) -> {name: number}: trains on one batch, updating through `update`, and returns what to log; each
    number is averaged over the epoch. max_batches: stop each epoch after that many batches (smoke runs).
    validate() -> {metric: value} holding "NDCG@10": run in eval mode after every eval_every-th epoch and after the
    last. A better NDCG@10 than any before keeps a copy of the weights; `patience` validations in a row without one
    stop training (None: never). At the end the best weights are loaded back and the model is left in eval mode.
    on_epoch(epoch) -> {name: number}: more to log, after the validation (a learning rate, a gate's mean).
    stop() -> True ends training after the epoch (a learning-rate schedule that has reached zero).
    A loss that is not finite raises FloatingPointError naming the epoch and the batch. unit: what one pass is called
    in the rows and in that message ("epoch"; HDRec's one-batch passes are "step"s).
    Each row: {unit: n, logged means..., "train_seconds", valid_<metric>..., on_epoch's numbers, "seconds"}."""
    result, best, best_state, bad = FitResult(0, {}), -math.inf, None, 0
    t0 = time.perf_counter()
    bar = tqdm(range(1, epochs + 1), desc=desc or f"{unit}s", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        te, logs = time.perf_counter(), []
        for b, batch in enumerate(batches(epoch)):
            if max_batches and b >= max_batches:
                break
            try:
                logs.append(step(batch) or {})
            except NonFiniteLoss as e:
                raise FloatingPointError(f"{e} at {unit} {epoch}, batch {b}: training diverged; lower the learning "
                                         f"rate or check the inputs") from None
        row = {unit: epoch, **_mean_logs(logs), "train_seconds": time.perf_counter() - te}
        checked = validate is not None and (epoch % eval_every == 0 or epoch == epochs)
        if checked:
            model.eval()
            valid = validate()
            row.update({f"valid_{k}": v for k, v in valid.items()})
        if on_epoch is not None:
            row.update(on_epoch(epoch) or {})
        row["seconds"] = time.perf_counter() - te
        result.history.append(row)
        bar.set_postfix({k: f"{v:.4f}" for k, v in row.items() if k in ("loss", "valid_NDCG@10")})
        if checked:
            if valid["NDCG@10"] > best:
                best, bad, best_state = valid["NDCG@10"], 0, copy.deepcopy(model.state_dict())
                result.best_epoch, result.best_valid = epoch, valid
                result.seconds_to_best = time.perf_counter() - t0
            else:
                bad += 1
        if patience is not None and bad >= patience:
            break
        if stop is not None and stop():
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - t0
    model.eval()
    return result


def fit(model, split, *, max_len: int, epochs: int = TRAIN_DEFAULTS["epochs"],
        batch_size: int = TRAIN_DEFAULTS["batch_size"], lr: float = TRAIN_DEFAULTS["lr"],
        weight_decay: float = TRAIN_DEFAULTS["weight_decay"], patience: int = TRAIN_DEFAULTS["patience"],
        warmup_epochs: float = TRAIN_DEFAULTS["warmup_epochs"],
        decay_epochs: float | None = TRAIN_DEFAULTS["decay_epochs"], min_lr_ratio: float = 0.0, seed: int = 0,
        device="cpu", progress: bool = True, batches=None, on_epoch=None, max_batches: int | None = None,
        max_history: int | None = None) -> FitResult:
    """Train with AdamW (Adam when weight_decay = 0) through `loop`: NDCG@10 on validation after each epoch, stop
    after `patience` epochs without improvement or when the learning-rate schedule has ended (decay_epochs reached
    with min_lr_ratio 0: the weights cannot change any more), the best weights loaded back into `model`. The
    defaults are the suite's SASRec schedule (`lib.models.sasrec.TRAIN_DEFAULTS`, the one place that holds them).

    Learning rate (per optimiser step): linear warm-up over `warmup_epochs`, then a cosine decay to
    `min_lr_ratio * lr` at `decay_epochs` (None: constant after warm-up), see `lr_factor`.
    max_batches: stop each epoch after that many batches (smoke runs).
    max_history: train on each user's last max_history training transitions only (inputs: the last max_history
    items before each target; ADARec's sparse regime). Evaluation reads the last max_len items of a history.

    batches: optional callable(epoch, generator) -> iterable of batch dicts, for models that need more
    than item_seq/target_seq; by default whole-sequence windows of the train split, reshuffled each epoch.
    on_epoch: optional callable(epoch, model) -> dict of extra numbers to log (e.g. a gate's mean).
    Raises FloatingPointError naming the epoch and batch when the loss is not finite.
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

    def step(batch):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        loss = update(opt, model.calculate_loss(batch))
        sched.step()
        return {"loss": loss}

    def log(epoch):
        return {"lr": opt.param_groups[0]["lr"], **((on_epoch(epoch, model) or {}) if on_epoch is not None else {})}

    make_batches = batches or default_batches
    return loop(model, lambda epoch: make_batches(epoch, gen), step, epochs=epochs, patience=patience,
                validate=lambda: evaluate_model(model, split, max_len, "valid", groups=False, device=device,
                                                ranks=False)["overall"],
                on_epoch=log, stop=lambda: decay is not None and sched.last_epoch >= decay and min_lr_ratio == 0,
                max_batches=max_batches, desc="epochs", progress=progress)


def _function_and_arguments(fn):
    """(the function, the arguments bound to it): a functools.partial (`partial(train.fit, batches=...)`) is its
    function with the bound arguments, which belong in a cache key like the fit's own."""
    args = {}
    while isinstance(fn, functools.partial):
        args = {"args": list(fn.args), **fn.keywords, **args}
        fn = fn.func
    return fn, args


def fit_cached(build, split, *, seed: int, key: dict, use_cache: bool = True, progress: bool = True, fit_fn=None,
               **fit_kwargs):
    """(model, FitResult, cached) for `build()` trained by `fit_fn(model, split, seed=seed, **fit_kwargs)` (default
    `fit`), through data/cache (`utils.cached`): the state and the FitResult (history included) are stored under a
    hash of what made them, so another notebook (or a re-run) asking for the same fit loads it in a second instead of
    training again. Notebook 01's seed-0 SASRec is the one notebooks 03 and 06 read.

    What made a fit, all in its key (`utils.cache_file`): `key` (the model's class, configuration and dataset,
    {"model": "LightGCN", ...}), the seed, the fit's arguments, a hash of the split, the fit function's name, the code
    (the sources of the model's module and of the fit function's module, with every lib module they import:
    `utils.code_fingerprint`, so an edited `SASRec.forward` or `lr_factor` retrains) and the package versions.
    `device` is a fit argument like any other (only `fit` takes one) but not part of the key: a fit is the same fit
    wherever it ran; a cached model is moved there.

    `build` is called right after set_seed(seed), as notebook 01 builds its models, so a cached and a fresh fit
    start from the same weights. The cache is written atomically; an unreadable one is retrained, not a crash."""
    fit_fn = fit_fn or fit
    data_md5 = utils.digest(*(np.asarray(part, dtype=np.int64) for part in (*split.train, split.valid, split.test)))

    def built():
        set_seed(seed)
        return build()

    model = built()
    fn, fn_args = _function_and_arguments(fit_fn)
    config = {"key": key, "seed": seed, "fit": {k: v for k, v in fit_kwargs.items() if k != "device"},
              "data": data_md5, "fit_fn": f"{fn.__module__}.{fn.__qualname__}", "fit_fn_args": fn_args}
    path = utils.cache_file("fit", config, code=(type(model).__module__, fn.__module__))
    ident = path.name                          # stored beside the weights and compared on reading

    def load(p):
        blob = torch.load(p, map_location="cpu", weights_only=True)
        if blob.get("ident") != ident:
            raise ValueError("the stored key differs")
        model.load_state_dict(blob["state"])
        return model.to(fit_kwargs.get("device", "cpu")).eval(), FitResult(**blob["fit"])

    def compute():
        return model, fit_fn(model, split, seed=seed, progress=progress, **fit_kwargs)

    def save(value, tmp):
        trained, result = value
        torch.save({"ident": ident, "state": {k: v.detach().cpu() for k, v in trained.state_dict().items()},
                    "fit": dict(result.__dict__)}, tmp)

    (model, result), cached = utils.cached(path, compute, use=use_cache, load=load, save=save)
    return model, result, cached


SASREC_SMOKE = {"hidden": 16, "inner": 32, "max_len": 20}   # the smoke-run SASRec: evidence 01's model shrunk


def fit_sasrec_reference(ds, split, seed: int, *, device="cpu", use_cache: bool = True, progress: bool = True,
                         smoke: bool = False):
    """(model, FitResult, cached): evidence 01's SASRec (`sasrec.DEFAULTS`, the 30-epoch schedule
    `sasrec.TRAIN_DEFAULTS`) trained on `split` with `seed`: the reference every evidence notebook puts beside its
    claims, on its own split (a K-event split trains on less than leave-one-out). The cache key is evidence 01's own
    (the same key, fit arguments and code), so one fit per (dataset, split, seed) serves evidence 01 and every notebook
    that asks for it in the same run. smoke=True (a notebook's smoke run): the same model and schedule shrunk as the
    notebooks shrink theirs (hidden 16, 20 items, one epoch), never cached, so a smoke run trains it in seconds."""
    from lib.models.sasrec import DEFAULTS, SASRec

    cfg, sched = dict(DEFAULTS), dict(TRAIN_DEFAULTS)
    if smoke:
        cfg.update(SASREC_SMOKE)
        sched.update(epochs=1, decay_epochs=1, patience=1)
        use_cache = False
    return fit_cached(lambda: SASRec(ds.n_items, **cfg), split, seed=seed, use_cache=use_cache, progress=progress,
                      key={"model": "SASRec", "dataset": ds.name, **cfg}, device=device, max_len=cfg["max_len"],
                      **sched)
