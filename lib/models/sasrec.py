"""SASRec (Kang & McAuley, 2018) as a RecBole-style model; built step by step in notebook 01.

item embedding + learned position embedding -> LayerNorm, dropout -> n_layers of causal self-attention
blocks (post-LN, GELU, as RecBole's SASRec) -> the hidden state at every position scores all items by a dot
product with the (shared) item embedding table. Training takes the cross-entropy over all items at every
non-padding position of whole, left-padded sequences (one row per user window, not one row per prefix).
"""
from __future__ import annotations

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


class SASRec(nn.Module):
    def __init__(self, n_items: int, hidden: int = 64, n_layers: int = 2, n_heads: int = 2, inner: int = 256,
                 max_len: int = 50, dropout: float = 0.5, attn_dropout: float = 0.5):
        super().__init__()
        self.n_items, self.max_len, self.n_heads = n_items, max_len, n_heads
        self.item_emb = nn.Embedding(n_items, hidden, padding_idx=0)   # E: (n_items, D), row 0 = padding
        self.pos_emb = nn.Embedding(max_len, hidden)                   # P: (L, D)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(hidden, n_heads, inner, dropout, activation="gelu",
                                           batch_first=True, norm_first=False, layer_norm_eps=1e-12)
        # attention dropout: torch's layer uses one dropout for attention and FFN; set attention's own
        layer.self_attn.dropout = attn_dropout
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        # RecBole's SASRec: normal(0, 0.02) weights, zero biases, LayerNorm 1/0
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def item_embeddings(self) -> torch.Tensor:
        """(n_items, D) the table used for input and for scoring; fusion models override this."""
        return self.item_emb.weight

    def encode(self, item_seq: torch.Tensor, item_table: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) item ids -> (B, L, D) hidden states; position L-1 is the most recent item."""
        E = self.item_embeddings() if item_table is None else item_table
        B, L = item_seq.shape
        pos = torch.arange(self.max_len - L, self.max_len, device=item_seq.device)      # right-aligned positions
        h = E[item_seq] + self.pos_emb(pos)                                              # (B, L, D)
        h = self.drop(self.norm(h))
        mask = attention_mask(item_seq).repeat_interleave(self.n_heads, 0)               # (B*heads, L, L)
        return self.encoder(h, mask=mask)                                                # (B, L, D)

    def calculate_loss(self, batch: dict) -> torch.Tensor:
        """Cross-entropy over all items at every non-padding position. batch: item_seq, target_seq (B, L)."""
        E = self.item_embeddings()
        h = self.encode(batch["item_seq"], E)                                            # (B, L, D)
        tgt = batch["target_seq"]
        keep = tgt != 0
        logits = h[keep] @ E.T                                                           # (N, n_items)
        return F.cross_entropy(logits, tgt[keep])

    def full_sort_predict(self, batch: dict) -> torch.Tensor:
        """(B, n_items) scores for the next item after the last position of item_seq."""
        E = self.item_embeddings()
        h = self.encode(batch["item_seq"], E)[:, -1]                                     # (B, D)
        return h @ E.T
