"""User intents (LLMDiRec section 3.2, after InDiRec): prefixes, K-means prototypes, InfoNCE, silhouette.

Taught in notebook 04 (intent clusters). The pieces, in the paper's order:

1. *Incremental prefix segmentation*: a sequence s_1..s_n gives the subsequences s_1..s_k, k = 1..n; each is
   one "moment" of the user, encoded into h (one vector per prefix). A causal encoder computes all of them in
   one pass: its output at position k only sees s_1..s_k, so it IS the encoding of prefix k.
2. *Intent prototypes*: K-means on the prefix encodings gives K centroids {c_k}; a sequence's intent signal s
   is its nearest prototype. Refitted every `cluster_interval` training steps (InDiRec refits each epoch).
3. *InfoNCE* between a sequence and its augmented view, with temperature tau; pairs that share the same next
   item are not used as negatives (InDiRec's `mask_correlated_samples`).
4. *Silhouette* of K-means clusters on the representations (LLMDiRec section 8).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------- 1. prefix segmentation
def prefix_segments(seq, min_len: int = 1) -> list[np.ndarray]:
    """Incremental prefixes of one sequence: [s_1..s_min_len], ..., [s_1..s_n] (shortest first)."""
    seq = np.asarray(seq)
    if min_len < 1:
        raise ValueError(f"min_len must be >= 1, got {min_len}")
    return [seq[:k] for k in range(min_len, len(seq) + 1)]


def prefix_positions(item_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The prefixes a causal encoder sees in a left-padded batch (B, L): (row, position) of every real item.

    The encoder output h[row, position] encodes exactly prefix s_1..s_k of that row, k = number of real items
    up to and including `position`. Returns two (N,) LongTensors.
    """
    rows, cols = (item_seq != 0).nonzero(as_tuple=True)
    return rows, cols


# --------------------------------------------------------------------------- 2. prototypes
def fit_prototypes(h, K: int, seed: int = 0, n_init: int = 3, max_points: int = 20000,
                   minibatch: bool | None = None) -> np.ndarray:
    """K-means centroids {c_k}: (K, D) float32 from points h (N, D). Deterministic for a seed.

    At most `max_points` points (a seeded random subset) are clustered, so a refit stays cheap on a laptop
    CPU; MiniBatchKMeans is used above 5000 points unless `minibatch` says otherwise.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    h = np.asarray(h.detach().cpu() if torch.is_tensor(h) else h, dtype=np.float32)
    if h.ndim != 2 or len(h) < K:
        raise ValueError(f"need a (N, D) array with N >= K={K} points to cluster, got shape {h.shape}")
    rng = np.random.default_rng(seed)
    if len(h) > max_points:
        h = h[rng.choice(len(h), max_points, replace=False)]
    if minibatch is None:
        minibatch = len(h) > 5000
    if minibatch:
        km = MiniBatchKMeans(K, n_init=n_init, random_state=seed, batch_size=2048, max_iter=50)
    else:
        km = KMeans(K, n_init=n_init, random_state=seed)
    # one thread: as fast on 20k points, and OpenMP's spinning threads crawl on a loaded 2-core laptop
    with threadpool_limits(1):
        return km.fit(h).cluster_centers_.astype(np.float32)


def nearest_prototype(h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """(N,) index k of the nearest prototype (squared Euclidean, as K-means) for each row of h (N, D); c (K, D)."""
    d2 = (h * h).sum(-1, keepdim=True) - 2 * h @ c.T + (c * c).sum(-1)    # (N, K) ||h - c_k||^2
    return d2.argmin(-1)


class IntentPrototypes:
    """K intent prototypes {c_k}, refitted on demand; `assign` gives each sequence its intent signal s = c_k."""

    def __init__(self, K: int, seed: int = 0, n_init: int = 3, max_points: int = 20000):
        if K < 2:
            raise ValueError(f"K (number of intents) must be >= 2, got {K}")
        self.K, self.seed, self.n_init, self.max_points = K, seed, n_init, max_points
        self.c: torch.Tensor | None = None     # (K, D) prototypes, None before the first fit
        self.n_fits = 0

    def fit(self, h) -> "IntentPrototypes":
        # each refit gets its own seed so that repeated fits do not reuse one subsample, yet a run repeats
        self.c = torch.from_numpy(fit_prototypes(h, self.K, self.seed + self.n_fits, self.n_init, self.max_points))
        self.n_fits += 1
        return self

    def assign(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(k (N,), s = c_k (N, D)) for sequence representations h (N, D)."""
        if self.c is None:
            raise RuntimeError("IntentPrototypes.assign called before fit: no prototypes yet")
        c = self.c.to(h.device, h.dtype)
        k = nearest_prototype(h.detach(), c)
        return k, c[k]


# --------------------------------------------------------------------------- 3. InfoNCE
def info_nce(z_i: torch.Tensor, z_j: torch.Tensor, temperature: float = 1.0, targets: torch.Tensor | None = None,
             sim: str = "dot") -> torch.Tensor:
    """InfoNCE over 2N views (NT-Xent, as InDiRec's `info_nce`): z_i[a] and z_j[a] are positives.

    For each of the 2N views the logits are [positive, every other view]; the view itself and every view
    whose next-item target equals its own (the positive included, it is counted once) are masked out of the
    negatives. targets None masks only the view itself and its positive. Mean cross-entropy over 2N rows.
    z_i, z_j: (N, D); targets: (N,).
    """
    if sim not in ("dot", "cos"):
        raise ValueError(f"unknown sim {sim!r}; valid values are 'dot', 'cos'")
    N = z_i.shape[0]
    z = torch.cat([z_i, z_j])                                               # (2N, D)
    if sim == "cos":
        z = F.normalize(z, dim=-1)
    S = z @ z.T / temperature                                               # (2N, 2N) sim(z_a, z_b) / tau
    idx = torch.arange(2 * N, device=z.device)
    pair = (idx + N) % (2 * N)                                              # index of each view's positive
    pos = S[idx, pair].unsqueeze(1)                                         # (2N, 1)
    if targets is None:
        same = torch.zeros(2 * N, 2 * N, dtype=torch.bool, device=z.device)
        same[idx, pair] = True
    else:
        t2 = torch.cat([targets, targets])                                  # (2N,)
        same = t2.unsqueeze(0) == t2.unsqueeze(1)                           # same target -> not a negative
    same = same | torch.eye(2 * N, dtype=torch.bool, device=z.device)
    logits = torch.cat([pos, S.masked_fill(same, float("-inf"))], dim=1)   # (2N, 1 + 2N)
    return F.cross_entropy(logits, torch.zeros(2 * N, dtype=torch.long, device=z.device))


# --------------------------------------------------------------------------- 4. reading clusters
def silhouette(h, labels, sample_size: int | None = None, seed: int = 0) -> float:
    """Mean silhouette coefficient of points h (N, D) under the given cluster labels (N,), Euclidean."""
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    h = np.asarray(h.detach().cpu() if torch.is_tensor(h) else h, dtype=np.float64)
    labels = np.asarray(labels.cpu() if torch.is_tensor(labels) else labels)
    if len(labels) != len(h):
        raise ValueError(f"{len(labels)} labels for {len(h)} points: one label per point")
    if len(np.unique(labels)) < 2:
        raise ValueError("silhouette needs at least 2 distinct labels")
    with threadpool_limits(1):
        return float(silhouette_score(h, labels, sample_size=sample_size, random_state=seed))


def kmeans_silhouette(h, K: int, seeds=(0, 1, 2)) -> list[float]:
    """Silhouette of K-means(K) clusters fitted on h itself, one value per K-means seed (section 8's score)."""
    h = np.asarray(h.detach().cpu() if torch.is_tensor(h) else h, dtype=np.float32)
    out = []
    for s in seeds:
        c = torch.from_numpy(fit_prototypes(h, K, seed=s, minibatch=False))
        labels = nearest_prototype(torch.from_numpy(h), c).numpy()
        out.append(silhouette(h, labels) if len(np.unique(labels)) > 1 else float("nan"))
    return out


def transition_matrix(label_seqs, K: int) -> np.ndarray:
    """(K, K) counts of moves from intent a to intent b between consecutive prefixes of each user."""
    M = np.zeros((K, K), dtype=np.int64)
    for seq in label_seqs:
        seq = np.asarray(seq)
        if len(seq) > 1:
            np.add.at(M, (seq[:-1], seq[1:]), 1)
    return M


# --------------------------------------------------------------------------- genres as labels
def genre_matrix(item_genres, normalise: bool = False, drop=("unknown",)) -> tuple[np.ndarray, list[str]]:
    """(n_items, n_genres) float matrix of item genres and the sorted genre names (lib.data.item_genres gives the
    lists). Multi-hot 0/1, or with normalise=True each item's genres share a mass of 1 (a movie with three genres
    counts a third to each). Genres in `drop` are left out (ML-100K's 'unknown' is not a taste)."""
    names = sorted({g for gs in item_genres for g in gs} - set(drop))
    G = np.zeros((len(item_genres), len(names)))
    col = {g: j for j, g in enumerate(names)}
    for i, gs in enumerate(item_genres):
        gs = [g for g in gs if g in col]
        for g in gs:
            G[i, col[g]] = 1 / len(gs) if normalise else 1.0
    return G, names


def dominant_genres(histories, item_genres, train_seqs, window: int | None = None) -> np.ndarray:
    """The suite's one definition of a user's dominant genre: among the genres of the user's last `window` items
    (all when None), the genre whose share most exceeds its share among all training interactions.

    Why the excess and not the raw count: on ML-100K a raw count calls over half of the users Drama fans (Drama is
    on most movies), and a ratio would crown the rarest genres on one or two items; the difference of shares names
    what sets the user apart from the catalogue. Genre mass is normalised per item (`genre_matrix(normalise=True)`),
    'unknown' left out. histories: one item-id array per user; train_seqs: the training sequences (the baseline).
    Returns (U,) genre names."""
    G, names = genre_matrix(item_genres, normalise=True)
    profile = np.stack([G[np.asarray(h)[-window:] if window else np.asarray(h)].sum(0) for h in histories])
    base = G[np.concatenate([np.asarray(s) for s in train_seqs])].sum(0)         # catalogue-wide genre mass
    share = profile / np.maximum(profile.sum(1, keepdims=True), 1e-12)
    return np.array(names)[(share - base / base.sum()).argmax(1)]                   # (U,)
