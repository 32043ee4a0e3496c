"""Snakemake adapter: Tables 1 and 3 in CSV, HTML and LaTeX."""

import json
from pathlib import Path

import yaml

from bloodcells.atomic import write_text_atomic
from bloodcells.logs import log_to_file
from bloodcells.tables import compare, confidence_note, ordered_classes, poster_frame, render, run_records, summarise, table_cells

METRIC_LABELS = {"accuracy": "Test accuracy", "auc": "Test AUC"}


def write_table(compared, column_key: str, columns: list[str], labels: list[str], context: dict, outputs: dict) -> None:
    """Write one table as CSV (long form) and through the HTML and LaTeX templates."""
    write_text_atomic(outputs["csv"], compared.to_csv(index=False))
    cells = table_cells(compared, column_key, columns)
    cells["columns"] = labels
    template_dir = Path(outputs["templates"])
    for ext in ("html", "tex"):
        write_text_atomic(outputs[ext], render(template_dir, f"table.{ext}.j2", **cells, **context))


def main(smk) -> None:
    """Build both tables from the runs' metrics and the poster's values."""
    log_to_file(smk.log[0])
    metrics = [json.loads(Path(path).read_text()) for path in smk.input.metrics]
    poster = yaml.safe_load(Path(smk.input.poster).read_text())
    summary = summarise(run_records(smk.params.runs, metrics))
    synthetic = smk.config["datasets"][smk.params.dataset]["source"] == "synthetic"
    training = smk.config["training"]
    notes = [
        f"Data: '{smk.params.dataset}' ({smk.config['datasets'][smk.params.dataset]['source']} source); {confidence_note(summary['n_seeds'])}.",
        f"Epoch rule: at most {training['max_epochs']} epochs, early stopping when validation loss has not improved for "
        f"{training['patience']} epochs; the best epoch's weights are evaluated.",
        f"Initial weights: {training['weights'] or 'random (no ImageNet)'}; shear ±{training['augmentation']['shear']} "
        f"{training['augmentation']['shear_unit']}, zoom {training['augmentation']['zoom']}, horizontal flip.",
        "Metrics as in MedMNIST: ACC = argmax accuracy, AUC = mean one-vs-rest ROC AUC over classes.",
    ]
    template_dir = str(Path(smk.input.templates[0]).parent)
    out = {Path(path).name: path for path in smk.output}

    table3 = compare(summary, poster_frame(poster, "table3"), ["accuracy", "auc"])
    write_table(table3, "metric", ["accuracy", "auc"], [METRIC_LABELS["accuracy"], METRIC_LABELS["auc"]],
                {"title": "Table 3: test accuracy and AUC of every grid model", "caption": poster["table3"]["caption"],
                 "notes": notes, "synthetic": synthetic},
                {"csv": out["table3.csv"], "html": out["table3.html"], "tex": out["table3.tex"], "templates": template_dir})

    table1 = compare(summary, poster_frame(poster, "table1"), ["f1"])
    classes = ordered_classes(list(dict.fromkeys(table1["class"])))
    write_table(table1, "class", classes, classes,
                {"title": "Table 1: class-level F1 score on the test split", "caption": poster["table1"]["caption"],
                 "notes": notes, "synthetic": synthetic},
                {"csv": out["table1.csv"], "html": out["table1.html"], "tex": out["table1.tex"], "templates": template_dir})
    print(table3.to_string())


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
