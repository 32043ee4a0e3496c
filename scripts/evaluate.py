"""Snakemake adapter: predict the test split with a trained run and write predictions.npz and metrics.json."""

import json

import numpy as np

from bloodcells.atomic import atomic_path, write_text_atomic
from bloodcells.dataset import class_names_of, load_split
from bloodcells.hardware import enforce_gpu_requirement
from bloodcells.logs import log_to_file
from bloodcells.metrics import evaluate_predictions


def predict(model_path: str, images: np.ndarray, n_classes: int, batch_size: int, threads: int) -> np.ndarray:
    """Class probabilities of `images` from the saved model (no augmentation: inference mode)."""
    import tensorflow as tf

    from bloodcells.model import load_model, predict_probabilities

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        for gpu in tf.config.list_physical_devices("GPU"):  # take GPU memory as needed, not the whole card
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        pass  # TensorFlow already started in this process (tests): its thread and memory settings stay.
    model = load_model(model_path)
    outputs = model.output_shape[-1]
    if outputs != n_classes:
        raise ValueError(
            f"{model_path}: model predicts {outputs} classes but the evaluation data has {n_classes}; "
            "was it trained on another dataset?"
        )
    return predict_probabilities(model, images, batch_size)


def main(smk) -> None:
    """Evaluate one run on the test split."""
    log_to_file(smk.log[0])
    from bloodcells.gpu_lock import pin_job_to_gpu

    pin_job_to_gpu(smk)  # a GPU no other running job holds, before TensorFlow starts; no-op without GPU
    enforce_gpu_requirement(smk.params.require_gpu, "evaluate")
    class_names = class_names_of(smk.config["datasets"][smk.params.dataset])
    test = load_split(smk.input.data, "test", len(class_names))
    probabilities = predict(smk.input.model, test.images, len(class_names), smk.params.batch_size, smk.threads)
    metrics = evaluate_predictions(test.labels, probabilities, class_names)
    with atomic_path(smk.output.predictions) as tmp:
        np.savez(tmp, probabilities=probabilities, labels=test.labels, class_names=np.array(class_names))
    write_text_atomic(smk.output.metrics, json.dumps(metrics, indent=1))
    print(f"test accuracy {metrics['accuracy']:.4f}, AUC {metrics['auc']:.4f} on {metrics['n_images']} images")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
