"""Training and validation loss and accuracy by epoch."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .atomic import atomic_path  # noqa: E402


def plot_history(history: pd.DataFrame, title: str, path: str) -> None:
    """Two panels, loss and accuracy, each with the training and validation curve; the best epoch marked."""
    missing = {"epoch", "loss", "val_loss", "accuracy", "val_accuracy"} - set(history.columns)
    if missing:
        raise ValueError(f"history of '{title}' lacks columns {sorted(missing)}")
    best = int(history.loc[history["val_loss"].idxmin(), "epoch"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    for axis, metric in zip(axes, ("loss", "accuracy")):
        axis.plot(history["epoch"], history[metric], "o-", label="training", color="#0072B2")
        axis.plot(history["epoch"], history[f"val_{metric}"], "s--", label="validation", color="#D55E00")
        axis.axvline(best, color="grey", lw=0.8, ls=":", label=f"best epoch ({best})")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format="png")
    plt.close(fig)
