"""HDRec's training steps and evaluation (notebook 06): the two objectives (Eq. 10, 12), Algorithm 1 (DLA) and its
ablations as optimizer steps over `lib.models.hdrec.HDRec`, run by `lib.train.loop`, and the logits of evaluation
users (scored with `lib.train.precomputed_scorer`).

Why these are not `calculate_loss`: one DLA step makes T - 1 updates of each adapter, each toward the other's
detached distribution computed in between, so it is a sequence of (phase, loss, update) and not one scalar. The
model offers the contract for one phase (`HDRec.calculate_loss`); the steps here compose phases.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from lib import data
from lib.models.hdrec import ce_loss, kl
from lib.train import loop, update

MODES = ("dla", "joint", "text", "id")          # HDRec, w/o DLA, text only, ID only (w/o KL = dla, lam 0)


def text_objective(model, text_b, z_id_tilde, lam, align_b=None):
    """Eq. 10: L_Text = L_seq-text + lam * D_KL(z_id || z_text) (+ L_align of Eq. 2 when align_b is given).
    Returns (loss, z_text, logs)."""
    _expect(model, "text")
    z_text = model(text_b)
    logs = {"ce_text": ce_loss(z_text, text_b["targets"])}
    loss = logs["ce_text"]
    if z_id_tilde is not None:
        logs["kl_text"] = kl(z_id_tilde, z_text, text_b["targets"])                   # Eq. 9
        loss = loss + lam * logs["kl_text"]
    if align_b is not None:
        logs["align"] = ce_loss(model(align_b), align_b["targets"])                    # Eq. 2
        loss = loss + logs["align"]
    return loss, z_text, logs


def id_objective(model, id_b, z_text_tilde, lam):
    """Eq. 12: L_ID = L_seq-id + lam * D_KL(z_text || z_id). Returns (loss, z_id, logs)."""
    _expect(model, "id")
    z_id = model(id_b)
    logs = {"ce_id": ce_loss(z_id, id_b["targets"])}
    loss = logs["ce_id"]
    if z_text_tilde is not None:
        logs["kl_id"] = kl(z_text_tilde, z_id, id_b["targets"])                       # Eq. 11
        loss = loss + lam * logs["kl_id"]
    return loss, z_id, logs


def _expect(model, adapter: str) -> None:
    if model.phase[0] != adapter:
        raise RuntimeError(f"this objective computes through the {adapter!r} adapter but the phase is "
                           f"{model.phase}: call model.set_phase({adapter!r}) first")


# --------------------------------------------------------------------------- training steps
def dla_step(model, opt, text_b, id_b, lam: float, T: int = 2, align_b=None) -> dict:
    """Algorithm 1 on one batch: T alternation steps; the text adapter updates when t > 1, the ID adapter
    when t < T, each toward the other's detached distribution. The ID forward at t = T would feed nothing
    (its detached copy is never read again), so it is skipped."""
    if T < 2:
        raise ValueError(f"DLA needs T >= 2 alternation steps (with T = 1 nothing updates), got {T}")
    logs, z_id_tilde = [], None
    for t in range(1, T + 1):
        model.set_phase("text")                                         # fix psi_id, activate phi_text
        if t > 1:
            loss, z_text, lg = text_objective(model, text_b, z_id_tilde, lam, align_b)
            update(opt, loss)                                           # update phi with grad of L_Text
            logs.append(lg)
        else:
            with torch.no_grad():
                z_text = model(text_b)
        z_text_tilde = z_text.detach()                                  # gradient isolation (line 13)
        if t < T:
            model.set_phase("id")                                       # fix phi_text, activate psi_id
            loss, z_id, lg = id_objective(model, id_b, z_text_tilde, lam)
            update(opt, loss)                                           # update psi with grad of L_ID
            logs.append(lg)
            z_id_tilde = z_id.detach()                                  # gradient isolation (line 21)
    return _mean_logs(logs)


def _chunks(batch: dict | None, n: int, strict: bool = True) -> list:
    """Split a batch (dict of tensors with the rows along dim 0) into n row chunks; None stays None. With too
    few rows: an error when strict, else the whole batch goes with the first chunk."""
    if batch is None:
        return [None] * n
    B = len(next(iter(batch.values())))
    if n > B:
        if not strict:
            return [batch] + [None] * (n - 1)
        raise ValueError(f"cannot split a batch of {B} users into {n} updates: use joint_updates <= batch_size")
    parts = [torch.arange(B).tensor_split(n)[k] for k in range(n)]
    return [{k: v[idx] for k, v in batch.items()} for idx in parts]


def joint_step(model, opt, text_b, id_b, lam: float, align_b=None, updates: int = 1) -> dict:
    """HDRec w/o DLA: both adapters compute and train at once; one backward of L_Text + L_ID, so gradients of
    both losses accumulate together in the shared IPL and [SEQ] embedding (Fig. 3a).

    updates > 1 splits the batch into that many row chunks with one joint update each: with updates = T = 2 the
    shared head (IPL, projector, [SEQ]/[ALIGN]) gets as many optimizer steps per batch as under DLA (one per
    phase), from the same data, so the comparison with DLA is not also a comparison of head-update counts."""
    logs = []
    for tb, ib, ab in zip(_chunks(text_b, updates), _chunks(id_b, updates), _chunks(align_b, updates, strict=False)):
        model.set_phase("id", trainable=("text", "id"))
        with torch.no_grad():
            z_id_now = model(ib)
        model.set_phase("text", trainable=("text", "id"))
        loss_t, z_text, lg_t = text_objective(model, tb, z_id_now, lam, ab)
        model.set_phase("id", trainable=("text", "id"))
        loss_i, _, lg_i = id_objective(model, ib, z_text.detach(), lam)
        update(opt, loss_t + loss_i)
        logs += [lg_t, lg_i]
    return _mean_logs(logs)


def single_step(model, opt, batch, adapter: str, align_b=None) -> dict:
    """Only one semantics (HDRec_base with text; or ID only): cross-entropy through one adapter, no KL."""
    model.set_phase(adapter)
    if adapter == "text":
        loss, _, lg = text_objective(model, batch, None, 0.0, align_b)
    else:
        loss, _, lg = id_objective(model, batch, None, 0.0)
    update(opt, loss)
    return _mean_logs([lg])


def _mean_logs(logs: list[dict]) -> dict:
    keys = {k for lg in logs for k in lg}
    return {k: float(np.mean([lg[k].item() for lg in logs if k in lg])) for k in sorted(keys)}


def optimizer(model, lr_lora: float, lr_head: float, weight_decay: float = 0.0):
    """AdamW over both adapters (lr_lora) and the new parts: IPL, projector, [SEQ]/[ALIGN] (lr_head).
    Parameters without a gradient in a phase are skipped by AdamW (zero_grad(set_to_none=True))."""
    lora = [p for n, p in model.llm.named_parameters() if "lora_" in n]
    head = list(model.ipl.parameters()) + list(model.proj.parameters()) + [model.e_special]
    return torch.optim.AdamW([{"params": lora, "lr": lr_lora}, {"params": head, "lr": lr_head}],
                             weight_decay=weight_decay)


def train(model, batches, mode: str, steps: int, lam: float = 0.5, T: int = 2, opt=None, lr_lora=1e-3,
          lr_head=1e-3, progress: bool = True, desc: str | None = None, joint_updates: int = 1,
          on_step=None) -> list[dict]:
    """Run `steps` steps of `mode` ('dla', 'joint', 'text', 'id') over `batches(step)` -> (text_b, id_b, align_b),
    one batch per step, through `lib.train.loop` (no validation: every step is kept). Returns one log dict per step
    (step, ce_text, kl_text, ce_id, kl_id, align as they apply, train_seconds, seconds). Cosine learning-rate decay as in the paper
    (Table 2). A loss that is not finite stops training with the step named. on_step(step) -> {name: number} is
    logged after each step (e.g. a validation score every few steps; the model is left in training mode after it)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    opt = opt or optimizer(model, lr_lora, lr_head)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))

    def step(batch):
        text_b, id_b, align_b = batch
        if mode == "dla":
            lg = dla_step(model, opt, text_b, id_b, lam, T, align_b)
        elif mode == "joint":
            lg = joint_step(model, opt, text_b, id_b, lam, align_b, updates=joint_updates)
        elif mode == "text":
            lg = single_step(model, opt, text_b, "text", align_b)
        else:
            lg = single_step(model, opt, id_b, "id")
        sched.step()
        return lg

    return loop(model, lambda n: [batches(n - 1)], step, epochs=steps, unit="step", desc=desc or mode,
                progress=progress, on_epoch=on_step).history


@torch.no_grad()
def read_state_sample(model, batches, n_batches: int = 4) -> torch.Tensor:
    """(N, H) hidden states at the read positions with a target, through both adapters, of the first n_batches
    training batches (text and ID prompts; no labels are read): the sample for `HDRec.standardize_ipl_input`."""
    model.eval()
    out = []
    for step in range(n_batches):
        text_b, id_b, _ = batches(step)
        for phase, b in (("text", text_b), ("id", id_b)):
            model.set_phase(phase)
            out.append(model.read_states(b)[b["targets"] > 0].cpu())
    return torch.cat(out)


@torch.no_grad()
def probe_sample(model, split: data.Split, sas, users, L: int, max_len: int, batch_size: int = 8,
                 adapters=("text", "id"), progress: bool = True, with_rows: bool = False) -> tuple:
    """(h, s): LLM read states (N, H) and SASRec's user states (N, d) at the same positions of the users' last
    training windows (the windows `training_batches` draws): the state after window item k, through each of
    `adapters`, paired with SASRec's state after the same item when it reads the user's training history up to
    there. Rows: every state through the first adapter, then the same positions through the next. The sample for
    `HDRec.probe_ipl` (training data only). with_rows: also (user, adapter) of every row, for a hold-out by user and
    an R^2 per adapter."""
    model.eval()
    sas.eval()
    hs, ss, who = {a: [] for a in adapters}, [], []
    users = np.asarray(users)
    for start in tqdm(range(0, len(users), batch_size), desc="probe sample", disable=not progress, leave=False):
        pick = users[start:start + batch_size].tolist()
        seqs = [split.train[u][-(L + 1):] for u in pick]
        w, t = [x[:-1] for x in seqs], [x[1:] for x in seqs]
        n = [len(x) for x in w]
        who += [u for u, k in zip(pick, n) for _ in range(k)]
        hist = data.pad_left([split.train[u][:-1] for u in pick], max_len).to(next(sas.parameters()).device)
        enc = sas.encode(hist)                                                       # (B, max_len, d)
        ss.append(torch.cat([enc[b, max_len - k:] for b, k in enumerate(n)]).cpu())  # (sum n, d), window order
        for a in adapters:
            model.set_phase(a)
            b = model.prompts.seq_text(w, t) if a == "text" else model.prompts.seq_id(w, t)
            hs[a].append(model.read_states(b)[b["targets"] > 0].cpu())               # (sum n, H), same order
    s = torch.cat(ss)
    h = torch.cat([torch.cat(hs[a]) for a in adapters])
    if not with_rows:
        return h, s.repeat(len(adapters), 1)
    rows = {"user": np.tile(who, len(adapters)), "adapter": np.repeat(list(adapters), len(who))}
    return h, s.repeat(len(adapters), 1), rows


# --------------------------------------------------------------------------- evaluation helpers
STAGES = ("valid", "test")


def eval_windows(sub: data.Split, L: int, stages=STAGES, test_at_trained_position: bool = False) -> list:
    """The prompts `eval_logits` runs: a list of (window, reads), window the items of one prompt, reads a list of
    (stage, row, back): the [SEQ] `back` positions from the end (1: after the window's last item) scores `row` of
    `stage`. Test rows are `sub`'s test rows (a user on leave-one-out, an event on a K-event split, in
    `sub.rows_user("test")`'s order), each read after the last L+1 items of its own prefix (`sub.history("test")`:
    train + validation + the user's earlier test events). A user's validation row is read one [SEQ] earlier in the
    same prompt as its first test row (after its last training item, having seen its last L training items), or,
    without test rows (or with test_at_trained_position), after its own window of its last L training items: the
    same states by causality. test_at_trained_position: each test row is read after the last L items of its prefix
    instead (the L-th [SEQ], a position training windows have)."""
    stages = tuple(stages)
    if not stages or any(st not in STAGES for st in stages) or len(set(stages)) != len(stages):
        raise ValueError(f"stages must be one or both of {STAGES}, got {stages!r}")
    jobs, covered = [], set()
    if "test" in stages:
        share = "valid" in stages and not test_at_trained_position
        who = sub.rows_user("test")
        for e, (h, u) in enumerate(zip(sub.history("test"), who.tolist())):
            reads = [("test", e, 1)]
            if share and u not in covered:                   # the user's first test row: its validation read too
                reads.append(("valid", u, 2))
                covered.add(u)
            jobs.append((h[-L:] if test_at_trained_position else h[-(L + 1):], reads))
    if "valid" in stages:
        jobs += [(t[-L:], [("valid", u, 1)]) for u, t in enumerate(sub.train) if u not in covered]
    return jobs


@torch.no_grad()
def eval_logits(model, sub: data.Split, L: int, adapters=("text", "id"), batch_size: int = 8,
                progress: bool = True, test_at_trained_position: bool = False, stages=STAGES) -> dict:
    """{adapter: {stage: (rows, n_items)}} IPL logits of each of `stages` (padding item set to the row minimum, it
    is masked anyway): "valid" one row per user, "test" one row per test row of `sub`: per user on leave-one-out,
    per test EVENT on a K-event split (`data.last_k_events`), in `sub.rows_user("test")`'s order, so
    `train.precomputed_scorer` and `lib.metrics` read them as any scorer's.

    Each test row is predicted from its own prefix: one forward over the last L+1 items of its history, the [SEQ]
    after the last of them predicts it (the (L+1)-th [SEQ], a position training windows of L items never have;
    test_at_trained_position=True reads it at the L-th, from the last L items). A user's validation item is read in
    the forward of its first test row, at the [SEQ] after its last training item (it sees L items; causality keeps
    the two reads apart), so validation costs no forward of its own; stages=("valid",) (validation-only use:
    choosing alpha, a validation curve) runs one forward per user over its last L training items, the same states.
    `eval_windows` lists the prompts. Prompts run in order of length (less padding: ~19 % fewer tokens for whole
    titles at batch 32); the rows come back in the split's order."""
    jobs = eval_windows(sub, L, stages, test_at_trained_position)
    n_rows = {"valid": sub.n_users, "test": sub.n_events}
    model.eval()
    out = {}
    for a in adapters:
        model.set_phase(a)
        # prompts in order of length, so a batch pads little (right padding: the causal states at real positions do
        # not depend on it); every read goes to its own row
        n_tok = [sum(len(model.prompts.item_tokens[i]) + 1 for i in w) if a == "text" else 2 * len(w) for w, _ in jobs]
        order = np.argsort(n_tok, kind="stable")
        got = {st: torch.empty(n_rows[st], model.n_items) for st in stages}
        for s in tqdm(range(0, len(jobs), batch_size), desc=f"eval {a}", disable=not progress, leave=False):
            pick = [jobs[j] for j in order[s:s + batch_size]]
            w = [x for x, _ in pick]
            tg = [np.zeros(len(x), dtype=np.int64) for x in w]
            b = model.prompts.seq_text(w, tg) if a == "text" else model.prompts.seq_id(w, tg)
            z = model(b)                                                         # (B, K, n_items)
            reads = [(r, len(w[r]) - back, st, row) for r, (_, rd) in enumerate(pick) for st, row, back in rd]
            zr = z[torch.tensor([x[0] for x in reads], device=z.device),
                   torch.tensor([x[1] for x in reads], device=z.device)].float().cpu()   # (reads, n_items)
            for st in stages:
                k = [i for i, x in enumerate(reads) if x[2] == st]
                if k:
                    got[st][torch.tensor([reads[i][3] for i in k])] = zr[k]
        for st in got.values():
            st[:, 0] = st[:, 1:].min(-1).values
        out[a] = got
    return out
