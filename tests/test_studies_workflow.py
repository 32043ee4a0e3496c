"""The reduced studies of the tiny config end to end: Table 2, Table 4, the methods tables, transfer, statistics."""

import json

import pandas as pd
import pytest

TABLES = ["table2", "table4", "methods_batch", "methods_attention", "methods_optimizer", "methods_dropout", "transfer"]


@pytest.mark.parametrize("table", TABLES)
def test_every_study_table_is_written_in_three_formats(tiny_run, table):
    for ext in ("csv", "html", "tex"):
        assert (tiny_run / f"results/tables/{table}.{ext}").stat().st_size > 0
    assert "\\begin{tabular}" in (tiny_run / f"results/tables/{table}.tex").read_text()
    assert "synthetic demo cells" in (tiny_run / f"results/tables/{table}.html").read_text()


def test_table2_has_the_two_cells_of_the_tiny_study(tiny_run):
    table2 = pd.read_csv(tiny_run / "results/tables/table2.csv", dtype={"column": str})
    assert sorted(table2["row"]) == ["Adam", "RMSprop"] and set(table2["column"]) == {"1e-3"}
    assert table2["mean"].between(0, 1).all() and (table2["ci95_low"] <= table2["mean"]).all()
    assert table2["runs"].str.contains("-cw-se-").all()


def test_methods_tables_report_training_and_test_rows(tiny_run):
    rows = ["Training Accuracy", "Training AUC", "Training Loss", "Test Accuracy", "Test AUC"]
    expected_columns = {
        "methods_batch": {"Batch Size 16", "Batch Size 32"},
        "methods_dropout": {"Dropout 0.3", "Dropout 0.5"},
        "methods_attention": {"Class Weighted", "Class Weighted + Attention (SE)", "Class Weighted + Attention (CBAM)"},
        "methods_optimizer": {"Adam", "RMSprop"},
    }
    for table, columns in expected_columns.items():
        frame = pd.read_csv(tiny_run / f"results/tables/{table}.csv")
        assert set(frame["column"]) == columns, table
        assert list(dict.fromkeys(frame["row"])) == rows
        # the tiny runs train one epoch, so this checks the value's path from history.csv to the table; which row
        # of a longer history is read: test_studies.py::test_methods_table_reads_the_best_epoch_row_of_a_history_file
        history = pd.read_csv(tiny_run / f"results/runs/{frame['runs'].iloc[0]}/history.csv")
        train_loss = frame[(frame["row"] == "Training Loss")].iloc[0]["mean"]
        assert len(history) == 1 and train_loss == pytest.approx(history["loss"].iloc[0])
    batch = pd.read_csv(tiny_run / "results/tables/methods_batch.csv")
    assert set(batch.dropna(subset=["poster"])["poster"]) >= {0.9831, 0.0412}


def test_table4_is_the_classification_report_of_the_external_run(tiny_run):
    table4 = pd.read_csv(tiny_run / "results/tables/table4.csv")
    classes = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]
    assert list(dict.fromkeys(table4["row"])) == classes + ["accuracy", "macro avg", "weighted avg"]
    support = table4[table4["column"] == "support"].set_index("row")["mean"]
    assert support[classes].sum() == support["accuracy"] == 20
    assert set(table4["poster"].dropna()) >= {0.54, 0.9412, 865}
    log = (tiny_run / "logs/prepare/raabin_32.log").read_text()
    assert "skipped 1 unreadable file(s): Basophil/broken.jpg" in log
    history = pd.read_csv(tiny_run / "results/runs/raabin-32-resnet50-bs16-e1-s0/history.csv")
    assert list(history["epoch"]) == [1]


def test_transfer_reports_restricted_and_unrestricted_accuracy(tiny_run):
    result = json.loads((tiny_run / "results/transfer/synthetic-32-resnet50-bs16-s0/raabin/metrics.json").read_text())
    assert result["n_images"] == 20 and len(result["source_classes"]) == 8 and len(result["target_classes"]) == 5
    assert result["restricted_accuracy"] >= result["unrestricted_accuracy"]
    table = pd.read_csv(tiny_run / "results/tables/transfer.csv")
    assert len(table) == 4


def test_statistics_cover_every_run_and_the_poster_comparisons(tiny_run):
    boot = pd.read_csv(tiny_run / "results/stats/bootstrap.csv")
    runs = {p.name for p in (tiny_run / "results/runs").iterdir()}
    assert set(boot["run"]) == runs and len(runs) == 11
    assert (boot["accuracy_ci95_low"] <= boot["accuracy_ci95_high"]).all()
    significance = json.loads((tiny_run / "results/stats/significance.json").read_text())
    names = {c["comparison"] for c in significance["comparisons"]}
    assert {
        "table3_best_vs_second",
        "batch16_vs_32_resnet50_32",
        "batch16_vs_32_resnet101_32",
        "attention_se_cw_vs_none",
        "attention_cbam_cw_vs_none",
        "optimizer_adam_vs_rmsprop_lr1e-3",
        "table2_adam_vs_rmsprop_lr1e-3",
    } <= names
    for comparison in significance["comparisons"]:
        assert comparison["verdict"] in ("supported", "contradicted", "not significant")
        assert 0 <= comparison["tests"][0]["p_exact"] <= 1
    csv = pd.read_csv(tiny_run / "results/stats/significance.csv")
    assert set(csv["comparison"]) == names
