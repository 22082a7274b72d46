"""lib.models.fusion: the gate, every variant's shapes and gradients, L_align by hand, FusionSASRec's loss."""
import math

import pytest
import torch

from lib.models.fusion import VARIANTS, Fusion, FusionSASRec, alignment_loss

N, D, d_text = 7, 8, 12
SMALL = dict(hidden=D, n_layers=1, n_heads=2, inner=16, max_len=6, dropout=0.0, attn_dropout=0.0)


def toy_batch():
    item_seq = torch.tensor([[0, 0, 1, 2, 3, 4], [5, 6, 1, 2, 3, 1]])
    target_seq = torch.tensor([[0, 0, 2, 3, 4, 5], [6, 1, 2, 3, 1, 4]])
    return {"item_seq": item_seq, "target_seq": target_seq}


def test_alignment_loss_by_hand():
    e_id = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    e_sem = torch.tensor([[5.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    # cosines 1, 0, -1 -> losses 0, 1, 2 -> mean 1
    assert alignment_loss(e_id, e_sem).item() == pytest.approx(1.0)
    assert alignment_loss(e_id[:1], e_sem[:1]).item() == pytest.approx(0.0, abs=1e-7)
    a = torch.tensor([[1.0, 1.0]])
    b = torch.tensor([[1.0, 0.0]])
    assert alignment_loss(a, b).item() == pytest.approx(1 - 1 / math.sqrt(2))
    with pytest.raises(ValueError, match="Adapter"):
        alignment_loss(torch.ones(3, 4), torch.ones(3, 5))


def test_gate_range_shape_and_formula():
    torch.manual_seed(0)
    f = Fusion("gated", D, d_text)
    e_id, e_llm = torch.randn(N, D) * 5, torch.randn(N, d_text) * 5
    e, a = f(e_id, e_llm)
    g = f.last_gamma
    assert g.shape == (N, D) and e.shape == (N, D) and a.shape == (N, D)
    assert (g > 0).all() and (g < 1).all()
    assert torch.allclose(g, f.gamma(e_id, e_llm))
    assert torch.allclose(e, g * e_id + (1 - g) * a, atol=1e-6)
    assert torch.allclose(a, f.adapter(e_llm))
    with torch.no_grad():                                   # W = 0 -> gamma = 1/2 -> the mean of the views
        f.W.weight.zero_(); f.W.bias.zero_()
    e, a = f(e_id, e_llm)
    assert torch.allclose(f.last_gamma, torch.full((N, D), 0.5))
    assert torch.allclose(e, (e_id + a) / 2, atol=1e-6)
    with torch.no_grad():                                   # a large bias saturates the gate to the ID view
        f.W.bias.fill_(30.0)
    e, _ = f(e_id, e_llm)
    assert torch.allclose(e, e_id, atol=1e-5)


def test_variant_formulas():
    torch.manual_seed(1)
    e_id, e_llm = torch.randn(N, D), torch.randn(N, d_text)
    w = Fusion("weighted", D, d_text)
    e, a = w(e_id, e_llm)
    assert torch.allclose(e, 0.5 * e_id + 0.5 * a, atol=1e-6) and w.last_gamma.shape == (1, 1)
    c = Fusion("concat", D, d_text)
    e, a = c(e_id, e_llm)
    assert torch.allclose(e, torch.cat([e_id, a], 1) @ c.W_c.weight.T + c.W_c.bias, atol=1e-6)
    assert torch.equal(Fusion("id_only", D, d_text)(e_id, e_llm)[0], e_id)
    t = Fusion("text_only", D, d_text)
    assert torch.allclose(t(e_id, e_llm)[0], t.adapter(e_llm))
    x = Fusion("cross_attention", D, d_text)
    with torch.no_grad():                                   # W_q = 0: uniform attention -> e_id + mean of values
        x.W_q.weight.zero_()
    e, a = x(e_id, e_llm)
    assert torch.allclose(e, e_id + x.W_v(a).mean(0, keepdim=True), atol=1e-5)


def test_unknown_variant_names_the_valid_ones():
    with pytest.raises(ValueError, match="gated, concat, weighted, cross_attention, id_only, text_only"):
        Fusion("sum", D, d_text)
    with pytest.raises(ValueError, match="valid variants"):
        FusionSASRec(N, torch.randn(N, d_text), variant="attention", **SMALL)
    with pytest.raises(ValueError, match="n_items"):
        FusionSASRec(N, torch.randn(N + 1, d_text), **SMALL)
    with pytest.raises(ValueError, match="gated"):
        Fusion("concat", D, d_text).gamma(torch.randn(N, D), torch.randn(N, d_text))


def _grad_norm(p):
    return 0.0 if p.grad is None else p.grad.abs().sum().item()


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_shapes_and_gradient_flow(variant):
    torch.manual_seed(0)
    text = torch.randn(N, d_text)
    model = FusionSASRec(N, text, variant=variant, lambda_align=0.5, **SMALL)
    assert "text_emb" in dict(model.named_buffers()) and "text_emb" not in dict(model.named_parameters())
    assert not model.text_emb.requires_grad and torch.equal(model.text_emb, text)
    E = model.item_embeddings()
    assert E.shape == (N, D) and torch.equal(E[0], torch.zeros(D)), "padding row of the fused table is zero"
    assert model.full_sort_predict({"item_seq": toy_batch()["item_seq"]}).shape == (2, N)
    loss = model.calculate_loss(toy_batch())
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    adapter = [p for n, p in model.named_parameters() if n.startswith("fusion.adapter")]
    # with L_align both views get gradient in every variant (it ties e_id to Adapter(e_llm))
    assert _grad_norm(model.item_emb.weight) > 0
    assert all(_grad_norm(p) > 0 for p in adapter)
    assert model.text_emb.grad is None and torch.equal(model.text_emb, text), "e_llm stays frozen"
    # without L_align, a view the variant does not use gets no gradient at all
    model.zero_grad(set_to_none=True)
    model.lambda_align = 0.0
    model.calculate_loss(toy_batch()).backward()
    assert (_grad_norm(model.item_emb.weight) > 0) == (variant != "text_only")
    assert all((_grad_norm(p) > 0) == (variant != "id_only") for p in adapter)


def test_adapter_trains_and_semantic_view_frozen_after_steps():
    torch.manual_seed(0)
    text = torch.randn(N, d_text)
    model = FusionSASRec(N, text, variant="gated", lambda_align=0.1, **SMALL)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        opt.zero_grad(); model.calculate_loss(toy_batch()).backward(); opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert {"fusion.adapter.net.0.weight", "fusion.W.weight", "item_emb.weight"} <= changed
    assert torch.equal(model.text_emb, text)


def test_loss_is_rec_plus_lambda_align():
    torch.manual_seed(0)
    text = torch.randn(N, d_text)
    m0 = FusionSASRec(N, text, variant="gated", lambda_align=0.0, **SMALL).eval()
    m1 = FusionSASRec(N, text, variant="gated", lambda_align=0.7, **SMALL).eval()
    m1.load_state_dict(m0.state_dict())
    L_rec = m0.calculate_loss(toy_batch())
    e, e_id, a = m1.fused()
    L_align = alignment_loss(e_id[1:], a[1:])
    assert m1.calculate_loss(toy_batch()).item() == pytest.approx((L_rec + 0.7 * L_align).item(), rel=1e-6)
    assert m1.align_loss().item() == pytest.approx(L_align.item())
    assert 0 <= L_align.item() <= 2


def test_gate_of_the_model_is_per_item_and_deterministic():
    torch.manual_seed(0)
    model = FusionSASRec(N, torch.randn(N, d_text), variant="gated", **SMALL).eval()
    g = model.gate()
    assert g.shape == (N, D) and ((g > 0) & (g < 1)).all()
    assert torch.equal(g, model.gate())
    # per item: items with different embeddings get different gates (not one gate broadcast to all rows)
    assert not torch.allclose(g[1], g[2]) and (g[1:] - g[1:].mean(0)).abs().max() > 1e-4


def test_center_text_removes_the_shared_direction():
    torch.manual_seed(0)
    text = torch.randn(N, d_text)
    shifted = text + torch.randn(1, d_text) * 3                       # the same constant added to every item
    m1 = FusionSASRec(N, text, variant="gated", **SMALL).eval()
    m2 = FusionSASRec(N, shifted, variant="gated", **SMALL).eval()
    m2.load_state_dict({k: v for k, v in m1.state_dict().items() if k not in ("text_emb", "text_mean")},
                       strict=False)
    assert torch.allclose(m1.text_mean, text[1:].mean(0, keepdim=True))
    assert torch.allclose(m1.item_embeddings(), m2.item_embeddings(), atol=1e-5)
    m3 = FusionSASRec(N, text, variant="gated", center_text=False, **SMALL)
    assert torch.equal(m3.text_mean, torch.zeros(1, d_text))


def test_fusion_starts_without_a_shared_offset():
    """Zero biases: a zero semantic input gives a zero adapter output, and the gate starts at exactly 1/2 there."""
    f = Fusion("gated", D, d_text)
    e, a = f(torch.zeros(3, D), torch.zeros(3, d_text))
    assert torch.equal(a, torch.zeros(3, D)) and torch.equal(f.last_gamma, torch.full((3, D), 0.5))


def test_gamma_override_forces_the_mix_and_none_is_the_learned_gate():
    torch.manual_seed(0)
    f = Fusion("gated", D, d_text)
    e_id, e_llm = torch.randn(N, D), torch.randn(N, d_text)
    learned, a = f(e_id, e_llm)
    for g in (0.0, 0.3, 1.0):
        f.gamma_override = g
        e, a_g = f(e_id, e_llm)
        assert torch.allclose(e, g * e_id + (1 - g) * a) and torch.allclose(a_g, a)
        assert torch.allclose(f.last_gamma, torch.full((N, D), g))
    f.gamma_override = None
    assert torch.equal(f(e_id, e_llm)[0], learned)            # back to the learned gate, the same numbers


def test_cache_key_names_every_setting():
    from lib.models.fusion import cache_key
    k = cache_key("ml-100k", "gated", 0.1, "all-MiniLM-L6-v2", hidden=64, max_len=50)
    assert k == {"model": "FusionSASRec", "dataset": "ml-100k", "variant": "gated", "lambda_align": 0.1,
                 "text_model": "all-MiniLM-L6-v2", "hidden": 64, "max_len": 50}
    assert cache_key("ml-100k", "gated", 1, "m") == cache_key("ml-100k", "gated", 1.0, "m")   # 1 and 1.0: one fit
    assert cache_key("ml-100k", "gated", 0.1, "m") != cache_key("ml-100k", "gated", 0.3, "m")
    with pytest.raises(ValueError, match="valid variants"):
        cache_key("ml-100k", "gatd", 0.1, "m")
