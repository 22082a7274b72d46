"""HDRec (Liu et al., WSDM 2026): hybrid dual-semantics modelling with two LoRA adapters on one frozen decoder
LLM. Built step by step in notebook 06.

* Prompts (section 3.2-3.3): Task 1 semantic alignment {Prompt_align, i_text, [ALIGN]} -> i (Eq. 1-2);
  Task 2 next item by text {Prompt_seq, i_text^(1) [SEQ], ..., i_text^(n) [SEQ]} (Eq. 3-4);
  Task 3 next item by ID: the same with ID tokens, whose input embeddings are Proj(SRS_EMB(i)) (Eq. 5, 7).
* One shared item projection layer (IPL) scores every item at every read position ([SEQ] or [ALIGN]).
* Cross-semantics alignment: D_KL(z_id || z_text) trains the text adapter (Eq. 9-10), D_KL(z_text || z_id)
  the ID adapter (Eq. 11-12); the other side is always detached (stop-gradient).
* Alternating training of dual LoRA (DLA, Algorithm 1) with T alternation steps, plus the ablations:
  joint training (w/o DLA), lambda = 0 (w/o KL), text only, ID only.
* Inference fusion (Eq. 13-18), text-dominant, and the two alternatives of Fig. 5 (ID-dominant,
  confidence-weighted); `tau` is the released code's temperature inside the sigmoid (tau = 1 is the paper).
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from lib import data, llm

PROMPT_ALIGN = "Provide the item's hidden state. Item description:"
PROMPT_SEQ = "Provide the next item's hidden state after each item. User's history:"
MODES = ("dla", "joint", "text", "id")          # HDRec, w/o DLA, text only, ID only (w/o KL = dla, lam 0)
FUSIONS = ("text", "id", "confidence")          # HDRec Eq. 13-18, Fig. 5 variants (2) and (3)


def item_texts(ds: data.Dataset) -> list[str]:
    """i_text per item slot: ' <title> (<year>), <genres>' (index 0, the padding item, is '')."""
    titles, genres = data.item_titles(ds), data.item_genres(ds)
    year_col = next((c for c in ("release_year", "year") if c in ds.item_features.columns), None)
    out = [""]
    for i in range(1, ds.n_items):
        y = str(ds.item_features.at[i, year_col]).strip() if year_col else ""
        y = f" ({int(float(y))})" if y.replace(".", "", 1).isdigit() else ""      # ML-100K has 'unkonwn' years
        g = f", {', '.join(genres[i])}" if genres[i] else ""
        out.append(f" {titles[i]}{y}{g}")
    return out


# --------------------------------------------------------------------------- prompts (section 3.2-3.3)
class Prompts:
    """Token-id builders for the three tasks. Every batch is right-padded (a causal decoder never lets a real
    token see the padding after it, so no attention mask is needed) and holds:
    input_ids (B, T), item_ids (B, T) (the item at each [ID] slot, else 0), read_pos (B, K) (positions of the
    [SEQ] / [ALIGN] tokens whose hidden states are read), targets (B, K) (item to predict, 0 = none)."""

    def __init__(self, tok, texts: list[str]):
        self.tok = tok
        ids = llm.add_special_tokens(tok)
        self.SEQ, self.ALIGN, self.ID = ids["[SEQ]"], ids["[ALIGN]"], ids["[ID]"]
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.item_tokens = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]   # i_text, tokenised once
        self.prompt_seq = tok(PROMPT_SEQ, add_special_tokens=False)["input_ids"]
        self.prompt_align = tok(PROMPT_ALIGN, add_special_tokens=False)["input_ids"]

    def _pack(self, rows):
        """rows: list of (ids, item_ids, read_pos, targets) -> right-padded tensors."""
        T = max(len(r[0]) for r in rows)
        K = max(len(r[2]) for r in rows)
        B = len(rows)
        input_ids = torch.full((B, T), self.pad, dtype=torch.long)
        item_ids = torch.zeros((B, T), dtype=torch.long)
        read_pos = torch.zeros((B, K), dtype=torch.long)
        targets = torch.zeros((B, K), dtype=torch.long)
        for b, (ids, items, pos, tgt) in enumerate(rows):
            input_ids[b, :len(ids)] = torch.tensor(ids)
            item_ids[b, :len(items)] = torch.tensor(items)
            read_pos[b, :len(pos)] = torch.tensor(pos)
            targets[b, :len(tgt)] = torch.tensor(tgt)
        return {"input_ids": input_ids, "item_ids": item_ids, "read_pos": read_pos, "targets": targets}

    def align(self, items) -> dict:
        """Task 1, Eq. 1: X_i = {Prompt_align, i_text, [ALIGN]}; the target at [ALIGN] is i itself."""
        rows = []
        for i in np.asarray(items).tolist():
            ids = self.prompt_align + self.item_tokens[i] + [self.ALIGN]
            rows.append((ids, [], [len(ids) - 1], [i]))
        return self._pack(rows)

    def _seq(self, windows, targets, by: str):
        rows = []
        for w, t in zip(windows, targets):
            ids, items, pos, tgt = list(self.prompt_seq), [0] * len(self.prompt_seq), [], []
            for i, nxt in zip(np.asarray(w).tolist(), np.asarray(t).tolist()):
                if i == 0:                                   # padding item: not in the prompt at all
                    continue
                piece = self.item_tokens[i] if by == "text" else [self.ID]
                ids += piece + [self.SEQ]
                items += ([0] * len(piece) if by == "text" else [i]) + [0]
                pos.append(len(ids) - 1)
                tgt.append(nxt)
            rows.append((ids, items, pos, tgt))
        return self._pack(rows)

    def seq_text(self, windows, targets) -> dict:
        """Task 2, Eq. 3: {Prompt_seq, i_text^(1) [SEQ], ..., i_text^(n) [SEQ]}; the target at the k-th [SEQ]
        is item k+1 (0 = none). windows, targets: (B, n) item ids (0 = padding, skipped)."""
        return self._seq(windows, targets, "text")

    def seq_id(self, windows, targets) -> dict:
        """Task 3: the same sequence with one [ID] slot per item; its embedding is Proj(SRS_EMB(i)) (Eq. 7)."""
        return self._seq(windows, targets, "id")

    def show(self, batch: dict, row: int = 0) -> str:
        """The prompt of one row as text, with [ID] slots written as <item>."""
        ids, items = batch["input_ids"][row].tolist(), batch["item_ids"][row].tolist()
        n = max(k for k, t in enumerate(ids) if t != self.pad) + 1 if any(t != self.pad for t in ids) else 0
        parts = []
        for t, i in zip(ids[:n], items[:n]):
            parts.append(f" <{i}>" if t == self.ID else self.tok.decode([t]))
        return "".join(parts)


# --------------------------------------------------------------------------- the model
class IPL(nn.Module):
    """Item projection layer, shared by both adapters (released code: H -> H/2 -> Dropout -> SiLU -> n_items)."""
    def __init__(self, H: int, n_items: int, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(H, H // 2), nn.Dropout(dropout), nn.SiLU(), nn.Linear(H // 2, n_items))

    def forward(self, h):                     # (..., H) -> (..., n_items) logits
        return self.net(h)


class HDRec(nn.Module):
    """llm: a PeftModel with adapters 'text' and 'id' (lib.llm.dual_lora) over a frozen decoder.
    E_srs: (n_items, d) pretrained SRS item embeddings (frozen). prompts: a `Prompts` for llm's tokenizer."""

    def __init__(self, llm_model, prompts: Prompts, n_items: int, E_srs: torch.Tensor, ipl_dropout: float = 0.1):
        super().__init__()
        self.llm, self.prompts, self.n_items = llm_model, prompts, n_items
        self.embed_tokens = llm.decoder(llm_model).embed_tokens          # frozen word embeddings (Eq. 6)
        V, H = self.embed_tokens.weight.shape
        assert (prompts.SEQ, prompts.ALIGN, prompts.ID) == (V, V + 1, V + 2), "special ids must follow the vocabulary"
        self.V, self.H = V, H
        # [SEQ] and [ALIGN]: new tokens with trainable embeddings, initialised at the mean word embedding
        self.e_special = nn.Parameter(self.embed_tokens.weight.detach().mean(0).repeat(2, 1).clone())  # (2, H)
        self.register_buffer("E_srs", E_srs.detach().float().clone())                                   # (n_items, d)
        d = E_srs.shape[1]
        self.proj = nn.Sequential(nn.Linear(d, H // 2), nn.SiLU(), nn.Linear(H // 2, H))   # Proj of Eq. 7
        self.ipl = IPL(H, n_items, ipl_dropout)
        self._trainable = None                    # adapters that train while another one computes (joint)

    def embed(self, input_ids: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, H) input embeddings: words (Eq. 6), [SEQ]/[ALIGN], ID tokens (Eq. 7)."""
        e = self.embed_tokens(input_ids.clamp(max=self.V - 1))                        # (B, T, H) e_text
        for k, tid in enumerate((self.prompts.SEQ, self.prompts.ALIGN)):
            e = torch.where((input_ids == tid).unsqueeze(-1), self.e_special[k], e)
        is_id = input_ids == self.prompts.ID
        if is_id.any():
            e_id = self.proj(self.E_srs[item_ids[is_id]])                            # (N_id, H), Eq. 7
            e = e.masked_scatter(is_id.unsqueeze(-1), e_id)
        return e

    def forward(self, batch: dict, adapter: str) -> torch.Tensor:
        """(B, K, n_items) IPL logits at every read position, computed through adapter `adapter` (Eq. 2, 8)."""
        llm.use_adapter(self.llm, adapter, self._trainable)   # which LoRA computes; `use` chose which train
        dev = self.e_special.device
        batch = {k: v.to(dev) for k, v in batch.items()}
        e = self.embed(batch["input_ids"], batch["item_ids"])                         # (B, T, H)
        h = llm.decoder(self.llm)(inputs_embeds=e, use_cache=False).last_hidden_state  # (B, T, H)
        idx = batch["read_pos"].unsqueeze(-1).expand(-1, -1, self.H)                  # (B, K, H)
        return self.ipl(h.gather(1, idx))                                             # (B, K, n_items)


def use(model: HDRec, adapter: str, trainable=None) -> None:
    """Phase switch: `adapter` computes; the LoRA of `trainable` (default: that adapter) gets gradients."""
    model._trainable = trainable
    llm.use_adapter(model.llm, adapter, trainable)


# --------------------------------------------------------------------------- losses
def ce_loss(z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 2 / 4 / 5: cross-entropy of the next item at every read position with a target (mean, not sum)."""
    targets = targets.to(z.device)
    keep = targets > 0
    return F.cross_entropy(z[keep], targets[keep])


def kl(z_p: torch.Tensor, z_q: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """D_KL(p || q) = sum_i p_i (log p_i - log q_i), p = softmax(z_p), q = softmax(z_q), averaged over the
    read positions with a target (Eq. 9 / 11). p is DETACHED: the gradient reaches only q's adapter
    (Algorithm 1, lines 13 and 21)."""
    keep = targets.to(z_q.device) > 0
    log_p = F.log_softmax(z_p.detach()[keep], -1)                                     # (N, n_items)
    log_q = F.log_softmax(z_q[keep], -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def text_objective(model, text_b, z_id_tilde, lam, align_b=None):
    """Eq. 10: L_Text = L_seq-text + lam * D_KL(z_id || z_text) (+ L_align of Eq. 2 when align_b is given).
    Returns (loss, z_text, logs)."""
    z_text = model(text_b, "text")
    logs = {"ce_text": ce_loss(z_text, text_b["targets"])}
    loss = logs["ce_text"]
    if z_id_tilde is not None:
        logs["kl_text"] = kl(z_id_tilde, z_text, text_b["targets"])                   # Eq. 9
        loss = loss + lam * logs["kl_text"]
    if align_b is not None:
        logs["align"] = ce_loss(model(align_b, "text"), align_b["targets"])           # Eq. 2
        loss = loss + logs["align"]
    return loss, z_text, logs


def id_objective(model, id_b, z_text_tilde, lam):
    """Eq. 12: L_ID = L_seq-id + lam * D_KL(z_text || z_id). Returns (loss, z_id, logs)."""
    z_id = model(id_b, "id")
    logs = {"ce_id": ce_loss(z_id, id_b["targets"])}
    loss = logs["ce_id"]
    if z_text_tilde is not None:
        logs["kl_id"] = kl(z_text_tilde, z_id, id_b["targets"])                       # Eq. 11
        loss = loss + lam * logs["kl_id"]
    return loss, z_id, logs


def _update(opt, loss):
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()}: training diverged; lower the learning rate")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


# --------------------------------------------------------------------------- training steps
def dla_step(model, opt, text_b, id_b, lam: float, T: int = 2, align_b=None) -> dict:
    """Algorithm 1 on one batch: T alternation steps; the text adapter updates when t > 1, the ID adapter
    when t < T, each toward the other's detached distribution. The ID forward at t = T would feed nothing
    (its detached copy is never read again), so it is skipped."""
    if T < 2:
        raise ValueError(f"DLA needs T >= 2 alternation steps (with T = 1 nothing updates), got {T}")
    logs, z_id_tilde = [], None
    for t in range(1, T + 1):
        use(model, "text")                                              # fix psi_id, activate phi_text
        if t > 1:
            loss, z_text, lg = text_objective(model, text_b, z_id_tilde, lam, align_b)
            _update(opt, loss)                                          # update phi with grad of L_Text
            logs.append(lg)
        else:
            with torch.no_grad():
                z_text = model(text_b, "text")
        z_text_tilde = z_text.detach()                                  # gradient isolation (line 13)
        if t < T:
            use(model, "id")                                            # fix phi_text, activate psi_id
            loss, z_id, lg = id_objective(model, id_b, z_text_tilde, lam)
            _update(opt, loss)                                          # update psi with grad of L_ID
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
        use(model, "id", trainable=("text", "id"))
        with torch.no_grad():
            z_id_now = model(ib, "id")
        use(model, "text", trainable=("text", "id"))
        loss_t, z_text, lg_t = text_objective(model, tb, z_id_now, lam, ab)
        use(model, "id", trainable=("text", "id"))
        loss_i, _, lg_i = id_objective(model, ib, z_text.detach(), lam)
        _update(opt, loss_t + loss_i)
        logs += [lg_t, lg_i]
    return _mean_logs(logs)


def single_step(model, opt, batch, adapter: str, align_b=None) -> dict:
    """Only one semantics (HDRec_base with text; or ID only): cross-entropy through one adapter, no KL."""
    use(model, adapter)
    if adapter == "text":
        loss, _, lg = text_objective(model, batch, None, 0.0, align_b)
    else:
        loss, _, lg = id_objective(model, batch, None, 0.0)
    _update(opt, loss)
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
          lr_head=1e-3, progress: bool = True, desc: str | None = None, joint_updates: int = 1) -> list[dict]:
    """Run `steps` steps of `mode` ('dla', 'joint', 'text', 'id') over `batches(step)` -> (text_b, id_b, align_b).
    Returns one log dict per step (ce_text, kl_text, ce_id, kl_id, align as they apply). Cosine learning-rate
    decay as in the paper (Table 2)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    opt = opt or optimizer(model, lr_lora, lr_head)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    model.train()
    history = []
    for step in tqdm(range(steps), desc=desc or mode, disable=not progress, leave=False):
        text_b, id_b, align_b = batches(step)
        if mode == "dla":
            lg = dla_step(model, opt, text_b, id_b, lam, T, align_b)
        elif mode == "joint":
            lg = joint_step(model, opt, text_b, id_b, lam, align_b, updates=joint_updates)
        elif mode == "text":
            lg = single_step(model, opt, text_b, "text", align_b)
        else:
            lg = single_step(model, opt, id_b, "id")
        sched.step()
        history.append({"step": step + 1, **lg})
    model.eval()
    return history


# --------------------------------------------------------------------------- inference fusion (section 3.5)
def calibrate(z: torch.Tensor, tau: float = 1.0, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 13-16 and the product of Eq. 17 without alpha: (z - m + eps) * sigmoid((z - mu) / tau).
    z: (..., n_items) logits; mu, m: mean and min over items (padding excluded by the caller)."""
    mu = z.mean(-1, keepdim=True)                                    # Eq. 13
    S = torch.sigmoid((z - mu) / tau)                                # Eq. 14 (tau = 1 in the paper)
    m = z.min(-1, keepdim=True).values                               # Eq. 15
    z_adj = z - m + eps                                              # Eq. 16
    return z_adj * S                                                 # Eq. 17 / alpha


def fuse(z_text: torch.Tensor, z_id: torch.Tensor, alpha: float, how: str = "text", tau: float = 1.0,
         eps: float = 1e-8) -> torch.Tensor:
    """Final scores (..., n_items). how='text' (HDRec, Eq. 18): z_text + alpha * C(z_id);
    'id' (Fig. 5 variant 2, ID-dominant): z_id + alpha * C(z_text);
    'confidence' (variant 3): C(z_text) + alpha * C(z_id), with C = calibrate."""
    if how == "text":
        E = alpha * calibrate(z_id, tau, eps)                        # Eq. 17
        return z_text + E                                            # Eq. 18
    if how == "id":
        return z_id + alpha * calibrate(z_text, tau, eps)
    if how == "confidence":
        return calibrate(z_text, tau, eps) + alpha * calibrate(z_id, tau, eps)
    raise ValueError(f"unknown fusion {how!r}; valid: {', '.join(FUSIONS)}")


# --------------------------------------------------------------------------- evaluation helpers
def subset_split(split: data.Split, users) -> data.Split:
    """The same leave-one-out split restricted to `users` (same n_items), so lib.metrics runs unchanged."""
    users = np.asarray(users)
    return data.Split(train=[split.train[u] for u in users], valid=split.valid[users], test=split.test[users],
                      n_items=split.n_items)


@torch.no_grad()
def eval_logits(model, sub: data.Split, L: int, adapters=("text", "id"), batch_size: int = 8,
                progress: bool = True) -> dict:
    """{adapter: {"valid": (U, n_items), "test": (U, n_items)}} IPL logits (padding item set to the row
    minimum, it is masked anyway). One forward per user over the last L+1 items of train + valid: the
    [SEQ] after the last train item predicts the validation item (it sees L items), the [SEQ] after the
    validation item predicts the test item (causality keeps the two apart)."""
    hist = sub.history("test")
    model.eval()
    out = {}
    for a in adapters:
        zv, zt = [], []
        for s in tqdm(range(0, sub.n_users, batch_size), desc=f"eval {a}", disable=not progress, leave=False):
            w = [h[-(L + 1):] for h in hist[s:s + batch_size]]
            tg = [np.zeros(len(x), dtype=np.int64) for x in w]
            b = model.prompts.seq_text(w, tg) if a == "text" else model.prompts.seq_id(w, tg)
            z = model(b, a)                                                      # (B, K, n_items)
            n = torch.tensor([len(x) for x in w], device=z.device)
            rows = torch.arange(len(w), device=z.device)
            zv.append(z[rows, n - 2])
            zt.append(z[rows, n - 1])
        out[a] = {"valid": torch.cat(zv).cpu(), "test": torch.cat(zt).cpu()}
        for st in out[a].values():
            st[:, 0] = st[:, 1:].min(-1).values
    return out


def logit_scorer(scores: dict):
    """score_fn for lib.metrics from precomputed {"valid": (U, n_items), "test": (U, n_items)} scores."""
    def score_fn(users, stage):
        return scores[stage][users]
    return score_fn


def training_batches(split: data.Split, prompts: Prompts, users, L: int, batch_size: int, n_align: int,
                     seed: int):
    """batches(step) -> (text_b, id_b, align_b): `batch_size` users drawn without replacement per pass over
    `users` (seeded); each gives its last L+1 training items (inputs = first L, targets = next L). Both
    prompts see the same windows; align_b holds n_align of the batch's target items (Task 1), or None."""
    users = np.asarray(users)
    rng = np.random.default_rng(seed)
    order: list[int] = []

    def batches(step):
        nonlocal order
        if len(order) < batch_size:
            order = order + rng.permutation(users).tolist()
        pick, order = order[:batch_size], order[batch_size:]
        seqs = [split.train[u][-(L + 1):] for u in pick]
        w, t = [s[:-1] for s in seqs], [s[1:] for s in seqs]
        text_b, id_b = prompts.seq_text(w, t), prompts.seq_id(w, t)
        align_b = None
        if n_align:
            pool = np.unique(np.concatenate(t))
            align_b = prompts.align(rng.choice(pool, size=min(n_align, len(pool)), replace=False))
        return text_b, id_b, align_b
    return batches
