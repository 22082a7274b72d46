"""LLMDiRec (sections 3.1-3.3): dual-view SASRec + intent-conditioned diffusion + contrastive learning; notebook 04.

One training step on a batch of whole-sequence windows (item_seq, target_seq), every term of Eq. 1:

1. Fused item table e = Fusion(e_id, Adapter(e_llm)) (lib.models.fusion, section 3.1) and the SASRec encoder:
   h (B, L, D). L_rec = cross-entropy of the next item at every position (as the suite's SASRec).
2. Incremental prefix segmentation: h[b, t] encodes the prefix s_1..s_t of row b (causal attention). One
   random prefix per row is taken: x (N, D) with its next item y (N,).
3. Intents: K prototypes {c_k} from K-means on prefix encodings of the training windows, refitted every
   `cluster_interval` steps (lib.intents); s = c_k nearest to x.
4. L_diff (section 3.2): a denoiser f_theta(x_t, t, s) learns the clean representations x0 = x (stop-gradient),
   conditioned on s, with classifier-free guidance training (s dropped with p_uncond).
5. Augmentation: x_aug ~ reverse process from noise conditioned on s, guidance weight w (no gradient). With
   aug_start_t (ours, InDiRec-style partial noising): the row's own x noised to step aug_start_t (Eq. 4), then
   denoised from there conditioned on s, so the augmentation keeps something of its own sequence.
6. L_cl: InfoNCE(x, x_aug) with temperature, same-next-item pairs masked (InDiRec).
7. L_align (section 3.3): 1 - cos(e_id, Adapter(e_llm)).

L = lambda_rec L_rec + lambda_diff L_diff + lambda_cl L_cl + lambda_align L_align      (Eq. 1)

Switches (one flag per ablation): variant="id_only" (InDiRec-like, no text, so no L_align either),
use_diffusion=False (no L_diff; the positive view of L_cl is then the prototype c_k itself, as ICLRec's intent
contrast), use_cl=False (no L_cl and no sampling; L_diff then trains a denoiser the encoder never uses),
use_align=False.

Choices the paper leaves open, ours: x0 is the sequence representation (the paper's words) detached, so the
diffusion loss cannot collapse the encoder; epsilon-prediction (the paper's L_diff) by default, while InDiRec's
released code predicts x0 = the target item's embedding and conditions on the encoding of a random sequence of
the same cluster (`prediction_type="sample"` gives its loss form).
"""
from __future__ import annotations

import torch

from lib import diffusion, intents
from lib.models.fusion import FusionSASRec
from lib.models.sasrec import next_item_loss
from lib.utils import eval_mode

PREDICTION_TYPES = diffusion.PREDICTION_TYPES


class LLMDiRec(FusionSASRec):
    def __init__(self, n_items: int, text_emb: torch.Tensor, variant: str = "gated", *,
                 K: int = 8, cluster_interval: int = 64, cluster_points: int = 20000,
                 lambda_rec: float = 1.0, lambda_diff: float = 1.0, lambda_cl: float = 0.1,
                 lambda_align: float = 0.1, temperature: float = 1.0, sim: str = "cos",
                 T: int = 50, beta_schedule: str = "exp", timestep_spacing: str = "trailing",
                 prediction_type: str = "epsilon",
                 p_uncond: float = 0.1, guidance_scale: float = 2.0, num_inference_steps: int | None = 10,
                 denoiser_hidden: int = 128, use_diffusion: bool = True, use_cl: bool = True,
                 use_align: bool = True, aug_start_t: int | None = None, seed: int = 0, **sasrec_kwargs):
        for name, v in dict(lambda_rec=lambda_rec, lambda_diff=lambda_diff, lambda_cl=lambda_cl,
                            lambda_align=lambda_align, guidance_scale=guidance_scale).items():
            if not v >= 0:
                raise ValueError(f"{name} must be >= 0, got {v!r}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if isinstance(cluster_interval, bool) or not isinstance(cluster_interval, int) or cluster_interval < 1:
            raise ValueError(f"cluster_interval must be an integer >= 1 (training steps), got {cluster_interval!r}")
        if aug_start_t is not None and (isinstance(aug_start_t, bool) or not isinstance(aug_start_t, int)
                                        or not 0 < aug_start_t < T):
            raise ValueError(f"aug_start_t must be None (pure noise) or an integer step in 1..{T - 1}, got {aug_start_t!r}")
        if sim not in ("dot", "cos"):
            raise ValueError(f"unknown sim {sim!r}; valid values are 'dot', 'cos'")
        # the ID-only model has no semantic view to align with
        self.use_align = bool(use_align) and variant != "id_only"
        super().__init__(n_items, text_emb, variant=variant,
                         lambda_align=lambda_align if self.use_align else 0.0, **sasrec_kwargs)
        D = self.item_emb.embedding_dim
        self.use_diffusion, self.use_cl = bool(use_diffusion), bool(use_cl)
        self.lambda_rec, self.lambda_diff, self.lambda_cl = float(lambda_rec), float(lambda_diff), float(lambda_cl)
        self.temperature, self.sim = float(temperature), sim
        self.p_uncond, self.guidance_scale, self.num_inference_steps = p_uncond, guidance_scale, num_inference_steps
        self.cluster_interval, self.cluster_points = cluster_interval, cluster_points
        self.aug_start_t = aug_start_t
        # exp schedule + trailing spacing: the first sampling step (t = T-1) has alpha_bar ~ 0.006 at T = 50, so
        # augmentations start from real noise (linear 1e-4..0.02 with leading spacing started at alpha_bar 0.65)
        self.scheduler = diffusion.Scheduler(T, beta_schedule=beta_schedule, prediction_type=prediction_type,
                                             timestep_spacing=timestep_spacing)
        self.denoiser = diffusion.Denoiser(D, cond_dim=D, hidden=denoiser_hidden, time_dim=D)
        self.prototypes = intents.IntentPrototypes(K, seed=seed, max_points=cluster_points)
        self.step = 0                           # training steps taken (drives the refits)
        self.corpus: torch.Tensor | None = None  # (R, L) training windows whose prefixes are clustered
        self.last_losses: dict[str, float] = {}
        self._sums: dict[str, float] = {}        # running sums of each term since `pop_loss_means`
        self._n = 0

    # ------------------------------------------------------------------ intents
    def set_corpus(self, windows: torch.Tensor) -> "LLMDiRec":
        """The (R, L) left-padded training windows whose prefix encodings K-means clusters (section 3.2)."""
        self.corpus = windows
        return self

    @torch.no_grad()
    def prefix_representations(self, windows: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """(N, D) encodings of every prefix in windows (R, L): one per real item (eval mode, no gradient)."""
        out = []
        with eval_mode(self):
            E = self.item_embeddings()
            for s in range(0, len(windows), batch_size):
                w = windows[s:s + batch_size].to(E.device)
                h = self.encode(w, E)                                           # (b, L, D)
                rows, cols = intents.prefix_positions(w)
                out.append(h[rows, cols])
        return torch.cat(out)

    @torch.no_grad()
    def sequence_representation(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, D) the representation of each whole sequence: the encoder's output at the last position."""
        with eval_mode(self):
            return self.encode(item_seq.to(self.item_emb.weight.device))[:, -1]

    def refit_intents(self, fallback: torch.Tensor | None = None) -> None:
        """K-means on the prefix encodings of the corpus (or on `fallback` (N, D) when there is no corpus).

        Only a seeded random subset of windows holding about `cluster_points` prefixes is encoded."""
        if self.corpus is None:
            h = fallback
        else:
            g = torch.Generator().manual_seed(self.prototypes.seed + self.prototypes.n_fits)
            perm = torch.randperm(len(self.corpus), generator=g)
            n_prefixes = (self.corpus[perm] != 0).sum(1).cumsum(0)                  # prefixes in the first j windows
            take = int((n_prefixes < self.cluster_points).sum()) + 1
            h = self.prefix_representations(self.corpus[perm[:take]])
        self.prototypes.fit(h.detach())

    # ------------------------------------------------------------------ the four losses
    def augment(self, s: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Intent-consistent augmentation (3.2): x_aug ~ reverse diffusion from noise conditioned on s (N, D); with
        aug_start_t set, from the rows' own x (N, D) noised to that step instead (partial noising)."""
        partial = {}
        if self.aug_start_t is not None:
            if x is None:
                raise ValueError("partial noising (aug_start_t set) needs the rows' own representations x")
            partial = dict(x_start=x.detach(), start_t=self.aug_start_t)
        return diffusion.sample(self.denoiser, self.scheduler, cond=s, guidance_scale=self.guidance_scale,
                                num_inference_steps=self.num_inference_steps, **partial)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Every active term of Eq. 1, unweighted: rec, and diff / cl / align when switched on."""
        E, e_id, a = self.fused()                                               # (n_items, D) each
        item_seq, tgt = batch["item_seq"], batch["target_seq"]
        h = self.encode(item_seq, E)                                            # (B, L, D)
        keep = tgt != 0
        out = {"rec": next_item_loss(h, E, tgt)}
        if self.use_align:
            out["align"] = self.align_loss(e_id, a)
        if not (self.use_diffusion or self.use_cl):
            return out
        # incremental prefix segmentation: one random real position (= prefix) per row
        score = torch.rand(keep.shape, device=keep.device).masked_fill(~keep, -1.0)   # (B, L)
        rows = keep.any(1).nonzero(as_tuple=True)[0]
        cols = score[rows].argmax(1)
        x, y = h[rows, cols], tgt[rows, cols]                                   # (N, D), (N,)
        if self.training and self.step % self.cluster_interval == 0 or self.prototypes.c is None:
            self.refit_intents(fallback=x)
        _, s = self.prototypes.assign(x)                                        # (N, D) intent signal c_k
        if self.use_diffusion:
            # LLMDiRec 3.2: L_diff = E ||eps - f_theta(x_t, s, t)||^2, x0 = x (stop-gradient)
            out["diff"] = diffusion.diffusion_loss(self.denoiser, self.scheduler, x.detach(), cond=s,
                                                   p_uncond=self.p_uncond)
        if self.use_cl:
            x_aug = self.augment(s, x) if self.use_diffusion else s             # (N, D), no gradient
            out["cl"] = intents.info_nce(x, x_aug, self.temperature, targets=y, sim=self.sim)
        return out

    def calculate_loss(self, batch: dict) -> torch.Tensor:
        parts = self.losses(batch)
        w = {"rec": self.lambda_rec, "diff": self.lambda_diff, "cl": self.lambda_cl, "align": self.lambda_align}
        # Eq. 1: L = lambda_rec L_rec + lambda_diff L_diff + lambda_cl L_cl + lambda_align L_align
        loss = sum(w[k] * v for k, v in parts.items())
        self.last_losses = {k: float(v.detach()) for k, v in parts.items()}
        if self.training:
            self.step += 1
            for k, v in self.last_losses.items():
                self._sums[k] = self._sums.get(k, 0.0) + v
            self._n += 1
        return loss

    def pop_loss_means(self) -> dict[str, float]:
        """Mean of each unweighted term over the training steps since the last call (for fit's on_epoch)."""
        out = {f"L_{k}": v / max(self._n, 1) for k, v in self._sums.items()}
        self._sums, self._n = {}, 0
        return out
