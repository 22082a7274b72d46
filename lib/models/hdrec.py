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

This file holds the model, its losses and the fusion; prompts and batches live in `hdrec_prompts`, the training
steps (DLA and its ablations) and the evaluation loop in `hdrec_train`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lib import llm

IPL_INITS = ("none", "prior", "sasrec")          # how the shared IPL starts (warm_start; not in the paper)
FUSIONS = ("text", "id", "confidence")          # HDRec Eq. 13-18, Fig. 5 variants (2) and (3)
PHASES = ("text", "id")                         # the adapter that computes


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
    E_srs: (n_items, d) pretrained SRS item embeddings (frozen). prompts: a `hdrec_prompts.Prompts` for llm's
    tokenizer.

    The phase (`set_phase`) says which adapter computes and which adapters' LoRA matrices train; forward runs in
    the current phase. RecBole's contract holds for one phase: `calculate_loss` is that adapter's cross-entropy,
    `full_sort_predict` the (fused) scores after a user's last item. DLA composes phases (`hdrec_train`)."""

    def __init__(self, llm_model, prompts: "hdrec_prompts.Prompts", n_items: int, E_srs: torch.Tensor,
                 ipl_dropout: float = 0.1, ipl_init: str = "none", prior_counts=None):
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
        self.warm_start(ipl_init, prior_counts)
        self.phase = None
        self.set_phase("text")
        self.bf16 = False          # True: the decoder runs under bfloat16 autocast; the IPL and the losses stay float32

    @torch.no_grad()
    def warm_start(self, how: str, prior_counts=None) -> None:
        """Where the shared IPL starts (the paper does not say; ours, a deviation stated in notebook 06).

        'none': PyTorch's default initialisation. 'prior': the output bias at the log item prior (`log_prior`),
        so every adapter starts by ranking like Pop. 'sasrec': as 'prior', and the output layer's weight holds
        the SASRec item table E_srs in its first d columns and zeros elsewhere, so an item's logit starts as
        <E_srs[i], u> + log prior(i) with u the first d features of the IPL's hidden layer: the adapters then
        learn to write a SASRec-like user state, which the ID adapter partly reads already (Proj(E_srs) are its
        inputs). Random weights of the first layer keep u from being 0."""
        if how not in IPL_INITS:
            raise ValueError(f"unknown ipl_init {how!r}; valid: {', '.join(map(repr, IPL_INITS))}")
        if how == "none":
            return
        if prior_counts is None:
            raise ValueError(f"ipl_init={how!r} needs prior_counts (training interactions per item)")
        out = self.ipl.net[-1]
        if len(prior_counts) != out.out_features:
            raise ValueError(f"prior_counts has {len(prior_counts)} entries, the IPL scores {out.out_features} items")
        out.bias.copy_(log_prior(prior_counts))
        if how == "sasrec":
            d = self.E_srs.shape[1]
            if d > out.in_features:
                raise ValueError(f"ipl_init='sasrec' needs d <= {out.in_features} (the IPL's hidden width), got d={d}")
            out.weight.zero_()
            out.weight[:, :d] = self.E_srs

    def set_phase(self, adapter: str, trainable=None) -> None:
        """`adapter` computes from now on; the LoRA matrices of `trainable` (default: that adapter; a tuple for
        joint training) get gradients, every other LoRA matrix and the base model none."""
        if adapter not in PHASES:
            raise ValueError(f"unknown adapter {adapter!r}; valid: {', '.join(PHASES)}")
        trainable = (adapter,) if trainable is None else tuple([trainable] if isinstance(trainable, str) else trainable)
        if self.phase != (adapter, trainable):
            llm.use_adapter(self.llm, adapter, trainable)
            self.phase = (adapter, trainable)

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

    def forward(self, batch: dict) -> torch.Tensor:
        """(B, K, n_items) IPL logits at every read position, through the adapter of the current phase (Eq. 2, 8)."""
        return self.ipl(self.read_states(batch))                                      # (B, K, n_items)

    def read_states(self, batch: dict) -> torch.Tensor:
        """(B, K, H) last-layer hidden states at the read positions ([SEQ] or [ALIGN]), the IPL's input."""
        dev = self.e_special.device
        batch = {k: v.to(dev) for k, v in batch.items()}
        e = self.embed(batch["input_ids"], batch["item_ids"])                         # (B, T, H)
        h = llm.hidden_states(self.llm, e, self.bf16)                                  # (B, T, H) float32
        idx = batch["read_pos"].unsqueeze(-1).expand(-1, -1, self.H)                  # (B, K, H)
        return h.gather(1, idx)

    @torch.no_grad()
    def standardize_ipl_input(self, h: torch.Tensor, min_std: float = 1e-3) -> None:
        """Fold (h - mean) / std, per feature over a sample h (N, H) of read-position states, into the IPL's first
        layer: W <- W / std, b <- b - W (mean / std). A data-dependent initialisation (as in Salimans & Kingma's
        weight normalisation); the architecture stays the released code's.

        Why: a decoder's last hidden states share a large common part (SmolLM2's [SEQ] states: the mean carries
        ~98 % of the energy, 5 "massive" features ~70 % of it), so at a random start the IPL sees nearly the same
        input for every user and the few per-user percent barely move its output. Standardised, the per-user part
        is what the first layer sees from step 0."""
        h = h.reshape(-1, h.shape[-1]).float()
        mean, std = h.mean(0), h.std(0).clamp(min=min_std)
        lin = self.ipl.net[0]
        lin.weight.div_(std)
        lin.bias.sub_(lin.weight @ mean)

    @torch.no_grad()
    def probe_ipl(self, h: torch.Tensor, s: torch.Tensor, ridges=(1e-3, 1e-2, 1e-1, 1.0, 10.0), holdout: float = 0.2,
                  seed: int = 0, groups=None, kinds=None) -> dict:
        """Start the IPL as a linear probe: logit_i = <E_srs[i], A h + c> + bias_i, with A, c the ridge regression of
        SASRec's user state s (N, d) on the LLM read state h (N, H) at the same positions of training windows.

        The 2d first hidden units carry +(A h + c) and -(A h + c) and the output layer reads them with +E_srs and
        -E_srs: SiLU(x) - SiLU(-x) = x, so at the start (eval mode) the IPL is exactly that linear map, and every
        unit stays trainable. The ridge weight (relative to N) is chosen on a held-out fifth of the sample, which
        comes from training windows only: a fifth of the rows, or with groups (N,) (the user of each row) a fifth of
        the users, so that no user's windows sit on both sides. kinds (N,) (the adapter of each row, e.g. "text" /
        "id"): the held-out R^2 at the chosen ridge is also given per kind. Returns {"ridge", "r2_holdout",
        "r2_by_ridge", "holdout_by", "r2_holdout_by_kind"}. Needs ipl_init='sasrec' or 'prior' for the output bias
        (the log item prior); other hidden units keep their weights, their output columns are 0."""
        h, s = h.reshape(-1, h.shape[-1]).double(), s.reshape(-1, s.shape[-1]).double()
        if len(h) != len(s):
            raise ValueError(f"h has {len(h)} states, s {len(s)}: they must be the same positions")
        d, lin, out = s.shape[1], self.ipl.net[0], self.ipl.net[-1]
        if 2 * d > lin.out_features or d != self.E_srs.shape[1]:
            raise ValueError(f"the probe needs s of SASRec's width d={self.E_srs.shape[1]} and 2d <= "
                             f"{lin.out_features} (the IPL's hidden width); got d={d}")
        mean, std = h.mean(0), h.std(0).clamp(min=1e-3)
        Z, s_mean = (h - mean) / std, s.mean(0)
        S = s - s_mean
        eye = torch.eye(Z.shape[1], dtype=Z.dtype)

        def solve(Zf, Sf, r):
            return torch.linalg.solve(Zf.T @ Zf + r * len(Zf) * eye, Zf.T @ Sf)          # (H, d)

        gen = torch.Generator().manual_seed(seed)
        if groups is None:
            perm = torch.randperm(len(Z), generator=gen)
            fit_i, hold_i = perm[int(len(Z) * holdout):], perm[:int(len(Z) * holdout)]
        else:
            groups = torch.as_tensor(np.asarray(groups))
            if len(groups) != len(Z):
                raise ValueError(f"groups has {len(groups)} entries for {len(Z)} states")
            ug = groups.unique()
            held = ug[torch.randperm(len(ug), generator=gen)[:max(1, int(len(ug) * holdout))]]
            is_held = torch.isin(groups, held)
            fit_i, hold_i = (~is_held).nonzero().squeeze(1), is_held.nonzero().squeeze(1)

        def r2_of(B, rows):
            resid = S[rows] - Z[rows] @ B
            return float(1 - resid.pow(2).sum() / S[rows].pow(2).sum())

        r2, fits = {}, {}
        for r in ridges:
            fits[r] = solve(Z[fit_i], S[fit_i], r)
            r2[r] = r2_of(fits[r], hold_i)
        best = max(r2, key=r2.get)
        by_kind = {}
        if kinds is not None:
            kinds = np.asarray(kinds)
            for k in dict.fromkeys(kinds.tolist()):
                rows = hold_i[torch.from_numpy(kinds[hold_i.numpy()] == k)]
                by_kind[k] = r2_of(fits[best], rows) if len(rows) else None
        B = solve(Z, S, best)
        W = (B / std[:, None]).T                                                        # (d, H), on raw h
        b = s_mean - W @ mean
        lin.weight[:d], lin.bias[:d] = W.float(), b.float()
        lin.weight[d:2 * d], lin.bias[d:2 * d] = -W.float(), -b.float()
        out.weight.zero_()
        out.weight[:, :d], out.weight[:, d:2 * d] = self.E_srs, -self.E_srs
        return {"ridge": best, "r2_holdout": r2[best], "r2_by_ridge": r2,
                "holdout_by": "row" if groups is None else "user", "r2_holdout_by_kind": by_kind}

    def calculate_loss(self, batch: dict) -> torch.Tensor:
        """The current phase's cross-entropy at every read position with a target (Eq. 2 / 4 / 5)."""
        return ce_loss(self(batch), batch["targets"])

    @torch.no_grad()
    def full_sort_predict(self, batch: dict) -> torch.Tensor:
        """(B, n_items) scores after each user's last item. batch: {"text": prompts, "id": prompts} (either or
        both, the same users), optional "alpha" and "how" (fusion, default text-dominant with alpha 0.5) when both
        are given. The phase is restored afterwards."""
        before, z = self.phase, {}
        for a in PHASES:
            if a in batch:
                self.set_phase(a)
                out = self(batch[a])                                                  # (B, K, n_items)
                last = (batch[a]["read_pos"] > 0).sum(1) - 1                          # last real read position
                z[a] = out[torch.arange(len(out)), last.to(out.device)]
        self.set_phase(*before)
        if not z:
            raise ValueError("full_sort_predict needs a 'text' and/or an 'id' prompt batch")
        if len(z) == 1:
            return next(iter(z.values()))
        return fuse(z["text"], z["id"], batch.get("alpha", 0.5), batch.get("how", "text"))


def log_prior(counts) -> torch.Tensor:
    """(n_items,) log of the add-one smoothed share of each item among the training interactions.

    With it as the IPL's output bias (and the weights near 0 at the start), every adapter begins by ranking like
    Pop, and the training steps go into what the sequence adds to popularity; from a zero bias a few hundred
    steps spend themselves on learning the popularity of 1.7k items first. A classifier's bias set to the log of
    its class prior is a standard initialisation; HDRec's paper does not say how its IPL starts."""
    c = torch.as_tensor(counts, dtype=torch.float64).clamp(min=0) + 1.0
    return (c / c.sum()).log().float()


@torch.no_grad()
def redraw_lora(peft_model, seed: int) -> None:
    """Draw every LoRA matrix of every adapter afresh as peft draws it at creation, from `seed` alone: A
    Kaiming-uniform (bound 1 / sqrt(fan_in), as nn.init.kaiming_uniform_ with a = sqrt(5)), B = 0. So the adapted
    model computes what the base model computes, and a training run of another seed starts from other A matrices
    (evidence 06's seeds). The base model is not touched."""
    g = torch.Generator().manual_seed(int(seed))
    for name, p in sorted(peft_model.named_parameters(), key=lambda kv: kv[0]):
        if "lora_A" in name:
            bound = 1.0 / p.shape[1] ** 0.5                                           # (r, d_in): fan_in = d_in
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1).mul_(bound).to(p.device, p.dtype))
        elif "lora_B" in name:
            p.zero_()


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


def check_kl_answer(my_kl) -> str:
    """Lesson 06's exercise: `my_kl(z_other, z_self, targets)` must be the text phase's KL term of Eq. 9,
    D_KL(softmax(z_other) || softmax(z_self)) averaged over the read positions with a target, with z_other DETACHED.
    Raises AssertionError naming the mistake (direction, the missing stop-gradient, padding or a sum instead of a
    mean); returns a short confirmation when right."""
    g = torch.Generator().manual_seed(0)
    z_o = torch.randn(2, 3, 7, generator=g).mul_(2).requires_grad_(True)              # (B, K, n_items)
    z_s = torch.randn(2, 3, 7, generator=g).mul_(2).requires_grad_(True)
    targets = torch.tensor([[1, 2, 3], [4, 5, 0]])                                      # one padded position
    want = kl(z_o, z_s, targets)
    got = my_kl(z_o, z_s, targets)
    assert torch.is_tensor(got) and got.dim() == 0, f"return one scalar tensor, got {type(got).__name__} {getattr(got, 'shape', '')}"
    if not torch.allclose(got, want, atol=1e-5):
        if torch.allclose(got, kl(z_s, z_o, targets), atol=1e-5):
            raise AssertionError("the direction is reversed: Eq. 9 is D_KL(z_id || z_text), the OTHER adapter's "
                                 "distribution first (p), the adapter being trained second (q)")
        keep = targets > 0
        p, q = F.softmax(z_o.detach(), -1), F.log_softmax(z_s, -1)
        per_pos = (p * (p.log() - q)).sum(-1)                                           # (B, K)
        if torch.allclose(got, per_pos.mean(), atol=1e-5):
            raise AssertionError("the padded position (target 0) is counted: average over positions with a target")
        if torch.allclose(got, per_pos[keep].sum(), atol=1e-5):
            raise AssertionError("a sum over positions: Eq. 9 averages over the read positions (1 / |S_u|)")
        raise AssertionError(f"not D_KL(softmax(z_other) || softmax(z_self)): got {got.item():.4f}, want {want.item():.4f}")
    got.backward()
    assert z_o.grad is None or not z_o.grad.any(), \
        "the gradient reaches z_other: detach it (stop-gradient, Algorithm 1 lines 13 and 21)"
    assert z_s.grad is not None and z_s.grad.abs().sum() > 0, "no gradient reaches z_self: it is what this phase trains"
    return f"right: D_KL = {want.item():.4f} on the check's logits, and only z_self gets a gradient"


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
