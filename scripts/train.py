"""Snakemake adapter: train one run and write model.keras, history.csv and host.json (where each session ran)."""

import json
import signal

from bloodcells.atomic import atomic_path, remove_stale_parts, rows_csv, write_text_atomic
from bloodcells.dataset import load_split
from bloodcells.download import verified_weights
from bloodcells.gpus import tensorflow_sees_gpu
from bloodcells.jobsetup import start_tensorflow_job
from bloodcells.names import class_names_of
from bloodcells.provenance import training_session


def stop_on_sigterm(signum: int, frame) -> None:
    """Turn SIGTERM (scancel, a time limit, a killed Snakemake) into SystemExit, so temporary files are removed."""
    # SLURM may deliver it twice (slurmstepd and srun): a second SystemExit would cut the first one's cleanup short.
    signal.signal(signum, signal.SIG_IGN)
    print(
        f"train: received {signal.Signals(signum).name}; stopping. The last committed epoch's checkpoint is kept: "
        "run the workflow again to resume from it",
        flush=True,
    )
    raise SystemExit(128 + signum)  # the exit status of a process ended by the signal


def main(smk) -> None:
    """Read the run from the snakemake object, train it and write its outputs atomically."""
    start_tensorflow_job(
        smk.log[0], "train", {"run": smk.wildcards.run}, smk.resources.gpu, smk.params.require_gpu, smk.threads
    )
    from bloodcells.model import inference_model  # TensorFlow
    from bloodcells.training import RunSpec, TrainSettings, run_epochs, train_run

    # Python's default for SIGTERM ends the process at once; as an exception it unwinds through atomic_path.
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    for stale in [part for output in smk.output for part in remove_stale_parts(output)]:
        print(f"removed {stale}, left by a killed job", flush=True)
    values = smk.params.values
    training = run_epochs(smk.params.training, values.get("epochs"))  # a run with `epochs` trains exactly that many
    n_classes = len(class_names_of(smk.params.dataset))
    spec = RunSpec.from_values(values, training["weights"])
    # 'auto' is resolved here, on the host that trains, not where Snakemake parsed the workflow.
    settings = TrainSettings.from_config(training, smk.threads, tensorflow_sees_gpu())
    print(f"run {smk.wildcards.run}: {spec}\n{settings}", flush=True)
    train, val = (load_split(smk.input.data, split, n_classes) for split in ("train", "val"))
    model, history, checkpoint, sessions = train_run(
        (train.images, train.labels),
        (val.images, val.labels),
        n_classes,
        spec,
        settings,
        smk.params.checkpoint,
        weights_file=verified_weights(
            smk.input.get("weights"), spec.arch, training.get("weights_md5", {}).get(spec.arch)
        ),
        session=training_session(settings.xla, settings.mixed_precision, settings.threads),
    )
    with atomic_path(smk.output.model) as tmp:
        inference_model(model).save(tmp)
    write_text_atomic(smk.output.history, rows_csv(history))
    write_text_atomic(smk.output.host, json.dumps({"run": smk.wildcards.run, "sessions": sessions}, indent=1))
    checkpoint.remove()


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
