"""Snakemake adapter: one study table (Table 2, Table 4, a methods table or the transfer table) in CSV, HTML, LaTeX."""

import json
from pathlib import Path

import pandas as pd
import yaml

from bloodcells.history import best_epoch_row
from bloodcells.logs import log_to_file
from bloodcells.studies import (
    long_frame,
    methods_cells,
    table2_cells,
    table4_cells,
    template_cells,
    transfer_cells,
)
from bloodcells.tables import confidence_note, write_table_files

TITLES = {
    "table2": "Table 2: test accuracy by optimizer and learning rate (ResNet-50, attention layer, class-weighted loss)",
    "table4": "Table 4: class-level performance on the external dataset",
    "methods_batch": "Batch size comparison (ResNet-50): training and test metrics",
    "methods_attention": "Class-weighted loss with and without an attention layer: training and test metrics",
    "methods_optimizer": "Optimizer comparison: training and test metrics",
    "methods_dropout": "Dropout rate comparison: training and test metrics",
    "transfer": "Cross-dataset transfer: a BloodMNIST-class model on the external test images",
}


def by_run(runs: list[str], paths: list[str], reader) -> dict:
    """One parsed input file per run id (inputs are listed in the order of `runs`)."""
    return {run: reader(path) for run, path in zip(runs, paths)}


def notes(smk, table: str) -> list[str]:
    """The fidelity notes printed under a table."""
    config, training = smk.config, smk.config["training"]
    lines = [
        f"Data: '{smk.params.dataset}' ({config['datasets'][smk.params.dataset]['source']} source); "
        f"{confidence_note([len(config['seeds'])])}.",
        f"Epoch rule: at most {training['max_epochs']} epochs, early stopping after {training['patience']} epochs "
        "without a lower validation loss, the best epoch's weights evaluated (a run with a fixed epoch count "
        "trains exactly that many and keeps its best validation-loss epoch).",
    ]
    if table.startswith("methods_"):
        lines.append(
            "Training ACC, AUC and loss are Keras' values of the epoch whose weights were kept (lowest "
            "validation loss), from history.csv; Keras' AUC there pools all one-hot outputs. With class "
            "weights the training loss is the weighted loss. Test ACC / AUC follow MedMNIST (argmax accuracy, "
            "mean one-vs-rest AUC)."
        )
    if table in ("table2", "methods_attention"):
        lines.append("Attention layer: the poster does not define it; here " + smk.params.attention_note)
    if table == "table4":
        lines.append(
            "Per-class accuracy = correct / support of the class, which equals its recall (as in the "
            "poster). Image preparation: each file converted to 8-bit RGB and resized whole to the run size "
            "(as Keras' flow_from_directory); validation = a stratified share of the training folder."
        )
    if table == "transfer":
        lines.append(
            "Unrestricted: argmax over all source classes (predicting a class the external set lacks counts "
            "as wrong). Restricted: argmax over the shared classes only."
        )
    return lines


def main(smk) -> None:
    """Build the table named by the wildcard."""
    log_to_file(smk.log[0])
    table, runs = smk.wildcards.table, smk.params.runs
    configs = [(values, members) for values, members in smk.params.configs]
    poster_all = yaml.safe_load(Path(smk.input.poster).read_text())
    poster = poster_all.get(table, {"values": [], "caption": ""})
    if table == "transfer":
        results = by_run(runs, smk.input.transfer, lambda p: json.loads(Path(p).read_text()))
        cells, rows, columns = transfer_cells([(run, results[run]) for run in runs])
        columns = [cells[0]["column"]]
    else:
        metrics = by_run(runs, smk.input.metrics, lambda p: json.loads(Path(p).read_text()))
        boot = by_run(runs, smk.input.bootstrap, lambda p: json.loads(Path(p).read_text()))
        if table == "table2":
            cells, rows, columns = table2_cells(configs, metrics, boot, poster["values"])
        elif table == "table4":
            cells, rows, columns = table4_cells(configs[0][1], metrics, poster["values"])
        else:
            best = by_run(runs, smk.input.history, lambda p: best_epoch_row(pd.read_csv(p).to_dict("records")))
            cells, rows, columns = methods_cells(configs, metrics, best, boot, poster["values"])
    frame = long_frame(table, cells)
    context = template_cells(frame, rows, columns) | {
        "title": TITLES[table],
        "caption": poster.get("caption", ""),
        "notes": notes(smk, table),
        "synthetic": smk.params.synthetic,
        "row_header": {"table2": "optimizer", "table4": "class"}.get(table, "metric"),
    }
    outputs = {Path(path).suffix[1:]: path for path in smk.output}
    write_table_files(frame, context, outputs, Path(smk.input.templates[0]).parent)
    print(frame.to_string())


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
