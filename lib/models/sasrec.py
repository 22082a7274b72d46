"""SASRec (Kang & McAuley, 2018) as a RecBole-style model; built step by step in notebook 01.

item embedding + learned position embedding -> LayerNorm, dropout -> n_layers of causal self-attention
blocks (post-LN, GELU, as RecBole's SASRec) -> the hidden state at every position scores all items by a dot
product with the (shared) item embedding table. Training takes the cross-entropy over all items at every
non-padding position of whole, left-padded sequences (one row per user window, not one row per prefix).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def attention_mask(item_seq: torch.Tensor) -> torch.Tensor:
    """(B, L, L) bool mask, True = may NOT attend. Causal, and padding keys (item 0) are hidden.

    A padding query would then see nothing (softmax over an empty set gives NaN), so every position may
    always attend to itself; padding positions carry no loss, so what they compute does not matter.
    """
    B, L = item_seq.shape
    causal = torch.ones(L, L, dtype=torch.bool, device=item_seq.device).tril()    # (L, L) key <= query
    allowed = causal & (item_seq != 0).unsqueeze(1)                                # (B, L, L)
    allowed = allowed | torch.eye(L, dtype=torch.bool, device=item_seq.device)
    return ~allowed


class Dropout(nn.Module):
    """Inverted dropout with a uniform mask: the same maths as nn.Dropout, about 2.5x faster on CPU
    (torch's bernoulli_ sampler dominated a training step when measured)."""
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        return x * (torch.rand_like(x) >= self.p) / (1 - self.p)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product attention (SASRec Eq. 2): softmax(Q K^T / sqrt(d)) V per head."""
    def __init__(self, hidden: int, n_heads: int, attn_dropout: float):
        super().__init__()
        assert hidden % n_heads == 0, "hidden must be divisible by n_heads"
        self.n_heads, self.d = n_heads, hidden // n_heads
        self.W_qkv = nn.Linear(hidden, 3 * hidden)                 # W^Q, W^K, W^V stacked
        self.W_o = nn.Linear(hidden, hidden)
        self.drop = Dropout(attn_dropout)

    def forward(self, h, mask):                                     # h: (B, L, D), mask: (B, L, L) True = hidden
        B, L, D = h.shape
        q, k, v = self.W_qkv(h).view(B, L, 3, self.n_heads, self.d).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, d)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d)                                # (B, H, L, L)
        scores = scores.masked_fill(mask.unsqueeze(1), -math.inf)
        a = self.drop(scores.softmax(-1))
        return self.W_o((a @ v).transpose(1, 2).reshape(B, L, D))                           # (B, L, D)


class Block(nn.Module):
    """Post-LN transformer block as in RecBole's SASRec: h = LN(h + drop(attn(h))); h = LN(h + drop(FFN(h)))."""
    def __init__(self, hidden, n_heads, inner, dropout, attn_dropout):
        super().__init__()
        self.attn = SelfAttention(hidden, n_heads, attn_dropout)
        self.ffn = nn.Sequential(nn.Linear(hidden, inner), nn.GELU(), Dropout(dropout), nn.Linear(inner, hidden))
        self.norm1, self.norm2 = nn.LayerNorm(hidden, eps=1e-12), nn.LayerNorm(hidden, eps=1e-12)
        self.drop = Dropout(dropout)

    def forward(self, h, mask):
        h = self.norm1(h + self.drop(self.attn(h, mask)))
        return self.norm2(h + self.drop(self.ffn(h)))


def next_item_loss(h: torch.Tensor, E: torch.Tensor, target_seq: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over all items at every non-padding position (the original SASRec's whole-sequence loss).
    h: (B, L, D) hidden states, E: (n_items, D) scoring table, target_seq: (B, L) next items, 0 = padding."""
    keep = target_seq != 0
    return F.cross_entropy(h[keep] @ E.T, target_seq[keep])                       # (N, n_items) logits


class SASRec(nn.Module):
    def __init__(self, n_items: int, hidden: int = 64, n_layers: int = 2, n_heads: int = 2, inner: int = 256,
                 max_len: int = 50, dropout: float = 0.5, attn_dropout: float = 0.5):
        super().__init__()
        self.n_items, self.max_len, self.n_heads = n_items, max_len, n_heads
        self.item_emb = nn.Embedding(n_items, hidden, padding_idx=0)   # E: (n_items, D), row 0 = padding
        self.pos_emb = nn.Embedding(max_len, hidden)                   # P: (L, D)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, n_heads, inner, dropout, attn_dropout) for _ in range(n_layers))
        self.apply(self._init)

    @staticmethod
    def _init(m):
        # RecBole's SASRec: normal(0, 0.02) weights, zero biases, LayerNorm 1/0
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()       # padding stays the zero vector (and gets no gradient)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def item_embeddings(self) -> torch.Tensor:
        """(n_items, D) the table used for input and for scoring; fusion models override this."""
        return self.item_emb.weight

    def embed(self, item_seq: torch.Tensor, item_table: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) item ids -> (B, L, D) input of the first block: Drop(LN(E[s_t] + P_t)) (ADARec's E^0)."""
        E = self.item_embeddings() if item_table is None else item_table
        B, L = item_seq.shape
        pos = torch.arange(self.max_len - L, self.max_len, device=item_seq.device)      # right-aligned positions
        return self.drop(self.norm(E[item_seq] + self.pos_emb(pos)))                     # (B, L, D)

    def encode(self, item_seq: torch.Tensor, item_table: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) item ids -> (B, L, D) hidden states; position L-1 is the most recent item."""
        h = self.embed(item_seq, item_table)                                             # (B, L, D)
        mask = attention_mask(item_seq)                                                  # (B, L, L)
        for block in self.blocks:
            h = block(h, mask)
        return h                                                                         # (B, L, D)

    def calculate_loss(self, batch: dict) -> torch.Tensor:
        """Cross-entropy over all items at every non-padding position. batch: item_seq, target_seq (B, L)."""
        E = self.item_embeddings()
        return next_item_loss(self.encode(batch["item_seq"], E), E, batch["target_seq"])

    def full_sort_predict(self, batch: dict) -> torch.Tensor:
        """(B, n_items) scores for the next item after the last position of item_seq."""
        E = self.item_embeddings()
        h = self.encode(batch["item_seq"], E)[:, -1]                                     # (B, D)
        return h @ E.T


@torch.no_grad()
def attention_weights(model: SASRec, item_seq: torch.Tensor) -> list[torch.Tensor]:
    """Per block, the (B, H, L, L) attention weights softmax(Q K^T / sqrt(d)) of SASRec Eq. 2 (hidden keys get 0),
    as the model computes them in eval mode (no dropout); row i says how much query position i reads each key.
    For looking inside a trained model (lesson 01); the forward pass itself never keeps them."""
    was_training = model.training
    model.eval()
    h = model.embed(item_seq)                                                            # (B, L, D)
    mask = attention_mask(item_seq)                                                      # (B, L, L)
    out = []
    for block in model.blocks:
        attn = block.attn
        B, L, D = h.shape
        q, k, _ = attn.W_qkv(h).view(B, L, 3, attn.n_heads, attn.d).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, d)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(attn.d)).masked_fill(mask.unsqueeze(1), -math.inf)
        out.append(scores.softmax(-1))                                                   # (B, H, L, L)
        h = block(h, mask)
    model.train(was_training)
    return out


# The configuration notebook 01 and `make bench` use, chosen on the validation split only (see notebook 01). Every
# notebook that builds a SASRec-style encoder starts from these and changes what it changes in its parameters cell.
DEFAULTS = dict(
    hidden=64,          # D: item/position embedding and hidden size
    n_layers=2,         # self-attention blocks
    n_heads=2,          # attention heads (hidden must be divisible by it)
    inner=256,          # width of each block's feed-forward layer (4 x hidden)
    max_len=50,         # L: items of history the model reads (the most recent ones)
    dropout=0.5,        # dropout on embeddings and after attention / feed-forward
    attn_dropout=0.5,   # dropout on the attention weights
)
TRAIN_DEFAULTS = dict(
    epochs=200,         # upper bound on epochs; with a decay schedule training ends at decay_epochs
    batch_size=128,     # training windows per optimiser step (about 19 steps per epoch on ML-100K)
    lr=4e-3,            # peak AdamW learning rate (5e-3 after a one-epoch warm-up diverged)
    weight_decay=0.0,   # AdamW's decoupled weight decay (0: plain Adam)
    warmup_epochs=3,    # linear warm-up of the learning rate (post-LN blocks need it at this peak rate)
    decay_epochs=30,    # cosine decay to 0 by this epoch: the weights stop changing, training has converged
    patience=20,        # epochs without a better validation NDCG@10 before stopping early
)
