"""Snakemake adapter: a run trained on one dataset predicts the test split of another (cross-dataset transfer)."""

import json

from bloodcells.atomic import write_text_atomic
from bloodcells.dataset import load_split
from bloodcells.jobsetup import start_tensorflow_job
from bloodcells.names import class_names_of
from bloodcells.predictions import predict_saved_model, save_predictions
from bloodcells.studies import transfer_metrics


def main(smk) -> None:
    """Predict the target test images with the source model; score restricted and unrestricted accuracy."""
    start_tensorflow_job(
        smk.log[0],
        "transfer",
        {"run": smk.wildcards.run, "dataset": smk.wildcards.dataset},
        smk.resources.gpu,
        smk.params.require_gpu,
        smk.threads,
    )
    run, target = smk.wildcards.run, smk.wildcards.dataset
    source_classes = class_names_of(smk.params.source)
    target_classes = class_names_of(smk.params.target)
    test = load_split(smk.input.data, "test", len(target_classes))
    probabilities = predict_saved_model(smk.input.model, test.images, smk.params.batch_size)
    result = transfer_metrics(test.labels, probabilities, source_classes, target_classes)
    result |= {"run": run, "target_dataset": target}
    save_predictions(
        smk.output.predictions, probabilities, test.labels, source_classes=source_classes, target_classes=target_classes
    )
    write_text_atomic(smk.output.metrics, json.dumps(result, indent=1))
    print(
        f"{run} on {target}: restricted accuracy {result['restricted_accuracy']:.4f}, "
        f"unrestricted {result['unrestricted_accuracy']:.4f}"
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
