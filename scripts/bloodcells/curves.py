"""Training curves of one run, validation-loss comparisons across runs, confusion matrices."""

from __future__ import annotations

import functools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .atomic import atomic_path  # noqa: E402
from .names import arch_label  # noqa: E402


def epoch_axis(axis: plt.Axes) -> None:
    """Label the x axis 'epoch' with integer ticks only: epochs are whole numbers."""
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def save_figure(fig: plt.Figure, path: str) -> None:
    """Write a figure as PNG under a temporary name, move it into place and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format="png")
    plt.close(fig)


def plot_history(history: pd.DataFrame, title: str, path: str) -> None:
    """Two panels, loss and accuracy, each with the training and validation curve; the best epoch marked."""
    save_figure(history_figure(history, title), path)


def history_figure(history: pd.DataFrame, title: str) -> plt.Figure:
    """The figure of plot_history, not yet saved."""
    missing = {"epoch", "loss", "val_loss", "accuracy", "val_accuracy"} - set(history.columns)
    if missing:
        raise ValueError(f"history of '{title}' lacks columns {sorted(missing)}")
    best = int(history.loc[history["val_loss"].idxmin(), "epoch"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        axis.plot(history["epoch"], history[metric], "o-", label="training", color="#0072B2")
        axis.plot(history["epoch"], history[f"val_{metric}"], "s--", label="validation", color="#D55E00")
        axis.axvline(best, color="grey", lw=0.8, ls=":", label=f"best epoch ({best})")
        epoch_axis(axis)
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title, fontsize=10)
    return fig


def comparison_panels(runs: dict[str, dict]) -> list[tuple[str, str]]:
    """The comparisons the grid allows, as (run-value key, panel title): sizes and architectures, else runs."""
    panels = [
        (key, title)
        for key, title in (("size", "by image size"), ("arch", "by architecture"))
        if len({values[key] for values in runs.values()}) > 1
    ]
    return panels or [("run", "by run")]


def plot_curve_comparison(histories: dict[str, pd.DataFrame], runs: dict[str, dict], path: str) -> None:
    """Validation loss by epoch of every run, one panel per comparison the grid allows, coloured by compared value."""
    save_figure(comparison_figure(histories, runs), path)


def comparison_figure(histories: dict[str, pd.DataFrame], runs: dict[str, dict]) -> plt.Figure:
    """The figure of plot_curve_comparison, not yet saved."""
    panels = comparison_panels(runs)
    palette = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]  # Okabe-Ito, colour-blind safe
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.4), constrained_layout=True, squeeze=False)
    smallest_batch = min(values["batch_size"] for values in runs.values())
    for axis, (key, title) in zip(axes[0], panels, strict=True):
        group_of = functools.partial(_group_of, runs, key)
        groups = sorted({group_of(run) for run in runs}, key=_natural)
        for run, history in histories.items():
            style = "-" if runs[run]["batch_size"] == smallest_batch else "--"  # dashed: the larger batch
            axis.plot(
                history["epoch"],
                history["val_loss"],
                style,
                lw=1.2,
                alpha=0.85,
                color=palette[groups.index(group_of(run)) % len(palette)],
            )
        for group in groups:  # one legend entry per compared value, not per run
            axis.plot([], [], color=palette[groups.index(group) % len(palette)], label=_group_label(key, group))
        axis.set_title(f"validation loss {title}", fontsize=9)
        epoch_axis(axis)
        axis.set_ylabel("validation loss")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return fig


def _group_of(runs: dict[str, dict], key: str, run: str) -> str:
    """The value of `key` that puts `run` in its group of a comparison panel ("run": each run its own group)."""
    return run if key == "run" else str(runs[run][key])


def _natural(value: str) -> tuple:
    """Numbers in numeric order before words."""
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def _group_label(key: str, group: str) -> str:
    """Legend text of one compared value."""
    return {"size": f"{group} px", "arch": arch_label(group)}.get(key, group)


def plot_confusion(matrix: np.ndarray, class_names: list[str], title: str, path: str) -> None:
    """Confusion matrix (rows = true class), coloured by the share of each true class, counts written in the cells."""
    matrix = np.asarray(matrix)
    shares = matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1, None)
    fig, axis = plt.subplots(figsize=(5.6, 5.0), constrained_layout=True)
    image = axis.imshow(shares, cmap="cividis", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(
            column,
            row,
            str(count),
            ha="center",
            va="center",
            fontsize=7,
            color="black" if shares[row, column] > 0.6 else "white",
        )
    axis.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=7)
    axis.set_yticks(range(len(class_names)), class_names, fontsize=7)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    axis.set_title(title, fontsize=9)
    fig.colorbar(image, ax=axis, label="share of the true class", shrink=0.8)
    save_figure(fig, path)
