"""ADARec (Eq. 1-13): adaptive diffusion depth, the denoising trajectory as an intent hierarchy, and a
hierarchy-aware mixture of two experts; built step by step in notebook 05.

One forward pass over a batch of left-padded windows item_seq (B, L):

1. E^0 = Drop(LN(item_emb + pos_emb)) (B, L, D): SASRec's input embedding (`SASRec.embed`).
2. ADC (Eq. 1-3): a GRU over [E^0 ; v_l] (v_l = MLP of the normalised length), pooled, gives T_max + 1 logits;
   Gumbel-softmax (tau 0.5) with the straight-through estimator picks one depth T_u; the level mask
   m_k = sum_{d >= k} y_d is 1 for k <= T_u and carries the gradient back to the ADC. At evaluation: argmax of
   the clean logits.
3. HDA (Eq. 4-5): level k is E^0 noised to step t_k of a DDPM schedule with its own epsilon (Eq. 4), then read back
   as x0_hat^k = (E^k - sqrt(1 - alpha_bar) eps_theta(E^k, t_k)) / sqrt(alpha_bar) (Eq. 5); level 0 is E^0 itself.
   L_deno = ||eps_theta - eps||^2 on the active levels (E^0 detached there: the denoising loss cannot shrink the
   embeddings to make its own task easy). L_rec reaches the denoiser through x0_hat (the paper's joint training).
4. HP-MoE (Eq. 6-11): a fine and a coarse expert (one causal transformer block each) read every level; a router
   g_k = sigmoid(MLP([Pool(x0_hat^k); emb(k)])) (Eq. 7) weighs them; z_fin, z_coar are the mask- and gate-weighted,
   normalised sums (Eq. 8-9); a final gate mixes them (Eq. 10-11). L_cont (Eq. 6): InfoNCE between the coarse
   expert's outputs of adjacent deep levels of the same user, other users' as negatives (tau 0.07); the coarse
   expert reads detached levels for it (one more pass of that block in training), so L_cont trains the coarse
   expert alone, as the paper has it.
5. L = L_rec + lambda_deno L_deno + lambda_cont L_cont + lambda_expl L_expl (Eq. 12); L_rec the cross-entropy over
   all items (Eq. 13) at every position, as the suite's SASRec.

Per position, not per sequence. The suite trains on every position of a window (each position is a prefix).
So that no position sees its future, every pooling is causal: the GRU state and the router's Pool are running
means up to the position, and the ADC picks a depth per position. At the last position, the one evaluation
reads, this is the paper's sequence-level model exactly.

Sign of L_expl. The paper calls it "the negative entropy" but writes +H; minimising +H would make the choice
more certain, the opposite of its stated purpose (exploration). We minimise -H, as its words and the released code.

Switches for "why it loses" (evidence notebook 05, section 4b; ours, not the paper's): shared_draws (one noise draw for
every level and one dropout mask for every level's expert reading, so that levels differ only by their depth) and
lambda_depth (a cost on the expected depth, lambda_depth * E_p[T_u] / T_max, added to Eq. 12).

Compute. In training every level and both experts are computed whatever depth is drawn: the straight-through
gradient of the mask reaches the ADC through the levels *beyond* T_u too (d m_k / d y_d for k > T_u), so the math
needs them. At evaluation `full_sort_predict` runs the denoiser and the experts only on the levels k <= T_u of each
user's last position (`forward_all(last_only=True)`): the other levels have weight 0 in Eq. 8-9. The denoiser reads
each noisy level twice in training (once with E^0 in the graph for L_rec, once on E^0 detached for L_deno: the
same weights cannot give one input two gradients in one pass); the denoiser is a small MLP, the experts cost more.

Switches for the ablations (Table 4) and for the released code's choices: adc in {"gumbel", "softmax", "off"}
("softmax": the code's soft weights, no Gumbel, no straight-through; "off": every level up to T_max), hda
(False: one level, E^0), denoise (False: levels are the noisy E^k themselves, as the code), moe (False: one
expert for every level, equal weights), router (False: g_k = 1/2), lambda_cont = 0.
"""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F

from lib import diffusion
from lib.models.sasrec import Block, SASRec, attention_mask, next_item_loss
from lib.utils import eval_mode

ADC_MODES = ("gumbel", "softmax", "off")
LEVEL_SPREADS = ("code", "spread")


def gumbel_softmax_st(logits: torch.Tensor, tau: float = 0.5, hard: bool = True,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3: p = softmax((logits + g) / tau), g ~ Gumbel(0, 1). Returns (y, p): with hard=True y is the one-hot
    argmax of p in the forward pass with p's gradient in the backward pass (straight-through estimator,
    y = y_hard - p.detach() + p); with hard=False y = p."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp_(1e-9, 1 - 1e-9)
    g = -torch.log(-torch.log(u))                                           # Gumbel(0, 1) noise
    p = F.softmax((logits + g) / tau, dim=-1)
    if not hard:
        return p, p
    y_hard = F.one_hot(p.argmax(-1), p.shape[-1]).to(p.dtype)
    return y_hard - p.detach() + p, p


def level_mask(y: torch.Tensor) -> torch.Tensor:
    """(..., K+1) depth choice y -> (..., K+1) mask m_k = sum_{d >= k} y_d: 1 for every level k <= T_u when y is
    one-hot at T_u; its gradient reaches y (so the ADC learns from L_rec)."""
    return y.flip(-1).cumsum(-1).flip(-1)


def causal_mean(x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(B, L, ...) -> running mean over the real positions up to each position. real: (B, L) bool. Padding
    positions before the first real item get 0."""
    w = real.to(x.dtype).reshape(real.shape + (1,) * (x.dim() - 2))
    s = (x * w).cumsum(1)
    n = w.cumsum(1).clamp(min=1)
    return s / n


def hierarchy_fusion(expert_fin: torch.Tensor, expert_coar: torch.Tensor, g: torch.Tensor, m: torch.Tensor,
                     W_g: nn.Linear, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 8-11 over the levels (last dim of g and m, second-to-last of the experts).

    expert_fin, expert_coar: (..., K+1, D) expert outputs per level; g: (..., K+1) router weights; m: (..., K+1)
    level mask. Returns (h, z_fin, z_coar), each (..., D):
      z_fin  = sum_k m_k g_k E_fin^k / (sum_k m_k g_k + eps)                (Eq. 8)
      z_coar = sum_k m_k (1 - g_k) E_coar^k / (sum_k m_k (1 - g_k) + eps)   (Eq. 9)
      gate = sigmoid(W_g z_coar + b_g)                                     (Eq. 10)
      h = gate * z_fin + (1 - gate) * z_coar                                (Eq. 11)"""
    wf, wc = m * g, m * (1 - g)                                              # (..., K+1)
    z_fin = (wf.unsqueeze(-1) * expert_fin).sum(-2) / (wf.sum(-1, keepdim=True) + eps)
    z_coar = (wc.unsqueeze(-1) * expert_coar).sum(-2) / (wc.sum(-1, keepdim=True) + eps)
    gate = torch.sigmoid(W_g(z_coar))
    return gate * z_fin + (1 - gate) * z_coar, z_fin, z_coar


def adjacent_level_infonce(z: torch.Tensor, T_u: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Eq. 6, summed over k = floor(T_u/2) .. T_u - 1 and averaged over users: z (B, K+1, D) coarse-expert outputs
    per level, T_u (B,) each user's depth. For user u and level k the positive is z[u, k+1]; the negatives are the
    other users' level-(k+1) outputs in the batch. Cosine similarity. 0 when no user has a pair."""
    B, K1, _ = z.shape
    zn = F.normalize(z, dim=-1)
    total = z.new_zeros(())
    target = torch.arange(B, device=z.device)
    for k in range(K1 - 1):
        active = (k >= torch.div(T_u, 2, rounding_mode="floor")) & (k + 1 <= T_u)          # (B,)
        if not active.any():
            continue
        logits = zn[:, k] @ zn[:, k + 1].T / tau                                           # (B, B)
        total = total + (F.cross_entropy(logits, target, reduction="none") * active).sum()
    return total / B


class Expert(nn.Module):
    """A causal transformer encoder of n_layers SASRec blocks (an expert of HP-MoE)."""

    def __init__(self, n_layers: int, hidden: int, **block):
        super().__init__()
        self.blocks = nn.ModuleList(Block(hidden, **block) for _ in range(n_layers))

    def forward(self, h, mask):
        for b in self.blocks:
            h = b(h, mask)
        return h


class ADARec(SASRec):
    def __init__(self, n_items: int, *, T_max: int = 4, T: int = 50, levels: str = "code", adc: str = "gumbel",
                 hda: bool = True, denoise: bool = True, moe: bool = True, router: bool = True,
                 tau_gs: float = 0.5, tau_cont: float = 0.07, lambda_deno: float = 0.1, lambda_cont: float = 0.05,
                 lambda_expl: float = 0.01, denoiser_hidden: int = 128, shared_draws: bool = False,
                 lambda_depth: float = 0.0, **sasrec_kwargs):
        if adc not in ADC_MODES:
            raise ValueError(f"unknown adc {adc!r}; valid values are {', '.join(map(repr, ADC_MODES))}")
        if levels not in LEVEL_SPREADS:
            raise ValueError(f"unknown levels {levels!r}; valid values are {', '.join(map(repr, LEVEL_SPREADS))} "
                             f"('code': the released code's shallow depths, t up to 10 of 50; 'spread': up to T-1)")
        if isinstance(T_max, bool) or not isinstance(T_max, int) or T_max < 1:
            raise ValueError(f"T_max must be an integer >= 1 (the deepest level), got {T_max!r}")
        for name, v in dict(lambda_deno=lambda_deno, lambda_cont=lambda_cont, lambda_expl=lambda_expl,
                            lambda_depth=lambda_depth).items():
            if not v >= 0:
                raise ValueError(f"{name} must be >= 0, got {v!r}")
        n_layers = sasrec_kwargs.pop("n_layers", 2)
        super().__init__(n_items, n_layers=0, **sasrec_kwargs)              # the experts replace SASRec's blocks
        D = self.item_emb.embedding_dim
        self.T_max = T_max if hda else 0
        self.adc_mode, self.hda, self.denoise, self.moe, self.router_on = adc, bool(hda), bool(denoise), bool(moe), bool(router)
        self.tau_gs, self.tau_cont = tau_gs, tau_cont
        self.lambda_deno, self.lambda_cont, self.lambda_expl = lambda_deno, lambda_cont, lambda_expl
        self.shared_draws, self.lambda_depth = bool(shared_draws), lambda_depth
        self.levels = levels
        # HDA: a DDPM linear schedule (paper; the code: T = 50); level k sits at step t_k
        self.scheduler = diffusion.Scheduler(T, "linear")
        deepest = 10 if levels == "code" else T - 1
        t = torch.round(torch.linspace(0, deepest, self.T_max + 1)).long() if self.T_max else torch.zeros(1).long()
        self.register_buffer("t_levels", t, persistent=False)                # (K+1,), t_0 = 0 is read as E^0
        self.denoiser = diffusion.Denoiser(D, hidden=denoiser_hidden, time_dim=D) if self.hda and denoise else None
        # ADC (Eq. 1-2): length MLP, GRU over [E^0; v_l], T_max + 1 logits
        self.len_mlp = nn.Sequential(nn.Linear(1, D), nn.SiLU(), nn.Linear(D, D))
        self.gru = nn.GRU(2 * D, D, batch_first=True)
        self.W_sigma = nn.Linear(D, self.T_max + 1)
        # HP-MoE (Eq. 7-11): two experts (one causal block each), a router over [Pool(x0_hat^k); emb(k)], a final gate
        blk = dict(n_heads=self.n_heads, inner=sasrec_kwargs.get("inner", 256),
                   dropout=sasrec_kwargs.get("dropout", 0.5), attn_dropout=sasrec_kwargs.get("attn_dropout", 0.5))
        self.E_fin = Expert(n_layers, D, **blk)                              # each as deep as SASRec's encoder
        self.E_coar = Expert(n_layers, D, **blk) if moe else None
        self.level_emb = nn.Embedding(self.T_max + 1, D)
        self.router = nn.Sequential(nn.Linear(2 * D, D), nn.SiLU(), nn.Linear(D, 1))
        self.W_g = nn.Linear(D, D)
        self.apply(self._init)                                               # RecBole's init, as SASRec
        self.last: dict = {}                                                  # the last forward's internals
        self.forced_depth: int | None = None                                 # set to override the ADC (0..T_max)

    # ------------------------------------------------------------------ the three modules
    def depth(self, E0: torch.Tensor, item_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """ADC, Eq. 1-3, per position. Returns (y, logits, p), each (B, L, K+1): y the depth choice (one-hot with
        the straight-through gradient in training, argmax at evaluation), logits (Eq. 2), p the probabilities."""
        B, L, D = E0.shape
        real = item_seq != 0
        n = real.cumsum(1).float()                                           # (B, L) prefix length l_u
        v = self.len_mlp((n / self.max_len).unsqueeze(-1))                  # (B, L, D) v_l
        out, _ = self.gru(torch.cat([E0, v], -1))                            # (B, L, D)
        h_c = causal_mean(out, real)                                         # Eq. 1, Pool = running mean
        logits = self.W_sigma(h_c)                                           # Eq. 2, (B, L, K+1)
        K1 = logits.shape[-1]
        if self.forced_depth is not None:                                    # an override, for the widget
            y = F.one_hot(torch.full((B, L), int(self.forced_depth), device=E0.device), K1).float()
            return y, logits, F.softmax(logits, -1)
        if self.adc_mode == "off" or K1 == 1:
            y = F.one_hot(torch.full((B, L), K1 - 1, device=E0.device), K1).float()   # always T_max
            return y, logits, F.softmax(logits, -1)
        if self.adc_mode == "softmax":                                       # the released code: soft weights
            p = F.softmax(logits, -1)
            return p, logits, p
        if self.training:
            y, p = gumbel_softmax_st(logits, self.tau_gs)                    # Eq. 3 + straight-through
            return y, logits, p
        p = F.softmax(logits, -1)
        return F.one_hot(p.argmax(-1), K1).float(), logits, p

    def hierarchy(self, E0: torch.Tensor, need: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """HDA, Eq. 4-5: (levels (B, L, K+1, D), L_deno or None). Level 0 is E^0; level k >= 1 is E^0 noised to
        t_k (one epsilon per level, or one for all with shared_draws) and, with denoise=True, read back by Eq. 5.
        need (B, K+1) bool, evaluation only: denoise only the levels a user reads (the others are left at x_t)."""
        if self.T_max == 0:
            return E0.unsqueeze(2), None
        B, L, D = E0.shape
        K1 = self.T_max + 1
        t = self.t_levels[1:]                                                # (K,)
        # training: fresh noise; evaluation: a fixed seed, so that scoring a user twice gives the same ranking
        gen = None if self.training else torch.Generator().manual_seed(0)
        eps = diffusion.randn((B, L, 1 if self.shared_draws else K1 - 1, D), gen, E0.device, E0.dtype)
        eps = eps.expand(B, L, K1 - 1, D)
        x0 = E0.unsqueeze(2)
        x_t = self.scheduler.add_noise(x0, eps, t, dim=2)                      # Eq. 4 (E0 kept in the graph)
        if self.denoiser is None:
            return torch.cat([x0, x_t], 2), None
        tt = t.view(1, 1, -1).expand(B, L, -1)                               # (B, L, K)
        train_deno = self.training and self.lambda_deno > 0
        if need is not None and not self.training:                          # evaluation: only the levels read
            sel = need[:, None, 1:].expand(B, L, -1)                         # (B, L, K)
            eps_hat = torch.zeros_like(x_t)
            if sel.any():
                eps_hat[sel] = self.denoiser(x_t[sel], tt[sel])
        else:
            eps_hat = self.denoiser(x_t.reshape(-1, D), tt.reshape(-1)).view(B, L, K1 - 1, D)
        x0_hat = self.scheduler.predict_x0(eps_hat, t, x_t, dim=2)              # Eq. 5
        if not train_deno:                                                   # L_deno is only needed to train
            return torch.cat([x0, x0_hat], 2), None
        # L_deno reads E^0 detached (the same noise): the denoising loss cannot shrink the embeddings to make its own
        # task easy. (One batched call of both reads measured no faster on 2 CPU cores.)
        x_t_sg = self.scheduler.add_noise(x0.detach(), eps, t, dim=2)
        eps_sg = self.denoiser(x_t_sg.reshape(-1, D), tt.reshape(-1)).view(B, L, K1 - 1, D)
        return torch.cat([x0, x0_hat], 2), (eps_sg - eps).pow(2).mean(-1)   # (B, L, K) per level

    def _read(self, expert: Expert, levels: torch.Tensor, mask: torch.Tensor,
              need: torch.Tensor | None = None) -> torch.Tensor:
        """An expert reads every level as its own sequence: levels (B, K+1, L, D) -> (B, K+1, L, D). With
        shared_draws in training every level is read under the same dropout mask (the random state is replayed);
        with need (B, K+1) bool only those (user, level) rows are computed (the others are 0)."""
        B, K1, L, D = levels.shape
        if self.shared_draws and self.training:
            dev = levels.device
            state = torch.cuda.get_rng_state(dev) if dev.type == "cuda" else torch.get_rng_state()
            outs = []
            for k in range(K1):
                (torch.cuda.set_rng_state(state, dev) if dev.type == "cuda" else torch.set_rng_state(state))
                outs.append(expert(levels[:, k], mask))
            return torch.stack(outs, 1)
        flat, mask_k = levels.reshape(B * K1, L, D), mask.repeat_interleave(K1, 0)
        if need is None:
            return expert(flat, mask_k).view(B, K1, L, D)
        rows = need.reshape(-1)
        out = flat.new_zeros(flat.shape)
        out[rows] = expert(flat[rows], mask_k[rows])
        return out.view(B, K1, L, D)

    def forward_all(self, item_seq: torch.Tensor, last_only: bool = False) -> dict:
        """The whole model at every position: {"h" (B, L, D), "m", "g", "y", "p", "logits", "L_deno", ...}.

        last_only (evaluation): compute the denoiser and the experts only on the levels k <= T_u of each user's
        last position; then only h[:, -1] is the model's output (other positions may lack levels they read)."""
        E = self.item_embeddings()
        E0 = self.embed(item_seq, E)                                         # (B, L, D)
        real = item_seq != 0
        y, logits, p = self.depth(E0, item_seq)                              # (B, L, K+1)
        m = level_mask(y)                                                    # (B, L, K+1)
        need = m[:, -1] > 0 if last_only and not self.training else None     # (B, K+1) levels the last position reads
        levels, deno = self.hierarchy(E0, need)                              # (B, L, K+1, D)
        B, L, K1, D = levels.shape
        mask = attention_mask(item_seq)
        by_level = levels.permute(0, 2, 1, 3)                                # (B, K+1, L, D): each level a sequence
        f = self._read(self.E_fin, by_level, mask, need).permute(0, 2, 1, 3)  # (B, L, K+1, D)
        c = self._read(self.E_coar, by_level, mask, need).permute(0, 2, 1, 3) if self.moe else f
        if self.router_on and self.moe:
            pooled = causal_mean(levels, real)                               # (B, L, K+1, D) Pool(x0_hat^k)
            k_emb = self.level_emb.weight.view(1, 1, K1, D).expand(B, L, -1, -1)
            g = torch.sigmoid(self.router(torch.cat([pooled, k_emb], -1))).squeeze(-1)   # Eq. 7, (B, L, K+1)
        else:
            g = torch.full((B, L, K1), 0.5, device=E0.device)
        if self.moe:
            h, z_fin, z_coar = hierarchy_fusion(f, c, g, m, self.W_g)        # Eq. 8-11
        else:                                                                # one expert, levels averaged by m
            h = (m.unsqueeze(-1) * f).sum(-2) / (m.sum(-1, keepdim=True) + 1e-8)
        out = {"h": h, "m": m, "g": g, "y": y, "p": p, "logits": logits, "coarse": c, "L_deno": deno,
               "fine_last": f[:, -1], "levels_last": levels[:, -1]}
        if self.training and self.moe and self.lambda_cont > 0 and self.T_max > 0:
            # L_cont's input (Eq. 6): the coarse expert re-read on detached levels, so that its gradient stays on the
            # coarse expert's side (the paper) and reaches neither E^0's tables, LayerNorm nor the denoiser
            out["coarse_sg_last"] = self._read(self.E_coar, by_level.detach(), mask)[:, :, -1]   # (B, K+1, D)
        self.last = {k: v.detach() if torch.is_tensor(v) else v for k, v in out.items() if k != "coarse"}
        return out

    def full_sort_predict(self, batch: dict) -> torch.Tensor:
        E = self.item_embeddings()
        return self.forward_all(batch["item_seq"], last_only=True)["h"][:, -1] @ E.T   # (B, n_items)

    # ------------------------------------------------------------------ the losses
    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        item_seq, tgt = batch["item_seq"], batch["target_seq"]
        out = self.forward_all(item_seq)
        keep = tgt != 0
        parts = {"rec": next_item_loss(out["h"], self.item_embeddings(), tgt)}          # Eq. 13
        if out["L_deno"] is not None and self.lambda_deno > 0:
            act = out["m"][..., 1:].detach() * keep.unsqueeze(-1)                        # active levels, real targets
            parts["deno"] = (out["L_deno"] * act).sum() / act.sum().clamp(min=1)
        if "coarse_sg_last" in out:                                                      # training, MoE, lambda_cont > 0
            last = out["coarse_sg_last"]                                                 # (B, K+1, D), last position
            T_u = out["m"][:, -1].detach().sum(-1).round().long() - 1                    # (B,) depth at the end
            parts["cont"] = adjacent_level_infonce(last, T_u, self.tau_cont)             # Eq. 6
        if self.adc_mode != "off" and self.T_max > 0 and self.lambda_expl > 0:
            p = F.softmax(out["logits"][keep], -1)
            parts["expl"] = (p * torch.log(p.clamp(min=1e-12))).sum(-1).mean()          # -H (see the docstring)
        if self.adc_mode != "off" and self.T_max > 0 and self.lambda_depth > 0:
            p = F.softmax(out["logits"][keep], -1)
            k = torch.arange(p.shape[-1], device=p.device, dtype=p.dtype) / self.T_max
            parts["depth"] = (p * k).sum(-1).mean()                                     # E_p[T_u] / T_max
        return parts

    def loss_weights(self) -> dict[str, float]:
        """The weight of each part of `losses` in Eq. 12 (L_rec's is 1; "depth" is ours, 0 by default)."""
        return {"rec": 1.0, "deno": self.lambda_deno, "cont": self.lambda_cont, "expl": self.lambda_expl,
                "depth": self.lambda_depth}

    def calculate_loss(self, batch: dict) -> torch.Tensor:
        parts = self.losses(batch)
        w = self.loss_weights()
        self.last_losses = {k: float(v.detach()) for k, v in parts.items()}
        return sum(w[k] * v for k, v in parts.items())                                 # Eq. 12

    @torch.no_grad()
    def level_scores(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, K+1, n_items) scores of each level alone at the last position: the fine expert's reading of x0_hat^k
        (the coarse one's without MoE) against the item table, evaluation mode."""
        with eval_mode(self):
            out = self.forward_all(item_seq)
        return out["fine_last"] @ self.item_embeddings().T

    @torch.no_grad()
    def depths(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B,) the depth T_u the ADC picks for each sequence at its last position (evaluation mode)."""
        with eval_mode(self):
            y, _, _ = self.depth(self.embed(item_seq, self.item_embeddings()), item_seq)
        return y[:, -1].argmax(-1)

    @torch.no_grad()
    def depth_stats(self, item_seq: torch.Tensor) -> dict:
        """What the ADC does on a fixed set of sequences at their last position (evaluation mode, no random number
        drawn; for `train.fit(on_epoch=...)`): {"depth_hist": users per depth 0..T_max, "p_mean": the mean
        probabilities softmax(logits) (K+1,), "entropy": the mean entropy of p}."""
        item_seq = item_seq.to(self.item_emb.weight.device)
        with eval_mode(self):
            y, _, p = self.depth(self.embed(item_seq, self.item_embeddings()), item_seq)
        d, p = y[:, -1].argmax(-1).cpu(), p[:, -1].cpu()                                # (B,), (B, K+1)
        return {"depth_hist": torch.bincount(d, minlength=p.shape[-1]).tolist(), "p_mean": p.mean(0).tolist(),
                "entropy": float(-(p * p.clamp(min=1e-12).log()).sum(1).mean())}


class ScoreAverage(nn.Module):
    """The released code's two "experts": independently trained models whose scores are averaged at evaluation."""

    def __init__(self, *models):
        super().__init__()
        self.models = nn.ModuleList(models)

    def full_sort_predict(self, batch: dict) -> torch.Tensor:
        return torch.stack([m.full_sort_predict(batch) for m in self.models]).mean(0)
