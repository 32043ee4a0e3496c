"""Tables of the poster's studies beyond the grid: Table 2, Table 4, the methods tables and the transfer table.

Pure functions of the runs' values, metrics, histories and transfer predictions.

Every table is built as a list of cells {row, column, values (one per seed), poster, poster_row, poster_column},
then written as a long CSV and through the paper/ templates (the same ones as Tables 1 and 3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .names import RUN_KEYS, arch_label
from .tables import EMPTY_CELL, any_outside, format_cell, outside_interval, value_interval

OPTIMIZER_LABELS = {"adam": "Adam", "rmsprop": "RMSprop", "sgd": "SGD"}
# Rows of the methods tables: the poster's three training rows, then the test rows this workflow adds.
METHODS_ROWS = {
    "train_accuracy": "Training Accuracy",
    "train_auc": "Training AUC",
    "train_loss": "Training Loss",
    "test_accuracy": "Test Accuracy",
    "test_auc": "Test AUC",
}
TABLE4_COLUMNS = {
    "precision": "precision",
    "recall": "recall",
    "f1": "f1-score",
    "support": "support",
    "class_accuracy": "accuracy",
}
MATCH_EXCLUDED = {"value", "row", "column", "metric", "class"}


def lr_label(rate: float) -> str:
    """'1e-4', '5e-4' as the poster writes learning rates; '2.5e-4' keeps its digits (no rounding to one)."""
    mantissa, exponent = f"{rate:e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def optimizer_label(values: dict) -> str:
    """'Adam', 'RMSprop', 'SGD (m=0.8)'."""
    label = OPTIMIZER_LABELS.get(values["optimizer"], values["optimizer"])
    return f"{label} (m={values['momentum']:g})" if values["optimizer"] == "sgd" else label


def variant_label(values: dict, keys: Sequence[str]) -> str:
    """A column label naming the values that differ between a study's configurations."""
    parts = []
    for key in keys:
        value = values[key]
        if key == "batch_size":
            parts.append(f"Batch Size {value}")
        elif key == "dropout":
            parts.append(f"Dropout {value:g}")
        elif key in ("optimizer", "momentum"):
            if key == "optimizer" or values["optimizer"] == "sgd":
                parts.append(optimizer_label(values) if key == "optimizer" else "")
        elif key == "learning_rate":
            parts.append(f"lr {lr_label(value)}")
        elif key == "class_weights":
            parts.append("Class Weighted" if value else "Unweighted")
        elif key == "attention":
            # the poster's columns: "Class Weighted" vs "Class Weighted + Attention Layer"
            weighted = "Class Weighted " if values.get("class_weights") and "class_weights" not in keys else ""
            if value == "none":
                parts.append(weighted.strip() or "No Attention")
            else:
                parts.append(f"{weighted}+ Attention ({value.upper()})")
        elif key == "arch":
            parts.append(arch_label(value))
        elif key == "size":
            parts.append(f"{value} px")
        else:
            parts.append(f"{key} {value}")
    return " ".join(part for part in parts if part) or "default"


def varying_keys(configs: Sequence[dict]) -> list[str]:
    """The run-value keys whose values differ between configurations, in a fixed order."""
    keys = [k for k in RUN_KEYS if len({repr(c.get(k)) for c in configs}) > 1]
    if "momentum" in keys and "optimizer" not in keys:
        keys.remove("momentum")
    return keys


def run_value_matches(value, wanted) -> bool:
    """Run values equal (floats to rounding); the poster's 'attention: any' matches every attention layer."""
    if wanted == "any":
        return value not in (None, "none")
    if isinstance(value, float) or isinstance(wanted, float):
        return value is not None and wanted is not None and math.isclose(float(value), float(wanted), rel_tol=1e-9)
    return value == wanted


def poster_lookup(entries: Sequence[dict], values: dict, metric: str, class_name: str = "") -> dict | None:
    """The poster entry for a configuration, metric and class: every run-value key it names must match."""
    for entry in entries:
        if entry.get("metric") != metric or entry.get("class", "") != class_name:
            continue
        if all(run_value_matches(values.get(key), want) for key, want in entry.items() if key not in MATCH_EXCLUDED):
            return entry
    return None


def table_cell(
    row: str,
    column: str,
    values: Sequence[float],
    entry: dict | None,
    runs: Sequence[str],
    ci: Sequence[tuple[float, float]] = (),
) -> dict:
    """One table cell with its per-seed values and the poster's value where there is one."""
    return {
        "row": row,
        "column": column,
        "values": [float(v) for v in values],
        "runs": list(runs),
        "poster": None if entry is None else float(entry["value"]),
        "poster_row": "" if entry is None else entry["row"],
        "poster_column": "" if entry is None else entry["column"],
        "ci": list(ci),
    }


def long_frame(table: str, cells: Sequence[dict]) -> pd.DataFrame:
    """The long CSV form: one line per cell, mean and sd over seeds, the 95 % interval, the poster's value and
    the difference."""
    rows = []
    for c in cells:
        values = np.asarray(c["values"], dtype=float)
        mean = float(values.mean()) if len(values) else math.nan
        sd = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        poster = math.nan if c["poster"] is None else c["poster"]
        ci_low, ci_high = value_interval(values, c["ci"])
        rows.append(
            {
                "table": table,
                "row": c["row"],
                "column": c["column"],
                "n_seeds": len(values),
                "mean": mean,
                "sd": sd,
                "ci95_low": ci_low,
                "ci95_high": ci_high,
                "poster": poster,
                "difference": mean - poster,
                "poster_outside_ci": outside_interval(poster, ci_low, ci_high),
                "poster_row": c["poster_row"],
                "poster_column": c["poster_column"],
                "runs": ";".join(c["runs"]),
            }
        )
    return pd.DataFrame(rows)


def template_cells(
    frame: pd.DataFrame,
    row_order: Sequence[str],
    column_order: Sequence[str],
    integer_columns: Sequence[str] = ("support",),
) -> dict:
    """{'columns', 'rows'} for paper/table.*.j2; empty cells (the poster's '-') become dashes; counts as integers."""
    rows = []
    for row in row_order:
        cells = []
        for column in column_order:
            match = frame[(frame["row"] == row) & (frame["column"] == column)]
            if match.empty:
                cells.append(EMPTY_CELL)
                continue
            line = match.iloc[0]
            formatted = format_cell(line)
            if column in integer_columns:
                formatted |= {"ours": f"{line['mean']:.0f}", "ci": "", "outside": False}
                if formatted["poster"] != "–":
                    formatted["poster"], formatted["diff"] = f"{line['poster']:.0f}", f"{line['difference']:+.0f}"
            cells.append(formatted)
        rows.append({"label": row, "cells": cells})
    return {"columns": list(column_order), "rows": rows, "any_outside": any_outside(rows)}


def table2_cells(
    configs: Sequence[tuple[dict, list[str]]], metrics: dict[str, dict], boot: dict[str, dict], poster: Sequence[dict]
) -> tuple[list[dict], list[str], list[str]]:
    """Test accuracy by optimizer (rows) and learning rate (columns): only the cells the study fills."""
    cells, row_order, rates = [], [], []
    for values, runs in configs:
        row = optimizer_label(values)
        row_order += [row] if row not in row_order else []
        rates += [values["learning_rate"]] if values["learning_rate"] not in rates else []
        entry = poster_lookup(poster, values, "accuracy")
        cells.append(
            table_cell(
                row,
                lr_label(values["learning_rate"]),
                [metrics[r]["accuracy"] for r in runs],
                entry,
                runs,
                [(boot[r]["accuracy"]["low"], boot[r]["accuracy"]["high"]) for r in runs if r in boot],
            )
        )
    row_rank = {"Adam": 0, "RMSprop": 1}
    row_order.sort(key=lambda label: (row_rank.get(label, 2), label.startswith("SGD") and -float(label[7:-1] or 0)))
    columns = [lr_label(rate) for rate in sorted(rates, reverse=True)]
    return cells, row_order, columns


def methods_cells(
    configs: Sequence[tuple[dict, list[str]]],
    metrics: dict[str, dict],
    best_rows: dict[str, dict],
    boot: dict[str, dict],
    poster: Sequence[dict],
) -> tuple[list[dict], list[str], list[str]]:
    """Training ACC, AUC and loss (best epoch's history row) and test ACC and AUC of each configuration."""
    keys = varying_keys([values for values, _ in configs])
    cells, columns = [], []
    for values, runs in configs:
        column = variant_label(values, keys)
        columns.append(column)
        for metric, row in METHODS_ROWS.items():
            if metric.startswith("train_"):
                name = metric[len("train_") :]
                per_seed = [best_rows[r][name] for r in runs]
                ci = ()
            else:
                name = metric[len("test_") :]
                per_seed = [metrics[r][name] for r in runs]
                ci = [(boot[r][name]["low"], boot[r][name]["high"]) for r in runs if r in boot]
            cells.append(table_cell(row, column, per_seed, poster_lookup(poster, values, metric), runs, ci))
    return cells, list(METHODS_ROWS.values()), columns


def classification_report(metrics: dict) -> dict[str, dict[str, float]]:
    """scikit-learn's classification report rows (classes, accuracy, macro and weighted avg) from metrics.json,
    plus each class's accuracy (correct / support: the same number as its recall)."""
    per_class = metrics["per_class"]
    support = np.array([per_class[name]["support"] for name in per_class], dtype=float)
    report: dict[str, dict[str, float]] = {}
    for name, scores in per_class.items():
        report[name] = {key: float(scores[key]) for key in ("precision", "recall", "f1", "support")}
        report[name]["class_accuracy"] = float(scores["recall"])
    for label, weights in (("macro avg", np.ones_like(support)), ("weighted avg", support)):
        report[label] = {
            key: float(np.average([per_class[n][key] for n in per_class], weights=weights))
            for key in ("precision", "recall", "f1")
        } | {"support": float(support.sum())}
    report["accuracy"] = {"f1": float(metrics["accuracy"]), "support": float(support.sum())}
    return report


def table4_cells(
    runs: Sequence[str], metrics: dict[str, dict], poster: Sequence[dict]
) -> tuple[list[dict], list[str], list[str]]:
    """Table 4: the external run's classification report and per-class accuracy (mean over seeds)."""
    reports = [classification_report(metrics[r]) for r in runs]
    row_order = list(reports[0])
    row_order = [r for r in row_order if r not in ("macro avg", "weighted avg", "accuracy")] + [
        "accuracy",
        "macro avg",
        "weighted avg",
    ]
    cells = []
    for row in row_order:
        for metric, column in TABLE4_COLUMNS.items():
            if metric not in reports[0][row]:
                continue
            entry = poster_lookup(poster, {}, metric, row)
            cells.append(table_cell(row, column, [report[row][metric] for report in reports], entry, runs))
    return cells, row_order, list(TABLE4_COLUMNS.values())


def transfer_metrics(
    labels: np.ndarray, probabilities: np.ndarray, source_classes: Sequence[str], target_classes: Sequence[str]
) -> dict:
    """Accuracy of a model trained on source classes on target images whose classes are a subset of them.

    Unrestricted: argmax over every source class (a prediction of a class the target lacks is wrong).
    Restricted: argmax over the shared classes only. AUC: mean one-vs-rest over the shared classes, with the
    probabilities renormalised over them.
    """
    from .metrics import mean_ovr_auc, per_class_report

    missing = [name for name in target_classes if name not in source_classes]
    if missing:
        raise ValueError(f"target classes {missing} are not among the source model's classes {list(source_classes)}")
    columns = np.array([list(source_classes).index(name) for name in target_classes])
    labels = np.asarray(labels).reshape(-1)
    unrestricted = np.argmax(probabilities, axis=1)
    shared = probabilities[:, columns]
    restricted = np.argmax(shared, axis=1)
    renormalised = shared / np.clip(shared.sum(axis=1, keepdims=True), 1e-12, None)
    outside = ~np.isin(unrestricted, columns)
    return {
        "n_images": int(len(labels)),
        "source_classes": list(source_classes),
        "target_classes": list(target_classes),
        "unrestricted_accuracy": float(np.mean(unrestricted == columns[labels])),
        "restricted_accuracy": float(np.mean(restricted == labels)),
        "restricted_auc": mean_ovr_auc(labels, renormalised),
        "share_predicted_outside_target_classes": float(outside.mean()),
        "restricted_per_class": per_class_report(labels, restricted, target_classes),
    }


def transfer_cells(results: Sequence[tuple[str, dict]]) -> tuple[list[dict], list[str], list[str]]:
    """Rows: restricted / unrestricted accuracy, restricted AUC, share outside; one column per source configuration."""
    names = {
        "restricted_accuracy": "Accuracy, restricted to the shared classes",
        "unrestricted_accuracy": "Accuracy, all source classes",
        "restricted_auc": "AUC, restricted to the shared classes",
        "share_predicted_outside_target_classes": "Share predicted as a class the target lacks",
    }
    column = results[0][0]
    cells = [
        table_cell(row, column, [r[key] for _, r in results], None, [run for run, _ in results])
        for key, row in names.items()
    ]
    return cells, list(names.values()), [column]


def study_table(
    table: str, configs: Sequence[tuple[dict, list[str]]], runs: Sequence[str], results: dict[str, dict], poster: dict
) -> tuple[pd.DataFrame, dict]:
    """A study table's long frame and its template cells (columns, rows) from its runs' results.

    `results` maps each kind of input to {run id: parsed file}: 'transfer' (the transfer table) or 'metrics',
    'bootstrap' and 'history' (the best epoch's history row); `poster` is the table's poster values.
    """
    if table == "transfer":
        cells, rows, columns = transfer_cells([(run, results["transfer"][run]) for run in runs])
    elif table == "table2":
        cells, rows, columns = table2_cells(configs, results["metrics"], results["bootstrap"], poster)
    elif table == "table4":
        cells, rows, columns = table4_cells(configs[0][1], results["metrics"], poster)
    else:
        args = (results["metrics"], results["history"], results["bootstrap"], poster)
        cells, rows, columns = methods_cells(configs, *args)
    frame = long_frame(table, cells)
    return frame, template_cells(frame, rows, columns)
