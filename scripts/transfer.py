"""Snakemake adapter: a run trained on one dataset predicts the test split of another (cross-dataset transfer)."""

import json

import numpy as np

from bloodcells.atomic import atomic_path, write_text_atomic
from bloodcells.dataset import class_names_of, load_split
from bloodcells.gpu_lock import pin_job_to_gpu
from bloodcells.hardware import enforce_gpu_requirement
from bloodcells.logs import log_to_file
from bloodcells.studies import transfer_metrics


def main(smk) -> None:
    """Predict the target test images with the source model; score restricted and unrestricted accuracy."""
    log_to_file(smk.log[0])
    pin_job_to_gpu(smk)  # a GPU no other running job holds, before TensorFlow starts; no-op without GPU
    enforce_gpu_requirement(smk.params.require_gpu, "transfer")
    import tensorflow as tf

    from bloodcells.model import load_model, predict_probabilities

    tf.config.threading.set_intra_op_parallelism_threads(smk.threads)
    source_classes = class_names_of(smk.config["datasets"][smk.params.source_dataset])
    target_classes = class_names_of(smk.config["datasets"][smk.wildcards.dataset])
    test = load_split(smk.input.data, "test", len(target_classes))
    model = load_model(smk.input.model)
    probabilities = predict_probabilities(model, test.images, smk.params.batch_size)
    result = transfer_metrics(test.labels, probabilities, source_classes, target_classes)
    result["run"] = smk.wildcards.run
    result["target_dataset"] = smk.wildcards.dataset
    with atomic_path(smk.output.predictions) as tmp:
        np.savez(
            tmp,
            probabilities=probabilities,
            labels=test.labels,
            source_classes=np.array(source_classes),
            target_classes=np.array(target_classes),
        )
    write_text_atomic(smk.output.metrics, json.dumps(result, indent=1))
    print(
        f"{smk.wildcards.run} on {smk.wildcards.dataset}: restricted accuracy {result['restricted_accuracy']:.4f}, "
        f"unrestricted {result['unrestricted_accuracy']:.4f}"
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
