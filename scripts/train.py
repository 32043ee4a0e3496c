"""Snakemake adapter: train one run and write model.keras and history.csv."""

import csv
import io

from bloodcells.atomic import atomic_path, write_text_atomic
from bloodcells.dataset import class_names_of, load_split
from bloodcells.model import Augmentation
from bloodcells.training import RunSpec, TrainSettings, train_run
from bloodcells.logs import log_to_file


def history_csv(rows: list[dict]) -> str:
    """The per-epoch history as CSV text."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main(smk) -> None:
    """Read the run from the snakemake object, train it and write its outputs atomically."""
    log_to_file(smk.log[0])
    values, training = smk.params.values, smk.params.training
    n_classes = len(class_names_of(smk.config["datasets"][values["dataset"]]))
    spec = RunSpec(
        **{key: values[key] for key in ("arch", "size", "batch_size", "optimizer", "learning_rate", "momentum", "dropout", "class_weights", "seed")},
        weights=training["weights"],
    )
    augment = training["augmentation"]
    settings = TrainSettings(
        max_epochs=training["max_epochs"],
        patience=training["patience"],
        augmentation=Augmentation(augment["shear"], augment["shear_unit"], tuple(augment["zoom"]), augment["horizontal_flip"]),
        mixed_precision=smk.params.mixed_precision,
        xla=smk.params.xla,
        deterministic=training["deterministic"],
        threads=smk.threads,
    )
    print(f"run {smk.wildcards.run}: {spec}\n{settings}", flush=True)
    train = load_split(smk.input.data, "train", n_classes)
    val = load_split(smk.input.data, "val", n_classes)
    model, history, checkpoint = train_run(
        (train.images, train.labels), (val.images, val.labels), n_classes, spec, settings, smk.params.checkpoint
    )
    with atomic_path(smk.output.model) as tmp:
        model.save(tmp)
    write_text_atomic(smk.output.history, history_csv(history))
    checkpoint.remove()


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
