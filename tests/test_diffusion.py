"""lib.diffusion: schedules, the forward process, one reverse step by hand, samplers, the denoiser."""
import math

import pytest
import torch

from lib import diffusion
from lib.diffusion import Denoiser, Scheduler, sample


# --------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("schedule", diffusion.SCHEDULES)
@pytest.mark.parametrize("T", [10, 50, 1000])
def test_alpha_bar_strictly_decreasing_in_unit_interval(schedule, T):
    s = Scheduler(T, beta_schedule=schedule)
    ab = s.alphas_cumprod.double()
    assert ab.shape == (T,) and s.alpha_bar is s.alphas_cumprod
    assert (ab > 0).all() and (ab < 1).all()
    assert (ab[1:] < ab[:-1]).all()
    assert torch.allclose(s.alphas, 1 - s.betas)
    assert torch.allclose(ab, torch.cumprod(1 - s.betas.double(), 0), rtol=1e-5)


def test_linear_schedule_is_ddpm():
    s = Scheduler(1000)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(s.betas[1:] - s.betas[:-1], torch.full((999,), (0.02 - 1e-4) / 999), atol=1e-9)
    # DDPM's T=1000 linear schedule ends with nearly no signal: alpha_bar_T ~ 4e-5
    assert 1e-5 < s.alphas_cumprod[-1].item() < 1e-4


def test_cosine_closed_form():
    T, s_ = 1000, 0.008
    s = Scheduler(T, beta_schedule="cosine")
    f = lambda u: math.cos((u + s_) / (1 + s_) * math.pi / 2) ** 2          # Nichol & Dhariwal Eq. 17
    for t in (0, 1, 100, 500, 900, 990):
        assert s.alphas_cumprod[t].item() == pytest.approx(f((t + 1) / T) / f(0), rel=1e-4)
    assert s.betas.max().item() == pytest.approx(0.999)                      # only the last step is clipped
    assert (s.betas[:-1] < 0.999).all()


def test_exp_schedule_matches_indirec_formula():
    T = 200
    s = Scheduler(T, beta_schedule="exp")
    x = torch.linspace(1, 2 * T + 1, T, dtype=torch.float64)
    ref = 1 - torch.exp(-0.1 / T - x * 0.5 * (10 - 0.1) / T ** 2)
    assert torch.allclose(s.betas.double(), ref, atol=1e-7)
    # beta(u) integrated over [0, 1] is (0.1 + 10) / 2: alpha_bar_T ~ exp(-5.05)
    assert s.alphas_cumprod[-1].item() == pytest.approx(math.exp(-5.05), rel=0.05)


def test_snr():
    s = Scheduler(50)
    ab = s.alphas_cumprod
    assert torch.allclose(s.snr(), ab / (1 - ab), rtol=1e-3)  # float32 alpha_bar near 1: 1 - ab loses digits
    assert (s.snr()[1:] < s.snr()[:-1]).all()


@pytest.mark.parametrize("kwargs, needle", [
    ({"beta_schedule": "quadratic"}, "'linear', 'cosine', 'exp'"),
    ({"prediction_type": "v_prediction"}, "'epsilon', 'sample'"),
    ({"num_train_timesteps": 0}, "num_train_timesteps"),
    ({"beta_start": 0.1, "beta_end": 0.01}, "beta_start <= beta_end"),
])
def test_bad_arguments_name_valid_values(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        Scheduler(**kwargs)


# --------------------------------------------------------------------------- forward process
def test_add_noise_statistics():
    s = Scheduler(1000)
    g = torch.Generator().manual_seed(0)
    N, D = 20000, 4
    x0 = torch.full((N, D), 2.0)
    eps = torch.randn(N, D, generator=g)
    for t in (0, 300, 999):
        x_t = s.add_noise(x0, eps, torch.full((N,), t, dtype=torch.long))
        ab = s.alphas_cumprod[t].item()
        assert x_t.mean().item() == pytest.approx(2 * math.sqrt(ab), abs=0.02)
        assert x_t.var().item() == pytest.approx(1 - ab, abs=0.02 + 0.02 * (1 - ab))
    # per-row timesteps, and an exact value
    t = torch.tensor([0, 999])
    x_t = s.add_noise(torch.ones(2, 3), torch.zeros(2, 3), t)
    assert torch.allclose(x_t[:, 0], s.alphas_cumprod[t].sqrt())
    with pytest.raises(ValueError, match="0..999"):
        s.add_noise(torch.ones(1, 3), torch.zeros(1, 3), torch.tensor([1000]))


# --------------------------------------------------------------------------- one reverse step by hand
def _hand_step(betas, t, prev_t, x_t, out, z, prediction_type="epsilon"):
    ab = [1.0]
    for b in betas:
        ab.append(ab[-1] * (1 - b))
    ab_t, ab_prev = ab[t + 1], ab[prev_t + 1]
    alpha_t = ab_t / ab_prev
    beta_t = 1 - alpha_t
    x0 = (x_t - math.sqrt(1 - ab_t) * out) / math.sqrt(ab_t) if prediction_type == "epsilon" else out
    mean = math.sqrt(ab_prev) * beta_t / (1 - ab_t) * x0 + math.sqrt(alpha_t) * (1 - ab_prev) / (1 - ab_t) * x_t
    var = (1 - ab_prev) / (1 - ab_t) * beta_t if prev_t >= 0 else 0.0
    return mean + math.sqrt(var) * z, x0


@pytest.mark.parametrize("prediction_type", diffusion.PREDICTION_TYPES)
@pytest.mark.parametrize("t, prev_t", [(3, 2), (4, 1), (0, -1), (2, -1)])
def test_step_against_hand_computed_ddpm_update(prediction_type, t, prev_t):
    s = Scheduler(5, beta_start=0.1, beta_end=0.3, prediction_type=prediction_type)
    betas = [0.1, 0.15, 0.2, 0.25, 0.3]
    x_t, out = torch.tensor([[0.7, -1.2]]), torch.tensor([[0.3, 0.5]])
    z = diffusion.randn(x_t.shape, torch.Generator().manual_seed(5))
    res = s.step(out, t, x_t, generator=torch.Generator().manual_seed(5), prev_t=prev_t)
    for j in range(2):
        prev, x0 = _hand_step(betas, t, prev_t, x_t[0, j].item(), out[0, j].item(), z[0, j].item(), prediction_type)
        assert res.prev_sample[0, j].item() == pytest.approx(prev, rel=1e-5, abs=1e-6)
        assert res.pred_original_sample[0, j].item() == pytest.approx(x0, rel=1e-5, abs=1e-6)


def test_step_uses_timesteps_and_last_step_is_noise_free():
    s = Scheduler(1000)
    s.set_timesteps(100)
    assert s.timesteps[:3].tolist() == [990, 980, 970] and s.timesteps[-1].item() == 0 and len(s.timesteps) == 100
    assert s.previous_timestep(990) == 980 and s.previous_timestep(0) == -1
    x = torch.randn(3, 4)
    a = s.step(torch.zeros(3, 4), 0, x, generator=torch.Generator().manual_seed(0)).prev_sample
    b = s.step(torch.zeros(3, 4), 0, x, generator=torch.Generator().manual_seed(1)).prev_sample
    assert torch.equal(a, b), "t=0 -> x0 adds no noise"
    with pytest.raises(ValueError, match="1..1000"):
        s.set_timesteps(0)
    with pytest.raises(ValueError, match="prev_t"):
        s.step(torch.zeros(1, 2), 5, torch.zeros(1, 2), prev_t=5)


# --------------------------------------------------------------------------- samplers
class Oracle(torch.nn.Module):
    """Knows x0: returns the exact noise (or x0) that explains x_t."""

    def __init__(self, x0, scheduler):
        super().__init__()
        self.x0, self.s = x0, scheduler
        self.dim = x0.shape[1]
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x_t, t, cond=None, drop_cond=None):
        if self.s.prediction_type == "sample":
            return self.x0
        ab = self.s.alphas_cumprod[torch.as_tensor(t)].view(-1, 1)
        return (x_t - ab.sqrt() * self.x0) / (1 - ab).sqrt()


@pytest.mark.parametrize("prediction_type", diffusion.PREDICTION_TYPES)
@pytest.mark.parametrize("schedule", diffusion.SCHEDULES)
def test_oracle_recovers_x0_exactly(prediction_type, schedule):
    s = Scheduler(100, beta_schedule=schedule, prediction_type=prediction_type)
    x0 = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    model = Oracle(x0, s)
    g = torch.Generator().manual_seed(2)
    # the oracle knows x0 wherever it starts (linear T=100 ends at alpha_bar 0.36: allowed explicitly)
    out, traj = diffusion.sample(model, s, shape=(6, 5), generator=g, return_trajectory=True,
                                 allow_signal_start=True)
    assert torch.allclose(out, x0, atol=1e-4)
    assert traj.x_t.shape == (100, 6, 5) and traj.pred_x0.shape == (100, 6, 5)
    assert traj.t.tolist() == list(range(99, -1, -1))
    assert torch.allclose(traj.pred_x0, x0.expand(100, 6, 5), atol=1e-3)
    # partial reverse from depth 30 on a 10-step schedule
    out2, traj2 = diffusion.sample(model, s, x_start=x0, start_t=30, num_inference_steps=10, generator=g,
                                   return_trajectory=True)
    assert traj2.t.tolist() == [30, 20, 10, 0] and torch.allclose(out2, x0, atol=1e-4)


def test_sampler_is_deterministic_under_a_seed():
    s = Scheduler(50, "exp")
    torch.manual_seed(0)
    model = Denoiser(4, hidden=16, time_dim=8)
    run = lambda seed: diffusion.sample(model, s, shape=(5, 4), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(3), run(3))
    assert not torch.allclose(run(3), run(4))
    a = diffusion.sample(model, s, x_start=torch.ones(5, 4), start_t=10, generator=torch.Generator().manual_seed(3))
    b = diffusion.sample(model, s, x_start=torch.ones(5, 4), start_t=10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert model.training, "sample restores the model's training mode"


def test_sample_needs_a_shape():
    s = Scheduler(10)
    with pytest.raises(ValueError, match="shape"):
        diffusion.sample(Denoiser(2, hidden=8, time_dim=4), s)
    with pytest.raises(ValueError, match="start_t"):
        diffusion.sample(Denoiser(2, hidden=8, time_dim=4), s, shape=(1, 2), start_t=10)


# --------------------------------------------------------------------------- the denoiser
def test_timestep_embedding():
    e = diffusion.timestep_embedding(torch.tensor([0, 5, 999]), 7)
    assert e.shape == (3, 7)
    assert torch.allclose(e[0, :3], torch.ones(3)) and torch.allclose(e[0, 3:], torch.zeros(4))
    assert e[1, 0].item() == pytest.approx(math.cos(5.0))                   # lowest frequency w_0 = 1


def test_denoiser_shapes_condition_and_guidance():
    torch.manual_seed(0)
    m = Denoiser(6, cond_dim=3, hidden=16, time_dim=8)
    x, t, c = torch.randn(4, 6), torch.tensor([0, 1, 2, 3]), torch.randn(4, 3)
    assert m(x, t, c).shape == (4, 6) and m(x, 7).shape == (4, 6)
    # dropping a row's condition = the null condition
    drop = torch.tensor([True, False, True, False])
    mixed = m(x, t, c, drop_cond=drop)
    assert torch.allclose(mixed[drop], m(x, t)[drop]) and torch.allclose(mixed[~drop], m(x, t, c)[~drop])
    w = 2.0
    g = diffusion.guided_output(m, x, t, c, w)
    assert torch.allclose(g, (1 + w) * m(x, t, c) - w * m(x, t), atol=1e-6)
    assert torch.allclose(diffusion.guided_output(m, x, t, c, 0.0), m(x, t, c))
    with pytest.raises(ValueError, match="cond_dim"):
        Denoiser(6)(x, t, c)
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        m(x, t, torch.randn(4, 5))


@pytest.mark.parametrize("prediction_type", diffusion.PREDICTION_TYPES)
def test_diffusion_loss_target_and_cfg_dropout(prediction_type):
    s = Scheduler(100, prediction_type=prediction_type)
    x0 = torch.randn(8, 3)

    class Record(torch.nn.Module):
        def forward(self, x_t, t, cond=None, drop_cond=None):
            self.seen = (x_t, t, cond, drop_cond)
            return torch.zeros_like(x_t)

    rec = Record()
    loss = diffusion.diffusion_loss(rec, s, x0, cond=torch.ones(8, 2), p_uncond=0.5,
                                    generator=torch.Generator().manual_seed(0))
    x_t, t, _, drop = rec.seen
    # with a zero model the loss is the mean square of the target: recover eps from x_t and compare
    ab = s.alphas_cumprod[t].view(-1, 1)
    eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
    target = eps if prediction_type == "epsilon" else x0
    assert loss.item() == pytest.approx((target ** 2).mean().item(), rel=1e-4)
    assert drop.dtype == torch.bool and 0 < drop.sum() < 8
    diffusion.diffusion_loss(rec, s, x0, cond=torch.ones(8, 2), p_uncond=0.0)
    assert rec.seen[3] is None
    with pytest.raises(ValueError, match="p_uncond"):
        diffusion.diffusion_loss(rec, s, x0, p_uncond=1.5)


@pytest.mark.parametrize("prediction_type", diffusion.PREDICTION_TYPES)
def test_denoiser_overfits_a_tiny_set(prediction_type):
    """Four points: a trained denoiser's samples land on them (and the loss falls far below its start)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # tiny matrices: threads only add overhead (and suffer on a busy machine)
    s = Scheduler(50, "exp", prediction_type=prediction_type, timestep_spacing="trailing")
    x0 = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    m = Denoiser(2, hidden=64, time_dim=16)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = diffusion.diffusion_loss(m, s, x0.repeat(64, 1), generator=g).item()
    try:
        for _ in range(800):
            loss = diffusion.diffusion_loss(m, s, x0.repeat(64, 1), generator=g)
            opt.zero_grad(); loss.backward(); opt.step()
    finally:
        torch.set_num_threads(threads)
    # x0-prediction keeps an irreducible error at the noisiest steps (x0 cannot be read from noise), so the
    # loss only has to fall; epsilon-prediction's falls by half
    assert loss.item() < (0.5 if prediction_type == "epsilon" else 0.9) * first
    out = diffusion.sample(m, s, shape=(200, 2), generator=torch.Generator().manual_seed(1))
    dist = torch.cdist(out, x0).min(1).values
    assert (dist < 0.3).float().mean() > 0.9, f"median distance to the nearest point {dist.median():.3f}"


# --------------------------------------------------------------------------- sampling schedules and start
@pytest.mark.parametrize("spacing", diffusion.SPACINGS)
@pytest.mark.parametrize("T, n", [(1000, 100), (50, 10), (50, 7), (10, 3), (7, 7)])
def test_inference_timesteps_any_T_and_n(spacing, T, n):
    ts = Scheduler(T, timestep_spacing=spacing).inference_timesteps(n)
    assert len(ts) == n and (ts[1:] < ts[:-1]).all() and ts.min() >= 0 and ts.max() <= T - 1
    if spacing == "leading":
        assert ts[-1] == 0 and ts[0] == (n - 1) * (T // n)
    if spacing in ("trailing", "linspace"):
        assert ts[0] == T - 1


def test_inference_timesteps_match_diffusers_examples():
    # diffusers' DDPMScheduler.set_timesteps for T=50, n=7 (hand-computed from its three formulas)
    s = Scheduler(50)
    assert s.inference_timesteps(7, "leading").tolist() == [42, 35, 28, 21, 14, 7, 0]
    assert s.inference_timesteps(7, "trailing").tolist() == [49, 42, 35, 28, 20, 13, 6]
    assert s.inference_timesteps(7, "linspace").tolist() == [49, 41, 33, 24, 16, 8, 0]
    with pytest.raises(ValueError, match="'leading', 'trailing', 'linspace'"):
        Scheduler(50, timestep_spacing="uniform")


def test_zero_terminal_snr_schedule():
    s = Scheduler(50, zero_terminal_snr=True, prediction_type="sample")
    ref = Scheduler(50)
    assert s.alpha_bar[-1].item() == 0 and s.alpha_bar[0].item() == pytest.approx(ref.alpha_bar[0].item())
    assert (s.alpha_bar[1:] < s.alpha_bar[:-1]).all()
    with pytest.raises(ValueError, match="prediction_type='sample'"):
        Scheduler(50, zero_terminal_snr=True)


def test_sample_refuses_a_pure_noise_start_where_signal_is_left():
    m = Denoiser(2, hidden=8, time_dim=4)
    s = Scheduler(50)                                # linear 1e-4..0.02: alpha_bar(45) = 0.652
    with pytest.raises(ValueError, match=r"t=45, where alpha_bar = 0\.652.*trailing.*allow_signal_start"):
        diffusion.sample(m, s, shape=(3, 2), num_inference_steps=10)
    assert diffusion.sample(m, s, shape=(3, 2), num_inference_steps=10, allow_signal_start=True).shape == (3, 2)
    # DeftRec's released code: pure noise at t = 99 of a linear T = 1000 schedule (alpha_bar 0.90)
    with pytest.raises(ValueError, match="t=99"):
        diffusion.sample(m, Scheduler(1000), shape=(3, 2), start_t=99)
    # a partial reverse from real data is not a pure-noise start: allowed at any depth
    assert diffusion.sample(m, s, x_start=torch.zeros(3, 2), start_t=5).shape == (3, 2)
    # trailing spacing on the exp schedule starts in noise
    ok = Scheduler(50, "exp", timestep_spacing="trailing")
    assert ok.start_alpha_bar(10) == (49, pytest.approx(float(ok.alpha_bar[49])))
    assert ok.start_alpha_bar(10)[1] < diffusion.MAX_START_ALPHA_BAR
    diffusion.sample(m, ok, shape=(3, 2), num_inference_steps=10)


def _notebook_defaults(stem):
    import papermill as pm
    from lib import run
    return {k: v["default"] for k, v in pm.inspect_notebook(str(run.NOTEBOOKS / f"{stem}.ipynb")).items()}


def _lit(v):
    import ast
    return ast.literal_eval(v)


def test_first_sampling_step_of_each_notebook_default_is_noise():
    """alpha_bar at the first pure-noise sampling step under every notebook's (and LLMDiRec's) defaults."""
    p3 = {k: _lit(v) for k, v in _notebook_defaults("evidence/03_diffusion_trajectories").items()
          if k in ("T", "beta_schedule", "num_inference_steps", "timestep_spacing")}
    s3 = Scheduler(p3["T"], p3["beta_schedule"], timestep_spacing=p3.get("timestep_spacing", "leading"))
    assert s3.start_alpha_bar(p3["num_inference_steps"])[1] < 1e-3
    p4 = {k: _lit(v) for k, v in _notebook_defaults("evidence/04_intent_clusters").items()
          if k in ("T", "beta_schedule", "n_inference_steps", "timestep_spacing")}
    s4 = Scheduler(p4["T"], p4["beta_schedule"], timestep_spacing=p4["timestep_spacing"])
    assert s4.start_alpha_bar(p4["n_inference_steps"])[1] < diffusion.MAX_START_ALPHA_BAR
    from lib.models.llmdirec import LLMDiRec
    import inspect
    d = {k: v.default for k, v in inspect.signature(LLMDiRec).parameters.items()}
    sl = Scheduler(d["T"], d["beta_schedule"], timestep_spacing=d["timestep_spacing"])
    assert sl.start_alpha_bar(d["num_inference_steps"])[1] < diffusion.MAX_START_ALPHA_BAR


class PerfectConditional(torch.nn.Module):
    """x0-predictor that knows the answer: f(x, t, c) = c, f(x, t, null) = 0."""
    dim = 3

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x_t, t, cond=None, drop_cond=None):
        if cond is None:
            return torch.zeros_like(x_t)
        return cond if drop_cond is None else torch.where(drop_cond[:, None], torch.zeros_like(cond), cond)


@pytest.mark.parametrize("w", [0.0, 0.5, 2.0])
def test_sample_with_condition_and_guidance_end_to_end(w):
    """With x0-prediction the last step returns x0_hat itself, so the sample is the guided x0:
    (1 + w) f(x, c) - w f(x, null) = (1 + w) c, whatever the noise and the path."""
    s = Scheduler(50, "exp", prediction_type="sample", timestep_spacing="trailing")
    c = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    out = diffusion.sample(PerfectConditional(), s, cond=c, guidance_scale=w, num_inference_steps=10,
                           generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3)
    assert torch.allclose(out, (1 + w) * c, atol=1e-5)


def test_sample_spacing_is_for_one_run_and_the_mode_comes_back():
    torch.manual_seed(0)
    net = Denoiser(3, hidden=8, dropout=0.5)
    s = Scheduler(50, "exp", timestep_spacing="leading")
    x = sample(net.train(), s, shape=(2, 3), generator=torch.Generator().manual_seed(0), num_inference_steps=10,
               spacing="trailing", return_trajectory=True)[1]
    assert x.t.tolist() == Scheduler(50, "exp").inference_timesteps(10, "trailing").tolist()
    assert s.timestep_spacing == "leading" and net.training, "scheduler untouched, training mode restored"
    a = sample(net, s, shape=(2, 3), generator=torch.Generator().manual_seed(0), num_inference_steps=10,
               spacing="trailing")
    b = sample(net, Scheduler(50, "exp", timestep_spacing="trailing"), shape=(2, 3),
               generator=torch.Generator().manual_seed(0), num_inference_steps=10)
    assert torch.equal(a, b), "dropout off during sampling (eval mode), same steps as a trailing scheduler"

    class Broken(Denoiser):
        def forward(self, *a, **k):
            assert not self.training
            raise RuntimeError("boom")
    bad = Broken(3, hidden=8).train()
    with pytest.raises(RuntimeError, match="boom"):
        sample(bad, s, shape=(2, 3), num_inference_steps=10, spacing="trailing")
    assert bad.training, "the mode comes back after an exception too"


def test_add_noise_and_predict_x0_take_a_t_shaped_for_x():
    """t already shaped to broadcast against x (ADARec's levels on dim 2 of (B, L, K, D)) is used as it is."""
    s = Scheduler(50, "exp")
    x0 = torch.randn(2, 3, 1, 4)
    eps = torch.randn(2, 3, 5, 4)
    t = torch.tensor([1, 5, 10, 20, 49])
    x_t = s.add_noise(x0, eps, t.view(1, 1, -1, 1))                                   # (2, 3, 5, 4)
    ab = s.alphas_cumprod[t].view(1, 1, -1, 1)
    assert torch.allclose(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * eps)                # Eq. 4 by hand
    assert torch.allclose(s.predict_x0(eps, t.view(1, 1, -1, 1), x_t), x0.expand_as(x_t), atol=1e-4)   # Eq. 15
