"""Small static-figure helpers shared by the notebooks (matplotlib/seaborn, no state)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def long_tail(popularity: np.ndarray, ax=None, frac: float = 0.2, title: str = "item popularity (long tail)",
              ylabel: str = "training interactions"):
    """Items sorted by interaction count (log scale), with the head and tail `frac` shaded (notebook 00).
    ylabel names what was counted: the default fits `Split.item_popularity()` (the training part only)."""
    ax = ax or plt.gca()
    counts = np.sort(np.asarray(popularity))[::-1]
    n = len(counts)
    ax.plot(np.arange(1, n + 1), counts, color="C0")
    k = max(1, int(round(frac * n)))
    ax.axvspan(1, k, color="C1", alpha=0.15, label=f"head (top {frac:.0%})")
    ax.axvspan(n - k + 1, n, color="C2", alpha=0.15, label=f"tail (bottom {frac:.0%})")
    ax.set(yscale="symlog", xlabel="item rank by popularity", ylabel=ylabel, title=title)
    ax.legend(loc="upper right")
    return ax


def learning_curves(histories: dict[str, list[dict]], keys=("loss", "valid_NDCG@10"), axes=None):
    """One panel per key, one line per run; histories as returned by lib.train.fit (notebook 01)."""
    if axes is None:
        _, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.2))
    for ax, key in zip(np.atleast_1d(axes), keys):
        for name, hist in histories.items():
            ax.plot([h["epoch"] for h in hist], [h[key] for h in hist], label=name)
        ax.set(xlabel="epoch", ylabel=key, title=key)
        ax.legend(fontsize="small")
    plt.tight_layout()
    return axes


def project_2d(X, method: str = "t-SNE", seed: int = 0, perplexity: float = 30.0, max_iter: int = 1000) -> np.ndarray:
    """(N, 2) coordinates of X (N, D): "t-SNE" (PCA init), "UMAP" or "PCA", seeded, on one thread (as fast for a
    few thousand points, and repeatable). t-SNE's perplexity is capped at (N - 1) / 3 for small N (notebooks
    02, 03, 04)."""
    from threadpoolctl import threadpool_limits
    X = np.asarray(X, dtype=np.float32)
    with threadpool_limits(1):
        if method == "t-SNE":
            from sklearn.manifold import TSNE
            return TSNE(2, perplexity=min(perplexity, (len(X) - 1) / 3), init="pca", random_state=seed,
                        max_iter=max_iter).fit_transform(X)
        if method == "UMAP":
            import umap
            return umap.UMAP(n_neighbors=min(15, len(X) - 1), random_state=seed, n_jobs=1).fit_transform(X)
        if method == "PCA":
            from sklearn.decomposition import PCA
            return PCA(2, random_state=seed).fit_transform(X)
    raise ValueError(f"unknown projection {method!r}; valid: 't-SNE', 'UMAP', 'PCA'")


def palette(names) -> list:
    """One colour per name (tab10, or tab20 past ten names); a name 'other' is grey."""
    import seaborn as sns
    pal = sns.color_palette("tab10" if len(names) <= 10 else "tab20", len(names))
    return [(0.6, 0.6, 0.6) if nm == "other" else pal[c] for c, nm in enumerate(names)]


def scatter_by_label(ax, Y, codes, names, title: str = "", highlight=None, s: float = 9, clip: bool = True):
    """2-D points Y (N, 2) coloured by codes (N,) into names (0..len(names)-1); 'other' grey; `highlight` = a code
    drawn in full colour with the others faded; clip: axis limits at the 0.5-99.5 percentiles (a few far outliers
    would squash the picture). Legend labels carry the counts (notebooks 02, 03, 04)."""
    cols = palette(names)
    codes = np.asarray(codes)
    for c, nm in enumerate(names):
        sel = codes == c
        if not sel.any():
            continue
        faded = highlight is not None and c != highlight
        ax.scatter(Y[sel, 0], Y[sel, 1], s=s, color=cols[c], alpha=0.12 if faded else 0.8,
                   label=f"{nm} ({sel.sum()})", linewidths=0)
    ax.set(title=title, xticks=[], yticks=[])
    if clip:
        lo, hi = np.percentile(Y, [0.5, 99.5], axis=0)
        pad = 0.05 * (hi - lo)
        ax.set(xlim=(lo[0] - pad[0], hi[0] + pad[0]), ylim=(lo[1] - pad[1], hi[1] + pad[1]))
    return ax


def label_codes(labels, top: int | None = None) -> tuple[np.ndarray, list[str]]:
    """String labels (N,) -> (codes (N,), names): the `top` most frequent names in order of frequency, the rest
    folded into 'other' (last)."""
    import pandas as pd
    counts = pd.Series(np.asarray(labels)).value_counts()
    keep = list(counts.index[:top]) if top else list(counts.index)
    names = keep + (["other"] if len(keep) < len(counts) else [])
    idx = {nm: i for i, nm in enumerate(keep)}
    return np.array([idx.get(l, len(keep)) for l in labels]), names


def static_twin(fig, draw, frames, interval: int = 600):
    """The static twin of a widget: `draw(frame)` redraws `fig` for each of `frames`, precomputed here and played in
    the page by matplotlib's own JavaScript player (a slider and buttons), so it works in exported HTML without a
    kernel. Returns an IPython HTML object to display; the figure is closed."""
    import matplotlib
    from IPython.display import HTML
    from matplotlib.animation import FuncAnimation
    matplotlib.rcParams["animation.embed_limit"] = 64                       # MB of frames
    anim = FuncAnimation(fig, draw, frames=list(frames), interval=interval, repeat=False)
    out = HTML(anim.to_jshtml(default_mode="once"))
    plt.close(fig)
    return out
