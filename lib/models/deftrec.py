"""DeftRec (section 2): continuous tokens into an LLM, an LLM-conditioned diffusion with a BPR negative term, a
hybrid retriever. Built step by step in notebook 07.

* ``Tokenizer`` (Eq. 2): K residual sub-encoders map a CF embedding q (LightGCN) to K continuous tokens of the
  LLM's width; a Bernoulli(rho) mask zeroes input coordinates in training only.
* ``DeftLLM`` (Eq. 3-4): prompt = template + each history item as "title <q^1> .. <q^K>" (the tokens enter through
  ``inputs_embeds``) + the answer template's prefix; one LoRA adapter (peft) and the tokenizers train on the
  next-token loss L_LLM of the answer " <genre> movies."; ``encode`` gives per user the last hidden state and
  the LLM's named genre (greedy over the genre names' first tokens).
* ``conditions``: the diffusion condition c from a source: 'hidden', 'generated' (the paper: sigma of the mean
  token embedding of the generated answer), 'gold' (the same from the target's genre: the released code trains
  on it, a leak), 'minilm', 'none'.
* ``train_diffusion`` (Eq. 8-13, 15): target q+ = the next item's CF embedding, shared t and eps for q+ and the
  negatives (``lib.diffusion.bpr_diffusion_loss``); the released code's pairing (every condition with every target
  of the batch), mean-of-negatives and loss scale (per-coordinate means in both terms) as options.
  ``train_regressor``: the w/o Diffusion ablation.
* ``retrieve`` (Eq. 14): cos(y, q_j) (1 + pi [item j has the named genre]).
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from lib import diffusion
from lib.models.lightgcn import sample_negatives

SOURCES = ("hidden", "generated", "gold", "minilm", "none")
PAIRINGS = ("paired", "all")                # the paper; the released code's B x B broadcast
NEGATIVES = ("mean", "each", "batch_mean")  # Eq. 13 (one mean of n_neg per row); Eq. 12 (each); the released
                                            # code (one mean per batch, batch-mean errors inside the sigmoid)
TEMPLATE = "Given the following watching history of the user{user}:{items}. Predict the user preferences."
ANSWER_PREFIX = " Analysing the watching history, the user may prefer"
ANSWER = " {genre} movies."                 # the paper's response template 0, movies instead of products


# --------------------------------------------------------------------------- the tokenizer (Eq. 2)
class SubEncoder(nn.Module):
    """One way of the K-way encoder: Linear(d, H), then residual blocks x + Linear(Dropout(ReLU(x)))."""
    def __init__(self, d: int, H: int, n_blocks: int = 2, dropout: float = 0.1):
        super().__init__()
        self.inp = nn.Linear(d, H)
        self.blocks = nn.ModuleList(nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(H, H))
                                    for _ in range(n_blocks))

    def forward(self, q):
        x = self.inp(q)
        for b in self.blocks:
            x = x + b(x)
        return x


class Tokenizer(nn.Module):
    """Enc^K(q, Mask(q, rho)) of Eq. 2: (N, d) CF embeddings -> (N, K, H) continuous tokens.
    rho: Bernoulli masking ratio of the input coordinates, in training only. encoder=False: the 'w/o Encoder'
    ablation, one linear projection per token (no residual MLP)."""
    def __init__(self, d: int, H: int, K: int = 2, rho: float = 0.2, n_blocks: int = 2, dropout: float = 0.1,
                 encoder: bool = True):
        super().__init__()
        if K < 1 or not 0 <= rho < 1:
            raise ValueError(f"need K >= 1 and 0 <= rho < 1, got K={K}, rho={rho}")
        self.K, self.rho, self.H = K, rho, H
        self.ways = nn.ModuleList(SubEncoder(d, H, n_blocks if encoder else 0, dropout) for _ in range(K))
        # a learned output scale, started at 0.1: the LLM's word embeddings are small (not in the paper)
        self.scale = nn.Parameter(torch.tensor(0.1))

    def mask(self, q: torch.Tensor) -> torch.Tensor:
        """Mask(q, rho): zero each coordinate with probability rho during training; identity in eval mode."""
        if not self.training or self.rho == 0:
            return q
        return q * (torch.rand_like(q) >= self.rho)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        q = self.mask(q)
        return self.scale * torch.stack([w(q) for w in self.ways], 1)                  # (N, K, H)


# --------------------------------------------------------------------------- the LLM (Eq. 3-4)
def prompt_text(titles: list[str], hist, K: int, title_words: int = 6, user: int | None = None,
                answer: str | None = None) -> str:
    """The prompt as a reader sees it, with <u^k> / <q_j^k> where the continuous tokens go (the same pieces as
    DeftLLM.build)."""
    toks = lambda tag: "".join(f"<{tag}^{k + 1}>" for k in range(K))
    items = "".join(f" {' '.join(titles[i].split()[:title_words])} {toks(f'q_{i}')}" for i in np.asarray(hist).tolist() if i)
    text = TEMPLATE.format(user="" if user is None else f" {toks('u')}", items=items) + ANSWER_PREFIX
    return text + (ANSWER.format(genre=answer) if answer else "")


def item_label(genres: list[str], catalogue_share: dict[str, float]) -> str | None:
    """The genre an answer names for one item: its least common genre in the catalogue (the most specific
    one: 'Drama, Romance' -> 'Romance'), among those in `catalogue_share` ('unknown' left out by the caller);
    None for an item without one."""
    known = [g for g in genres if g in catalogue_share]
    return min(known, key=lambda g: catalogue_share[g]) if known else None


class DeftLLM(nn.Module):
    """The LLM side of DeftRec: prompts with continuous tokens, L_LLM, and the per-user encoding."""

    def __init__(self, peft_model, tok, titles: list[str], genre_names: list[str], Q_items: torch.Tensor,
                 P_users: torch.Tensor | None, K: int = 2, rho: float = 0.2, encoder: bool = True,
                 title_words: int = 6):
        super().__init__()
        self.llm, self.tok = peft_model, tok
        base = peft_model.get_base_model()
        self.embed_tokens, self.lm_head = base.model.embed_tokens, base.lm_head
        H = self.embed_tokens.weight.shape[1]
        d = Q_items.shape[1]
        self.register_buffer("Q", Q_items.detach().float().clone())                  # (n_items, d) CF items
        self.register_buffer("P", P_users.detach().float().clone() if P_users is not None else torch.zeros(0, d))
        self.enc_item = Tokenizer(d, H, K, rho, encoder=encoder)                        # Enc_v
        self.enc_user = Tokenizer(d, H, K, rho, encoder=encoder)                        # Enc_u
        self.K, self.H = K, H
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]
        self.title_ids = [ids(" " + " ".join(t.split()[:title_words])) if t else [] for t in titles]
        self.genre_names = list(genre_names)
        self.genre_first = torch.tensor([ids(" " + g)[0] for g in genre_names])         # (G,) first tokens
        if len(set(self.genre_first.tolist())) != len(genre_names):
            raise ValueError("two genre names share their first token: the named genre would be ambiguous")
        self.answer_ids = [ids(ANSWER.format(genre=g)) for g in genre_names]
        pre, post = TEMPLATE.split("{user}")
        mid, end = post.split("{items}")
        self.t_pre, self.t_mid, self.t_end = ids(pre), ids(mid), ids(end + ANSWER_PREFIX)

    # slots: SLOT_ITEM = an item's k-th token, SLOT_USER = the user's k-th token
    def build(self, users, histories, answers=None) -> dict:
        """Right-padded batch: input_ids (B, T), slot_item / slot_user (B, T) (item or user id + 1 at a token slot,
        else 0), slot_k (B, T), last (B,) position of the prompt's last token, labels (B, T) (-100 except the
        answer's tokens, when `answers` (genre indices) is given)."""
        rows = []
        for b, (u, hist) in enumerate(zip(users, histories)):
            ids, si, su, sk = list(self.t_pre), [], [], []
            si += [0] * len(ids); su += [0] * len(ids); sk += [0] * len(ids)
            if len(self.P):
                ids += [self.pad] * self.K; si += [0] * self.K; su += [int(u) + 1] * self.K; sk += list(range(self.K))
            ids += self.t_mid; si += [0] * len(self.t_mid); su += [0] * len(self.t_mid); sk += [0] * len(self.t_mid)
            for i in np.asarray(hist).tolist():
                if i == 0:
                    continue
                piece = self.title_ids[i]
                ids += piece + [self.pad] * self.K
                si += [0] * len(piece) + [i + 1] * self.K
                su += [0] * (len(piece) + self.K)
                sk += [0] * len(piece) + list(range(self.K))
            ids += self.t_end; si += [0] * len(self.t_end); su += [0] * len(self.t_end); sk += [0] * len(self.t_end)
            last = len(ids) - 1
            lab = [-100] * len(ids)
            if answers is not None:
                a = self.answer_ids[int(answers[b])]
                ids += a; lab = lab[1:] + [a[0]] + a[1:] + [-100]     # label at position p = token p + 1
                si += [0] * len(a); su += [0] * len(a); sk += [0] * len(a)
            rows.append((ids, si, su, sk, last, lab))
        T = max(len(r[0]) for r in rows)
        B = len(rows)
        out = {k: torch.zeros(B, T, dtype=torch.long) for k in ("input_ids", "slot_item", "slot_user", "slot_k")}
        out["input_ids"].fill_(self.pad)
        out["labels"] = torch.full((B, T), -100, dtype=torch.long)
        out["last"] = torch.tensor([r[4] for r in rows])
        for b, (ids, si, su, sk, last, lab) in enumerate(rows):
            n = len(ids)
            for k, v in zip(("input_ids", "slot_item", "slot_user", "slot_k"), (ids, si, su, sk)):
                out[k][b, :n] = torch.tensor(v)
            out["labels"][b, :n] = torch.tensor(lab[:n])
        return out

    def embed(self, batch: dict) -> torch.Tensor:
        """(B, T, H) inputs_embeds: word embeddings, with the continuous tokens at the slots (Eq. 3). Each item
        occurrence is encoded once (one mask draw, Eq. 2) and its K tokens fill its K consecutive slots."""
        e = self.embed_tokens(batch["input_ids"])
        for key, enc, table in (("slot_item", self.enc_item, self.Q), ("slot_user", self.enc_user, self.P)):
            where = batch[key] > 0
            if where.any():
                first = where & (batch["slot_k"] == 0)                                 # one per occurrence
                toks = enc(table[batch[key][first] - 1])                              # (N, K, H)
                e = e.masked_scatter(where.unsqueeze(-1), toks.reshape(-1, self.H).to(e.dtype))
        return e

    def _to(self, batch: dict) -> dict:
        dev = self.Q.device
        return {k: v.to(dev) for k, v in batch.items()}

    def hidden(self, batch: dict) -> torch.Tensor:
        """(B, T, H) last hidden states (after the model's final norm) through the LoRA adapter."""
        batch = self._to(batch)
        return self.llm.get_base_model().model(inputs_embeds=self.embed(batch), use_cache=False).last_hidden_state

    def llm_loss(self, batch: dict) -> torch.Tensor:
        """L_LLM: next-token cross-entropy on the answer's tokens only."""
        h = self.hidden(batch)
        labels = batch["labels"].to(h.device)
        keep = labels >= 0
        return F.cross_entropy(self.lm_head(h[keep]), labels[keep])

    @torch.no_grad()
    def encode(self, users, histories, batch_size: int = 16, progress: bool = True, desc: str = "LLM pass") -> dict:
        """One forward per prompt: {"hidden": (N, H) state at the prompt's last token, "genre": (N,) the genre
        the LLM names there (argmax of the genre names' first-token logits), "genre_logits": (N, G),
        "seconds": wall time}."""
        was = self.training
        self.eval()
        hs, gl = [], []
        t0 = time.perf_counter()
        for s in tqdm(range(0, len(users), batch_size), desc=desc, disable=not progress, leave=False):
            b = self.build(users[s:s + batch_size], histories[s:s + batch_size])
            h = self.hidden(b)[torch.arange(len(b["last"])), b["last"].to(self.Q.device)]   # (b, H)
            hs.append(h.cpu())
            gl.append(self.lm_head(h)[:, self.genre_first.to(h.device)].cpu())
        self.train(was)
        logits = torch.cat(gl)
        return {"hidden": torch.cat(hs), "genre": logits.argmax(1), "genre_logits": logits,
                "seconds": time.perf_counter() - t0}

    def answer_embedding(self, genre_idx: torch.Tensor) -> torch.Tensor:
        """(N, H) mean word embedding of the answer ' <genre> movies.' for each genre index (Eq. 4's Z_i)."""
        return self.answer_table()[genre_idx]

    def answer_table(self) -> torch.Tensor:
        """(G, H) mean word embedding of each genre's answer (what 'generated' and 'gold' conditions read)."""
        W = self.embed_tokens.weight.detach().cpu()
        return torch.stack([W[torch.tensor(a)].mean(0) for a in self.answer_ids])


def train_llm(model: DeftLLM, users, histories, answers, steps: int, batch_size: int, lr_lora: float,
              lr_tok: float, seed: int, progress: bool = True) -> list[float]:
    """A few AdamW steps of L_LLM over random training windows: LoRA matrices and both tokenizers learn."""
    g = np.random.default_rng(seed)
    params_lora = [p for n, p in model.llm.named_parameters() if "lora_" in n and p.requires_grad]
    params_tok = list(model.enc_item.parameters()) + list(model.enc_user.parameters())
    opt = torch.optim.AdamW([{"params": params_lora, "lr": lr_lora}, {"params": params_tok, "lr": lr_tok}])
    model.train()
    losses = []
    for _ in tqdm(range(steps), desc="L_LLM", disable=not progress, leave=False):
        pick = g.choice(len(users), size=min(batch_size, len(users)), replace=False)
        b = model.build([users[i] for i in pick], [histories[i] for i in pick], [answers[i] for i in pick])
        loss = model.llm_loss(b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


# --------------------------------------------------------------------------- conditions (section 2.4.2)
def condition(source: str, enc: dict | None, answers: torch.Tensor | None = None, gold: torch.Tensor | None = None,
              minilm: torch.Tensor | None = None, sigmoid: bool = True) -> torch.Tensor | None:
    """c for each prompt. 'hidden': sigma(h_last); 'generated': sigma(mean embedding of the answer with the
    LLM's named genre) (the paper); 'gold': the same with the target's genre (a leak: the answer names the
    target); 'minilm': a MiniLM embedding of the history's titles; 'none': no condition (None)."""
    if source not in SOURCES:
        raise ValueError(f"unknown condition source {source!r}; valid: {', '.join(SOURCES)}")
    if source == "none":
        return None
    if source == "minilm":
        return minilm.float()
    if source == "hidden":
        c = enc["hidden"]
    else:
        c = answers[enc["genre"] if source == "generated" else gold]        # answers: DeftLLM.answer_table()
    return torch.sigmoid(c) if sigmoid else c


# --------------------------------------------------------------------------- diffusion (Eq. 8-13, 15)
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
    ab = sched.alphas_cumprod[t].view(B, 1, 1)
    x_t = ab.sqrt() * q_pos[j] + (1 - ab).sqrt() * eps[j]                          # (B, P, D)
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
                    scale: str = "paper") -> tuple[diffusion.Denoiser, list[dict]]:
    """Train a conditional denoiser on (c, q+ = Q[pos]) pairs with L_Diff + gamma2 L_Neg (Eq. 15 without
    gamma1 L_LLM: the LLM is trained before and frozen here, see the notebook). cond: (N, C) or None, row n for
    pair n. Negatives: n_neg items the user has not seen, drawn afresh each epoch; 'mean' denoises their mean
    (Eq. 13, the paper's single negative per sample), 'each' every one (Eq. 12), 'batch_mean' one mean for the
    whole batch with batch-mean errors (the released code). pairing='all': the released code's B x B pairing,
    estimated from all_pairs_sample random targets per row (None: all B). p_uncond > 0 trains a null condition
    (CFG; not in the paper). scale: the one scale of L_Diff and of the errors inside L_Neg (diffusion.SCALES):
    'paper' squared norms in both (Eq. 10, 13), 'code' per-coordinate means in both (the released code's
    F.mse_loss); either way gamma2 weighs the two terms alike for any D.
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

    def epoch_fn(epoch):
        perm = rng.permutation(len(pos))
        negs = sample_negatives(users[perm], seen, len(Q), rng, n_neg)                 # (N, n_neg)
        logs = []
        for s in range(0, len(perm), batch_size):
            idx = perm[s:s + batch_size]
            q_pos = Q[pos[idx]]
            c = None if cond is None else cond[idx]
            q_neg = Q[negs[s:s + batch_size]]                                          # (b, n_neg, D)
            if negatives == "mean":
                q_neg = q_neg.mean(1, keepdim=True)                                    # Eq. 13: q- = mean_j q_j-
            elif negatives == "batch_mean":
                q_neg = q_neg.mean((0, 1), keepdim=True).expand(len(idx), 1, D)
            reduce = "batch" if negatives == "batch_mean" else "row"
            if pairing == "all":
                l_diff = _all_pairs_loss(net, sched, q_pos, c, gen, max_pairs=all_pairs_sample, scale=scale)
                l_neg = torch.zeros(())
                if gamma2:                                             # on l_diff's scale
                    l_neg = diffusion.bpr_diffusion_loss(net, sched, q_pos, q_neg, c, p_uncond, gen, reduce=reduce,
                                                         scale=scale)["neg"]
                out = {"diff": l_diff, "neg": l_neg, "err_pos": torch.zeros(1), "err_neg": torch.zeros(1, 1)}
            else:
                out = diffusion.bpr_diffusion_loss(net, sched, q_pos, q_neg, c, p_uncond, gen, reduce=reduce,
                                                   scale=scale)
            loss = out["diff"] + gamma2 * out["neg"]                                  # Eq. 15
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            logs.append([out["diff"].item(), out["neg"].item(), out["err_pos"].mean().item(),
                         out["err_neg"].mean().item()])
        return dict(zip(("diff", "neg", "err_pos", "err_neg"), np.mean(logs, 0).tolist()))

    hist = _fit_loop(net, epoch_fn, lambda: valid_fn(net), epochs, eval_every, patience, desc, progress)
    return net, hist


def _fit_loop(net, epoch_fn, valid_fn, epochs: int, eval_every: int, patience: int, desc: str, progress: bool):
    """Epochs of epoch_fn(epoch) -> log row; validation NDCG@10 every eval_every epochs (and at the last); stop
    after `patience` checks without a better one; the best weights are restored. Returns the rows."""
    hist, best, best_state, bad = [], -1.0, None, 0
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        net.train()
        row = {"epoch": epoch, **epoch_fn(epoch)}
        if epoch % eval_every == 0 or epoch == epochs:
            net.eval()
            row["valid_NDCG@10"] = v = valid_fn()
            bar.set_postfix(ndcg=f"{v:.4f}")
            if v > best:
                best, bad, best_state = v, 0, copy.deepcopy(net.state_dict())
            else:
                bad += 1
        hist.append(row)
        if bad >= patience:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return hist


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

    def epoch_fn(epoch):
        perm = rng.permutation(len(pos))
        ls = []
        for s in range(0, len(perm), batch_size):
            idx = perm[s:s + batch_size]
            loss = F.mse_loss(net(cond[idx]), Q[pos[idx]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ls.append(loss.item())
        return {"mse": float(np.mean(ls))}

    hist = _fit_loop(net, epoch_fn, lambda: valid_fn(lambda c: net(c)), epochs, eval_every, patience,
                     "regressor", progress)
    return net, hist


@torch.no_grad()
def generate(net, sched: diffusion.Scheduler, cond: torch.Tensor | None, n: int, seed: int, steps: int = 100,
             spacing: str = "trailing", start_t: int | None = None, guidance: float = 0.0) -> torch.Tensor:
    """(n, D) item representations y sampled from pure noise, conditioned on c (100 steps, the paper).
    start_t: begin at that step instead and run every step below it (the released code: pure noise at t = 99 of
    1000, then 99 .. 0, where most signal is left; allowed here only to show what it does)."""
    g = torch.Generator().manual_seed(seed)
    old = sched.timestep_spacing
    sched.timestep_spacing = spacing
    try:
        return diffusion.sample(net, sched, shape=(n, net.dim), cond=cond, guidance_scale=guidance, generator=g,
                                num_inference_steps=steps if start_t is None else sched.num_train_timesteps,
                                start_t=start_t, allow_signal_start=start_t is not None)
    finally:
        sched.timestep_spacing = old


# --------------------------------------------------------------------------- the retriever (Eq. 14)
RETRIEVERS = ("cosine", "dot", "euclidean")       # Eq. 14; ours; the released code's evaluation


def retrieve(y: torch.Tensor, Q: torch.Tensor, named: torch.Tensor | None = None,
             item_genres: torch.Tensor | None = None, pi: float = 0.1, how: str = "cosine") -> torch.Tensor:
    """(N, n_items) scores. 'cosine' (Eq. 14): cos(y_i, q_j) (1 + pi [genre named for user i is among item j's]);
    'euclidean': minus the distance, the released code's default evaluation (its bonus is a uniform x1.1, which
    changes no rank, so none is applied). 'dot' (ours, not in the paper): the inner product <y_i, q_j>, which keeps
    the item norm that cosine divides away, with the same bonus (s + pi |s| [match], i.e. Eq. 14's factor for s >= 0). item_genres: (n_items, G) 0/1; named: (N,) genre indices."""
    if how not in RETRIEVERS:
        raise ValueError(f"unknown retriever {how!r}; valid: {', '.join(map(repr, RETRIEVERS))}")
    if how == "euclidean":
        return -torch.cdist(y, Q)
    if how == "dot":                                     # keeps ||q_j||, which LightGCN ties to popularity
        s = y @ Q.T                                                                    # (N, n_items)
    else:
        s = F.normalize(y, dim=1) @ F.normalize(Q, dim=1).T                           # (N, n_items)
    if pi and named is not None:
        match = item_genres[:, named].T.float()                                        # (N, n_items)
        s = s + pi * s.abs() * match                     # = s (1 + pi match) where s >= 0; a boost either way
    return s


def score_fn(scores_by_stage: dict):
    """score_fn(users, stage) for lib.metrics from precomputed (U, n_items) score matrices per stage."""
    return lambda users, stage: scores_by_stage[stage][users]
