"""Diffusion on vectors: DDPM (Ho et al., 2020) for sequence representations and item embeddings.

Taught in notebook 03 (noising and denoising trajectories); reused by the intent notebooks, LLMDiRec/InDiRec
(a conditional denoiser with classifier-free guidance), ADARec (the reverse trajectory as an intent hierarchy)
and DeftRec (1000 training steps, 100 sampling steps). The API is diffusers' ``DDPMScheduler`` in miniature.

Conventions (read these once):
* Timestep index ``t = 0..T-1`` as in diffusers: ``alpha_bar[t] = prod_{s<=t} (1 - beta_s)``, so index ``t`` is
  the papers' step ``t+1`` and even ``t = 0`` carries a little noise (``beta_0``).
* ``prediction_type="epsilon"``: the network predicts the noise (DDPM Eq. 14 L_simple; LLMDiRec L_diff; ADARec
  L_deno; DeftRec Eq. 10). ``"sample"``: it predicts x0 itself (InDiRec's denoiser; DeftRec Eq. 9).
* Classifier-free guidance: ``out = (1 + w) f(x, c) - w f(x, null)`` (InDiRec's convention: ``w = 0`` is the plain
  conditional model, ``w = 2`` is InDiRec's default; diffusers' ``guidance_scale`` g is our ``1 + w``).
* Equation numbers without a paper name are DDPM's (arXiv 2006.11239).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.utils import eval_mode

SCHEDULES = ("linear", "cosine", "exp")
PREDICTION_TYPES = ("epsilon", "sample")
SPACINGS = ("leading", "trailing", "linspace")
SCALES = ("paper", "code")           # bpr_diffusion_loss: squared norms in both terms (DeftRec Eq. 10, 12-13);
                                     # per-coordinate means in both (DeftRec's released code, F.mse_loss)
# Sampling from pure N(0, I) is only right where the forward process has (nearly) destroyed the signal:
# `sample` refuses a pure-noise start at a step whose alpha_bar is above this bound unless told otherwise.
MAX_START_ALPHA_BAR = 0.05


# --------------------------------------------------------------------------- beta schedules
def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM section 4: beta rises linearly from beta_start to beta_end over T steps. (T,) float64."""
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_alpha_bar(u: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal (2021) Eq. 17 before normalising: f(u) = cos^2((u + s) / (1 + s) * pi / 2), u = t / T."""
    return torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021): alpha_bar[t] = f((t+1)/T) / f(0), beta_t = 1 - alpha_bar[t] / alpha_bar[t-1],
    clipped at max_beta (the last step would otherwise be 1). (T,) float64."""
    f = cosine_alpha_bar(torch.arange(T + 1, dtype=torch.float64) / T, s)     # (T+1,) f(0/T) .. f(T/T)
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. (2024, 'Common diffusion noise schedules and sample steps are flawed', Algorithm 1): shift and
    scale sqrt(alpha_bar) so that its last value is exactly 0 (zero terminal SNR) and its first is unchanged.
    The last step is then pure noise, so x0 cannot be read from an epsilon-prediction there: use 'sample'."""
    ab_sqrt = torch.cumprod(1 - betas, 0).sqrt()
    a0, aT = ab_sqrt[0].clone(), ab_sqrt[-1].clone()
    ab_sqrt = (ab_sqrt - aT) * a0 / (a0 - aT)
    ab = ab_sqrt ** 2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1 - alphas


def exp_betas(T: int, beta_min: float = 0.1, beta_max: float = 10.0) -> torch.Tensor:
    """InDiRec's 'exp' schedule (its default, from DreamRec): the discretised variance-preserving SDE of Song et
    al. (2021), beta(u) = beta_min + u (beta_max - beta_min) on u in [0, 1], with
    beta_t = 1 - exp(-beta_min / T - x_t (beta_max - beta_min) / (2 T^2)), x = linspace(1, 2T + 1, T) as in
    their code (the exact integral over step t would use x_t = 2t + 1). beta_start/beta_end play no part."""
    x = torch.linspace(1, 2 * T + 1, T, dtype=torch.float64)
    return 1 - torch.exp(-beta_min / T - x * (beta_max - beta_min) / (2 * T * T))


@dataclass
class StepOutput:
    prev_sample: torch.Tensor            # x_{t_prev}, (B, D)
    pred_original_sample: torch.Tensor   # x0_hat from x_t, (B, D)


class Scheduler:
    """The fixed forward process and one reverse step, diffusers style.

    betas, alphas = 1 - betas, alphas_cumprod (alias alpha_bar): (T,) float32 tensors.
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "linear", beta_start: float = 1e-4,
                 beta_end: float = 0.02, prediction_type: str = "epsilon", exp_beta_min: float = 0.1,
                 exp_beta_max: float = 10.0, timestep_spacing: str = "leading", zero_terminal_snr: bool = False):
        if timestep_spacing not in SPACINGS:
            raise ValueError(f"unknown timestep_spacing {timestep_spacing!r}; valid values are "
                             f"{', '.join(map(repr, SPACINGS))} (diffusers' names)")
        if zero_terminal_snr and prediction_type == "epsilon":
            raise ValueError("zero_terminal_snr=True makes the last step pure noise, where x0 cannot be recovered "
                             "from a predicted epsilon; use prediction_type='sample' with it")
        if beta_schedule not in SCHEDULES:
            raise ValueError(f"unknown beta_schedule {beta_schedule!r}; valid values are "
                             f"{', '.join(map(repr, SCHEDULES))}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; valid values are "
                             f"{', '.join(map(repr, PREDICTION_TYPES))} (the noise, or x0 itself)")
        if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be an integer >= 1, got {num_train_timesteps!r}")
        if beta_schedule == "linear" and not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"the linear schedule needs 0 < beta_start <= beta_end < 1, got "
                             f"beta_start={beta_start}, beta_end={beta_end}")
        T = num_train_timesteps
        self.num_train_timesteps, self.beta_schedule, self.prediction_type = T, beta_schedule, prediction_type
        if beta_schedule == "linear":
            betas = linear_betas(T, beta_start, beta_end)
        elif beta_schedule == "cosine":
            betas = cosine_betas(T)
        else:
            betas = exp_betas(T, exp_beta_min, exp_beta_max)
        if zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        self.timestep_spacing, self.zero_terminal_snr = timestep_spacing, bool(zero_terminal_snr)
        alphas = 1 - betas                                            # alpha_t = 1 - beta_t
        # alpha_bar_t = prod_{s <= t} alpha_s  (DDPM section 2, just above Eq. 4)
        alphas_cumprod = torch.cumprod(alphas, 0)
        self.betas, self.alphas = betas.float(), alphas.float()
        self.alphas_cumprod = alphas_cumprod.float()
        self._ab = alphas_cumprod                                     # float64 copy for the step arithmetic
        self.set_timesteps(None)

    @property
    def alpha_bar(self) -> torch.Tensor:
        return self.alphas_cumprod

    def __repr__(self):
        return (f"Scheduler(T={self.num_train_timesteps}, beta_schedule={self.beta_schedule!r}, "
                f"prediction_type={self.prediction_type!r}, timestep_spacing={self.timestep_spacing!r}"
                f"{', zero_terminal_snr=True' if self.zero_terminal_snr else ''})")

    def snr(self) -> torch.Tensor:
        """(T,) signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) of x_t (Kingma et al., 2021)."""
        return (self._ab / (1 - self._ab)).float()

    def _check_t(self, t: torch.Tensor):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_train_timesteps):
            raise ValueError(f"timesteps must lie in 0..{self.num_train_timesteps - 1}, got values "
                             f"{int(t.min())}..{int(t.max())}")

    def _gather(self, table: torch.Tensor, t, like: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """table[t] shaped to broadcast over `like`: (B, 1, ...) for a (B,) t, a scalar tensor for an int t. dim: the
        axis of `like` that a 1-D t runs along (ADARec's levels sit on axis 2: (B, L, K, D) with one step per level)."""
        t = torch.as_tensor(t, dtype=torch.long)
        self._check_t(t.reshape(-1))
        v = table[t.cpu()].to(device=like.device, dtype=like.dtype)
        if dim and v.dim() == 1:
            shape = [1] * like.dim()
            shape[dim] = -1
            return v.reshape(shape)
        return v.reshape(v.shape + (1,) * (like.dim() - v.dim())) if v.dim() else v

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t, dim: int = 0) -> torch.Tensor:
        """Forward process in closed form. x0, noise: (B, ...); t: LongTensor (B,) or an int (dim: the axis t runs
        along, see `_gather`; x0 may be 1 there and broadcast).

        Eq. 4 (q(x_t | x_0)); LLMDiRec 3.2; ADARec Eq. 4; DeftRec Eq. 8."""
        # x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
        return self._gather(self.alphas_cumprod.sqrt(), t, noise, dim) * x0 + \
            self._gather((1 - self.alphas_cumprod).sqrt(), t, noise, dim) * noise

    def predict_x0(self, model_output: torch.Tensor, t, x_t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """x0_hat from the model's output at step t (t: int or (B,), along axis dim). For epsilon-prediction this is
        Eq. 15 = ADARec Eq. 5: x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_bar_t)."""
        if self.prediction_type == "sample":
            return model_output
        ab = self._gather(self.alphas_cumprod, t, x_t, dim)
        return (x_t - (1 - ab).sqrt() * model_output) / ab.sqrt()

    # ----------------------------------------------------------------------- the reverse process
    def inference_timesteps(self, num_inference_steps: int | None = None, spacing: str | None = None) -> torch.Tensor:
        """Descending timesteps of a sampling schedule. None = all T training steps. Otherwise n steps spaced as
        diffusers' `timestep_spacing` (Lin et al. 2024, Table 2), default the scheduler's own:

        * 'leading':  every (T // n)-th step from 0: T=1000, n=100 -> 990, ..., 0 (DeftRec 4.1). It never
          reaches T-1, so it starts where some signal is left (T=50, n=10 -> 45).
        * 'trailing': round(T/n)-spaced steps ending at T-1: T=1000, n=100 -> 999, 989, ..., 9; T=50, n=10 -> 49..4.
        * 'linspace': round(linspace(0, T-1, n)): both ends, 999, ..., 0.
        """
        T = self.num_train_timesteps
        if num_inference_steps is None:
            return torch.arange(T - 1, -1, -1)
        n = num_inference_steps
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= T:
            raise ValueError(f"num_inference_steps must be an integer in 1..{T} (num_train_timesteps), got {n!r}")
        spacing = spacing or self.timestep_spacing
        if spacing not in SPACINGS:
            raise ValueError(f"unknown spacing {spacing!r}; valid values are {', '.join(map(repr, SPACINGS))}")
        if spacing == "leading":
            ts = torch.arange(n) * (T // n)
        elif spacing == "trailing":
            ts = torch.round(torch.arange(T, 0, -T / n, dtype=torch.float64)).long().flip(0) - 1
        else:
            ts = torch.round(torch.linspace(0, T - 1, n, dtype=torch.float64)).long()
        return ts.long().flip(0)

    def start_alpha_bar(self, num_inference_steps: int | None = None, spacing: str | None = None) -> tuple[int, float]:
        """(t, alpha_bar_t) of the first step of a sampling schedule: where a pure-noise start would begin. `sample`
        refuses it above MAX_START_ALPHA_BAR; notebooks check their parameters with it."""
        t = int(self.inference_timesteps(num_inference_steps, spacing)[0])
        return t, float(self.alphas_cumprod[t])

    def set_timesteps(self, num_inference_steps: int | None = None):
        """Choose the sampling schedule used by `step` when it is not told the previous timestep."""
        self.num_inference_steps = num_inference_steps
        self.timesteps = self.inference_timesteps(num_inference_steps)

    def previous_timestep(self, t: int) -> int:
        """The next smaller timestep in `self.timesteps`, or -1 after the last (meaning: x_prev is x0)."""
        smaller = self.timesteps[self.timesteps < t]
        return int(smaller.max()) if len(smaller) else -1

    def step(self, model_output: torch.Tensor, t: int, x_t: torch.Tensor, generator: torch.Generator | None = None,
             prev_t: int | None = None) -> StepOutput:
        """One DDPM reverse step from x_t to x_{prev_t} (prev_t defaults to the previous entry of `timesteps`;
        -1 means the final, noise-free step to x0). A shorter schedule skips steps: the posterior is then the
        one between t and prev_t, with alpha_t := alpha_bar_t / alpha_bar_prev (as diffusers does)."""
        t = int(t)
        self._check_t(torch.tensor([t]))
        prev_t = self.previous_timestep(t) if prev_t is None else int(prev_t)
        if not -1 <= prev_t < t:
            raise ValueError(f"prev_t must lie in -1..{t - 1} (before t={t}), got {prev_t}")
        # 1. alphas and betas of this (possibly skipping) step
        ab_t = float(self._ab[t])
        ab_prev = float(self._ab[prev_t]) if prev_t >= 0 else 1.0
        alpha_t = ab_t / ab_prev
        beta_t = 1 - alpha_t
        # 2. predicted x0, Eq. 15 (ADARec Eq. 5) or the model's own output
        x0_hat = self.predict_x0(model_output, t, x_t)
        # 3. posterior q(x_prev | x_t, x0) mean coefficients, Eq. 7
        c_x0 = math.sqrt(ab_prev) * beta_t / (1 - ab_t)
        c_xt = math.sqrt(alpha_t) * (1 - ab_prev) / (1 - ab_t)
        # mu_tilde(x_t, x0) = c_x0 x0 + c_xt x_t   (Eq. 7)
        mean = c_x0 * x0_hat + c_xt * x_t
        if prev_t < 0:
            return StepOutput(mean, x0_hat)
        # 4. add noise with the posterior variance beta_tilde = (1 - alpha_bar_prev) / (1 - alpha_bar_t) beta_t (Eq. 7)
        var = (1 - ab_prev) / (1 - ab_t) * beta_t
        z = randn(x_t.shape, generator, x_t.device, x_t.dtype)
        return StepOutput(mean + math.sqrt(var) * z, x0_hat)


def randn(shape, generator=None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise from `generator` (on the generator's device), moved to `device`."""
    gdev = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=gdev, dtype=dtype).to(device)


# --------------------------------------------------------------------------- the denoiser
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) integer steps -> (B, dim) sinusoidal embedding, as Transformer positions (DDPM appendix B):
    [cos(t w_i), sin(t w_i)] with w_i = max_period^(-i / (dim/2))."""
    half = dim // 2
    w = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    arg = t.float()[:, None] * w[None]                                  # (B, half)
    emb = torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)          # (B, 2 half)
    return F.pad(emb, (0, dim - 2 * half))                              # (B, dim)


class Denoiser(nn.Module):
    """f_theta(x_t, t, c): an MLP on [x_t ; c ; step embedding], the shape of InDiRec's and ADARec's denoisers.

    cond_dim = 0: unconditional. Otherwise a learned null condition (InDiRec's `none_embedding`) stands in for
    a missing condition: cond=None, or rows flagged in `drop_cond` (classifier-free guidance training).
    The output has the size of x_t and means eps or x0 according to the scheduler's prediction_type.
    """

    def __init__(self, dim: int, cond_dim: int = 0, hidden: int = 256, time_dim: int = 64, n_layers: int = 2,
                 dropout: float = 0.0):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.dim, self.cond_dim, self.time_dim = dim, cond_dim, time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, 2 * time_dim), nn.SiLU(), nn.Linear(2 * time_dim, time_dim))
        self.null_cond = nn.Parameter(torch.randn(cond_dim)) if cond_dim else None
        layers, width = [], dim + cond_dim + time_dim
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.SiLU(), nn.Dropout(dropout)]
            width = hidden
        self.mlp = nn.Sequential(*layers, nn.Linear(width, dim))

    def condition(self, cond: torch.Tensor | None, B: int, drop_cond: torch.Tensor | None = None) -> torch.Tensor:
        """(B, cond_dim) condition with the null condition where cond is None or drop_cond is True."""
        if self.cond_dim == 0:
            if cond is not None:
                raise ValueError("this Denoiser has cond_dim=0 and takes no condition; build it with cond_dim > 0")
            return torch.zeros(B, 0, device=self.mlp[0].weight.device)
        null = self.null_cond.expand(B, -1)
        if cond is None:
            return null
        if cond.shape != (B, self.cond_dim):
            raise ValueError(f"cond must have shape (B, cond_dim) = ({B}, {self.cond_dim}), got {tuple(cond.shape)}")
        return cond if drop_cond is None else torch.where(drop_cond[:, None], null, cond)

    def forward(self, x_t: torch.Tensor, t, cond: torch.Tensor | None = None,
                drop_cond: torch.Tensor | None = None) -> torch.Tensor:
        B = x_t.shape[0]                                                   # x_t: (B, dim)
        t = torch.as_tensor(t, device=x_t.device).long()
        t = t.expand(B) if t.dim() == 0 else t                            # (B,)
        temb = self.time_mlp(timestep_embedding(t, self.time_dim))        # (B, time_dim)
        c = self.condition(cond, B, drop_cond)                            # (B, cond_dim)
        return self.mlp(torch.cat([x_t, c, temb], dim=-1))                # (B, dim)


def diffusion_loss(model, scheduler: Scheduler, x0: torch.Tensor, cond: torch.Tensor | None = None,
                   p_uncond: float = 0.1, generator: torch.Generator | None = None) -> torch.Tensor:
    """E_{x0, t, eps} ||target - f_theta(x_t, t, c)||^2 / D with t uniform over 0..T-1 (Eq. 14 L_simple; LLMDiRec
    L_diff; ADARec L_deno; DeftRec Eq. 10), target = eps, or x0 for prediction_type 'sample' (DeftRec Eq. 9).
    With a condition, each row's condition is replaced by the null one with probability p_uncond (CFG)."""
    if not 0 <= p_uncond <= 1:
        raise ValueError(f"p_uncond must lie in [0, 1], got {p_uncond}")
    B, dev = x0.shape[0], x0.device
    gdev = generator.device if generator is not None else dev
    t = torch.randint(0, scheduler.num_train_timesteps, (B,), generator=generator, device=gdev).to(dev)  # (B,)
    eps = randn(x0.shape, generator, dev, x0.dtype)                                                      # (B, D)
    x_t = scheduler.add_noise(x0, eps, t)                                                                # Eq. 4
    kwargs = {}
    if cond is not None and p_uncond > 0:
        kwargs["drop_cond"] = (torch.rand(B, generator=generator, device=gdev) < p_uncond).to(dev)       # (B,)
    out = model(x_t, t, cond, **kwargs)
    target = eps if scheduler.prediction_type == "epsilon" else x0
    return F.mse_loss(out, target)


def bpr_diffusion_loss(model, scheduler: Scheduler, x0_pos: torch.Tensor, x0_neg: torch.Tensor,
                       cond: torch.Tensor | None = None, p_uncond: float = 0.0,
                       generator: torch.Generator | None = None, t: torch.Tensor | None = None,
                       eps: torch.Tensor | None = None, reduce: str = "row", scale: str = "paper") -> dict:
    """DeftRec's contrastive denoising (Eq. 10-13): the positive and its negatives are noised with the SAME t and
    the SAME eps, and the denoiser must fit the positive better than each negative under the user's condition.

    x0_pos: (B, D) positive targets q+ (Eq. 8); x0_neg: (B, M, D) M negatives per row (or (B, D) for one: Eq. 13's
    mean negative q- = mean_j q_j-, the caller averages). With err(x) = ||f_theta(x_t, t, c) - target||^2, the
    squared norm as in Eq. 10 and Eq. 12-13 (target eps, or x0 for 'sample'), and e(x) the error on `scale`:
    e = err (scale='paper': squared norms, as Eq. 10 and Eq. 13 write both terms) or e = err / D (scale='code':
    per-coordinate means in both, the released code's F.mse_loss, and diffusion_loss's scale):
      "diff" = mean_b e(q+_b)                                            (Eq. 10)
      "neg"  = mean_b mean_m -log sigma(e(q-_bm) - e(q+_b))              (reduce='row': Eq. 13, or Eq. 12 with M > 1)
               -log sigma(mean_bm e(q-) - mean_b e(q+))                  (reduce='batch': the released code)
      "err_pos" (B,), "err_neg" (B, M): the squared norms err (whatever the scale), detached, for plots.
    Both terms are on ONE scale, so gamma2 in Eq. 15 weighs L_Neg against L_Diff the same for any D.
    t (B,) and eps (B, D) may be given (tests); otherwise drawn from `generator`. A dropped condition (CFG,
    p_uncond) is dropped for the positive and its negatives alike."""
    if reduce not in ("row", "batch"):
        raise ValueError(f"reduce must be 'row' (the paper) or 'batch' (the released code), got {reduce!r}")
    if scale not in SCALES:
        raise ValueError(f"scale must be 'paper' (squared norms in both terms, Eq. 10 and 13) or 'code' "
                         f"(per-coordinate means in both, the released code), got {scale!r}")
    if not 0 <= p_uncond <= 1:
        raise ValueError(f"p_uncond must lie in [0, 1], got {p_uncond}")
    if x0_neg.dim() == 2:
        x0_neg = x0_neg[:, None]
    B, M, D = x0_neg.shape
    if x0_pos.shape != (B, D):
        raise ValueError(f"x0_pos must be (B, D) = ({B}, {D}) to match x0_neg {tuple(x0_neg.shape)}, "
                         f"got {tuple(x0_pos.shape)}")
    dev = x0_pos.device
    gdev = generator.device if generator is not None else dev
    if t is None:
        t = torch.randint(0, scheduler.num_train_timesteps, (B,), generator=generator, device=gdev).to(dev)
    if eps is None:
        eps = randn(x0_pos.shape, generator, dev, x0_pos.dtype)                                   # (B, D)
    drop = None
    if cond is not None and p_uncond > 0:
        drop = (torch.rand(B, generator=generator, device=gdev) < p_uncond).to(dev)                # (B,)
    x_all = torch.cat([x0_pos[:, None], x0_neg], 1)                                               # (B, 1+M, D)
    eps_all = eps[:, None].expand(B, 1 + M, D)                                                     # shared eps
    t_all = t[:, None].expand(B, 1 + M).reshape(-1)                                                # shared t
    x_t = scheduler.add_noise(x_all.reshape(-1, D), eps_all.reshape(-1, D), t_all)                 # Eq. 8
    kwargs = {}
    c_all = None
    if cond is not None:
        c_all = cond[:, None].expand(B, 1 + M, cond.shape[-1]).reshape(B * (1 + M), -1)
        if drop is not None:
            kwargs["drop_cond"] = drop[:, None].expand(B, 1 + M).reshape(-1)
    out = model(x_t, t_all, c_all, **kwargs).reshape(B, 1 + M, D)
    target = eps_all if scheduler.prediction_type == "epsilon" else x_all
    err = (out - target).pow(2).sum(-1)                       # (B, 1+M) ||f_theta - target||^2, Eq. 10 and 12-13
    # one scale for L_Diff and for the errors inside L_Neg's sigmoid: the paper's squared norms (Eq. 10, Eq. 13), or
    # the released code's F.mse_loss in both (a mean over the D coordinates: err / D)
    e = err if scale == "paper" else err / D                                                       # (B, 1+M)
    e_pos, e_neg = e[:, 0], e[:, 1:]                                                               # (B,), (B, M)
    if reduce == "row":
        neg = -F.logsigmoid(e_neg - e_pos[:, None]).mean()                                          # Eq. 12-13
    else:
        neg = -F.logsigmoid(e_neg.mean() - e_pos.mean())                                            # released code
    return {"diff": e_pos.mean(), "neg": neg,                                                       # Eq. 10, Eq. 13
            "err_pos": err[:, 0].detach(), "err_neg": err[:, 1:].detach()}


# --------------------------------------------------------------------------- sampling
@dataclass
class Trajectory:
    """One reverse run, step by step (S = number of steps, in the order run: t descending)."""
    t: torch.Tensor          # (S,) timestep of each step
    x_t: torch.Tensor        # (S, B, D) the state entering the step
    pred_x0: torch.Tensor    # (S, B, D) x0_hat predicted at that step (ADARec's hierarchy A_u, Eq. 5)
    sample: torch.Tensor     # (B, D) the final output


def guided_output(model, x_t: torch.Tensor, t, cond: torch.Tensor | None, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: (1 + w) f(x, c) - w f(x, null) with w = guidance_scale (InDiRec's form).
    w = 0 (or no condition) is one plain forward pass."""
    if cond is None or guidance_scale == 0:
        return model(x_t, t, cond)
    B = x_t.shape[0]
    tt = torch.as_tensor(t, device=x_t.device).long().expand(B)
    drop = torch.cat([torch.zeros(B, dtype=torch.bool), torch.ones(B, dtype=torch.bool)]).to(x_t.device)
    both = model(torch.cat([x_t, x_t]), torch.cat([tt, tt]), torch.cat([cond, cond]), drop_cond=drop)  # (2B, D)
    f_c, f_null = both.chunk(2)
    return (1 + guidance_scale) * f_c - guidance_scale * f_null


@torch.no_grad()
def sample(model, scheduler: Scheduler, shape=None, cond: torch.Tensor | None = None, guidance_scale: float = 0.0,
           generator: torch.Generator | None = None, num_inference_steps: int | None = None,
           x_start: torch.Tensor | None = None, start_t: int | None = None, return_trajectory: bool = False,
           noise_start: bool = True, allow_signal_start: bool = False, spacing: str | None = None):
    """Run the reverse process; returns x0 (B, D), or (x0, Trajectory).

    * From pure noise (x_start None): x ~ N(0, I) of `shape` (or cond's batch and the model's dim) is taken as
      x_{t0}, where t0 is the first sampling step, or start_t when given (DeftRec's code: pure noise at t=99).
    * Partial reverse (ADARec style): x_start = clean vectors, noised to depth start_t with Eq. 4 (default: the
      first sampling step), then denoised from there. noise_start=False takes x_start as x_{start_t} as it is.
    num_inference_steps: sample on a shorter schedule (Scheduler.inference_timesteps); None = the scheduler's
    current `timesteps` (every training step unless `set_timesteps` chose fewer). spacing: how those steps are spaced
    ('leading', 'trailing', 'linspace'; None: the scheduler's timestep_spacing), for this run only: the scheduler is
    not changed.
    The model is put in eval mode for the run and its mode restored.

    A pure-noise start is refused (ValueError naming the step and its alpha_bar) where alpha_bar of the first
    step is above MAX_START_ALPHA_BAR: the forward process there still keeps sqrt(alpha_bar) of the signal, so
    N(0, I) is a state the denoiser never saw. allow_signal_start=True runs it anyway (to show what happens).
    """
    ts = scheduler.inference_timesteps(num_inference_steps, spacing) if num_inference_steps else scheduler.timesteps
    if start_t is not None:
        start_t = int(start_t)
        if not 0 <= start_t < scheduler.num_train_timesteps:
            raise ValueError(f"start_t must lie in 0..{scheduler.num_train_timesteps - 1}, got {start_t}")
        ts = torch.cat([torch.tensor([start_t]), ts[ts < start_t]])
    ts = [int(v) for v in ts]
    dev = next(model.parameters()).device
    if x_start is not None:
        x = x_start.to(dev)
        if noise_start:
            x = scheduler.add_noise(x, randn(x.shape, generator, dev, x.dtype), ts[0])     # Eq. 4 at depth t0
    else:
        if shape is None:
            if cond is None:
                raise ValueError("sample needs `shape`, `x_start` or `cond` to know how many vectors to draw")
            shape = (cond.shape[0], model.dim)
        ab0 = float(scheduler.alphas_cumprod[ts[0]])                 # start_alpha_bar, on the schedule in use
        if ab0 > MAX_START_ALPHA_BAR and not allow_signal_start:
            raise ValueError(
                f"sampling would start from pure noise at t={ts[0]}, where alpha_bar = {ab0:.3f}: the forward "
                f"process there keeps {ab0 ** 0.5:.0%} of the signal (sqrt(alpha_bar)), so N(0, I) is off the "
                f"denoiser's training distribution. Start at a step with alpha_bar <= {MAX_START_ALPHA_BAR}: "
                f"timestep_spacing='trailing' (first step T-1), a schedule that ends near alpha_bar = 0 "
                f"(beta_schedule='exp' or 'cosine', or zero_terminal_snr=True), more training steps T; or pass "
                f"allow_signal_start=True to run it anyway")
        x = randn(shape, generator, dev)
    if cond is not None:
        cond = cond.to(dev)
    rec_t, rec_x, rec_x0 = [], [], []
    with eval_mode(model):
        for i, t in enumerate(ts):
            prev_t = ts[i + 1] if i + 1 < len(ts) else -1
            out = guided_output(model, x, t, cond, guidance_scale)
            step = scheduler.step(out, t, x, generator=generator, prev_t=prev_t)
            if return_trajectory:
                rec_t.append(t); rec_x.append(x); rec_x0.append(step.pred_original_sample)
            x = step.prev_sample
    if not return_trajectory:
        return x
    return x, Trajectory(torch.tensor(rec_t), torch.stack(rec_x), torch.stack(rec_x0), x)
