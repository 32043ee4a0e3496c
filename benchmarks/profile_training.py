#!/usr/bin/env python
"""Where one training job's time goes: start-up, graph build, steps, validation, checkpoints, evaluation start-up.

Profiles one planned run of a config (default: the demo's ResNet-101, batch 16) through the workflow's own code:
the config is validated and planned as Snakemake does, the dataset is built by prepare_dataset's function, the
settings come from TrainSettings.from_config and training is training.train_run itself, with a timing callback.
Then the saved model is evaluated in a fresh process, as the evaluate rule's job does.

    python benchmarks/profile_training.py                          # demo ResNet-101 bs16, 2 epochs
    python benchmarks/profile_training.py --arch resnet50 --batch-size 32 --epochs 3 --xla on

It prints one line per component (seconds, share of the job) and an estimate of the whole job at the
config's max_epochs; --out also writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

# Timed in a fresh interpreter, as a Snakemake script job starts: its preamble imports snakemake, then TensorFlow.
STARTUP_CODE = """
import time
start = time.perf_counter()
import snakemake.script
after_snakemake = time.perf_counter()
import keras, tensorflow
print(after_snakemake - start, time.perf_counter() - after_snakemake)
"""

# The evaluate rule's work in a fresh interpreter: TensorFlow start, model load, prediction of the test split.
EVALUATE_CODE = """
import sys, time
sys.path.insert(0, {scripts!r})
start = time.perf_counter()
import numpy as np
import tensorflow as tf
from bloodcells.model import load_model, predict_probabilities
tf.config.threading.set_intra_op_parallelism_threads({threads})
imported = time.perf_counter()
model = load_model({model!r})
loaded = time.perf_counter()
images = np.load({data!r})["test_images"]
predict_probabilities(model, images, {batch}, log=lambda message: None)
predicted = time.perf_counter()
predict_probabilities(model, images, {batch}, log=lambda message: None)
again = time.perf_counter()
print(imported - start, loaded - imported, predicted - loaded, again - predicted)
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(ROOT / "config.demo.yaml"))
    p.add_argument("--arch", default="resnet101")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=None, help="default: the config's first seed")
    p.add_argument("--epochs", type=int, default=2, help="epochs to time (the first one includes the graph trace)")
    p.add_argument("--xla", default=None, help="on/off: override the config's training.xla")
    p.add_argument("--threads", type=int, default=None, help="default: the config's training.threads")
    p.add_argument("--data", default=None, help="the run's results/data npz (default: built from the config's source)")
    p.add_argument("--out", default=None, help="also write the figures as JSON here")
    return p.parse_args(argv)


def planned_run(config: dict, arch: str, batch_size: int, seed: int | None) -> tuple[str, dict]:
    """The table3 run of the config with this architecture, batch size and seed."""
    from bloodcells.runs import plan_runs

    runs, studies = plan_runs(config)
    seed = config["seeds"][0] if seed is None else seed
    for run in studies["table3"]:
        values = runs[run]
        if (values["arch"], values["batch_size"], values["seed"]) == (arch, batch_size, seed):
            return run, values
    raise SystemExit(f"no table3 run with arch {arch}, batch size {batch_size}, seed {seed} in the config")


def time_subprocess(code: str) -> list[float]:
    """Run Python code in a fresh interpreter and return the floats it prints."""
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return [float(value) for value in proc.stdout.split()[-4:] if value]


def make_timer():
    """A Keras callback recording when training starts, each batch ends, validation runs and each epoch ends."""
    import keras

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.events: list[tuple[str, int, float]] = []
            self.epoch = 0

        def mark(self, name: str) -> None:
            self.events.append((name, self.epoch, time.perf_counter()))

        def on_train_begin(self, logs=None):
            self.mark("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self.mark("epoch_begin")

        def on_train_batch_end(self, batch, logs=None):
            self.mark("batch_end")

        def on_test_begin(self, logs=None):
            self.mark("test_begin")

        def on_test_end(self, logs=None):
            self.mark("test_end")

        def on_epoch_end(self, epoch, logs=None):  # runs after the workflow's checkpoint callback
            self.mark("epoch_end")

    return Timer()


def epoch_figures(events: list[tuple[str, int, float]], epoch: int) -> dict:
    """Step, validation and checkpoint seconds of one epoch from the timer's events."""
    times = {
        name: [t for n, e, t in events if n == name and e == epoch]
        for name in ("epoch_begin", "batch_end", "test_begin", "test_end", "epoch_end")
    }
    batch_ends = times["batch_end"]
    step_times = [b - a for a, b in zip([times["epoch_begin"][0], *batch_ends], batch_ends, strict=False)]
    return {
        "first_step_s": step_times[0],
        "steps_s": sum(step_times),
        "steady_step_s": statistics.median(step_times[1:]) if len(step_times) > 1 else step_times[0],
        "n_steps": len(step_times),
        "validation_s": times["test_end"][0] - times["test_begin"][0],
        "checkpoint_s": times["epoch_end"][0] - times["test_end"][0],
    }


def optimizer_bytes(weights_file: Path) -> int:
    """Bytes of the optimizer's variables inside a .weights.h5 file (0 when it holds none)."""
    import h5py

    total = 0
    with h5py.File(weights_file, "r") as f:

        def add(_, item):
            nonlocal total
            if isinstance(item, h5py.Dataset):
                total += item.size * item.dtype.itemsize

        if "optimizer" in f:
            f["optimizer"].visititems(add)
    return total


def main(argv=None) -> None:
    args = parse_args(argv)
    import yaml

    from bloodcells.config import validate_config

    config = yaml.safe_load(Path(args.config).read_text())
    validate_config(config, ROOT / "rules/schema/config.schema.yaml")
    run, values = planned_run(config, args.arch, args.batch_size, args.seed)
    training = dict(config["training"], max_epochs=args.epochs, patience=args.epochs)
    if args.xla is not None:
        training["xla"] = args.xla
    threads = args.threads or training["threads"]
    figures: dict = {"run": run, "config": args.config, "threads": threads}

    snakemake_import, tf_import = time_subprocess(STARTUP_CODE)
    figures["startup"] = {"import_snakemake_s": snakemake_import, "import_tensorflow_s": tf_import}

    import numpy as np
    from prepare_dataset import load_source  # scripts/ is on sys.path

    dataset = config["datasets"][values["dataset"]]
    start = time.perf_counter()
    if args.data:
        arrays = dict(np.load(args.data))
    else:
        arrays = load_source(dataset, values["size"], [])
    figures["prepare_dataset_s"] = time.perf_counter() - start

    from bloodcells.checkpoint import Checkpoint
    from bloodcells.model import inference_model
    from bloodcells.names import class_names_of
    from bloodcells.training import RunSpec, TrainSettings, train_run

    n_classes = len(class_names_of(dataset))
    spec = RunSpec.from_values(values, None)
    settings = TrainSettings.from_config(training, threads, gpu=False)
    print(f"profiling {run} on {threads} thread(s): {settings}", flush=True)
    train = (arrays["train_images"], arrays["train_labels"].ravel())
    val = (arrays["val_images"], arrays["val_labels"].ravel())
    timer = make_timer()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        checkpoint_dir = scratch / "checkpoint"
        sizes: dict[str, int] = {}
        original_save = Checkpoint.save

        def save_and_measure(self, model, state, improved, best_weights=None):
            original_save(self, model, state, improved, best_weights)
            for path in self.directory.iterdir():
                kind = "state" if path.suffix == ".json" else path.name.split("-")[0]  # epoch (with optimizer), best
                sizes[kind] = path.stat().st_size
                if kind == "epoch":
                    sizes["optimizer_in_epoch"] = optimizer_bytes(path)

        Checkpoint.save = save_and_measure
        try:
            start = time.perf_counter()
            model, history, checkpoint, _ = train_run(
                train, val, n_classes, spec, settings, checkpoint_dir, verbose=0, extra_callbacks=(timer,)
            )
            trained = time.perf_counter()
        finally:
            Checkpoint.save = original_save
        model_path = scratch / "model.keras"
        inference_model(model).save(model_path)  # as train.py writes model.keras
        saved = time.perf_counter()
        setup = timer.events[0][2] - start
        epochs = [epoch_figures(timer.events, epoch) for epoch in range(args.epochs)]
        after_fit = trained - timer.events[-1][2]
        data_path = scratch / "data.npz"
        np.savez(data_path, test_images=arrays["test_images"])
        imported, loaded, predicted, again = time_subprocess(
            EVALUATE_CODE.format(
                scripts=str(ROOT / "scripts"),
                threads=threads,
                model=str(model_path),
                data=str(data_path),
                batch=config["evaluation"]["batch_size"],
            )
        )
        checkpoint.remove()
    figures.update(
        setup_s=setup,
        epochs=epochs,
        load_best_s=after_fit,
        final_save_s=saved - trained,
        checkpoint_bytes=sizes,
        history=history,
        evaluate={
            "import_tensorflow_s": imported,
            "load_model_s": loaded,
            "first_predict_s": predicted,
            "steady_predict_s": again,
            "n_images": int(len(arrays["test_images"])),
        },
    )
    print_breakdown(figures, config["training"]["max_epochs"], len(train[1]))
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1))


def print_breakdown(figures: dict, max_epochs: int, n_train: int) -> None:
    """One line per component of a training job and of an evaluation job, and the job at max_epochs."""
    epochs = figures["epochs"]
    later = epochs[1:] or epochs
    steady_step = statistics.median(e["steady_step_s"] for e in epochs)
    trace = epochs[0]["first_step_s"] - steady_step
    steps = statistics.mean(e["steps_s"] - (e["first_step_s"] - e["steady_step_s"]) for e in epochs)
    validation_trace = epochs[0]["validation_s"] - statistics.mean(e["validation_s"] for e in later)
    validation = statistics.mean(e["validation_s"] for e in later)
    # The last epoch is not checkpointed (its model is the run's output): only the earlier ones are.
    checkpoint = statistics.mean(e["checkpoint_s"] for e in epochs[:-1]) if len(epochs) > 1 else 0.0
    startup = figures["startup"]["import_snakemake_s"] + figures["startup"]["import_tensorflow_s"]
    rows = [
        ("process start (python, snakemake, tensorflow imports)", startup, 1),
        ("model build + compile + input pipeline", figures["setup_s"], 1),
        ("graph trace of the train step (first step - a steady step)", trace, 1),
        ("graph trace of the validation step", max(validation_trace, 0.0), 1),
        (
            f"training steps per epoch ({epochs[0]['n_steps']} x {steady_step * 1000:.0f} ms, "
            f"{n_train / steps:.1f} images/s)",
            steps,
            max_epochs,
        ),
        ("validation pass per epoch", validation, max_epochs),
        ("checkpoint write per epoch but the last (model + best weights + state)", checkpoint, max_epochs - 1),
        ("load best weights + final model save", figures["load_best_s"] + figures["final_save_s"], 1),
    ]
    total = sum(seconds * count for _, seconds, count in rows)
    print(f"\ntraining job {figures['run']}, estimated at {max_epochs} epochs ({figures['threads']} thread(s)):")
    for name, seconds, count in rows:
        each = f"{count} x {seconds:6.1f}" if count != 1 else f"    {seconds:6.1f}"
        print(f"  {name:<72} {each} s  {100 * seconds * count / total:5.1f} %")
    print(f"  {'total':<72}     {total:6.1f} s")
    sizes = figures["checkpoint_bytes"]
    print("checkpoint files (MB): " + ", ".join(f"{name} {size / 1e6:.0f}" for name, size in sorted(sizes.items())))
    ev = figures["evaluate"]
    ev_total = startup + ev["load_model_s"] + ev["first_predict_s"]
    print(
        f"evaluation job ({ev['n_images']} test images): start {startup:.1f} s, load model {ev['load_model_s']:.1f} s, "
        f"first predict {ev['first_predict_s']:.1f} s (a second one {ev['steady_predict_s']:.1f} s), "
        f"total {ev_total:.1f} s"
    )
    print(f"dataset built or read in {figures['prepare_dataset_s']:.1f} s (not part of the job)")


if __name__ == "__main__":
    main()
