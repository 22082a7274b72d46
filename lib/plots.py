"""Small static-figure helpers shared by the notebooks (matplotlib/seaborn, no state)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def long_tail(popularity: np.ndarray, ax=None, frac: float = 0.2, title: str = "item popularity (long tail)"):
    """Items sorted by interaction count (log scale), with the head and tail `frac` shaded (notebook 00)."""
    ax = ax or plt.gca()
    counts = np.sort(np.asarray(popularity))[::-1]
    n = len(counts)
    ax.plot(np.arange(1, n + 1), counts, color="C0")
    k = max(1, int(round(frac * n)))
    ax.axvspan(1, k, color="C1", alpha=0.15, label=f"head (top {frac:.0%})")
    ax.axvspan(n - k + 1, n, color="C2", alpha=0.15, label=f"tail (bottom {frac:.0%})")
    ax.set(yscale="symlog", xlabel="item rank by popularity", ylabel="training interactions", title=title)
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
