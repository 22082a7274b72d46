"""HDRec's prompts (section 3.2-3.3) and training batches: what the LLM reads, as token ids (notebook 06).

* Task 1, semantic alignment: {Prompt_align, i_text, [ALIGN]} -> i (Eq. 1-2);
* Task 2, next item by text: {Prompt_seq, i_text^(1) [SEQ], ..., i_text^(n) [SEQ]} (Eq. 3-4);
* Task 3, next item by ID: the same with [ID] slots, whose input embeddings are Proj(SRS_EMB(i)) (Eq. 5, 7).
"""
from __future__ import annotations

import numpy as np
import torch

from lib import data, llm

PROMPT_ALIGN = "Provide the item's hidden state. Item description:"
PROMPT_SEQ = "Provide the next item's hidden state after each item. User's history:"


def item_texts(ds: data.Dataset, title_words: int | None = None) -> list[str]:
    """i_text per item slot: ' <title> (<year>), <genres>' (index 0, the padding item, is ''). title_words keeps
    the first words of each title (None: all): a shorter prompt costs less in every forward."""
    if title_words is not None and title_words < 1:
        raise ValueError(f"title_words must be >= 1 or None (the whole title), got {title_words}")
    titles, genres = data.item_titles(ds), data.item_genres(ds)
    titles = [" ".join(t.split()[:title_words]) if title_words else t for t in titles]
    year_col = next((c for c in ("release_year", "year") if c in ds.item_features.columns), None)
    out = [""]
    for i in range(1, ds.n_items):
        y = str(ds.item_features.at[i, year_col]).strip() if year_col else ""
        y = f" ({int(float(y))})" if y.replace(".", "", 1).isdigit() else ""      # ML-100K has 'unkonwn' years
        g = f", {', '.join(genres[i])}" if genres[i] else ""
        out.append(f" {titles[i]}{y}{g}")
    return out


# --------------------------------------------------------------------------- prompts (section 3.2-3.3)
class Prompts:
    """Token-id builders for the three tasks. Every batch is right-padded (a causal decoder never lets a real
    token see the padding after it, so no attention mask is needed) and holds:
    input_ids (B, T), item_ids (B, T) (the item at each [ID] slot, else 0), read_pos (B, K) (positions of the
    [SEQ] / [ALIGN] tokens whose hidden states are read), targets (B, K) (item to predict, 0 = none)."""

    def __init__(self, tok, texts: list[str]):
        self.tok = tok
        ids = llm.add_special_tokens(tok)
        self.SEQ, self.ALIGN, self.ID = ids["[SEQ]"], ids["[ALIGN]"], ids["[ID]"]
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.item_tokens = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]   # i_text, tokenised once
        self.prompt_seq = tok(PROMPT_SEQ, add_special_tokens=False)["input_ids"]
        self.prompt_align = tok(PROMPT_ALIGN, add_special_tokens=False)["input_ids"]

    def _pack(self, rows):
        """rows: list of (ids, item_ids, read_pos, targets) -> right-padded tensors."""
        T = max(len(r[0]) for r in rows)
        K = max(len(r[2]) for r in rows)
        B = len(rows)
        input_ids = torch.full((B, T), self.pad, dtype=torch.long)
        item_ids = torch.zeros((B, T), dtype=torch.long)
        read_pos = torch.zeros((B, K), dtype=torch.long)
        targets = torch.zeros((B, K), dtype=torch.long)
        for b, (ids, items, pos, tgt) in enumerate(rows):
            input_ids[b, :len(ids)] = torch.tensor(ids)
            item_ids[b, :len(items)] = torch.tensor(items)
            read_pos[b, :len(pos)] = torch.tensor(pos)
            targets[b, :len(tgt)] = torch.tensor(tgt)
        return {"input_ids": input_ids, "item_ids": item_ids, "read_pos": read_pos, "targets": targets}

    def align(self, items) -> dict:
        """Task 1, Eq. 1: X_i = {Prompt_align, i_text, [ALIGN]}; the target at [ALIGN] is i itself."""
        rows = []
        for i in np.asarray(items).tolist():
            ids = self.prompt_align + self.item_tokens[i] + [self.ALIGN]
            rows.append((ids, [], [len(ids) - 1], [i]))
        return self._pack(rows)

    def _seq(self, windows, targets, by: str):
        rows = []
        for w, t in zip(windows, targets):
            ids, items, pos, tgt = list(self.prompt_seq), [0] * len(self.prompt_seq), [], []
            for i, nxt in zip(np.asarray(w).tolist(), np.asarray(t).tolist()):
                if i == 0:                                   # padding item: not in the prompt at all
                    continue
                piece = self.item_tokens[i] if by == "text" else [self.ID]
                ids += piece + [self.SEQ]
                items += ([0] * len(piece) if by == "text" else [i]) + [0]
                pos.append(len(ids) - 1)
                tgt.append(nxt)
            rows.append((ids, items, pos, tgt))
        return self._pack(rows)

    def seq_text(self, windows, targets) -> dict:
        """Task 2, Eq. 3: {Prompt_seq, i_text^(1) [SEQ], ..., i_text^(n) [SEQ]}; the target at the k-th [SEQ]
        is item k+1 (0 = none). windows, targets: (B, n) item ids (0 = padding, skipped)."""
        return self._seq(windows, targets, "text")

    def seq_id(self, windows, targets) -> dict:
        """Task 3: the same sequence with one [ID] slot per item; its embedding is Proj(SRS_EMB(i)) (Eq. 7)."""
        return self._seq(windows, targets, "id")

    def show(self, batch: dict, row: int = 0) -> str:
        """The prompt of one row as text, with [ID] slots written as <item>."""
        ids, items = batch["input_ids"][row].tolist(), batch["item_ids"][row].tolist()
        n = max(k for k, t in enumerate(ids) if t != self.pad) + 1 if any(t != self.pad for t in ids) else 0
        parts = []
        for t, i in zip(ids[:n], items[:n]):
            parts.append(f" <{i}>" if t == self.ID else self.tok.decode([t]))
        return "".join(parts)


def training_batches(split: data.Split, prompts: Prompts, users, L: int, batch_size: int, n_align: int,
                     seed: int):
    """batches(step) -> (text_b, id_b, align_b): `batch_size` users drawn without replacement per pass over
    `users` (seeded); each gives its last L+1 training items (inputs = first L, targets = next L). Both
    prompts see the same windows; align_b holds n_align of the batch's target items (Task 1), or None."""
    users = np.asarray(users)
    rng = np.random.default_rng(seed)
    order: list[int] = []

    def batches(step):
        nonlocal order
        if len(order) < batch_size:
            order = order + rng.permutation(users).tolist()
        pick, order = order[:batch_size], order[batch_size:]
        seqs = [split.train[u][-(L + 1):] for u in pick]
        w, t = [s[:-1] for s in seqs], [s[1:] for s in seqs]
        text_b, id_b = prompts.seq_text(w, t), prompts.seq_id(w, t)
        align_b = None
        if n_align:
            pool = np.unique(np.concatenate(t))
            align_b = prompts.align(rng.choice(pool, size=min(n_align, len(pool)), replace=False))
        return text_b, id_b, align_b
    return batches
