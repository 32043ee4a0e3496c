"""Tables 1 and 3: reproduced values (mean +- sd over seeds) beside the poster's published ones."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

CONFIG_KEYS = ["arch", "size", "batch_size"]
ARCH_LABELS = {"resnet50": "ResNet-50", "resnet101": "ResNet-101"}


def run_records(runs: Sequence[dict], metrics: Sequence[dict]) -> pd.DataFrame:
    """One row per (run, metric): accuracy, auc and the F1 of every class."""
    rows = []
    for run, result in zip(runs, metrics):
        base = {key: run[key] for key in CONFIG_KEYS} | {"seed": run["seed"], "run": run["run"]}
        rows.append(base | {"metric": "accuracy", "class": "", "value": result["accuracy"]})
        rows.append(base | {"metric": "auc", "class": "", "value": result["auc"]})
        for name, scores in result["per_class"].items():
            rows.append(base | {"metric": "f1", "class": name, "value": scores["f1"]})
    return pd.DataFrame(rows)


def summarise(records: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd (ddof=1; NaN with one seed) and seed count per configuration, metric and class."""
    grouped = records.groupby(CONFIG_KEYS + ["metric", "class"], sort=False)["value"]
    summary = grouped.agg(mean="mean", sd="std", n_seeds="count").reset_index()
    return summary


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
    return merged[CONFIG_KEYS + ["metric", "class", "n_seeds", "mean", "sd", "poster", "difference", "poster_row", "poster_column"]]


def format_value(mean: float, sd: float, n_seeds: int) -> str:
    """'0.9812' for one seed, '0.9812 ± 0.0031' for several."""
    return f"{mean:.4f}" if n_seeds < 2 or math.isnan(sd) else f"{mean:.4f} ± {sd:.4f}"


def format_poster(poster: float, difference: float) -> tuple[str, str]:
    """The poster's value and the signed difference, or dashes where the poster has no value."""
    if poster is None or (isinstance(poster, float) and math.isnan(poster)):
        return "–", "–"
    return f"{poster:.4f}", f"{difference:+.4f}"


def table_cells(compared: pd.DataFrame, column_key: str, column_order: Sequence[str]) -> dict:
    """Rows (one per model configuration) of cells (one per column value) ready for the templates."""
    rows = []
    configs = compared[CONFIG_KEYS].drop_duplicates().sort_values(["batch_size", "size", "arch"], ascending=[True, False, False])
    for _, config in configs.iterrows():
        selected = compared[(compared[CONFIG_KEYS] == config.values).all(axis=1)].set_index(column_key)
        cells = []
        for column in column_order:
            if column not in selected.index:
                cells.append({"ours": "–", "poster": "–", "diff": "–"})
                continue
            row = selected.loc[column]
            poster, diff = format_poster(row["poster"], row["difference"])
            cells.append({"ours": format_value(row["mean"], row["sd"], int(row["n_seeds"])), "poster": poster, "diff": diff})
        label = f"{ARCH_LABELS.get(config['arch'], config['arch'])} ({config['size']} px), batch {config['batch_size']}"
        rows.append({"label": label, "cells": cells})
    return {"columns": list(column_order), "rows": rows}


def render(template_dir: str | Path, template: str, **context) -> str:
    """Render one of the paper/ templates."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=template.endswith(".html.j2"),
        keep_trailing_newline=True,
    )
    env.filters["latex"] = latex_escape
    return env.get_template(template).render(**context)


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters and write ± and – as math/text commands."""
    replacements = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "±": r"$\pm$", "–": "--"}
    return "".join(replacements.get(char, char) for char in str(text))


def ordered_classes(names: Sequence[str]) -> list[str]:
    """Class names in the poster's Table 1 row order, unknown names last."""
    poster_order = ["neutrophil", "eosinophil", "basophil", "lymphocyte", "monocyte", "immature granulocyte", "erythroblast", "platelet"]
    return [n for n in poster_order if n in names] + [n for n in names if n not in poster_order]


def confidence_note(n_seeds: np.ndarray) -> str:
    """How many seeds the reproduced values average over."""
    seeds = sorted(set(int(n) for n in n_seeds))
    return "one seed per configuration" if seeds == [1] else f"mean ± sd over {', '.join(map(str, seeds))} seeds"
