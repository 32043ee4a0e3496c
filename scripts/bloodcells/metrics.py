"""Test-set metrics as MedMNIST defines them: argmax accuracy and mean one-vs-rest AUC."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score


def accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Share of images whose most probable class is the true one."""
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def mean_ovr_auc(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean over classes of the one-vs-rest ROC AUC, as MedMNIST's getAUC when every class occurs in `labels`.

    A class absent from `labels` has no AUC: getAUC's mean becomes NaN, this one is the mean over the classes that
    occur (a small test split may lack a rare class; docs/testing.md).
    """
    aucs = []
    for label in range(probabilities.shape[1]):
        positives = labels == label
        if positives.any() and not positives.all():
            aucs.append(roc_auc_score(positives, probabilities[:, label]))
    return float(np.mean(aucs)) if aucs else float("nan")


def per_class_report(labels: np.ndarray, predictions: np.ndarray, class_names: Sequence[str]) -> dict[str, dict]:
    """Precision, recall, F1 and support by class name."""
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=range(len(class_names)), zero_division=0
    )
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
    }


def evaluate_predictions(labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]) -> dict:
    """All metrics of one run on one split, ready for metrics.json."""
    if probabilities.shape != (len(labels), len(class_names)):
        raise ValueError(
            f"probabilities have shape {probabilities.shape}, expected ({len(labels)}, {len(class_names)})"
        )
    predictions = np.argmax(probabilities, axis=1)
    return {
        "accuracy": accuracy(labels, probabilities),
        "auc": mean_ovr_auc(labels, probabilities),
        "n_images": int(len(labels)),
        "class_names": list(class_names),
        "per_class": per_class_report(labels, predictions, class_names),
        "confusion_matrix": confusion_matrix(labels, predictions, labels=range(len(class_names))).tolist(),
    }
