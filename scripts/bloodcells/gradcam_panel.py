"""The Grad-CAM panel: which test images it shows, and the figure of each beside its heatmap, one row per class."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .atomic import atomic_path

# Perceptually uniform and readable with deuteranopia, protanopia and tritanopia (Nunez et al. 2018).
COLORMAP = "cividis"
OVERLAY_ALPHA = 0.55


@dataclass(frozen=True)
class Selection:
    """Test-image indices chosen for the panel: per class, the correct ones and the mistakes."""

    correct: list[np.ndarray]
    mistakes: list[np.ndarray]

    @property
    def indices(self) -> np.ndarray:
        """All chosen indices, class by class, correct ones first."""
        parts = [np.concatenate([c, m]) for c, m in zip(self.correct, self.mistakes, strict=True)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def slot_counts(self) -> tuple[int, int]:
        """Image pairs per row for correct predictions (at least 1) and for mistakes: the most any class has."""
        return max([len(c) for c in self.correct] + [1]), max([len(m) for m in self.mistakes] + [0])

    def row(self, c: int) -> list[int | None]:
        """Class c's indices in its row's slots, correct ones then mistakes, None where the class has fewer."""
        n_correct, n_mistakes = self.slot_counts()
        slots = list(self.correct[c]) + [None] * (n_correct - len(self.correct[c]))
        return slots + list(self.mistakes[c]) + [None] * (n_mistakes - len(self.mistakes[c]))


def select_examples(
    labels: np.ndarray, probabilities: np.ndarray, per_class_correct: int, per_class_mistakes: int
) -> Selection:
    """Per true class: the most confident correct predictions and the most confidently wrong ones (ties by index)."""
    labels = np.asarray(labels).reshape(-1)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(labels)), predicted]
    correct, mistakes = [], []
    for c in range(probabilities.shape[1]):
        for keep, n, out in (
            (predicted == c, per_class_correct, correct),
            (predicted != c, per_class_mistakes, mistakes),
        ):
            where = np.flatnonzero((labels == c) & keep)
            order = np.lexsort((where, -confidence[where]))  # confidence descending, then index
            out.append(where[order[:n]].astype(np.int64))
    return Selection(correct, mistakes)


def plot_panels(
    images: np.ndarray,
    heatmaps: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    selection: Selection,
    class_names: Sequence[str],
    png_path: str | os.PathLike,
    pdf_path: str | os.PathLike | None = None,
    title: str = "",
    dpi: int = 300,
) -> None:
    """One row per class: each chosen image beside its heatmap over the greyscale image; PNG (dpi) and PDF, atomically.

    `images`, `labels` and `probabilities` cover the whole test split; `heatmaps` holds one map per
    selected index, in the order of `selection.indices`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.asarray(labels).reshape(-1)
    heat_of = dict(zip(selection.indices.tolist(), heatmaps, strict=True))
    fig, axes = _blank_grid(plt, len(class_names), sum(selection.slot_counts()))
    try:
        for c, name in enumerate(class_names):
            axes[c, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8, fontweight="bold")
            for s, index in enumerate(selection.row(c)):
                if index is None:
                    _note_empty(axes[c, 2 * s], selection, c, s)
                else:
                    truth, probs = labels[index], probabilities[index]
                    _draw_example(axes[c, 2 * s : 2 * s + 2], images[index], heat_of[index], truth, probs, class_names)
        _finish(fig, axes, title)
        _save(fig, png_path, pdf_path, dpi)
    finally:
        plt.close(fig)


def _blank_grid(plt, n_rows: int, n_slots: int):
    """A figure of n_rows x 2 n_slots frameless axes without ticks, with room above for the title."""
    height = 1.45 * n_rows + 0.9
    fig, axes = plt.subplots(
        n_rows,
        2 * n_slots,
        figsize=(1.25 * 2 * n_slots + 1.6, height),
        squeeze=False,
        gridspec_kw={"wspace": 0.05, "hspace": 0.55},
    )
    fig.subplots_adjust(top=1 - 0.85 / height, bottom=0.1 / height)  # room for the title and the first labels
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    return fig, axes


def _note_empty(ax, selection: Selection, c: int, s: int) -> None:
    """In the first slot of an empty group of class c's row, say that the class has no correct ones or mistakes."""
    n_correct, _ = selection.slot_counts()
    empty = {0: "no correct predictions", n_correct: "no mistakes"}.get(s)
    if empty and not (len(selection.correct[c]) if s == 0 else len(selection.mistakes[c])):
        ax.text(0.5, 0.5, empty, ha="center", va="center", fontsize=6, color="0.4", transform=ax.transAxes)


def _draw_example(
    pair, image: np.ndarray, heat: np.ndarray, truth: int, probabilities: np.ndarray, class_names: Sequence[str]
) -> None:
    """The image, titled with its true and predicted class, beside its heatmap; a dashed frame marks a mistake."""
    ax_img, ax_heat = pair
    pred = int(probabilities.argmax())
    mistake = pred != truth
    ax_img.imshow(image, interpolation="nearest")
    ax_heat.imshow(_grey(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax_heat.imshow(heat, cmap=COLORMAP, vmin=0, vmax=1, alpha=OVERLAY_ALPHA, interpolation="bilinear")
    text = f"true: {class_names[truth]}\npred: {class_names[pred]}\np = {probabilities[pred]:.2f}" + (
        "  MISTAKE" if mistake else ""
    )
    ax_img.set_title(text, fontsize=5, loc="left", fontweight="bold" if mistake else "normal")
    if mistake:  # marked without relying on colour
        for ax in pair:
            ax.set_frame_on(True)
            for spine in ax.spines.values():
                spine.set_linestyle("--")
                spine.set_linewidth(1.0)


def _grey(image: np.ndarray) -> np.ndarray:
    """Luma (ITU-R BT.601) of an RGB uint8 image, in [0, 1]."""
    return (image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 255.0


def _finish(fig, axes, title: str) -> None:
    """The colour bar of the heat scale and the figure's title."""
    from matplotlib import cm, colors

    bar = fig.colorbar(cm.ScalarMappable(colors.Normalize(0, 1), COLORMAP), ax=axes, fraction=0.02, pad=0.01)
    bar.set_label("Grad-CAM heat (each map divided by its maximum)", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    height = fig.get_figheight()
    fig.suptitle(title or "Grad-CAM: image | heatmap over greyscale image", fontsize=9, y=1 - 0.1 / height)


def _save(fig, png_path: str | os.PathLike, pdf_path: str | os.PathLike | None, dpi: int) -> None:
    """The figure as a PNG at `dpi` and, if asked, a PDF, each written atomically."""
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    if pdf_path is not None:
        with atomic_path(pdf_path) as tmp:
            fig.savefig(tmp, format="pdf", bbox_inches="tight")
