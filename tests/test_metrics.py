"""MedMNIST-style metrics."""

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score

from bloodcells.metrics import accuracy, evaluate_predictions, mean_ovr_auc

NAMES = ["a", "b", "c"]


def test_accuracy_is_argmax_agreement():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.2, 0.5, 0.3]])
    assert accuracy(np.array([0, 2, 1, 1]), probabilities) == 0.75


def test_auc_is_mean_of_one_vs_rest_aucs():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    probabilities = rng.dirichlet(np.ones(3), 200) + np.eye(3)[labels] * 0.3
    expected = np.mean([roc_auc_score(labels == k, probabilities[:, k]) for k in range(3)])
    assert mean_ovr_auc(labels, probabilities) == pytest.approx(expected)
    assert mean_ovr_auc(labels, np.eye(3)[labels]) == 1.0


def test_auc_skips_a_class_absent_from_the_labels():
    labels = np.array([0, 1, 0, 1])
    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1]])
    assert mean_ovr_auc(labels, probabilities) == 1.0


def test_evaluate_predictions_reports_per_class_and_confusion():
    labels = np.array([0, 0, 1, 2, 2, 2])
    predictions = np.array([0, 1, 1, 2, 2, 0])
    metrics = evaluate_predictions(labels, np.eye(3)[predictions], NAMES)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert metrics["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert metrics["per_class"]["c"]["recall"] == pytest.approx(2 / 3)
    # the keys metrics.json is read by (tables, report, statistics)
    assert set(metrics) == {"accuracy", "auc", "n_images", "class_names", "per_class", "confusion_matrix"}
    assert metrics["n_images"] == 6 and metrics["class_names"] == NAMES
    assert metrics["auc"] == mean_ovr_auc(labels, np.eye(3)[predictions])


def test_evaluate_predictions_rejects_wrong_class_count():
    with pytest.raises(ValueError, match=r"expected \(2, 3\)"):
        evaluate_predictions(np.array([0, 1]), np.ones((2, 5)) / 5, NAMES)


def test_auc_equals_medmnist_evaluator_when_every_class_is_present():
    from medmnist.evaluator import getAUC  # medmnist's own metric (its module imports no torch)

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 8, 300)
    probabilities = np.round(rng.dirichlet(np.ones(8), 300) + 0.2 * np.eye(8)[labels], 2)  # ties, as float32 makes
    assert set(labels) == set(range(8))
    assert mean_ovr_auc(labels, probabilities) == pytest.approx(getAUC(labels[:, None], probabilities, "multi-class"))


def test_auc_with_an_absent_class_departs_from_medmnist_on_purpose():
    from medmnist.evaluator import getAUC

    labels = np.array([0, 1, 0, 1])
    probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1]])
    # MedMNIST's getAUC asks scikit-learn for the AUC of class 2, which has no positive image: NaN, and so the mean
    with pytest.warns(UndefinedMetricWarning, match="Only one class is present"):
        theirs = getAUC(labels[:, None], probabilities, "multi-class")
    assert np.isnan(theirs)
    assert mean_ovr_auc(labels, probabilities) == 1.0  # the mean over the classes that occur (docs/testing.md)


def test_a_class_never_seen_keeps_its_place_in_every_metric():
    # class "c" is neither a label nor a prediction; "b" is a label never predicted
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.5, 0.1, 0.4]])
    metrics = evaluate_predictions(labels, probabilities, NAMES)
    assert metrics["confusion_matrix"] == [[2, 0, 0], [2, 0, 0], [0, 0, 0]]
    assert metrics["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert metrics["per_class"]["b"]["precision"] == 0.0  # nothing predicted as b: 0, not 1 (zero_division=0)
    assert metrics["per_class"]["a"]["precision"] == 0.5


def test_auc_of_a_split_with_one_class_is_nan():
    assert np.isnan(mean_ovr_auc(np.zeros(4, int), np.full((4, 3), 1 / 3)))
