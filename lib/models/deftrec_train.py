"""DeftRec's training (section 2), beside the model in ``deftrec.py`` (as HDRec's ``hdrec_train.py``).

* ``train_llm``: L_LLM, the next-token loss of the answer " <genre> movies.", on the LoRA adapter and the tokenizers.
* ``train_diffusion`` (Eq. 8-13, 15): target q+ = the next item's CF embedding, shared t and eps for q+ and the
  negatives (``lib.diffusion.bpr_diffusion_loss``); the released code's pairing (every condition with every target
  of the batch), mean-of-negatives and loss scale (per-coordinate means in both terms) as options.
* ``train_regressor``: the w/o Diffusion ablation (an MLP regressing c -> q+).
* ``windows``, ``build_llm``, ``llm_pass``, ``cached_llm_pass``: the prompts (one per test row: a user on
  leave-one-out, each test event on a K-event split), the LLM with its adapter and tokenizers, L_LLM then one forward
  per prompt, and the one place that names that pass's cache file (notebook 07's lesson and evidence notebook both
  go through it; its key holds the prompts, so each split has its own pass).
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lib import diffusion, llm, utils
from lib.models.deftrec import DeftLLM
from lib.models.lightgcn import sample_negatives
from lib.train import loop, update

LLM_DEFAULTS = dict(      # the LLM pass of notebook 07 (lesson and evidence): its settings, the cache key's too
    llm_layers=8,         # decoder blocks of SmolLM2 kept (it has 30; the CPU budget)
    L=10,                 # history items per prompt (the most recent ones)
    title_words=5,        # words of each title in the prompt
    n_windows=2,          # training prompts per user (targets: its last n_windows training items)
    K=2,                  # sub-encoders, i.e. continuous tokens per user and item (paper default 2)
    rho=0.2,              # Bernoulli masking ratio of the tokenizer's input (paper: 0.2)
    lora_r=8,             # LoRA rank
    lora_alpha=32,        # LoRA alpha (scaling alpha / r)
    llm_steps=40,         # AdamW steps of L_LLM (LoRA + tokenizers)
    llm_batch=8,          # prompts per L_LLM step
    lr_lora=0.001,        # learning rate of the LoRA matrices
    lr_tok=0.001,         # learning rate of the tokenizers
)
LLM_SMOKE = dict(llm_layers=1, L=3, title_words=2, n_windows=1, llm_steps=2, llm_batch=4)   # smoke=True sizes
PAIRINGS = ("paired", "all")                # the paper; the released code's B x B broadcast
NEGATIVES = ("mean", "each", "batch_mean")  # Eq. 13 (one mean of n_neg per row); Eq. 12 (each); the released
                                            # code (one mean per batch, batch-mean errors inside the sigmoid)


def train_llm(model: DeftLLM, users, histories, answers, steps: int, batch_size: int, lr_lora: float,
              lr_tok: float, seed: int, progress: bool = True) -> list[float]:
    """A few AdamW steps of L_LLM over random training windows (one batch per step, through `lib.train.loop`):
    LoRA matrices and both tokenizers learn. Returns the loss of every step."""
    g = np.random.default_rng(seed)
    params_lora = [p for n, p in model.llm.named_parameters() if "lora_" in n and p.requires_grad]
    params_tok = list(model.enc_item.parameters()) + list(model.enc_user.parameters())
    opt = torch.optim.AdamW([{"params": params_lora, "lr": lr_lora}, {"params": params_tok, "lr": lr_tok}])

    def batch(step):
        pick = g.choice(len(users), size=min(batch_size, len(users)), replace=False)
        return [model.build([users[i] for i in pick], [histories[i] for i in pick], [answers[i] for i in pick])]

    res = loop(model, batch, lambda b: {"loss": update(opt, model.llm_loss(b))}, epochs=steps, unit="step",
               desc="L_LLM", progress=progress)
    return [row["loss"] for row in res.history]


def _all_pairs_loss(net, sched, q_pos, cond, generator, max_pairs: int | None = None, scale: str = "code"):
    """The released code's broadcast: noise coefficients of shape (B, 1, 1) against x of (B, D) make x_t (B, B, D),
    so condition i meets every target j of the batch (1 pair in B matches): it learns the marginal.
    max_pairs: average over that many random targets j per row instead of all B (an unbiased estimate of the same
    loss at a fraction of its B^2 cost); None: all of them. scale (diffusion.SCALES): 'code' (default) the released
    code's F.mse_loss, a mean over pairs and coordinates; 'paper' the squared norm of Eq. 10, D times that."""
    if scale not in diffusion.SCALES:
        raise ValueError(f"scale must be one of {diffusion.SCALES}, got {scale!r}")
    B, D = q_pos.shape
    t = torch.randint(0, sched.num_train_timesteps, (B,), generator=generator)
    eps = diffusion.randn(q_pos.shape, generator)
    if max_pairs is None or max_pairs >= B:
        j = torch.arange(B).expand(B, B)                                            # (B, B): every target
    else:
        j = torch.randint(0, B, (B, max_pairs), generator=generator)                 # (B, P) random targets
    P = j.shape[1]
    x_t = sched.add_noise(q_pos[j], eps[j], t)                                     # (B, P, D), Eq. 8
    c = None if cond is None else cond[:, None].expand(B, P, cond.shape[1]).reshape(B * P, -1)
    out = net(x_t.reshape(B * P, D), t[:, None].expand(B, P).reshape(-1), c).view(B, P, D)
    target = eps[j] if sched.prediction_type == "epsilon" else q_pos[j]
    err = (out - target).pow(2).sum(-1)                                            # (B, P) squared norms, Eq. 10
    return err.mean() if scale == "paper" else err.mean() / D                      # 'code': F.mse_loss


def train_diffusion(cond: torch.Tensor | None, pos: np.ndarray, users: np.ndarray, Q: torch.Tensor,
                    seen: np.ndarray, sched: diffusion.Scheduler, valid_fn, *, gamma2: float = 0.5,
                    n_neg: int = 10, negatives: str = "mean", pairing: str = "paired", epochs: int = 200,
                    batch_size: int = 256, lr: float = 1e-3, hidden: int = 256, p_uncond: float = 0.0,
                    eval_every: int = 10, patience: int = 5, seed: int = 0, progress: bool = True,
                    desc: str = "diffusion", all_pairs_sample: int | None = 16,
                    scale: str = "paper", neg_norm: bool = False) -> tuple[diffusion.Denoiser, list[dict]]:
    """Train a conditional denoiser on (c, q+ = Q[pos]) pairs with L_Diff + gamma2 L_Neg (Eq. 15 without
    gamma1 L_LLM: the LLM is trained before and frozen here, see the notebook). cond: (N, C) or None, row n for
    pair n. Negatives: n_neg items the user has not seen, drawn afresh each epoch; 'mean' denoises their mean
    (Eq. 13, the paper's single negative per sample), 'each' every one (Eq. 12), 'batch_mean' one mean for the
    whole batch with batch-mean errors (the released code). pairing='all': the released code's B x B pairing,
    estimated from all_pairs_sample random targets per row (None: all B). p_uncond > 0 trains a null condition
    (CFG; not in the paper). scale: the one scale of L_Diff and of the errors inside L_Neg (diffusion.SCALES):
    'paper' squared norms in both (Eq. 10, 13), 'code' per-coordinate means in both (the released code's
    F.mse_loss); either way gamma2 weighs the two terms alike for any D. neg_norm: rescale each negative to its
    positive's norm, so that the BPR term cannot separate them by length alone (ours, not the paper's: notebook 07,
    section 7c, measures that a mean of random CF vectors is much shorter than a target).
    valid_fn(denoiser) -> validation NDCG@10, every eval_every epochs; the best is kept."""
    if pairing not in PAIRINGS or negatives not in NEGATIVES:
        raise ValueError(f"pairing must be one of {PAIRINGS} and negatives one of {NEGATIVES}, "
                         f"got {pairing!r}, {negatives!r}")
    if scale not in diffusion.SCALES:
        raise ValueError(f"scale must be one of {diffusion.SCALES} ('paper': squared norms in both terms, 'code': "
                         f"per-coordinate means in both, the released code), got {scale!r}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    D = Q.shape[1]
    net = diffusion.Denoiser(D, 0 if cond is None else cond.shape[1], hidden=hidden)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)

    def batches(epoch):
        perm = rng.permutation(len(pos))
        negs = sample_negatives(users[perm], seen, len(Q), rng, n_neg)                 # (N, n_neg)
        for s in range(0, len(perm), batch_size):
            yield perm[s:s + batch_size], negs[s:s + batch_size]

    def step(batch):
        idx, neg_idx = batch
        q_pos = Q[pos[idx]]
        c = None if cond is None else cond[idx]
        q_neg = Q[neg_idx]                                                             # (b, n_neg, D)
        if negatives == "mean":
            q_neg = q_neg.mean(1, keepdim=True)                                        # Eq. 13: q- = mean_j q_j-
        elif negatives == "batch_mean":
            q_neg = q_neg.mean((0, 1), keepdim=True).expand(len(idx), 1, D)
        if neg_norm:                                                                   # |q-| = |q+|, row by row
            q_neg = q_neg / q_neg.norm(dim=-1, keepdim=True).clamp_min(1e-12) * q_pos.norm(dim=-1)[:, None, None]
        reduce = "batch" if negatives == "batch_mean" else "row"
        if pairing == "all":
            l_diff = _all_pairs_loss(net, sched, q_pos, c, gen, max_pairs=all_pairs_sample, scale=scale)
            l_neg = torch.zeros(())
            if gamma2:                                                 # on l_diff's scale
                l_neg = diffusion.bpr_diffusion_loss(net, sched, q_pos, q_neg, c, p_uncond, gen, reduce=reduce,
                                                     scale=scale)["neg"]
            out = {"diff": l_diff, "neg": l_neg, "err_pos": torch.zeros(1), "err_neg": torch.zeros(1, 1)}
        else:
            out = diffusion.bpr_diffusion_loss(net, sched, q_pos, q_neg, c, p_uncond, gen, reduce=reduce,
                                               scale=scale)
        update(opt, out["diff"] + gamma2 * out["neg"])                                 # Eq. 15
        return {"diff": out["diff"].item(), "neg": out["neg"].item(), "err_pos": out["err_pos"].mean().item(),
                "err_neg": out["err_neg"].mean().item()}

    res = loop(net, batches, step, epochs=epochs, patience=patience, eval_every=eval_every, desc=desc,
               progress=progress, validate=lambda: {"NDCG@10": valid_fn(net)})
    return net, res.history


def train_regressor(cond: torch.Tensor, pos: np.ndarray, Q: torch.Tensor, valid_fn, *, epochs: int = 200,
                    batch_size: int = 256, lr: float = 1e-3, hidden: int = 256, eval_every: int = 10,
                    patience: int = 5, seed: int = 0, progress: bool = True):
    """'w/o Diffusion' (Table 5): an MLP regressing c -> q+ with MSE; same data, epochs and early stopping.
    Returns (net, history); net(c) -> (N, D)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = nn.Sequential(nn.Linear(cond.shape[1], hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                        nn.Linear(hidden, Q.shape[1]))
    opt = torch.optim.AdamW(net.parameters(), lr=lr)

    def batches(epoch):
        perm = rng.permutation(len(pos))
        return (perm[s:s + batch_size] for s in range(0, len(perm), batch_size))

    def step(idx):
        return {"mse": update(opt, F.mse_loss(net(cond[idx]), Q[pos[idx]]))}

    res = loop(net, batches, step, epochs=epochs, patience=patience, eval_every=eval_every, desc="regressor",
               progress=progress, validate=lambda: {"NDCG@10": valid_fn(lambda c: net(c))})
    return net, res.history


# --------------------------------------------------------------------------- the prompts and the LLM pass
def windows(split, n_windows: int, L: int):
    """(users, histories, targets, stage) of every prompt: n_windows training prompts per user (the targets are its
    last n_windows training items, each after the L items before it), then one prompt per row of the validation and
    of the test stage, each from that row's own history (`split.history(stage)`) for that row's user
    (`split.rows_user(stage)`): a user on leave-one-out; on a K-event split (`data.last_k_events`) every test EVENT,
    whose prompt carries the items before it (the user's earlier test events included). Test prompts come in the
    test stage's row order, so scores computed over them are the rows `lib.metrics.evaluate` ranks."""
    us, hs, ts, stage = [], [], [], []
    for k in range(1, n_windows + 1):
        for u, s in enumerate(split.train):
            if len(s) > k:
                us.append(u); hs.append(s[:-k][-L:]); ts.append(int(s[-k])); stage.append("train")
    for st in ("valid", "test"):
        for u, h, t in zip(split.rows_user(st).tolist(), split.history(st), split.targets(st)):
            us.append(u); hs.append(h[-L:]); ts.append(int(t)); stage.append(st)
    return np.array(us), hs, np.array(ts), np.array(stage)


def prompts_digest(users, histories, train_rows, answers) -> str:
    """md5 of what decides the LLM pass's prompts beyond the text of titles and genres: each prompt's user and
    history (item ids, in order) and which prompts train L_LLM with which answers. Two splits (leave-one-out and a
    K-event split) give different prompts, hence different digests."""
    hist = [np.asarray(h, dtype=np.int64) for h in histories]
    return utils.digest(np.asarray(users, dtype=np.int64), np.array([len(h) for h in hist], dtype=np.int64),
                        np.concatenate(hist) if hist else np.zeros(0, dtype=np.int64),
                        np.asarray(train_rows, dtype=np.int64), np.asarray(answers, dtype=np.int64))


def build_llm(titles, genre_names, Q, P_u, cfg: dict, *, seed: int, bf16: bool, device: str, progress: bool = True,
              **tokenizer) -> tuple[DeftLLM, dict]:
    """(DeftLLM, load info): SmolLM2 cut to cfg['llm_layers'] blocks, one LoRA adapter 'deftrec' (peft) and the two
    tokenizers, their initial weights fixed by `seed`. cfg: LLM_DEFAULTS' keys; tokenizer: K, rho, encoder overrides
    (the evidence notebook's tokenizer ablations). bf16: the decoder's blocks under bfloat16 autocast."""
    base, tok, info = llm.load_llm(progress=progress)
    llm.truncate(base, cfg["llm_layers"])
    torch.manual_seed(seed)                              # LoRA's and the tokenizers' initial weights
    pm = llm.dual_lora(base, llm.lora_config(r=cfg["lora_r"], alpha=cfg["lora_alpha"], dropout=0.05), names=("deftrec",))
    llm.set_trainable(pm, "deftrec")
    model = DeftLLM(pm, tok, titles, genre_names, Q, P_u, title_words=cfg["title_words"],
                    **{"K": cfg["K"], "rho": cfg["rho"], **tokenizer})
    model.bf16 = bool(bf16)
    return model.to(device), info


def llm_pass(build, W_users, W_hist, train_rows, answers, cfg: dict, seed: int) -> dict:
    """`build()` -> (DeftLLM, info) (``build_llm``), L_LLM on the training prompts `train_rows` (answers: their genre
    indices), then one forward over every prompt: {"hidden" (N, H), "genre" (N,), "genre_logits" (N, G), "answers"
    (G, H), "losses", "seconds" (load, train, pass), "n_prompts"}."""
    t0 = time.perf_counter()
    model, _ = build()
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    losses = train_llm(model, [int(W_users[i]) for i in train_rows], [W_hist[i] for i in train_rows],
                       [int(a) for a in answers], cfg["llm_steps"], cfg["llm_batch"], cfg["lr_lora"], cfg["lr_tok"], seed)
    t_train = time.perf_counter() - t0
    enc = model.encode([int(u) for u in W_users], W_hist, batch_size=32)
    return {"hidden": enc["hidden"], "genre": enc["genre"], "genre_logits": enc["genre_logits"],
            "answers": model.answer_table(), "losses": losses,
            "seconds": {"load": t_load, "train": t_train, "pass": enc["seconds"]}, "n_prompts": len(W_users)}


def cached_llm_pass(build, W_users, W_hist, train_rows, answers, *, cfg: dict, seed: int, dataset: str, smoke: bool,
                    bf16: bool, Q, P_u, titles, genre_names) -> tuple[dict, bool]:
    """(the LLM pass, read from the cache?): `llm_pass(build, W_users, W_hist, train_rows, answers, cfg, seed)` once,
    then read from data/cache/deftrec/. The ONE place that names the pass's cache file, for notebook 07's lesson and
    evidence notebook alike. It computes the pass from the same prompts it keys, so a key cannot describe other
    prompts than the pass holds. The key: every setting of the pass (cfg, LLM_DEFAULTS' keys), the seed, bf16, the CF
    tables its prompts carry, the prompts themselves (`prompts_digest`: each prompt's user and item ids, the training
    rows and their answers; a leave-one-out and a K-event split give different prompts, so neither reads the other's
    pass), the prompts' text (the item titles and genre names, read from the dataset's files: `utils.text_digest`),
    and through `utils.cache_file` the code of this module and of what it imports (lib.llm, lib.models.deftrec, ...)
    and the package versions."""
    key = dict(dataset=dataset, smoke=smoke, seed=seed, **{k: cfg[k] for k in LLM_DEFAULTS}, bf16=bool(bf16),
               cf_tables=utils.digest(Q, P_u), prompts=prompts_digest(W_users, W_hist, train_rows, answers),
               prompt_text=utils.text_digest(*titles, *genre_names))
    return utils.cached(utils.cache_file("deftrec/llm_pass", key, code=(__name__,)),
                        lambda: llm_pass(build, W_users, W_hist, train_rows, answers, cfg, seed))
