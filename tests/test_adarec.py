"""ADARec's pieces against hand computation: straight-through Gumbel-softmax, the level mask, Eq. 8-11, Eq. 6."""
import math

import pytest
import torch
import torch.nn as nn

from lib.models import adarec
from lib.models.adarec import ADARec

pytestmark = pytest.mark.usefixtures("one_thread")


def test_straight_through_forward_is_one_hot_and_gradient_is_the_softmax_one():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], requires_grad=True)
    w = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]])
    y, p = adarec.gumbel_softmax_st(logits, tau=0.5, generator=torch.Generator().manual_seed(0))
    assert ((y == 0) | (y == 1)).all() and torch.equal(y.sum(-1), torch.ones(2))      # one-hot forward
    assert torch.equal(y.argmax(-1), p.argmax(-1))
    (y * w).sum().backward()
    g_st = logits.grad.clone()
    # the same noise through the soft path: the backward pass of y is the backward pass of p
    logits.grad = None
    _, p2 = adarec.gumbel_softmax_st(logits, tau=0.5, generator=torch.Generator().manual_seed(0))
    (p2 * w).sum().backward()
    assert torch.allclose(g_st, logits.grad) and g_st.abs().sum() > 0


def test_level_mask_by_hand_and_its_gradient():
    y = torch.tensor([[0.0, 0.0, 1.0, 0.0]], requires_grad=True)             # T_u = 2 of T_max = 3
    m = adarec.level_mask(y)
    assert m.tolist() == [[1.0, 1.0, 1.0, 0.0]]
    (m * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert y.grad.tolist() == [[1.0, 3.0, 6.0, 10.0]]                          # d/dy_d = sum_{k <= d} w_k


def test_hierarchy_fusion_eq_8_to_11_by_hand():
    # one user, two levels, D = 2
    f = torch.tensor([[[1.0, 0.0], [3.0, 2.0]]])                              # E_fin per level (1, 2, 2)
    c = torch.tensor([[[0.0, 4.0], [2.0, 0.0]]])                              # E_coar per level
    g = torch.tensor([[0.75, 0.25]])                                          # router
    m = torch.tensor([[1.0, 1.0]])
    W = nn.Linear(2, 2)
    with torch.no_grad():
        W.weight.copy_(torch.eye(2)); W.bias.zero_()
    h, z_fin, z_coar = adarec.hierarchy_fusion(f, c, g, m, W, eps=0.0)
    # z_fin = (0.75 [1,0] + 0.25 [3,2]) / 1 = [1.5, 0.5]; z_coar = (0.25 [0,4] + 0.75 [2,0]) / 1 = [1.5, 1.0]
    assert torch.allclose(z_fin, torch.tensor([[1.5, 0.5]])) and torch.allclose(z_coar, torch.tensor([[1.5, 1.0]]))
    gate = torch.sigmoid(torch.tensor([1.5, 1.0]))
    assert torch.allclose(h, gate * torch.tensor([1.5, 0.5]) + (1 - gate) * torch.tensor([1.5, 1.0]))
    # a masked level does not count: only level 0 -> z_fin = E_fin^0, z_coar = E_coar^0
    _, zf, zc = adarec.hierarchy_fusion(f, c, g, torch.tensor([[1.0, 0.0]]), W, eps=0.0)
    assert torch.allclose(zf, f[:, 0]) and torch.allclose(zc, c[:, 0])


def test_cont_loss_positives_are_adjacent_levels():
    torch.manual_seed(0)
    B, K1, D = 4, 3, 8
    z = torch.randn(B, K1, D)
    T_u = torch.tensor([2, 2, 2, 2])                                          # pairs k = 1 -> 2 (floor(2/2) = 1)
    tau = 0.07
    zn = nn.functional.normalize(z, dim=-1)
    logits = zn[:, 1] @ zn[:, 2].T / tau
    by_hand = nn.functional.cross_entropy(logits, torch.arange(B), reduction="sum") / B
    assert adarec.adjacent_level_infonce(z, T_u, tau).item() == pytest.approx(by_hand.item(), rel=1e-5)
    # users whose adjacent deep levels agree: near-zero loss; pairing with another user's level: large
    same = z.clone(); same[:, 2] = same[:, 1]
    assert adarec.adjacent_level_infonce(same, T_u, tau) < 0.05
    swapped = same.clone(); swapped[:, 2] = same[:, 1].roll(1, 0)
    assert adarec.adjacent_level_infonce(swapped, T_u, tau) > 5
    # T_u = 0: no pair, no loss; T_u = 1: the pair (0, 1) only
    assert adarec.adjacent_level_infonce(z, torch.zeros(B, dtype=torch.long), tau).item() == 0
    l01 = nn.functional.cross_entropy(zn[:, 0] @ zn[:, 1].T / tau, torch.arange(B), reduction="none")
    T1 = torch.tensor([1, 0, 0, 0])
    assert adarec.adjacent_level_infonce(z, T1, tau).item() == pytest.approx(l01[0].item() / B, rel=1e-5)


def small(**kw):
    torch.manual_seed(0)
    return ADARec(30, **{"hidden": 16, "inner": 32, "max_len": 6, "n_heads": 2, "T_max": 3, **kw})


BATCH = {"item_seq": torch.tensor([[0, 0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10], [0, 0, 0, 11, 12, 13]]),
         "target_seq": torch.tensor([[0, 0, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], [0, 0, 0, 12, 13, 14]])}


def test_every_term_and_gradients_reach_adc_router_denoiser():
    m = small()
    loss = m.calculate_loss(BATCH)
    assert set(m.last_losses) == {"rec", "deno", "cont", "expl"} and torch.isfinite(loss)
    loss.backward()
    for mod in (m.W_sigma, m.router[0], m.denoiser.mlp[0], m.E_coar.blocks[0].attn.W_qkv, m.item_emb):
        assert mod.weight.grad is not None and mod.weight.grad.abs().sum() > 0, mod
    assert -math.log(4) - 1e-5 <= m.last_losses["expl"] <= 0                     # -H of 4 choices


def test_cont_loss_gradient_stays_on_the_coarse_experts_side():
    """L_cont (Eq. 6) trains the coarse expert only: no gradient to the item table, positions, LayerNorm, the
    denoiser, the fine expert or the ADC; the coarse expert's weights do get one."""
    m = small()
    m.train()
    parts = m.losses(BATCH)
    parts["cont"].backward()
    assert m.E_coar.blocks[0].attn.W_qkv.weight.grad.abs().sum() > 0
    for name, mod in (("item_emb", m.item_emb), ("pos_emb", m.pos_emb), ("denoiser", m.denoiser.mlp[0]),
                      ("fine expert", m.E_fin.blocks[0].attn.W_qkv), ("ADC", m.W_sigma), ("LayerNorm", m.norm)):
        g = mod.weight.grad
        assert g is None or g.abs().sum() == 0, f"L_cont leaks into {name}"


def test_eval_is_deterministic_causal_and_depth_is_one_per_user():
    m = small().eval()
    a, b = m.full_sort_predict(BATCH), m.full_sort_predict(BATCH)
    assert torch.equal(a, b) and a.shape == (3, 30)
    h1 = m.forward_all(BATCH["item_seq"])["h"]
    seq2 = BATCH["item_seq"].clone(); seq2[:, -1] = 20                          # change only the last item
    h2 = m.forward_all(seq2)["h"]
    assert torch.allclose(h1[:, :-1], h2[:, :-1], atol=1e-5) and not torch.allclose(h1[:, -1], h2[:, -1])
    d = m.depths(BATCH["item_seq"])
    assert d.shape == (3,) and ((0 <= d) & (d <= 3)).all()


@pytest.mark.parametrize("kw, absent", [({"adc": "off"}, "expl"), ({"hda": False}, "deno"), ({"moe": False}, "cont"),
                                        ({"lambda_cont": 0.0}, "cont"), ({"denoise": False}, "deno")])
def test_ablation_switches_remove_their_term(kw, absent):
    m = small(**kw)
    m.calculate_loss(BATCH)
    assert absent not in m.last_losses and "rec" in m.last_losses


def test_router_off_gives_equal_weights_and_levels_sit_where_asked():
    m = small(router=False).eval()
    assert torch.all(m.forward_all(BATCH["item_seq"])["g"] == 0.5)
    assert small(levels="code").t_levels.tolist() == [0, 3, 7, 10]
    assert small(levels="spread").t_levels.tolist() == [0, 16, 33, 49]


@pytest.mark.parametrize("kw, msg", [({"adc": "hard"}, "'gumbel', 'softmax', 'off'"), ({"levels": "deep"}, "'code', 'spread'"),
                                     ({"T_max": 0}, "T_max"), ({"lambda_cont": -1.0}, "lambda_cont"),
                                     ({"lambda_depth": -0.1}, "lambda_depth")])
def test_bad_parameters_are_named(kw, msg):
    with pytest.raises(ValueError, match=msg):
        small(**kw)


def test_score_average():
    a, b = small().eval(), small(moe=False).eval()
    avg = adarec.ScoreAverage(a, b)
    assert torch.allclose(avg.full_sort_predict(BATCH), (a.full_sort_predict(BATCH) + b.full_sort_predict(BATCH)) / 2)


def test_evaluation_computes_only_the_levels_the_depth_reads_and_scores_as_the_full_pass():
    m = small().eval()
    with torch.no_grad():
        m.W_sigma.weight.normal_(0, 3.0)                                      # depths that differ between users
    seqs = torch.randint(1, 30, (16, 6))
    out = m.forward_all(seqs)
    need = out["m"][:, -1] > 0
    assert (~need).any() and need.any(1).all()                                 # some levels are skipped
    E = m.item_embeddings()
    full = out["h"][:, -1] @ E.T                                               # every level computed
    calls = []
    hook = m.E_fin.register_forward_hook(lambda mod, inp, o: calls.append(inp[0].shape[0]))
    fast = m.full_sort_predict({"item_seq": seqs})
    hook.remove()
    assert torch.allclose(fast, full, atol=1e-5)
    assert calls == [int(need.sum())] and calls[0] < 16 * 4                    # the fine expert read fewer rows


def test_shared_draws_one_noise_and_one_dropout_mask_for_every_level():
    m = small(shared_draws=True, denoise=False).train()
    E0 = m.embed(BATCH["item_seq"], m.item_embeddings())
    levels, _ = m.hierarchy(E0)
    ab = m.scheduler.alphas_cumprod[m.t_levels[1:]].view(1, 1, -1, 1)
    eps = (levels[:, :, 1:] - ab.sqrt() * E0.unsqueeze(2)) / (1 - ab).sqrt()  # the noise of each level
    assert torch.allclose(eps[:, :, 0], eps[:, :, 2], atol=1e-4)
    same = E0.detach().unsqueeze(1).expand(-1, 4, -1, -1)                      # four identical levels
    mask = adarec.attention_mask(BATCH["item_seq"])
    shared = m._read(m.E_fin, same, mask)
    assert torch.equal(shared[:, 0], shared[:, 3])                            # one dropout mask
    m.shared_draws = False
    indep = m._read(m.E_fin, same, mask)
    assert not torch.allclose(indep[:, 0], indep[:, 3])                       # independent masks differ


def test_depth_cost_is_the_expected_depth_and_pushes_it_down():
    m = small(lambda_depth=0.5)
    parts = m.losses(BATCH)
    keep = BATCH["target_seq"] != 0
    p = torch.softmax(m.last["logits"][keep], -1)
    assert parts["depth"].item() == pytest.approx((p * torch.arange(4) / 3).sum(-1).mean().item(), rel=1e-5)
    parts["depth"].backward()
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    before = parts["depth"].item()
    opt.step()
    assert m.losses(BATCH)["depth"].item() < before                            # shallower after one step
    assert "depth" not in small().losses(BATCH)                                 # off by default


def test_loss_weights_sum_the_parts_as_eq_12():
    m = small(lambda_deno=0.2, lambda_cont=0.3, lambda_expl=0.4)
    torch.manual_seed(1)
    parts = m.losses(BATCH)
    w = m.loss_weights()
    assert w == {"rec": 1.0, "deno": 0.2, "cont": 0.3, "expl": 0.4, "depth": 0.0}
    torch.manual_seed(1)                                                        # the same draws
    total = m.calculate_loss(BATCH)
    by_hand = parts["rec"] + 0.2 * parts["deno"] + 0.3 * parts["cont"] + 0.4 * parts["expl"]
    assert total.item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_depth_stats_reads_the_controller_without_drawing_or_changing_mode():
    m = small().train()
    with torch.no_grad():
        m.W_sigma.weight.normal_(0, 3.0)                                      # depths that differ between users
    seqs = torch.randint(1, 30, (16, 6))
    state = torch.get_rng_state()
    st = m.depth_stats(seqs)
    assert torch.equal(state, torch.get_rng_state()) and m.training             # no draw, mode given back
    d = m.depths(seqs)
    assert st["depth_hist"] == torch.bincount(d, minlength=4).tolist() and sum(st["depth_hist"]) == 16
    m.eval()
    with torch.no_grad():
        logits = m.depth(m.embed(seqs, m.item_embeddings()), seqs)[1][:, -1]
    p = torch.softmax(logits, -1)
    assert st["p_mean"] == pytest.approx(p.mean(0).tolist(), rel=1e-5)
    assert st["entropy"] == pytest.approx(float(-(p * p.log()).sum(1).mean()), rel=1e-5)
