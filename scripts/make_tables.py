"""Snakemake adapter: Tables 1 and 3 in CSV, HTML and LaTeX."""

import json
from pathlib import Path

import yaml

from bloodcells.logs import log_to_file
from bloodcells.tables import (
    compare,
    confidence_note,
    ordered_classes,
    poster_frame,
    run_records,
    summarise,
    table_cells,
    write_table_files,
)

METRIC_LABELS = {"accuracy": "Test accuracy", "auc": "Test AUC"}


def write_table(
    compared, column_key: str, columns: list[str], labels: list[str], context: dict, outputs: dict, template_dir: str
) -> None:
    """Write one table as CSV (long form), JSON and through the HTML and LaTeX templates."""
    cells = table_cells(compared, column_key, columns)
    cells["columns"] = labels
    write_table_files(compared, cells | context, outputs, template_dir)


def main(smk) -> None:
    """Build both tables from the runs' metrics and the poster's values."""
    log_to_file(smk.log[0])
    metrics = [json.loads(Path(path).read_text()) for path in smk.input.metrics]
    boots = [json.loads(Path(path).read_text()) for path in smk.input.bootstrap]
    poster = yaml.safe_load(Path(smk.input.poster).read_text())
    summary = summarise(run_records(smk.params.runs, metrics, boots))
    synthetic = smk.config["datasets"][smk.params.dataset]["source"] == "synthetic"
    training = smk.config["training"]
    source = smk.config["datasets"][smk.params.dataset]["source"]
    notes = [
        f"Data: '{smk.params.dataset}' ({source} source); {confidence_note(summary['n_seeds'])}.",
        f"Epoch rule: at most {training['max_epochs']} epochs, early stopping when validation loss has not improved "
        f"for {training['patience']} epochs; the best epoch's weights are evaluated.",
        f"Initial weights: {training['weights'] or 'random (no ImageNet)'}; shear ±{training['augmentation']['shear']} "
        f"{training['augmentation']['shear_unit']}, zoom {training['augmentation']['zoom']}, horizontal flip.",
        "Metrics as in MedMNIST: ACC = argmax accuracy, AUC = mean one-vs-rest ROC AUC over classes.",
    ]
    template_dir = str(Path(smk.input.templates[0]).parent)
    out = {Path(path).name: path for path in smk.output}
    files = lambda table: {ext: out[f"{table}.{ext}"] for ext in ("csv", "json", "html", "tex")}  # noqa: E731

    table3 = compare(summary, poster_frame(poster, "table3"), ["accuracy", "auc"])
    write_table(
        table3,
        "metric",
        ["accuracy", "auc"],
        [METRIC_LABELS["accuracy"], METRIC_LABELS["auc"]],
        {
            "title": "Table 3: test accuracy and AUC of every grid model",
            "caption": poster["table3"]["caption"],
            "notes": notes,
            "synthetic": synthetic,
        },
        files("table3"),
        template_dir,
    )

    table1 = compare(summary, poster_frame(poster, "table1"), ["f1"])
    classes = ordered_classes(list(dict.fromkeys(table1["class"])))
    write_table(
        table1,
        "class",
        classes,
        classes,
        {
            "title": "Table 1: class-level F1 score on the test split",
            "caption": poster["table1"]["caption"],
            "notes": notes,
            "synthetic": synthetic,
        },
        files("table1"),
        template_dir,
    )
    print(table3.to_string())


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
