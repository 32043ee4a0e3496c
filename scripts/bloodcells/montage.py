"""A PNG grid of example images, one row per class, to eyeball a dataset."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on workers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .atomic import atomic_path  # noqa: E402


def pick_examples(labels: np.ndarray, n_classes: int, per_class: int) -> list[np.ndarray]:
    """Indices of the first `per_class` images of each class (fewer where a class has fewer)."""
    flat = np.asarray(labels).reshape(-1)
    return [np.flatnonzero(flat == label)[:per_class] for label in range(n_classes)]


def make_montage(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: str,
    per_class: int = 4,
    title: str | None = None,
) -> None:
    """Write a PNG montage of `per_class` images of each class, one labelled row per class."""
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    if len(images) != len(np.asarray(labels).reshape(-1)):
        raise ValueError(f"{len(images)} images but {len(np.asarray(labels).reshape(-1))} labels")
    rows = pick_examples(labels, len(class_names), per_class)
    figure, axes = plt.subplots(
        len(class_names), per_class, figsize=(1.3 * per_class + 1.6, 1.3 * len(class_names)), squeeze=False
    )
    for row, (name, indices) in enumerate(zip(class_names, rows, strict=True)):
        for column in range(per_class):
            ax = axes[row, column]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if column < len(indices):
                ax.imshow(images[indices[column]], interpolation="nearest")
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        # The temporary name ends in ".part.png"; name the format so savefig does not guess.
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
