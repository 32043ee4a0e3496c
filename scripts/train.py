"""Snakemake adapter: train one run and write model.keras, history.csv and host.json (where each session ran)."""

import csv
import io
import json
import signal

from bloodcells.atomic import atomic_path, remove_stale_parts, write_text_atomic
from bloodcells.dataset import class_names_of, load_split
from bloodcells.download import IMAGENET_NOTOP_MD5, check_file_md5
from bloodcells.gpu_lock import pin_job_to_gpu
from bloodcells.hardware import enforce_gpu_requirement
from bloodcells.logs import log_to_file
from bloodcells.provenance import training_session


def history_csv(rows: list[dict]) -> str:
    """The per-epoch history as CSV text."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def tensorflow_sees_gpu() -> bool:
    """Whether TensorFlow can train on a GPU in this job."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def verified_weights(path: str | None, arch: str) -> str | None:
    """The ImageNet weights file a run starts from, its MD5 checked against Keras' (None: random initialisation)."""
    if path is not None:
        check_file_md5(path, IMAGENET_NOTOP_MD5[arch], f"Keras' ImageNet no-top weights of {arch}")
    return path


def stop_on_sigterm(signum: int, frame) -> None:
    """Turn SIGTERM (scancel, a time limit, a killed Snakemake) into SystemExit, so temporary files are removed."""
    # SLURM may deliver it twice (slurmstepd and srun): a second SystemExit would cut the first one's cleanup short.
    signal.signal(signum, signal.SIG_IGN)
    print(
        f"train: received {signal.Signals(signum).name}; stopping. The checkpoint of the last finished epoch is "
        "kept: run the workflow again to resume from it",
        flush=True,
    )
    raise SystemExit(128 + signum)  # the exit status of a process ended by the signal


def main(smk) -> None:
    """Read the run from the snakemake object, train it and write its outputs atomically."""
    log_to_file(smk.log[0])
    from bloodcells.training import (
        RunSpec,
        TrainSettings,
        inference_model,
        run_epochs,
        train_run,
    )  # imports TensorFlow: after the log redirect

    # Python's default for SIGTERM ends the process at once; as an exception it unwinds through atomic_path.
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    for output in (smk.output.model, smk.output.history, smk.output.host):
        for stale in remove_stale_parts(output):
            print(f"removed {stale}, left by a killed job", flush=True)
    pin_job_to_gpu(smk)  # a GPU no other running job holds, before TensorFlow starts; no-op without GPU
    enforce_gpu_requirement(smk.params.require_gpu, "train")  # stop now, not after hours on the CPU
    values = smk.params.values
    training = run_epochs(smk.params.training, values.get("epochs"))  # a run with `epochs` trains exactly that many
    n_classes = len(class_names_of(smk.config["datasets"][values["dataset"]]))
    spec = RunSpec.from_values(values, training["weights"])
    # 'auto' is resolved here, on the host that trains, not where Snakemake parsed the workflow.
    settings = TrainSettings.from_config(training, smk.threads, tensorflow_sees_gpu())
    print(f"run {smk.wildcards.run}: {spec}\n{settings}", flush=True)
    train = load_split(smk.input.data, "train", n_classes)
    val = load_split(smk.input.data, "val", n_classes)
    session = training_session(settings.xla, settings.mixed_precision, settings.threads)
    model, history, checkpoint, sessions = train_run(
        (train.images, train.labels),
        (val.images, val.labels),
        n_classes,
        spec,
        settings,
        smk.params.checkpoint,
        weights_file=verified_weights(smk.input.get("weights"), spec.arch),
        session=session,
    )
    with atomic_path(smk.output.model) as tmp:
        inference_model(model).save(tmp)
    write_text_atomic(smk.output.history, history_csv(history))
    write_text_atomic(smk.output.host, json.dumps({"run": smk.wildcards.run, "sessions": sessions}, indent=1))
    checkpoint.remove()


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
