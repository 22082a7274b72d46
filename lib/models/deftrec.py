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
* ``generate``: y sampled from pure noise by a trained conditional denoiser (100 steps, the paper).
* ``retrieve`` (Eq. 14): cos(y, q_j) (1 + pi [item j has the named genre]).
* ``genre_tables``: the genres an answer can name, each item's label and the (items, genres) 0/1 table Eq. 14 reads.
* ``check_l_neg`` / ``check_retrieve``: the checks of the lesson's exercises (a learner's Eq. 13 and Eq. 14).

Training lives beside it in ``deftrec_train.py`` (L_LLM, the BPR-contrastive diffusion, the w/o Diffusion regressor),
as HDRec's does in ``hdrec_train.py``.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from lib import diffusion, llm, utils

SOURCES = ("hidden", "generated", "gold", "minilm", "none")
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


def genre_tables(genres: list[list[str]]) -> tuple[list[str], np.ndarray, torch.Tensor]:
    """(G_names, item_lab, IG) from `data.item_genres` (item 0 the padding slot): G_names the genres that label at
    least one item ('unknown' left out), sorted; item_lab (n_items,) the index of each item's answer genre
    (`item_label`: its least common one), -1 for the padding slot and items without one; IG (n_items, G) long, 1 where
    item j has genre g (Eq. 14's match)."""
    counts = {}
    for gs in genres[1:]:
        for g in gs:
            if g != "unknown":
                counts[g] = counts.get(g, 0) + 1
    n_labelled = max(1, sum(1 for gs in genres[1:] if gs))
    label_share = {g: c / n_labelled for g, c in counts.items()}               # share of items with genre g
    G_names = sorted(label_share)
    item_lab = np.array([-1] + [G_names.index(g) if (g := item_label(gs, label_share)) else -1 for gs in genres[1:]])
    IG = torch.zeros(len(genres), len(G_names), dtype=torch.long)               # (n_items, G)
    for i in range(1, len(genres)):
        for g in genres[i]:
            if g in label_share:
                IG[i, G_names.index(g)] = 1
    return G_names, item_lab, IG


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
        self.bf16 = False          # True: the decoder runs under bfloat16 autocast; tokenizers, LM head, losses float32
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
        """(B, T, H) float32 last hidden states (after the model's final norm) through the LoRA adapter; with
        `bf16` the decoder's blocks run under bfloat16 autocast (the inputs_embeds and the LM head stay float32)."""
        return llm.hidden_states(self.llm, self.embed(self._to(batch)), self.bf16)

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
        hs, gl = [], []
        t0 = time.perf_counter()
        with utils.eval_mode(self):
            for s in tqdm(range(0, len(users), batch_size), desc=desc, disable=not progress, leave=False):
                b = self.build(users[s:s + batch_size], histories[s:s + batch_size])
                h = self.hidden(b)[torch.arange(len(b["last"])), b["last"].to(self.Q.device)]   # (b, H)
                hs.append(h.cpu())
                gl.append(self.lm_head(h)[:, self.genre_first.to(h.device)].cpu())
        logits = torch.cat(gl)
        return {"hidden": torch.cat(hs), "genre": logits.argmax(1), "genre_logits": logits,
                "seconds": time.perf_counter() - t0}

    def answer_table(self) -> torch.Tensor:
        """(G, H) mean word embedding of each genre's answer (what 'generated' and 'gold' conditions read)."""
        W = self.embed_tokens.weight.detach().cpu()
        return torch.stack([W[torch.tensor(a)].mean(0) for a in self.answer_ids])


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


# --------------------------------------------------------------------------- sampling (Eq. 8-9 reversed)
@torch.no_grad()
def generate(net, sched: diffusion.Scheduler, cond: torch.Tensor | None, n: int, seed: int, steps: int = 100,
             spacing: str = "trailing", start_t: int | None = None, guidance: float = 0.0) -> torch.Tensor:
    """(n, D) item representations y sampled from pure noise, conditioned on c (100 steps, the paper).
    start_t: begin at that step instead and run every step below it (the released code: pure noise at t = 99 of
    1000, then 99 .. 0, where most signal is left; allowed here only to show what it does)."""
    g = torch.Generator().manual_seed(seed)
    return diffusion.sample(net, sched, shape=(n, net.dim), cond=cond, guidance_scale=guidance, generator=g,
                            num_inference_steps=steps if start_t is None else sched.num_train_timesteps,
                            spacing=spacing, start_t=start_t, allow_signal_start=start_t is not None)


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


# --------------------------------------------------------------------------- the lesson's exercise checks
def _close(got, want, what: str, hint: str):
    got = torch.as_tensor(got, dtype=torch.float64)
    want = torch.as_tensor(want, dtype=torch.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}. {hint}")
    if not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
        raise AssertionError(f"{what}: expected {want.tolist()}, got {got.tolist()}. {hint}")


def check_l_neg(fn) -> float:
    """The lesson's exercise on Eq. 13: fn(e_pos (B,), e_neg (B,)) -> L_Neg, the batch mean of
    -log sigma(e_neg - e_pos) over squared denoising errors. Raises AssertionError naming the case that fails and
    what usually causes it (the sign, the log, the minus, a sum for the mean); returns L_Neg of the equal case."""
    cases = [("equal errors", [1.0, 4.0], [1.0, 4.0]),
             ("the positive fits better", [0.5, 1.0], [2.0, 4.0]),
             ("the negative fits better", [3.0, 2.0], [1.0, 0.5])]
    for what, e_pos, e_neg in cases:
        e_pos, e_neg = torch.tensor(e_pos), torch.tensor(e_neg)
        want = -F.logsigmoid(e_neg - e_pos).mean()                                   # Eq. 13
        got = torch.as_tensor(fn(e_pos.clone(), e_neg.clone())).detach()
        _close(got.reshape(()) if got.numel() == 1 else got, want, f"L_Neg when {what} (e_pos {e_pos.tolist()}, "
               f"e_neg {e_neg.tolist()})",
               "Eq. 13 is -log sigma(e_neg - e_pos), the mean over the batch: a negative value misses the minus, "
               "a value below log 2 when the negative fits better has the difference the wrong way round, and a "
               "value twice too large sums where Eq. 13 averages.")
    return float(fn(torch.ones(3), torch.ones(3)))


def check_retrieve(fn) -> None:
    """The lesson's exercise on Eq. 14: fn(y (N, D), Q (n_items, D), named (N,), IG (n_items, G), pi) -> (N, n_items)
    scores, checked against `retrieve` on a toy where the cosine, the inner product and an additive bonus rank
    differently (no matched item has a negative cosine there, where `retrieve`'s s + pi |s| and s (1 + pi) agree). Raises AssertionError with what usually causes the difference."""
    y = torch.tensor([[1.0, 0.0], [0.0, 2.0]])                                        # (2, 2) users
    Q = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.2, 1.0], [0.5, -1.0]])               # (4, 2) items, no matched cos < 0
    IG = torch.tensor([[1, 0], [0, 1], [0, 1], [0, 1]])                               # (4, G=2)
    named = torch.tensor([1, 0])
    for pi in (0.0, 0.1, 0.5):
        _close(fn(y, Q, named, IG, pi), retrieve(y, Q, named, IG, pi), f"scores at pi = {pi}",
               "Eq. 14 multiplies the cosine (both vectors normalised, not the inner product) by (1 + pi) for the "
               "items that carry the named genre, and leaves the others alone (no + pi).")
