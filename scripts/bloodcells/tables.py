"""Tables beside the poster's values: Tables 1 and 3, and the cells and templates every table shares.

A reproduced value is the mean +- sd over seeds, with its 95 % interval.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .atomic import write_text_atomic
from .latex import latex_escape
from .names import model_label

CONFIG_KEYS = ["arch", "size", "batch_size"]
METRIC_LABELS = {"accuracy": "Test accuracy", "auc": "Test AUC"}


def read_json(path: str | Path) -> dict:
    """A JSON file a rule wrote (metrics, bootstrap intervals, tables, statistics)."""
    return json.loads(Path(path).read_text())


def run_records(runs: Sequence[dict], metrics: Sequence[dict], boots: Sequence[dict] | None = None) -> pd.DataFrame:
    """One row per (run, metric): accuracy and auc (with the bootstrap interval if given), the F1 of every class."""
    rows = []
    for index, (run, result) in enumerate(zip(runs, metrics, strict=True)):
        base = {key: run[key] for key in CONFIG_KEYS} | {"seed": run["seed"], "run": run["run"]}
        for metric in ("accuracy", "auc"):
            boot = boots[index][metric] if boots else {"low": math.nan, "high": math.nan}
            rows.append(
                base
                | {
                    "metric": metric,
                    "class": "",
                    "value": result[metric],
                    "boot_low": boot["low"],
                    "boot_high": boot["high"],
                }
            )
        for name, scores in result["per_class"].items():
            rows.append(
                base
                | {"metric": "f1", "class": name, "value": scores["f1"], "boot_low": math.nan, "boot_high": math.nan}
            )
    return pd.DataFrame(rows)


def value_interval(
    values: Sequence[float], boot: Sequence[tuple[float, float]] = (), level: float = 0.95
) -> tuple[float, float]:
    """95 % interval of a reproduced value: Student's t over seeds with several seeds, the bootstrap interval of
    the test set with one seed, (nan, nan) with neither."""
    values = np.asarray(values, dtype=float)
    if len(values) > 1:
        half = scipy_stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
        return float(values.mean() - half), float(values.mean() + half)
    if len(values) == 1 and len(boot) == 1 and not math.isnan(boot[0][0]):
        return float(boot[0][0]), float(boot[0][1])
    return math.nan, math.nan


def outside_interval(poster: float | None, low: float, high: float) -> bool:
    """Whether the poster's value lies outside a reproduced interval (False where either is missing)."""
    if poster is None or math.isnan(poster) or math.isnan(low):
        return False
    return not low <= poster <= high


def summarise(records: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd (ddof=1; NaN with one seed), seed count and 95 % interval per configuration, metric and class."""
    rows = []
    for key, group in records.groupby(CONFIG_KEYS + ["metric", "class"], sort=False):
        values = group["value"].to_numpy(dtype=float)
        low, high = value_interval(values, list(zip(group["boot_low"], group["boot_high"], strict=True)))
        rows.append(
            dict(zip(CONFIG_KEYS + ["metric", "class"], key, strict=True))
            | {
                "mean": float(values.mean()),
                "sd": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                "n_seeds": len(values),
                "ci95_low": low,
                "ci95_high": high,
            }
        )
    return pd.DataFrame(rows)


def poster_frame(poster: dict, table: str) -> pd.DataFrame:
    """The poster's values of one table, with their table, row and column recorded."""
    frame = pd.DataFrame(poster[table]["values"])
    if "class" not in frame:
        frame["class"] = ""
    return frame.rename(columns={"value": "poster", "row": "poster_row", "column": "poster_column"})


def compare(summary: pd.DataFrame, poster: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Reproduced values of `metrics` joined with the poster's; difference = reproduced - poster."""
    ours = summary[summary["metric"].isin(metrics)]
    merged = ours.merge(poster, on=CONFIG_KEYS + ["metric", "class"], how="left")
    merged["difference"] = merged["mean"] - merged["poster"]
    merged["poster_outside_ci"] = [
        outside_interval(p, lo, hi)
        for p, lo, hi in zip(merged["poster"], merged["ci95_low"], merged["ci95_high"], strict=True)
    ]
    return merged[
        CONFIG_KEYS
        + [
            "metric",
            "class",
            "n_seeds",
            "mean",
            "sd",
            "ci95_low",
            "ci95_high",
            "poster",
            "difference",
            "poster_outside_ci",
            "poster_row",
            "poster_column",
        ]
    ]


def format_mean_sd(mean: float, sd: float, n_seeds: int) -> str:
    """'0.9812' for one seed, '0.9812 ± 0.0031' for several."""
    return f"{mean:.4f}" if n_seeds < 2 or math.isnan(sd) else f"{mean:.4f} ± {sd:.4f}"


def format_poster(poster: float, difference: float) -> tuple[str, str]:
    """The poster's value and the signed difference, or dashes where the poster has no value."""
    if poster is None or (isinstance(poster, float) and math.isnan(poster)):
        return "–", "–"
    return f"{poster:.4f}", f"{difference:+.4f}"


def format_cell(line: pd.Series) -> dict:
    """A template cell from one compared line: our value, its interval, the poster's value, the difference, and
    whether the poster's value falls outside our interval."""
    poster, diff = format_poster(line["poster"], line["difference"])
    ci = "" if math.isnan(line["ci95_low"]) else f"[{line['ci95_low']:.3f}, {line['ci95_high']:.3f}]"
    return {
        "ours": format_mean_sd(line["mean"], line["sd"], int(line["n_seeds"])),
        "ci": ci,
        "poster": poster,
        "diff": diff,
        "outside": bool(line["poster_outside_ci"]),
    }


EMPTY_CELL = {"ours": "–", "ci": "", "poster": "–", "diff": "–", "outside": False}


def table_cells(compared: pd.DataFrame, column_key: str, column_order: Sequence[str]) -> dict:
    """Rows (one per model configuration) of cells (one per column value) ready for the templates."""
    rows = []
    configs = (
        compared[CONFIG_KEYS]
        .drop_duplicates()
        .sort_values(["batch_size", "size", "arch"], ascending=[True, False, False])
    )
    for _, config in configs.iterrows():
        selected = compared[(compared[CONFIG_KEYS] == config.values).all(axis=1)].set_index(column_key)
        cells = []
        for column in column_order:
            cells.append(format_cell(selected.loc[column]) if column in selected.index else EMPTY_CELL)
        rows.append({"label": model_label(config), "cells": cells})
    return {"columns": list(column_order), "rows": rows, "any_outside": any_outside(rows)}


def any_outside(rows: Sequence[dict]) -> bool:
    """Whether any cell of a table is marked as the poster's value outside our interval."""
    return any(cell["outside"] for row in rows for cell in row["cells"])


def write_table_files(frame: pd.DataFrame, context: dict, outputs: dict[str, str], template_dir: str | Path) -> None:
    """Write one table as long CSV, its template context as JSON (what the report reads), HTML and LaTeX."""
    write_text_atomic(outputs["csv"], frame.to_csv(index=False))
    write_text_atomic(outputs["json"], json.dumps(context, indent=1, ensure_ascii=False))
    for ext in ("html", "tex"):
        write_text_atomic(outputs[ext], render(template_dir, f"table.{ext}.j2", table=context))


def template_environment(template_dir: str | Path, template: str) -> jinja2.Environment:
    """The jinja2 environment of the paper/ templates, escaping every {{ }} by default: HTML autoescaped, LaTeX
    through latex_escape (values come from restored bundles too: one forgotten filter would let a value run TeX)."""
    html = template.endswith(".html.j2")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=html,
        finalize=None if html else latex_escape,
        keep_trailing_newline=True,
    )


def render(template_dir: str | Path, template: str, **context) -> str:
    """Render one of the paper/ templates."""
    return template_environment(template_dir, template).get_template(template).render(**context)


def ordered_classes(names: Sequence[str]) -> list[str]:
    """Class names in the poster's Table 1 row order, unknown names last."""
    poster_order = [
        "neutrophil",
        "eosinophil",
        "basophil",
        "lymphocyte",
        "monocyte",
        "immature granulocyte",
        "erythroblast",
        "platelet",
    ]
    return [n for n in poster_order if n in names] + [n for n in names if n not in poster_order]


def confidence_note(n_seeds: np.ndarray) -> str:
    """How many seeds the reproduced values average over, and what the intervals are."""
    seeds = sorted(set(int(n) for n in n_seeds))
    if seeds == [1]:
        return "one seed per configuration; [a, b] = bootstrap 95 % interval of the test value (ACC, AUC)"
    return (
        f"mean ± sd over {', '.join(map(str, seeds))} seeds; [a, b] = 95 % interval of the mean "
        "(Student's t over seeds)"
    )


def grid_table(summary: pd.DataFrame, poster: dict, table: str) -> tuple[pd.DataFrame, dict]:
    """Table 3 (a column per metric) or Table 1 (a column per class, in the poster's order): the reproduced values
    compared with the poster's, and the template cells."""
    if table == "table3":
        compared = compare(summary, poster_frame(poster, table), list(METRIC_LABELS))
        return compared, table_cells(compared, "metric", list(METRIC_LABELS)) | {
            "columns": list(METRIC_LABELS.values())
        }
    compared = compare(summary, poster_frame(poster, table), ["f1"])
    return compared, table_cells(compared, "class", ordered_classes(list(dict.fromkeys(compared["class"]))))
