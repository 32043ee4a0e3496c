"""Study planning (Table 2's filled cells, shared runs), study tables, transfer scoring and the poster comparisons."""

import re

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import POSTER, REPO, RUN_VALUES, SCHEMA, load_rule_script, place_raabin_folder, run_snakemake

from bloodcells.comparisons import planned_comparisons, run_comparisons
from bloodcells.config import ConfigError, validate_config
from bloodcells.names import BLOODMNIST_CLASSES
from bloodcells.runs import configurations, plan_runs, study_values
from bloodcells.studies import (
    classification_report,
    long_frame,
    methods_cells,
    table2_cells,
    table4_cells,
    template_cells,
    transfer_metrics,
)


def full_config() -> dict:
    return validate_config(yaml.safe_load((REPO / "config.yaml").read_text()), SCHEMA)


def test_table2_fills_exactly_the_poster_cells():
    config = full_config()
    runs, studies = plan_runs(config)
    cells = {(runs[r]["optimizer"], runs[r]["momentum"], runs[r]["learning_rate"]) for r in studies["table2"]}
    poster = {(v["optimizer"], v.get("momentum", 0.0), v["learning_rate"]) for v in POSTER["table2"]["values"]}
    assert cells == poster and len(cells) == 16  # 6 Adam + 4 RMSprop + 1 + 3 + 1 + 1 SGD
    assert all(runs[r]["attention"] == "cbam" and runs[r]["class_weights"] for r in studies["table2"])


def test_full_config_plans_every_study_and_trains_shared_runs_once():
    runs, studies = plan_runs(full_config())
    assert len(runs) == 34
    baseline = "bloodmnist-64-resnet50-bs32-s0"
    for study in ("table3", "batch", "optimizer", "dropout", "transfer_source"):
        assert baseline in studies[study]
    assert "bloodmnist-64-resnet50-bs32-cw-cbam-s0" in studies["attention"]  # also Table 2's Adam 1e-4 cell
    assert "bloodmnist-64-resnet50-bs32-cw-cbam-s0" in studies["table2"]
    assert studies["external"] == ["raabin-64-resnet50-bs32-e10-s0"]
    assert runs["raabin-64-resnet50-bs32-e10-s0"]["epochs"] == 10


def test_study_forms_combine_grids_runs_and_set():
    defaults = RUN_VALUES
    values = study_values(
        {
            "set": {"class_weights": True},
            "grids": [{"dropout": [0.3, 0.5]}, {"dropout": [0.5]}],
            "runs": [{"attention": "se"}],
        },
        defaults,
    )
    assert [(v["dropout"], v["attention"]) for v in values] == [(0.3, "none"), (0.5, "none"), (0.3, "se")]
    assert all(v["class_weights"] for v in values)


def test_seeds_multiply_runs_and_configurations_group_them():
    config = full_config()
    config["seeds"] = [0, 1]
    runs, studies = plan_runs(config)
    assert len(runs) == 68
    groups = configurations(studies["dropout"], runs)
    assert [len(members) for _, members in groups] == [2, 2, 2]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["studies"]["table2"]["set"].update(attention="transformer"), "studies.table2.set.attention"),
        (lambda c: c["studies"]["external"].update(dataset="nope"), "studies.external.dataset"),
        (lambda c: c["studies"].update(empty={"set": {"dropout": 0.4}}), "studies.empty"),
        (lambda c: c["datasets"]["raabin"]["classes"].update(Monocyte="lymphocyte"), "datasets.raabin.classes"),
    ],
)
def test_bad_study_configs_name_the_key(mutate, message):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    mutate(config)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(config, SCHEMA)


def fake_metrics(acc, auc=0.99):
    return {"accuracy": acc, "auc": auc}


def test_table2_cells_hold_our_and_the_poster_values():
    configs = [
        ({"optimizer": "adam", "momentum": 0.0, "learning_rate": 1e-4}, ["a"]),
        ({"optimizer": "sgd", "momentum": 0.8, "learning_rate": 1e-2}, ["b"]),
    ]
    boot = {r: {"accuracy": {"low": 0.9, "high": 0.97}} for r in "ab"}
    cells, rows, columns = table2_cells(
        configs, {"a": fake_metrics(0.95), "b": fake_metrics(0.93)}, boot, POSTER["table2"]["values"]
    )
    assert rows == ["Adam", "SGD (m=0.8)"] and columns == ["1e-2", "1e-4"]
    frame = long_frame("table2", cells)
    adam = frame[frame["row"] == "Adam"].iloc[0]
    assert adam["poster"] == 0.9553 and adam["difference"] == pytest.approx(0.95 - 0.9553)
    rendered = template_cells(frame, rows, columns)
    assert rendered["rows"][0]["cells"][0]["ours"] == "–"  # Adam 1e-2 is not in this study
    adam_1e4 = rendered["rows"][0]["cells"][1]
    assert (adam_1e4["ours"], adam_1e4["ci"], adam_1e4["outside"]) == ("0.9500", "[0.900, 0.970]", False)


def test_methods_table_reports_best_epoch_training_and_test_metrics():
    configs = [({"batch_size": 16, "optimizer": "adam"}, ["x"]), ({"batch_size": 32, "optimizer": "adam"}, ["y"])]
    best = {"x": {"accuracy": 0.98, "auc": 0.99, "loss": 0.05}, "y": {"accuracy": 0.97, "auc": 0.98, "loss": 0.06}}
    boot = {r: {"accuracy": {"low": 0.9, "high": 1.0}, "auc": {"low": 0.9, "high": 1.0}} for r in "xy"}
    cells, rows, columns = methods_cells(
        configs, {"x": fake_metrics(0.9), "y": fake_metrics(0.8)}, best, boot, POSTER["methods_batch"]["values"]
    )
    assert columns == ["Batch Size 16", "Batch Size 32"]
    assert rows[:3] == ["Training Accuracy", "Training AUC", "Training Loss"]
    frame = long_frame("methods_batch", cells).set_index(["row", "column"])
    assert frame.loc[("Training Loss", "Batch Size 32"), "poster"] == 0.0412
    assert frame.loc[("Training Loss", "Batch Size 32"), "mean"] == 0.06
    assert frame.loc[("Test Accuracy", "Batch Size 16"), "mean"] == 0.9


def test_methods_table_reads_the_best_epoch_row_of_a_history_file(tmp_path):
    # three epochs, the lowest val_loss at epoch 2: neither the first row nor the last (nor the lowest loss)
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "loss": [0.9, 0.5, 0.2],
            "accuracy": [0.6, 0.8, 0.95],
            "auc": [0.7, 0.9, 0.99],
            "val_loss": [0.8, 0.4, 0.6],
        }
    )
    history.to_csv(tmp_path / "history.csv", index=False)
    best = load_rule_script("study_tables").READERS["history"](tmp_path / "history.csv")  # as rule study_table reads it
    boot = {"x": {"accuracy": {"low": 0.9, "high": 1.0}, "auc": {"low": 0.9, "high": 1.0}}}
    cells, _, _ = methods_cells([({"batch_size": 16}, ["x"])], {"x": fake_metrics(0.9)}, {"x": best}, boot, [])
    frame = long_frame("methods_batch", cells).set_index("row")
    assert frame.loc["Training Loss", "mean"] == 0.5
    assert frame.loc["Training Accuracy", "mean"] == 0.8 and frame.loc["Training AUC", "mean"] == 0.9


def test_classification_report_matches_scikit_learn():
    from sklearn.metrics import classification_report as sk_report

    from bloodcells.metrics import evaluate_predictions

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 120)
    probabilities = rng.dirichlet(np.ones(5), 120) + 0.5 * np.eye(5)[labels]
    names = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    ours = classification_report(evaluate_predictions(labels, probabilities, names))
    theirs = sk_report(labels, probabilities.argmax(1), target_names=names, output_dict=True)
    for row in names + ["macro avg", "weighted avg"]:
        key = row
        for metric, sk_metric in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert ours[row][metric] == pytest.approx(theirs[key][sk_metric])
    assert ours["accuracy"]["f1"] == pytest.approx(theirs["accuracy"])
    assert ours["monocyte"]["class_accuracy"] == ours["monocyte"]["recall"]
    cells, rows, _ = table4_cells(
        ["r"], {"r": evaluate_predictions(labels, probabilities, names)}, POSTER["table4"]["values"]
    )
    assert rows[-3:] == ["accuracy", "macro avg", "weighted avg"]
    mono = [c for c in cells if c["row"] == "monocyte" and c["column"] == "precision"][0]
    assert mono["poster"] == 0.54


def test_transfer_restricts_predictions_to_the_shared_classes():
    source = list(BLOODMNIST_CLASSES)
    target = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    labels = np.array([0, 1, 2, 3, 4])
    probabilities = np.zeros((5, 8))
    probabilities[0, [0, 2]] = [0.4, 0.6]  # erythroblast wins overall, basophil among the shared classes
    probabilities[1, 1] = 1  # eosinophil: right both ways
    probabilities[2, [4, 7]] = [0.3, 0.7]  # platelet wins overall, lymphocyte among the shared
    probabilities[3, 6] = 1  # neutrophil: wrong both ways
    probabilities[4, 6] = 1  # neutrophil: right
    result = transfer_metrics(labels, probabilities, source, target)
    assert result["unrestricted_accuracy"] == pytest.approx(2 / 5)
    assert result["restricted_accuracy"] == pytest.approx(4 / 5)
    assert result["share_predicted_outside_target_classes"] == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="not among"):
        transfer_metrics(labels, probabilities[:, :5], source[:5], target)


def test_planned_comparisons_follow_the_poster_claims():
    def config(**values):
        return RUN_VALUES | {"attention": "none", "dataset": "d"} | values

    table3 = [
        (config(arch=a, size=s, batch_size=b), [f"{a}-{s}-{b}"])
        for a in ("resnet50", "resnet101")
        for s in (128, 224)
        for b in (16, 32)
    ]
    studies = {
        "table3": table3,
        "attention": [(config(class_weights=True), ["cw"]), (config(class_weights=True, attention="cbam"), ["cwatt"])],
        "optimizer": [(config(), ["resnet50-64-32"]), (config(optimizer="rmsprop"), ["rms"])],
        "table2": [
            (config(class_weights=True, attention="cbam"), ["cwatt"]),
            (config(class_weights=True, attention="cbam", optimizer="rmsprop"), ["cwatt-rms"]),
        ],
        "batch": [(config(), ["resnet50-64-32"])],
    }
    accuracy = {run: 0.9 for _, configs in studies.items() for _, runs in configs for run in runs}
    planned = {p.comparison: p for p in planned_comparisons(studies, accuracy, POSTER)}
    best = planned["table3_best_vs_second"]
    assert best.a_runs == ("resnet101-224-16",) and best.b_runs == ("resnet50-128-32",) and best.a_better_claimed
    assert planned["batch16_vs_32_resnet50_128"].a_better_claimed is False  # poster: 0.9687 vs 0.9860
    assert planned["batch16_vs_32_resnet101_224"].a_better_claimed is True  # poster: 0.9880 vs 0.9848
    assert planned["attention_cbam_cw_vs_none"].a_runs == ("resnet50-64-32",)
    assert planned["optimizer_adam_vs_rmsprop_lr1e-4"].a_better_claimed is True
    assert planned["table2_adam_vs_rmsprop_lr1e-4"].a_better_claimed is False
    # the poster numbers a claim quotes come from paper/poster_values.yaml
    assert "(poster: 0.978 -> 0.955)" in planned["attention_cbam_cw_vs_none"].claim
    assert "training ACC 0.9856 vs 0.9839" in planned["optimizer_adam_vs_rmsprop_lr1e-4"].claim
    assert "RMSprop 0.9737 vs Adam 0.9553 at 1e-4" in planned["table2_adam_vs_rmsprop_lr1e-4"].claim

    labels = {run: np.zeros(100, int) for run in accuracy}
    correct = {run: np.ones(100, bool) for run in accuracy}
    correct["resnet50-128-32"] = np.arange(100) >= 30  # the poster's second-best misses 30 images the best gets
    results = {r["comparison"]: r for r in run_comparisons(list(planned.values()), correct, labels, accuracy, 0.05)}
    assert results["table3_best_vs_second"]["verdict"] == "supported"
    assert results["table3_best_vs_second"]["tests"][0]["b"] == 30
    assert results["attention_cbam_cw_vs_none"]["verdict"] == "not significant"


def test_dry_run_lists_each_shared_run_once(tmp_path):
    place_raabin_folder(tmp_path)
    listing = run_snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(REPO / "config.yaml")).stdout
    trained = re.findall(r"output: results/runs/([\w.-]+)/model\.keras", listing)
    assert len(trained) == len(set(trained)) == 34
    for table in (
        "table2",
        "table4",
        "methods_batch",
        "methods_attention",
        "methods_optimizer",
        "methods_dropout",
        "transfer",
    ):
        assert f"results/tables/{table}.tex" in listing
    assert "results/transfer/bloodmnist-64-resnet50-bs32-s0/raabin/metrics.json" in listing
    assert "results/stats/significance.json" in listing
