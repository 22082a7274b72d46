"""Dual-view item representation (LLMDiRec section 3.1) and the fusion rivals of its Table 4; notebook 02.

Every item has a trainable collaborative embedding e_id (D) and a frozen semantic embedding e_llm (d_text)
of its text prompt. An adapter maps e_llm into the model's space; a fusion merges the two views:

    gated            e = gamma * e_id + (1 - gamma) * Adapter(e_llm),  gamma = sigmoid(W [e_id ; Adapter(e_llm)])
    concat           e = W_c [e_id ; Adapter(e_llm)]
    weighted         e = w * e_id + (1 - w) * Adapter(e_llm),  w = sigmoid(one learned scalar)
    cross_attention  e = e_id + softmax(q k^T / sqrt(D)) v,  q from e_id, k and v from Adapter(e_llm) of ALL items
    id_only          e = e_id                 (plain SASRec)
    text_only        e = Adapter(e_llm)       (no ID embedding at all)

The paper gives no formula for its cross-attention variant (nor for concat and weighted); these are our
readings, stated in notebook 02. The alignment loss (section 3.3) is mean(1 - cos(e_id, Adapter(e_llm))).
`FusionSASRec` plugs the fused table into SASRec through `item_embeddings()`, so the same encoder, loss and
trainer (lib.train.fit) serve every variant.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.models.sasrec import SASRec, next_item_loss

VARIANTS = ("gated", "concat", "weighted", "cross_attention", "id_only", "text_only")


def cache_key(dataset: str, variant: str, lambda_align: float, text_model: str, **backbone) -> dict:
    """The `train.fit_cached` key of a FusionSASRec: lesson 02 and its evidence notebook build it alike, so a fit
    with the same settings (and seed and schedule, which fit_cached adds) is trained once."""
    return {"model": "FusionSASRec", "dataset": dataset, "variant": check_variant(variant),
            "lambda_align": float(lambda_align), "text_model": str(text_model), **backbone}


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown fusion variant {variant!r}; valid variants are {', '.join(VARIANTS)}")
    return variant


def alignment_loss(e_id: torch.Tensor, e_sem: torch.Tensor) -> torch.Tensor:
    """L_align (LLMDiRec 3.3): mean over rows of 1 - cos(e_id_i, e_sem_i). (N, D), (N, D) -> scalar in [0, 2]."""
    if e_id.shape != e_sem.shape:
        raise ValueError(f"alignment_loss needs two tables of one shape, got {tuple(e_id.shape)} and "
                         f"{tuple(e_sem.shape)}; project e_llm with the Adapter first")
    return (1 - F.cosine_similarity(e_id, e_sem, dim=-1, eps=1e-8)).mean()


class Adapter(nn.Module):
    """The 'lightweight adapter network' of LLMDiRec 3.1: e_llm (d_text) -> Linear -> GELU -> Linear -> (D).
    The paper gives no architecture; a two-layer MLP is the usual choice (and ours)."""
    def __init__(self, d_text: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_text, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)          # default init's bias alone would give every item one shared offset

    def forward(self, e_llm: torch.Tensor) -> torch.Tensor:      # (N, d_text) -> (N, D)
        return self.net(e_llm)


class Fusion(nn.Module):
    """One of VARIANTS. forward(e_id (N, D), e_llm (N, d_text)) -> (e (N, D), a = Adapter(e_llm) (N, D)).

    For 'gated' the gate of the last forward is kept (detached) in `last_gamma` (N, D); `gamma(e_id, e_llm)`
    recomputes it. For 'weighted' `last_gamma` is the scalar w as a (1, 1) tensor.
    """
    def __init__(self, variant: str, hidden: int, d_text: int):
        super().__init__()
        self.variant, self.hidden = check_variant(variant), hidden
        self.adapter = Adapter(d_text, hidden)
        self.last_gamma: torch.Tensor | None = None
        self.gamma_override: float | None = None      # gated only: a constant gamma in [0, 1] instead of the learned
        if variant == "gated":
            self.W = nn.Linear(2 * hidden, hidden)                   # gamma = sigmoid(W [e_id ; a])
        elif variant == "concat":
            self.W_c = nn.Linear(2 * hidden, hidden)
        elif variant == "weighted":
            self.w_logit = nn.Parameter(torch.zeros(1))              # w = sigmoid(0) = 0.5 at the start
        elif variant == "cross_attention":
            self.W_q = nn.Linear(hidden, hidden, bias=False)
            self.W_k = nn.Linear(hidden, hidden, bias=False)
            self.W_v = nn.Linear(hidden, hidden, bias=False)
        for m in self.modules():                # zero biases (as RecBole): no shared offset, gamma starts near 1/2
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def gamma(self, e_id: torch.Tensor, e_llm: torch.Tensor) -> torch.Tensor:
        """(N, D) gate in (0, 1) of the gated variant: the weight on the ID view, per item and dimension."""
        if self.variant != "gated":
            raise ValueError(f"gamma() exists for the 'gated' variant only, this fusion is {self.variant!r}")
        a = self.adapter(e_llm)
        return torch.sigmoid(self.W(torch.cat([e_id, a], -1)))

    def forward(self, e_id: torch.Tensor, e_llm: torch.Tensor):
        a = self.adapter(e_llm)                                       # (N, D) Adapter(e_llm)
        v = self.variant
        if v == "gated":
            # LLMDiRec 3.1: gamma = sigma(W [e_id ; Adapter(e_llm)])
            gamma = torch.sigmoid(self.W(torch.cat([e_id, a], -1)))   # (N, D)
            if self.gamma_override is not None:                       # lesson 02's widget: a forced mix
                gamma = torch.full_like(gamma, float(self.gamma_override))
            self.last_gamma = gamma.detach()
            # LLMDiRec 3.1: e = gamma * e_id + (1 - gamma) * Adapter(e_llm)
            e = gamma * e_id + (1 - gamma) * a
        elif v == "concat":
            e = self.W_c(torch.cat([e_id, a], -1))                    # (N, D)
        elif v == "weighted":
            w = torch.sigmoid(self.w_logit)                           # (1,) one scalar for all items
            self.last_gamma = w.detach().view(1, 1)
            e = w * e_id + (1 - w) * a
        elif v == "cross_attention":
            q, k, val = self.W_q(e_id), self.W_k(a), self.W_v(a)       # (N, D) each
            attn = torch.softmax(q @ k.T / math.sqrt(self.hidden), -1)  # (N, N): item i over all semantic rows
            e = e_id + attn @ val                                     # (N, D) residual keeps the ID view
        elif v == "id_only":
            e = e_id
        else:                                                         # text_only
            e = a
        return e, a


class FusionSASRec(SASRec):
    """SASRec whose item table is the fusion of e_id (self.item_emb) and the frozen e_llm (buffer text_emb).

    calculate_loss = L_rec + lambda_align * L_align (LLMDiRec Eq. 1 without the diffusion and contrastive terms,
    lambda_rec = 1). Row 0 (padding) of the fused table is kept at zero.
    """
    def __init__(self, n_items: int, text_emb: torch.Tensor, variant: str = "gated", lambda_align: float = 0.1,
                 center_text: bool = True, **sasrec_kwargs):
        check_variant(variant)
        if text_emb.dim() != 2 or text_emb.shape[0] != n_items:
            raise ValueError(f"text_emb must be (n_items={n_items}, d_text), got {tuple(text_emb.shape)}")
        if not lambda_align >= 0:
            raise ValueError(f"lambda_align must be >= 0, got {lambda_align!r}")
        super().__init__(n_items, **sasrec_kwargs)
        hidden = self.item_emb.embedding_dim
        self.variant, self.lambda_align = variant, float(lambda_align)
        self.register_buffer("text_emb", text_emb.detach().float().clone())   # (n_items, d_text), frozen
        self.register_buffer("keep", (torch.arange(n_items) != 0).float().unsqueeze(1))  # (n_items, 1)
        # Every prompt shares one template, so the e_llm of all items share a common direction (on ML-100K two
        # different movies have cosine 0.59 on average). center_text subtracts the mean over real items before
        # the adapter, so the text view carries what tells items apart.
        mu = self.text_emb[1:].mean(0, keepdim=True) if center_text and n_items > 1 else torch.zeros(1, text_emb.shape[1])
        self.register_buffer("text_mean", mu)                         # (1, d_text)
        # The fusion keeps PyTorch's default weight init: RecBole's normal(0, 0.02) on the adapter's two layers
        # makes Adapter(e_llm) ~15x smaller than e_id at the start (measured), so the text view would begin muted.
        self.fusion = Fusion(variant, hidden, text_emb.shape[1])

    def fused(self):
        """(e, e_id, a): the fused table, the ID table and Adapter(e_llm), each (n_items, D)."""
        e_id = self.item_emb.weight                                   # (n_items, D)
        e, a = self.fusion(e_id, self.text_emb - self.text_mean)
        return e * self.keep, e_id, a

    def item_embeddings(self) -> torch.Tensor:
        return self.fused()[0]

    def align_loss(self, e_id=None, a=None) -> torch.Tensor:
        """L_align over real items (rows 1..n_items-1) between e_id and Adapter(e_llm)."""
        if e_id is None:
            _, e_id, a = self.fused()
        return alignment_loss(e_id[1:], a[1:])

    def calculate_loss(self, batch: dict) -> torch.Tensor:
        """LLMDiRec Eq. 1 restricted to the fusion: L = L_rec + lambda_align * L_align."""
        E, e_id, a = self.fused()                                     # (n_items, D) each
        L_rec = next_item_loss(self.encode(batch["item_seq"], E), E, batch["target_seq"])
        if self.lambda_align == 0:
            return L_rec
        # LLMDiRec Eq. 1 (lambda_rec = 1, no diffusion / contrastive terms here)
        return L_rec + self.lambda_align * self.align_loss(e_id, a)

    @torch.no_grad()
    def gate(self) -> torch.Tensor:
        """(n_items, D) gamma of the gated variant for every item (eval mode, no gradient)."""
        return self.fusion.gamma(self.item_emb.weight, self.text_emb - self.text_mean)
