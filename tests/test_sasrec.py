"""SASRec: shapes, causality, padding, the loss at every position."""
import math

import numpy as np
import torch
import torch.nn.functional as F

from lib import data
from lib.models.sasrec import SASRec, SelfAttention, attention_mask, attention_weights


def tiny(**kw):
    torch.manual_seed(0)
    cfg = dict(n_items=12, hidden=8, n_layers=2, n_heads=2, inner=16, max_len=6, dropout=0.0, attn_dropout=0.0)
    cfg.update(kw)
    return SASRec(**cfg).eval()


def test_shapes():
    m = tiny()
    seq = data.pad_left([np.array([1, 2, 3]), np.array([4, 5, 6, 7, 8, 9])], 6)
    assert m.encode(seq).shape == (2, 6, 8)
    assert m.full_sort_predict({"item_seq": seq}).shape == (2, 12)


def test_future_item_cannot_change_earlier_positions():
    m = tiny()
    a = torch.tensor([[0, 0, 3, 1, 4, 1]])
    b = a.clone()
    b[0, 4] = 9
    ha, hb = m.encode(a), m.encode(b)
    assert torch.allclose(ha[:, :4], hb[:, :4], atol=1e-6)
    assert not torch.allclose(ha[:, 4:], hb[:, 4:])


def test_padding_does_not_leak_into_real_positions():
    m = tiny()
    with torch.no_grad():
        m.item_emb.weight[0] = torch.randn(8)   # even a non-zero padding row must not matter (keys are masked)
    h1 = m.encode(torch.tensor([[0, 0, 0, 5, 6, 7]]))
    m.pos_emb.weight.data[:3] += 10.0           # changing what padding slots hold changes nothing downstream
    h2 = m.encode(torch.tensor([[0, 0, 0, 5, 6, 7]]))
    assert torch.allclose(h1[:, 3:], h2[:, 3:], atol=1e-5)
    assert torch.isfinite(h1).all()


def test_mask_semantics():
    m = attention_mask(torch.tensor([[0, 2, 3]]))[0]
    assert m.tolist() == [[False, True, True], [True, False, True], [True, False, False]]


def test_attention_matches_hand_computation():
    torch.manual_seed(1)
    att = SelfAttention(4, 1, 0.0)
    x = torch.randn(1, 3, 4)
    mask = attention_mask(torch.tensor([[1, 2, 3]]))
    qkv = x @ att.W_qkv.weight.T + att.W_qkv.bias
    q, k, v = qkv.split(4, -1)
    w = (q @ k.transpose(-1, -2) / 2.0).masked_fill(mask, -math.inf).softmax(-1)    # sqrt(d) = 2
    expect = (w @ v) @ att.W_o.weight.T + att.W_o.bias
    assert torch.allclose(att(x, mask), expect, atol=1e-6)


def test_loss_is_cross_entropy_at_every_real_position():
    m = tiny()
    seq = torch.tensor([[0, 1, 2, 3, 4, 5]])
    tgt = torch.tensor([[0, 2, 3, 4, 5, 6]])
    loss = m.calculate_loss({"item_seq": seq, "target_seq": tgt})
    logits = m.encode(seq)[0, 1:] @ m.item_emb.weight.T
    assert torch.allclose(loss, F.cross_entropy(logits, tgt[0, 1:]), atol=1e-6)


def test_dropout_is_inverted_and_off_in_eval():
    from lib.models.sasrec import Dropout
    d = Dropout(0.5)
    x = torch.ones(20000)
    y = d.train()(x)
    assert set(y.unique().tolist()) <= {0.0, 2.0} and abs(y.mean().item() - 1) < 0.05
    assert torch.equal(d.eval()(x), x)


def test_attention_weights_are_the_ones_the_forward_pass_uses():
    """attention_weights recomputes Eq. 2's softmax: W_o(a @ V) with its weights is each block's attention output;
    rows sum to 1, hidden keys (future, padding) get 0, and the model's train/eval mode is left as it was."""
    torch.manual_seed(0)
    m = tiny(dropout=0.0, attn_dropout=0.0)
    seq = torch.tensor([[0, 0, 3, 1, 4, 1], [2, 6, 5, 3, 5, 8]])                          # (B=2, L=6)
    m.train()
    ws = attention_weights(m, seq)
    assert m.training and len(ws) == len(m.blocks)
    m.eval()
    h, mask = m.embed(seq), attention_mask(seq)
    for block, a in zip(m.blocks, ws):
        B, L, D = h.shape
        assert a.shape == (B, m.n_heads, L, L)
        assert torch.allclose(a.sum(-1), torch.ones(B, m.n_heads, L))
        assert (a[mask.unsqueeze(1).expand_as(a)] == 0).all()
        v = block.attn.W_qkv(h).view(B, L, 3, m.n_heads, -1).permute(2, 0, 3, 1, 4)[2]      # (B, H, L, d)
        out = block.attn.W_o((a @ v).transpose(1, 2).reshape(B, L, D))
        assert torch.allclose(out, block.attn(h, mask), atol=1e-6)
        h = block(h, mask)
