"""Snakemake adapter: predict the test split with a trained run and write predictions.npz and metrics.json."""

import json

from bloodcells.atomic import write_text_atomic
from bloodcells.dataset import load_split
from bloodcells.jobsetup import start_tensorflow_job
from bloodcells.metrics import evaluate_predictions
from bloodcells.names import class_names_of
from bloodcells.predictions import predict_saved_model, save_predictions


def main(smk) -> None:
    """Evaluate one run on the test split."""
    start_tensorflow_job(
        smk.log[0], "evaluate", {"run": smk.wildcards.run}, smk.resources.gpu, smk.params.require_gpu, smk.threads
    )
    class_names = class_names_of(smk.params.dataset)
    test = load_split(smk.input.data, "test", len(class_names))
    probabilities = predict_saved_model(smk.input.model, test.images, smk.params.batch_size, len(class_names))
    metrics = evaluate_predictions(test.labels, probabilities, class_names)
    save_predictions(smk.output.predictions, probabilities, test.labels, class_names=class_names)
    write_text_atomic(smk.output.metrics, json.dumps(metrics, indent=1))
    print(f"test accuracy {metrics['accuracy']:.4f}, AUC {metrics['auc']:.4f} on {metrics['n_images']} images")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
