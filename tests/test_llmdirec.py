"""lib.models.llmdirec: the four losses of Eq. 1, their switches, gradients, K-means refits, determinism."""
import pytest
import torch

from lib import diffusion, intents
from lib.models.fusion import FusionSASRec
from lib.models.llmdirec import LLMDiRec

N_ITEMS = 12
KW = dict(K=2, cluster_interval=2, T=10, num_inference_steps=5, hidden=8, n_layers=1, n_heads=2, inner=16,
          max_len=6, dropout=0.0, attn_dropout=0.0)
BATCH = {"item_seq": torch.tensor([[0, 1, 2, 3, 4, 5], [0, 0, 6, 7, 8, 9], [3, 4, 5, 6, 7, 8], [0, 0, 0, 1, 3, 5]]),
         "target_seq": torch.tensor([[0, 2, 3, 4, 5, 6], [0, 0, 7, 8, 9, 10], [4, 5, 6, 7, 8, 11], [0, 0, 0, 3, 5, 7]])}


def text_emb():
    return torch.randn(N_ITEMS, 5, generator=torch.Generator().manual_seed(0))


def make(**over):
    torch.manual_seed(0)
    return LLMDiRec(N_ITEMS, text_emb(), **{**KW, **over})


def test_all_four_losses_are_finite_and_present():
    parts = make().losses(BATCH)
    assert set(parts) == {"rec", "diff", "cl", "align"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in parts.values())


@pytest.mark.parametrize("flags, gone, kept", [
    ({"variant": "id_only"}, {"align"}, {"rec", "diff", "cl"}),
    ({"use_diffusion": False}, {"diff"}, {"rec", "cl", "align"}),
    ({"use_cl": False}, {"cl"}, {"rec", "diff", "align"}),
    ({"use_align": False}, {"align"}, {"rec", "diff", "cl"}),
    ({"use_diffusion": False, "use_cl": False}, {"diff", "cl"}, {"rec", "align"}),
])
def test_each_switch_removes_exactly_its_term(flags, gone, kept):
    parts = make(**flags).losses(BATCH)
    assert set(parts) == kept and not gone & set(parts)


def test_total_is_the_weighted_sum_of_eq_1():
    w = dict(lambda_rec=0.7, lambda_diff=0.3, lambda_cl=0.2, lambda_align=0.5)
    m = make(**w)
    m.losses(BATCH)                                     # first call fits the prototypes
    torch.manual_seed(1)
    parts = m.losses(BATCH)
    torch.manual_seed(1)
    total = m.calculate_loss(BATCH)
    expected = sum(w[f"lambda_{k}"] * v for k, v in parts.items())
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(m.last_losses) == {"rec", "diff", "cl", "align"}


def test_without_diffusion_and_cl_it_is_the_fusion_model():
    m = make(use_diffusion=False, use_cl=False, lambda_align=0.3)
    assert m.calculate_loss(BATCH).item() == pytest.approx(FusionSASRec.calculate_loss(m, BATCH).item(), rel=1e-6)


def test_gradients_stop_where_the_model_says():
    m = make()
    m.losses(BATCH)
    parts = m.losses(BATCH)
    # L_diff trains the denoiser only: x0 is the detached sequence representation
    parts["diff"].backward(retain_graph=True)
    assert m.item_emb.weight.grad is None or m.item_emb.weight.grad.abs().sum() == 0
    assert m.denoiser.mlp[0].weight.grad.abs().sum() > 0
    m.zero_grad(set_to_none=True)
    # L_cl trains the encoder; the sampled augmentation carries no gradient to the denoiser
    parts["cl"].backward()
    assert m.item_emb.weight.grad.abs().sum() > 0
    assert m.denoiser.mlp[0].weight.grad is None


def test_kmeans_is_refitted_every_cluster_interval_steps():
    X = BATCH["item_seq"].repeat(5, 1)
    m = make(cluster_interval=2).set_corpus(X)
    m.train()
    for _ in range(5):                                  # steps 0..4: refits at 0, 2, 4
        m.calculate_loss(BATCH)
    assert m.step == 5 and m.prototypes.n_fits == 3
    assert m.prototypes.c.shape == (2, 8)
    m.eval()                                            # evaluation never refits nor counts steps
    m.calculate_loss(BATCH)
    assert m.step == 5 and m.prototypes.n_fits == 3
    means = m.pop_loss_means()
    assert set(means) == {"L_rec", "L_diff", "L_cl", "L_align"} and m.pop_loss_means() == {}


def test_prefix_representations_are_one_per_real_item():
    m = make()
    h = m.prefix_representations(BATCH["item_seq"])
    assert h.shape == (int((BATCH["item_seq"] != 0).sum()), 8)
    last = m.sequence_representation(BATCH["item_seq"])
    rows, cols = intents.prefix_positions(BATCH["item_seq"])
    is_last = cols == BATCH["item_seq"].shape[1] - 1
    assert torch.allclose(h[is_last], last[rows[is_last]], atol=1e-6)


def test_same_seed_same_losses():
    def run():
        torch.manual_seed(3)
        m = make()
        m.train()
        return [m.calculate_loss(BATCH).item() for _ in range(3)]
    assert run() == run()


def test_augment_is_conditioned_and_shaped():
    m = make()
    s = torch.randn(4, 8)
    torch.manual_seed(0)
    x = m.augment(s)
    assert x.shape == (4, 8) and torch.isfinite(x).all()
    # the condition reaches the denoiser: the same noise (same seed) under another condition gives another sample
    torch.manual_seed(0)
    assert torch.allclose(m.augment(s), x)
    torch.manual_seed(0)
    assert not torch.allclose(m.augment(s + 3.0), x, atol=1e-3)
    # and with guidance 0 and the condition replaced by the null one, the sample is the unconditional one
    m.guidance_scale = 0.0
    torch.manual_seed(0)
    a = m.augment(m.denoiser.null_cond.detach().expand(4, -1))
    torch.manual_seed(0)
    b = diffusion.sample(m.denoiser, m.scheduler, shape=(4, 8), num_inference_steps=m.num_inference_steps)
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("kw, msg", [({"temperature": 0.0}, "temperature"), ({"cluster_interval": 0}, "cluster_interval"),
                                     ({"sim": "l1"}, "sim"), ({"lambda_cl": -1.0}, "lambda_cl"),
                                     ({"prediction_type": "v"}, "prediction_type"), ({"variant": "nope"}, "variant"),
                                     ({"aug_start_t": 10}, "aug_start_t"), ({"aug_start_t": 0}, "aug_start_t")])
def test_bad_parameters_raise_clear_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        make(**kw)


def test_partial_noising_starts_from_the_rows_own_representation():
    m = make(aug_start_t=3)
    s = torch.randn(4, 8)
    x = torch.randn(4, 8) * 2
    with pytest.raises(ValueError, match="needs the rows' own representations"):
        m.augment(s)
    torch.manual_seed(0)
    a = m.augment(s, x)
    torch.manual_seed(0)
    b = m.augment(s, x + 5.0)                                  # same intent, same noise, another sequence
    assert a.shape == (4, 8) and not torch.allclose(a, b, atol=1e-2)
    # the same as the sampler started from x noised to step 3 (Eq. 4), then denoised from there
    torch.manual_seed(0)
    ref = diffusion.sample(m.denoiser, m.scheduler, cond=s, guidance_scale=m.guidance_scale,
                           num_inference_steps=m.num_inference_steps, x_start=x, start_t=3)
    assert torch.allclose(a, ref)
    # pure noise (the default) does not look at x
    m.aug_start_t = None
    torch.manual_seed(0)
    c = m.augment(s, x)
    torch.manual_seed(0)
    assert torch.allclose(c, m.augment(s, x + 5.0))
    assert "cl" in make(aug_start_t=3).losses(BATCH)
