"""LightGCN (He et al., 2020): the collaborative embeddings DeftRec tokenizes and diffuses (notebook 07).

No feature transforms, no non-linearities: a user's or item's embedding is the mean of its layer-0 embedding and
K rounds of symmetric-normalised neighbourhood averaging over the user-item graph of the TRAIN split,

    E^(k+1) = D^-1/2 A D^-1/2 E^(k),      E = mean_k E^(k), k = 0..K       (LightGCN Eq. 3-4)

trained with BPR (one sampled negative per training interaction) plus L2 on the layer-0 rows of the batch. It is
not sequential: it scores by user id, so `fit` hands `lib.train.loop` its own batches (user, positive, negative) and
its own validation (NDCG@10 through `lib.metrics`, the suite's protocol) instead of going through `lib.train.fit`,
which feeds item sequences.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lib import data, metrics
from lib.train import FitResult, loop, update

DEFAULTS = dict(
    dim=64,             # d: embedding size (DeftRec's CF tables; RecBole's LightGCN default)
    n_layers=3,         # K propagation rounds (the design sketch; RecBole's default is 2)
)
TRAIN_DEFAULTS = dict(
    epochs=300,         # upper bound; early stopping on validation NDCG@10 decides
    batch_size=4096,    # (user, positive, negative) triples per step
    lr=1e-2,            # Adam learning rate: the best on ML-100K's validation split (RecBole's 1e-3 climbs out of the
                        # popularity phase so slowly that early stopping takes it for a plateau)
    reg=1e-4,           # L2 weight on the batch's layer-0 rows (RecBole: 1e-5 on sum-reduced BPR; ours is a mean)
    patience=20,        # epochs without a better validation NDCG@10 before stopping
)


def norm_adjacency(train: list[np.ndarray], n_items: int) -> torch.Tensor:
    """(U + n_items, U + n_items) sparse D^-1/2 A D^-1/2 of the bipartite graph of the train split.
    Users are nodes 0..U-1, item i is node U + i (item 0, the padding slot, has no edges). Repeated
    interactions count once. Nodes without edges keep a zero row (no division by zero)."""
    U = len(train)
    u = np.concatenate([np.full(len(s), k) for k, s in enumerate(train)]).astype(np.int64)
    i = np.concatenate(train).astype(np.int64)
    pairs = np.unique(np.stack([u, i]), axis=1)                                   # (2, E) unique edges
    rows = np.concatenate([pairs[0], U + pairs[1]])
    cols = np.concatenate([U + pairs[1], pairs[0]])                               # both directions
    N = U + n_items
    deg = np.bincount(rows, minlength=N).astype(np.float64)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1)), 0.0)
    vals = inv[rows] * inv[cols]                                                  # 1 / sqrt(d_r d_c)
    return torch.sparse_coo_tensor(np.stack([rows, cols]), torch.tensor(vals, dtype=torch.float32),
                                   (N, N), check_invariants=True).coalesce()


class LightGCN(nn.Module):
    def __init__(self, n_users: int, n_items: int, adjacency: torch.Tensor, dim: int = 64, n_layers: int = 3):
        super().__init__()
        if n_layers < 0:
            raise ValueError(f"n_layers must be >= 0, got {n_layers}")
        self.n_users, self.n_items, self.n_layers = n_users, n_items, n_layers
        self.E0 = nn.Embedding(n_users + n_items, dim)                            # layer-0 table, users then items
        nn.init.normal_(self.E0.weight, std=0.1)
        with torch.no_grad():
            self.E0.weight[n_users].zero_()                                       # the padding item
        if adjacency.layout == torch.sparse_coo:            # CSR: the same sums, ~30 % faster fwd + bwd on CPU (measured)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                adjacency = adjacency.to_sparse_csr()
        self.register_buffer("A", adjacency, persistent=False)          # rebuilt, not saved

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(users (U, d), items (n_items, d)): the layer mean of Eq. 4."""
        E = self.E0.weight
        layers = [E]
        for _ in range(self.n_layers):
            E = torch.sparse.mm(self.A, E)                                        # Eq. 3
            layers.append(E)
        out = torch.stack(layers).mean(0)                                         # Eq. 4, alpha_k = 1 / (K + 1)
        return out[:self.n_users], out[self.n_users:]

    def bpr_loss(self, users, pos, neg, reg: float = 0.0) -> torch.Tensor:
        """BPR: -log sigma(s_u,pos - s_u,neg), mean over the batch, + reg * L2 of the batch's layer-0 rows."""
        U, I = self.propagate()
        s_pos = (U[users] * I[pos]).sum(-1)
        s_neg = (U[users] * I[neg]).sum(-1)
        loss = -F.logsigmoid(s_pos - s_neg).mean()
        if reg:
            e0 = self.E0.weight
            l2 = (e0[users].pow(2).sum() + e0[self.n_users + pos].pow(2).sum() + e0[self.n_users + neg].pow(2).sum())
            loss = loss + reg * l2 / (2 * len(users))
        return loss

    @torch.no_grad()
    def tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Detached (users, items) embeddings; item row 0 (padding) is zero."""
        U, I = self.propagate()
        I = I.clone()
        I[0] = 0
        return U.clone(), I

    def scorer(self, split: data.Split | None = None):
        """score_fn(rows, stage) for lib.metrics: dot products of the row's user's and every item's embedding.
        split: the split evaluated; its `rows_user(stage)` maps each row to its user, so the test stage of a K-event
        split (`data.last_k_events`: one row per event) scores each event with its user's vector. None: rows are
        users (leave-one-out, or any validation stage); a row beyond the users is refused, not scored as another."""
        U, I = self.tables()
        who = {} if split is None else {st: torch.as_tensor(split.rows_user(st)) for st in ("valid", "test")}

        def score_fn(rows, stage):
            if split is not None:
                return U[who[stage][rows]] @ I.T                                 # (B, n_items), B rows
            if len(rows) and int(rows.max()) >= len(U):
                raise ValueError(f"row {int(rows.max())} of stage {stage!r} is not one of the {len(U)} users: a split "
                                 f"with several test events per user needs scorer(split) to map rows to users")
            return U[rows] @ I.T
        return score_fn


def sample_negatives(users: np.ndarray, seen: np.ndarray, n_items: int, rng: np.random.Generator, k: int = 1):
    """(len(users), k) items drawn uniformly from 1..n_items-1 among those the user has not seen in train
    (`seen`: (U, n_items) bool). Rejection sampling, redrawn until every entry is unseen."""
    out = rng.integers(1, n_items, size=(len(users), k))
    bad = seen[users[:, None], out]
    while bad.any():
        out[bad] = rng.integers(1, n_items, size=int(bad.sum()))
        bad = seen[users[:, None], out]
    return out


def seen_matrix(train: list[np.ndarray], n_items: int) -> np.ndarray:
    """(U, n_items) bool: item seen in the user's train sequence; the padding column counts as seen."""
    seen = np.zeros((len(train), n_items), dtype=bool)
    for u, s in enumerate(train):
        seen[u, s] = True
    seen[:, 0] = True
    return seen


def fit(model: LightGCN, split: data.Split, *, epochs: int = TRAIN_DEFAULTS["epochs"],
        batch_size: int = TRAIN_DEFAULTS["batch_size"], lr: float = TRAIN_DEFAULTS["lr"],
        reg: float = TRAIN_DEFAULTS["reg"], patience: int = TRAIN_DEFAULTS["patience"], seed: int = 0,
        progress: bool = True, max_batches: int | None = None, desc: str = "LightGCN") -> FitResult:
    """BPR over every training interaction once per epoch (one fresh negative each) with Adam, through
    `lib.train.loop`: validation NDCG@10 after each epoch, early stopping, the best epoch's weights restored; so
    `train.fit_cached(..., fit_fn=lightgcn.fit)` caches it like any other fit. max_batches caps the batches per epoch
    (smoke runs). Trains on the CPU (sparse propagation). The defaults are TRAIN_DEFAULTS (the one place)."""
    rng = np.random.default_rng(seed)
    users = np.concatenate([np.full(len(s), k) for k, s in enumerate(split.train)]).astype(np.int64)
    items = np.concatenate(split.train).astype(np.int64)
    seen = seen_matrix(split.train, split.n_items)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def batches(epoch):
        perm = rng.permutation(len(users))
        neg = sample_negatives(users[perm], seen, split.n_items, rng)[:, 0]
        for s in range(0, len(perm), batch_size):
            idx = perm[s:s + batch_size]
            yield torch.from_numpy(users[idx]), torch.from_numpy(items[idx]), torch.from_numpy(neg[s:s + batch_size])

    def step(batch):
        return {"loss": update(opt, model.bpr_loss(*batch, reg))}

    return loop(model, batches, step, epochs=epochs, patience=patience, max_batches=max_batches, desc=desc,
                progress=progress,
                validate=lambda: metrics.evaluate(model.scorer(), split, "valid", groups=False)["overall"])
