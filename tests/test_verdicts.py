"""Every verdict of the poster's conclusions, the McNemar verdict and run_comparisons, each turned by one change.

Each test starts from evidence on which a check gives one verdict and changes exactly one input (one number, one
test's verdict, one missing table), then expects the other verdict: a check whose condition were deleted or loosened
would keep its verdict and fail here. Boundaries are tested at the threshold itself, where conclusions.yaml says
whether it is strict ("exceeded") or not ("at least").
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from conftest import comparison_record
from test_report import CLASSES, CONCLUSIONS, GRID, focus_frame, grid_evidence

from bloodcells.comparisons import Comparison, run_comparisons
from bloodcells.conclusions import NOT_SUPPORTED, NOT_TESTABLE, SUPPORTED, Evidence, assess
from bloodcells.history import loss_behaviour
from bloodcells.stats import mcnemar_counts, verdict
from bloodcells.studies import lr_label

R50_224_16, R50_224_32 = "bloodmnist-224-resnet50-bs16-s0", "bloodmnist-224-resnet50-bs32-s0"
R101_224_16, R50_64_32 = "bloodmnist-224-resnet101-bs16-s0", "bloodmnist-64-resnet50-bs32-s0"


def conclusion(start: str) -> dict:
    """The conclusion of paper/conclusions.yaml whose poster text starts with `start`."""
    return next(c for c in CONCLUSIONS if c["poster"].startswith(start))


def judge(start: str, evidence: Evidence, **change) -> str:
    """The verdict of the conclusion whose poster text starts with `start`, its check changed by `change`."""
    found = conclusion(start)
    return assess([found | {"check": found["check"] | change}], evidence)[0]["verdict"]


def evidence_text(start: str, evidence: Evidence) -> str:
    """The evidence sentence the report prints beside that conclusion's verdict."""
    return assess([conclusion(start)], evidence)[0]["evidence"]


def test_every_check_kind_of_conclusions_yaml_is_tested_here():
    tested = {
        "size_accuracy_above",
        "more_spikes",
        "later_best_epoch",
        "steadier_arch",
        "classes_near_perfect",
        "lowest_classes",
        "best_configuration",
        "batch_improves_f1",
        "best_column",
        "best_cell",
        "significance",
        "gradcam_focus",
        "external_accuracy",
    }
    assert {c["check"]["kind"] for c in CONCLUSIONS} == tested


# --- the grid's descriptive checks ---------------------------------------------------------------------------


def test_size_accuracy_is_strictly_above_the_threshold_in_every_configuration():
    evidence = grid_evidence()  # 224 px: 0.99 and 0.975
    assert judge("224x224 pixel models exceeded", evidence) == SUPPORTED
    evidence.metrics[R50_224_32]["accuracy"] = 0.97  # one configuration at the threshold: not "exceeded"
    assert judge("224x224 pixel models exceeded", evidence) == NOT_SUPPORTED
    evidence.metrics[R50_224_32]["accuracy"] = 0.9701
    assert judge("224x224 pixel models exceeded", evidence) == SUPPORTED
    text = evidence_text("224x224 pixel models exceeded", evidence)  # every configuration named with its accuracy
    assert text.startswith("test accuracy ") and text.endswith("; threshold 0.97")
    assert "ResNet-50 (224 px), batch 32 0.9701, ResNet-101 (224 px), batch 16 0.9900" in text


def test_more_spikes_turns_on_one_run_losing_its_spike():
    evidence = grid_evidence()  # spikes per run: 224 px 1.0, 64 px 0.5: difference 0.5, the threshold
    assert judge("224 models showed occasional", evidence) == SUPPORTED
    assert evidence_text("224 models showed occasional", evidence).startswith(
        "validation-loss spikes (rise > 20 % over the previous epoch) per run: 224 px 1.00, 64 px 0.50"
    )
    evidence.behaviour[R50_224_16] = loss_behaviour([1.0, 0.8, 0.7, 0.6])  # 224 px 0.75: difference 0.25
    assert judge("224 models showed occasional", evidence) == NOT_SUPPORTED
    evidence.behaviour[R50_224_16] = loss_behaviour([0.7])  # a single epoch: no curve to compare
    assert judge("224 models showed occasional", evidence) == NOT_TESTABLE


def test_later_best_epoch_turns_on_one_run_reaching_its_best_later():
    evidence = grid_evidence()
    for run in GRID:  # every run's best at its last epoch: share 1.0 at both sizes
        evidence.behaviour[run] = loss_behaviour([1.0, 0.8, 0.7, 0.6])
    assert judge("64x64 models converged", evidence) == NOT_SUPPORTED
    evidence.behaviour[R50_224_16] = loss_behaviour([1.0, 0.5, 0.6, 0.7])  # best at 2 of 4: 224 px 0.875
    assert judge("64x64 models converged", evidence) == SUPPORTED  # difference 0.125 >= 0.1


def test_steadier_arch_turns_on_one_spiky_resnet50_run():
    evidence = grid_evidence()  # ResNet-50 / ResNet-101 change ratio 0.47
    assert judge("ResNet-50's loss changes", evidence) == SUPPORTED
    evidence.behaviour[R50_224_16] = loss_behaviour([1.0, 0.2, 1.0, 0.2])  # ratio 1.02
    assert judge("ResNet-50's loss changes", evidence) == NOT_SUPPORTED


@pytest.mark.parametrize(
    "start, kept", [("224 models showed occasional", "size"), ("ResNet-50's loss changes", "arch")]
)
def test_curve_checks_need_both_groups(start, kept):
    one_value = next(iter(GRID.values()))[kept]  # the grid with one size (or one architecture) only
    evidence = grid_evidence(grid={run: v for run, v in GRID.items() if v[kept] == one_value})
    assert judge(start, evidence) == NOT_TESTABLE


def test_curve_checks_judge_runs_of_two_epochs():
    evidence = grid_evidence()
    for run, values in GRID.items():  # two epochs are a curve (one rise or fall); a single epoch is not
        evidence.behaviour[run] = loss_behaviour([1.0, 1.5] if values["size"] == 224 else [1.0, 0.9])
    assert judge("224 models showed occasional", evidence) == SUPPORTED  # 1 spike per 224 px run, 0 at 64 px


def test_steadier_arch_at_its_max_ratio_is_supported():
    evidence = grid_evidence()
    for run, values in GRID.items():  # mean relative changes 0.25 and 0.5: ratio 0.5 exactly (binary fractions)
        change = 0.25 if values["arch"] == "resnet50" else 0.5
        evidence.behaviour[run] = {"epochs": 4, "spikes": 0, "best_epoch": 4, "mean_relative_change": change}
    assert judge("ResNet-50's loss changes", evidence, max_ratio=0.5) == SUPPORTED  # "at most"
    assert judge("ResNet-50's loss changes", evidence, max_ratio=0.4999) == NOT_SUPPORTED


def test_steadier_arch_against_a_flat_resnet101_is_not_supported():
    evidence = grid_evidence()
    for run, values in GRID.items():
        if values["arch"] == "resnet101":
            evidence.behaviour[run] = loss_behaviour([0.5, 0.5, 0.5, 0.5])  # no change at all: ratio infinite
    assert judge("ResNet-50's loss changes", evidence) == NOT_SUPPORTED


def test_classes_near_perfect_needs_every_run_at_least_the_threshold():
    evidence = grid_evidence()
    assert judge("Eosinophils and platelets", evidence) == SUPPORTED
    evidence.metrics[R50_64_32]["per_class"]["platelet"]["recall"] = 0.99  # "at least": the threshold passes
    assert judge("Eosinophils and platelets", evidence) == SUPPORTED
    evidence.metrics[R50_64_32]["per_class"]["platelet"]["recall"] = 0.989  # one run, one class, one metric
    assert judge("Eosinophils and platelets", evidence) == NOT_SUPPORTED
    evidence.metrics[R50_64_32]["per_class"]["platelet"]["recall"] = 1.0
    evidence.metrics[R50_64_32]["per_class"]["eosinophil"]["precision"] = 0.989  # precision counts as well
    assert judge("Eosinophils and platelets", evidence) == NOT_SUPPORTED


def test_classes_near_perfect_without_the_class_is_not_testable():
    evidence = grid_evidence()
    first = next(iter(GRID))
    evidence.metrics[first] = copy.deepcopy(evidence.metrics[first])
    del evidence.metrics[first]["per_class"]["platelet"]
    assert judge("Eosinophils and platelets", evidence) == NOT_TESTABLE


@pytest.mark.parametrize("start", ["Monocytes and immature granulocytes had lower recall", "Overall high performance"])
def test_lowest_classes_turn_when_another_class_is_lower(start):
    evidence = grid_evidence()  # monocyte 0.875, immature granulocyte 0.865, the others 1.0
    assert judge(start, evidence) == SUPPORTED
    metric = "recall" if "recall" in start else "f1"
    for run in list(GRID)[:2]:  # lymphocyte at 0.3 in two of eight runs: mean 0.825, now the lowest
        evidence.metrics[run]["per_class"]["lymphocyte"][metric] = 0.3
    assert judge(start, evidence) == NOT_SUPPORTED


def test_lowest_classes_below_is_strict():
    evidence = grid_evidence()
    for run in GRID:  # monocyte exactly 0.9 in every run: the two lowest still, but not below 0.9
        evidence.metrics[run]["per_class"]["monocyte"]["recall"] = 0.9
    assert judge("Monocytes and immature granulocytes had lower recall", evidence) == NOT_SUPPORTED
    assert judge("Monocytes and immature granulocytes had lower recall", evidence, below=0.9001) == SUPPORTED


def test_lowest_classes_with_a_class_not_in_the_data_is_not_testable():
    assert judge("Overall high performance", grid_evidence(), classes=["monocyte", "megakaryocyte"]) == NOT_TESTABLE


# --- the best configuration: accuracy and significance, one at a time -------------------------------------------


def test_best_configuration_needs_the_significance_test():
    evidence = grid_evidence()  # ResNet-101 224 bs16 most accurate, its test against the second 'supported'
    assert judge("The best model prior to tuning", evidence) == SUPPORTED
    assert not evidence_text("The best model prior to tuning", evidence).endswith("not significantly ahead")
    evidence.comparisons[0]["verdict"] = "not significant"  # only the test changes, not the ranking
    assert judge("The best model prior to tuning", evidence) == NOT_SUPPORTED
    text = evidence_text("The best model prior to tuning", evidence)
    assert text.startswith("most accurate: ResNet-101 (224 px), batch 16 (0.9900); ResNet-101 (224 px), batch 16")
    assert "R101 vs R50: accuracy 0.9900 vs 0.9750, McNemar p = 0.001 (not significant)" in text
    assert text.endswith("; not significantly ahead")


def test_best_configuration_without_its_test_is_not_supported():
    assert judge("The best model prior to tuning", grid_evidence(comparisons=[])) == NOT_SUPPORTED


def test_best_configuration_needs_every_seed_pair_significant():
    evidence = grid_evidence()
    evidence.comparisons.append(evidence.comparisons[0] | {"verdict": "not significant"})
    assert judge("The best model prior to tuning", evidence) == NOT_SUPPORTED


def test_best_configuration_needs_the_highest_accuracy():
    evidence = grid_evidence()
    evidence.metrics[R50_224_16]["accuracy"] = 0.995  # only the ranking changes, the test stays 'supported'
    assert judge("The best model prior to tuning", evidence) == NOT_SUPPORTED


def test_best_configuration_not_in_the_grid_is_not_testable():
    assert judge("The best model prior to tuning", grid_evidence(), size=128) == NOT_TESTABLE


def test_batch_improves_f1_needs_more_than_the_share():
    evidence = grid_evidence()
    for run in GRID:  # immature granulocyte F1 equal at both batch sizes; monocyte +0.05 with batch 32
        evidence.metrics[run]["per_class"]["immature granulocyte"]["f1"] = 0.8
    assert judge("Higher batch size improved F-1", evidence) == NOT_SUPPORTED  # 4 of 8 cases: not more than half
    evidence.metrics[R50_64_32]["per_class"]["immature granulocyte"]["f1"] = 0.85  # one more case: 5 of 8
    assert judge("Higher batch size improved F-1", evidence) == SUPPORTED


def test_batch_improves_f1_at_exactly_the_mean_gain_is_supported():
    evidence = grid_evidence()
    for run, values in GRID.items():  # every case gains 0.25 exactly (binary fractions)
        for name in ("monocyte", "immature granulocyte"):
            evidence.metrics[run]["per_class"][name]["f1"] = 0.5 if values["batch_size"] == 16 else 0.75
    assert judge("Higher batch size improved F-1", evidence, min_mean_gain=0.25) == SUPPORTED  # "at least"
    assert judge("Higher batch size improved F-1", evidence, min_mean_gain=0.2501) == NOT_SUPPORTED


def test_batch_improves_f1_without_both_batch_sizes_is_not_testable():
    only_16 = {run: values for run, values in GRID.items() if values["batch_size"] == 16}
    evidence = grid_evidence(grid=only_16)
    assert judge("Higher batch size improved F-1", evidence) == NOT_TESTABLE


# --- the study tables and the significance tests ------------------------------------------------------------------


def dropout_table(auc_05: float = 0.995) -> pd.DataFrame:
    """methods_dropout with dropout 0.3 ahead in accuracy and (unless auc_05 says otherwise) AUC."""
    return pd.DataFrame(
        {
            "row": ["Test Accuracy", "Test Accuracy", "Test AUC", "Test AUC"],
            "column": ["Dropout 0.3", "Dropout 0.5"] * 2,
            "mean": [0.97, 0.95, 0.996, auc_05],
        }
    )


def test_best_column_needs_every_named_row():
    start = "ResNet-50 (64) 0.3 dropout"
    assert judge(start, grid_evidence(tables={"methods_dropout": dropout_table()})) == SUPPORTED
    assert judge(start, grid_evidence(tables={"methods_dropout": dropout_table(auc_05=0.997)})) == NOT_SUPPORTED
    assert (
        judge(start, grid_evidence(tables={"methods_dropout": dropout_table()}), column="Dropout 0.1") == NOT_TESTABLE
    )


def table2(**cells: float) -> pd.DataFrame:
    """Table 2 with Adam at 1e-4 highest, unless `cells` (e.g. RMSprop_1e_3=0.99) says otherwise."""
    values = {("Adam", "1e-4"): 0.98, ("Adam", "1e-3"): 0.96, ("RMSprop", "1e-4"): 0.95, ("RMSprop", "1e-3"): 0.94}
    for name, value in cells.items():
        row, column = name.split("_", 1)
        values[(row, column.replace("_", "-"))] = value
    return pd.DataFrame([{"row": r, "column": c, "mean": m} for (r, c), m in values.items()])


def optimizer_test(verdict_text: str) -> dict:
    return comparison_record(
        "optimizer_adam_vs_rmsprop_lr1e-4", ("Adam", 0.98), ("RMSprop", 0.95), p_exact=0.01, verdict=verdict_text
    )


@pytest.mark.parametrize(
    "cells, test, expected",
    [
        ({}, "supported", SUPPORTED),
        ({}, "not significant", SUPPORTED),  # a descriptive ranking; only a contradicting test turns it
        ({}, "contradicted", NOT_SUPPORTED),
        ({"RMSprop_1e_3": 0.99}, "supported", NOT_SUPPORTED),  # another row and column ahead
        ({"Adam_1e_3": 0.99}, "supported", NOT_SUPPORTED),  # the row right, the column wrong
        ({"RMSprop_1e_4": 0.99}, "supported", NOT_SUPPORTED),  # the column right, the row wrong
    ],
)
def test_best_cell_turns_on_one_cell_or_one_test(cells, test, expected):
    evidence = grid_evidence(tables={"table2": table2(**cells)}, comparisons=[optimizer_test(test)])
    assert judge("Adam with lr=1e-4", evidence) == expected


def test_best_cell_without_its_table_or_cell_is_not_testable():
    assert judge("Adam with lr=1e-4", grid_evidence(tables={})) == NOT_TESTABLE
    assert judge("Adam with lr=1e-4", grid_evidence(tables={"table2": table2()}), column="1e-5") == NOT_TESTABLE
    assert judge("Adam with lr=1e-4", grid_evidence(tables={"table2": table2()}), row="SGD") == NOT_TESTABLE


def attention_test(name: str, verdict_text: str) -> dict:
    return comparison_record(name, ("none", 0.978), ("attention", 0.955), p_exact=0.01, verdict=verdict_text)


@pytest.mark.parametrize("second", ["not significant", "contradicted"])
def test_significance_needs_every_named_comparison_supported(second):
    supported = [attention_test("attention_se_cw_vs_none", "supported")]
    others = [attention_test("table3_best_vs_second", "not significant")]  # another prefix: not read
    both = supported + [attention_test("attention_cbam_cw_vs_none", "supported")]
    assert judge("Attention layers", grid_evidence(comparisons=both + others)) == SUPPORTED
    turned = supported + [attention_test("attention_cbam_cw_vs_none", second)]
    assert judge("Attention layers", grid_evidence(comparisons=turned + others)) == NOT_SUPPORTED
    assert judge("Attention layers", grid_evidence(comparisons=others)) == NOT_TESTABLE


@pytest.mark.parametrize("accuracy, expected", [(0.9, SUPPORTED), (0.8999, NOT_SUPPORTED)])
def test_external_accuracy_at_least_the_threshold(accuracy, expected):
    table4 = pd.DataFrame({"row": ["accuracy"], "column": ["f1-score"], "mean": [accuracy]})
    assert judge("Extension of model architecture", grid_evidence(tables={"table4": table4})) == expected


def test_external_accuracy_reads_the_accuracy_line_of_a_whole_classification_report():
    classes = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    rows = [(c, m, 0.5) for c in classes for m in ("precision", "recall", "f1-score")]  # every class weak ...
    rows += [("accuracy", "f1-score", 0.95), ("macro avg", "f1-score", 0.5)]  # ... the accuracy line strong
    table4 = pd.DataFrame(rows, columns=["row", "column", "mean"])
    result = assess([conclusion("Extension of model architecture")], grid_evidence(tables={"table4": table4}))[0]
    assert result["verdict"] == SUPPORTED
    assert result["evidence"].startswith("external test accuracy 0.9500; threshold 0.9")
    assert "(poster" not in result["evidence"]  # no poster column: no poster value quoted


def test_external_accuracy_without_the_study_is_not_testable():
    assert judge("Extension of model architecture", grid_evidence(tables={})) == NOT_TESTABLE


def test_gradcam_thresholds_are_inclusive_and_one_class_decides():
    good = {c: 1.0 for c in CLASSES}  # every class exactly at 1.0, pooled exactly at 1.5: both "at least"
    assert judge("Grad-CAM", grid_evidence(focus={"r": focus_frame(1.5, good)})) == SUPPORTED
    assert judge("Grad-CAM", grid_evidence(focus={"r": focus_frame(1.49, good)})) == NOT_SUPPORTED
    assert judge("Grad-CAM", grid_evidence(focus={"r": focus_frame(1.5, good | {"monocyte": 0.99})})) == NOT_SUPPORTED
    few = focus_frame(1.5, good | {"monocyte": 0.5})
    few.loc[few["class"] == "monocyte", "n_images"] = 19  # one image short of being judged
    assert judge("Grad-CAM", grid_evidence(focus={"r": few})) == SUPPORTED
    assert "not judged (< 20 images): monocyte" in evidence_text("Grad-CAM", grid_evidence(focus={"run-a": few}))
    few.loc[few["class"] == "monocyte", "n_images"] = 20
    assert judge("Grad-CAM", grid_evidence(focus={"r": few})) == NOT_SUPPORTED
    text = evidence_text("Grad-CAM", grid_evidence(focus={"run-a": few}))
    assert text.startswith("run-a: ") and "not judged" not in text


# --- the McNemar verdict on a claim, and the pairing of seeds --------------------------------------------------


def paired(b: int, c: int) -> dict:
    """One seed's McNemar test with b images only A gets right and c only B gets right."""
    return {"b": b, "c": c} | mcnemar_counts(b, c)


@pytest.mark.parametrize(
    "tests, a_better_claimed, expected",
    [
        ([paired(20, 0)], True, "supported"),
        ([paired(0, 20)], True, "contradicted"),
        ([paired(0, 20)], False, "supported"),  # the claim that B is better
        ([paired(20, 0)], False, "contradicted"),
        ([paired(5, 4)], False, "not significant"),
        ([paired(0, 20), paired(0, 20)], False, "supported"),
        ([paired(0, 20), paired(3, 4)], False, "not significant"),  # every seed must be significant
        ([paired(0, 20), paired(20, 0)], False, "contradicted"),  # one seed significant the other way decides
        ([], True, "not significant"),
    ],
)
def test_verdict_in_either_claimed_direction(tests, a_better_claimed, expected):
    assert verdict(tests, a_better_claimed, 0.05) == expected


def test_verdict_alpha_is_strict():
    test = paired(20, 0)
    assert verdict([test], True, test["p_exact"]) == "not significant"  # p = alpha is not below alpha
    assert verdict([test], True, test["p_exact"] * 1.0001) == "supported"


def comparison_plan(a_runs: list[str], b_runs: list[str]) -> Comparison:
    return Comparison(
        comparison="batch16_vs_32_resnet50_64",
        claim="batch 16 is more accurate",
        a="batch 16",
        b="batch 32",
        a_better_claimed=True,
        a_runs=tuple(a_runs),
        b_runs=tuple(b_runs),
    )


def outcomes(runs: list[str], misses: dict[str, int]) -> tuple[dict, dict, dict]:
    """Labels, correctness and accuracy of runs on 50 images; misses[run] images (from the first) wrong."""
    labels = {run: np.arange(50) % 8 for run in runs}
    correct = {run: np.arange(50) >= misses.get(run, 0) for run in runs}
    return labels, correct, {run: float(correct[run].mean()) for run in runs}


def test_run_comparisons_pairs_seed_with_seed():
    runs = ["a-s0", "a-s1", "b-s0", "b-s1"]
    labels, correct, accuracy = outcomes(runs, {"b-s0": 20, "b-s1": 3})
    [result] = run_comparisons([comparison_plan(["a-s0", "a-s1"], ["b-s0", "b-s1"])], correct, labels, accuracy, 0.05)
    assert [(t["a_run"], t["b_run"], t["b"], t["c"]) for t in result["tests"]] == [
        ("a-s0", "b-s0", 20, 0),
        ("a-s1", "b-s1", 3, 0),
    ]
    assert result["verdict"] == "not significant"  # seed 1's 3 discordant images are not significant
    assert result["tests"][1]["b_accuracy"] == accuracy["b-s1"] and result["alpha"] == 0.05


def test_run_comparisons_refuses_a_seed_without_its_pair():
    runs = ["a-s0", "a-s1", "b-s0"]
    labels, correct, accuracy = outcomes(runs, {"b-s0": 20})
    plan = comparison_plan(["a-s0", "a-s1"], ["b-s0"])
    with pytest.raises(ValueError, match=r"batch16_vs_32_resnet50_64: 2 run\(s\) of batch 16 .* but 1 of batch 32"):
        run_comparisons([plan], correct, labels, accuracy, 0.05)


def test_run_comparisons_refuses_runs_on_other_test_images():
    runs = ["a-s0", "b-s0"]
    labels, correct, accuracy = outcomes(runs, {"b-s0": 20})
    labels["b-s0"] = labels["b-s0"][::-1].copy()  # the same labels in another order: other images
    with pytest.raises(ValueError, match="a-s0 and b-s0 were not evaluated on the same test images"):
        run_comparisons([comparison_plan(["a-s0"], ["b-s0"])], correct, labels, accuracy, 0.05)


@pytest.mark.parametrize(
    "rate, label", [(1e-4, "1e-4"), (5e-4, "5e-4"), (2.5e-4, "2.5e-4"), (1e-3, "1e-3"), (3e-2, "3e-2"), (0.1, "1e-1")]
)
def test_learning_rate_labels_keep_every_digit(rate, label):
    # a label names a Table 2 column and a comparison: 2.5e-4 must not print as 2e-4 or 3e-4
    assert lr_label(rate) == label
