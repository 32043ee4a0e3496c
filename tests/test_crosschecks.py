"""The tiny run's outputs recomputed from the files they come from, by other code than the workflow's: metrics from
predictions, saved labels from the dataset, table cells from metrics files, McNemar tests from two runs' predictions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import confusion_matrix, roc_auc_score


def runs_of(tiny_run: Path) -> list[str]:
    runs = sorted(path.name for path in (tiny_run / "results/runs").iterdir())
    assert len(runs) == 11
    return runs


def predictions_of(tiny_run: Path, run: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Probabilities, labels and class names of a run's predictions.npz, read with numpy alone."""
    with np.load(tiny_run / f"results/runs/{run}/predictions.npz") as saved:
        return saved["probabilities"], saved["labels"].reshape(-1), [str(name) for name in saved["class_names"]]


def test_saved_labels_are_the_test_split_of_the_runs_dataset(tiny_run):
    for run in runs_of(tiny_run):
        dataset, size = run.split("-")[:2]  # run ids start with the dataset and the size
        with np.load(tiny_run / f"results/data/{dataset}/{size}.npz") as data:
            expected = data["test_labels"].reshape(-1)
        probabilities, labels, names = predictions_of(tiny_run, run)
        np.testing.assert_array_equal(labels, expected, err_msg=run)  # the same images, in the same order
        assert probabilities.shape == (len(expected), len(names)), run
        np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-4, err_msg=run)


def test_metrics_json_is_what_the_predictions_give(tiny_run):
    for run in runs_of(tiny_run):
        probabilities, labels, names = predictions_of(tiny_run, run)
        saved = json.loads((tiny_run / f"results/runs/{run}/metrics.json").read_text())
        predicted = probabilities.argmax(axis=1)
        matrix = confusion_matrix(labels, predicted, labels=range(len(names)))
        assert saved["class_names"] == names and saved["n_images"] == len(labels)
        assert saved["accuracy"] == pytest.approx(np.mean(predicted == labels), abs=1e-12), run
        present = [k for k in range(len(names)) if 0 < np.sum(labels == k) < len(labels)]
        auc = np.mean([roc_auc_score(labels == k, probabilities[:, k]) for k in present])
        assert saved["auc"] == pytest.approx(auc, abs=1e-12), run  # the mean over the classes the split has
        assert saved["confusion_matrix"] == matrix.tolist(), run
        for k, name in enumerate(names):
            scores = saved["per_class"][name]
            assert scores["support"] == matrix[k].sum()
            assert scores["recall"] == pytest.approx(matrix[k, k] / matrix[k].sum() if matrix[k].sum() else 0.0)
            assert scores["precision"] == pytest.approx(
                matrix[k, k] / matrix[:, k].sum() if matrix[:, k].sum() else 0.0
            )


def test_grid_table_cells_are_their_runs_metrics(tiny_run):
    table3 = pd.read_csv(tiny_run / "results/tables/table3.csv")
    table1 = pd.read_csv(tiny_run / "results/tables/table1.csv")
    for arch in ("resnet50", "resnet101"):
        for batch in (16, 32):
            run = f"synthetic-32-{arch}-bs{batch}-s0"  # one seed: each cell is this run's own value
            metrics = json.loads((tiny_run / f"results/runs/{run}/metrics.json").read_text())
            boot = json.loads((tiny_run / f"results/runs/{run}/bootstrap.json").read_text())
            mine = (table3["arch"] == arch) & (table3["batch_size"] == batch)
            for metric in ("accuracy", "auc"):
                [cell] = table3[mine & (table3["metric"] == metric)].to_dict("records")
                assert cell["mean"] == pytest.approx(metrics[metric], abs=1e-12), (run, metric)
                assert (cell["ci95_low"], cell["ci95_high"]) == pytest.approx(
                    (boot[metric]["low"], boot[metric]["high"])
                ), (run, metric)
            f1 = table1[(table1["arch"] == arch) & (table1["batch_size"] == batch)].set_index("class")["mean"]
            assert f1.to_dict() == pytest.approx({c: s["f1"] for c, s in metrics["per_class"].items()}), run


def test_every_mcnemar_test_is_recomputed_from_the_two_runs_predictions(tiny_run):
    significance = json.loads((tiny_run / "results/stats/significance.json").read_text())
    assert len(significance["comparisons"]) >= 7
    for comparison in significance["comparisons"]:
        signs = []
        for test in comparison["tests"]:
            prob_a, labels_a, _ = predictions_of(tiny_run, test["a_run"])
            prob_b, labels_b, _ = predictions_of(tiny_run, test["b_run"])
            np.testing.assert_array_equal(labels_a, labels_b)  # paired: the same test images
            right_a, right_b = prob_a.argmax(1) == labels_a, prob_b.argmax(1) == labels_b
            only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
            assert (test["b"], test["c"]) == (only_a, only_b), comparison["comparison"]
            p_exact = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
            assert test["p_exact"] == pytest.approx(p_exact, rel=1e-9), comparison["comparison"]
            assert test["a_accuracy"] == pytest.approx(right_a.mean()) and test["b_accuracy"] == pytest.approx(
                right_b.mean()
            )
            if test["p_exact"] < comparison["alpha"]:
                signs.append("for" if (only_a > only_b) == comparison["a_better_claimed"] else "against")
            else:
                signs.append("neither")
        expected = (
            "contradicted"
            if "against" in signs
            else "supported"
            if signs and set(signs) == {"for"}
            else "not significant"
        )
        assert comparison["verdict"] == expected, comparison["comparison"]
