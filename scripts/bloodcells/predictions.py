"""A run's predictions of a test split: made by its saved model (rules evaluate and transfer), kept in a
predictions.npz (read by rule gradcam, the bootstrap and the statistics).

No TensorFlow import at module level: a job imports it only after its log redirect (bloodcells.jobsetup).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .atomic import atomic_path


def predict_saved_model(
    model_path: str | os.PathLike, images: np.ndarray, batch_size: int, n_classes: int | None = None
) -> np.ndarray:
    """Class probabilities of `images` from a saved run model, in inference mode; its class count checked if given."""
    from .model import load_model, predict_probabilities

    model = load_model(model_path)
    outputs = model.output_shape[-1]
    if n_classes is not None and outputs != n_classes:
        raise ValueError(
            f"{model_path}: model predicts {outputs} classes but the evaluation data has {n_classes}; "
            "was it trained on another dataset?"
        )
    return predict_probabilities(model, images, batch_size)


def save_predictions(
    path: str | os.PathLike, probabilities: np.ndarray, labels: np.ndarray, **class_lists: Sequence[str]
) -> None:
    """Write a predictions.npz atomically: probabilities, true labels and the named class lists (class_names=...)."""
    lists = {name: np.array(classes) for name, classes in class_lists.items()}
    with atomic_path(path) as tmp:
        np.savez(tmp, probabilities=probabilities, labels=labels, **lists)


def read_predictions(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The probabilities (float32, N x classes) and true labels (N,) of a predictions.npz."""
    with np.load(path) as saved:
        return saved["probabilities"].astype(np.float32), saved["labels"].reshape(-1)
