#!/usr/bin/env python
"""Training throughput of the workflow's input path against its upper bound and the poster's pipeline.

Variants (images per second of training, median of --repeats timings of --steps steps each,
after one untimed warm-up epoch of the same length that also traces and compiles):

  ours    the workflow's real path, as training.train_run runs it: build_model with the
          augmentation layer inside the model, compile_model, model.fit on epoch_dataset
          (uint8 arrays in memory, per-epoch stateless shuffle, batch, gather, prefetch);
          mixed precision and XLA resolved like the workflow's 'auto' (on with a GPU that
          TensorFlow sees, off on a CPU) unless --mixed-precision / --xla say otherwise.
  limit   the same model and compile settings without the augmentation layer, fitted on one
          constant batch repeated (tf.data from_tensors().repeat()): no input pipeline and no
          augmentation; the upper bound of ours.
  legacy  the poster's pipeline: Keras' legacy ImageDataGenerator(shear_range, zoom_range=0.2,
          horizontal_flip=True).flow feeding model.fit, float32, no XLA, default workers.

The augmentation pipeline alone is timed at --augment-size px (224 by default): ours (the
epoch_dataset batches through the augmentation layer in a tf.function, on TensorFlow's default
device, compiled with XLA by the same auto rule as training) against legacy
(ImageDataGenerator.flow producing batches).

The last printed line is always
  pipeline_efficiency=<ours/limit> speedup_vs_legacy=<ours/legacy> augment_speedup=<ours/legacy>
and a JSON record with hardware, versions, settings and every figure goes to --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VARIANTS = ("ours", "limit", "legacy")
SMOKE = dict(arch="tiny", size=32, batch=8, steps=2, repeats=1, augment_size=32, augment_steps=2, augment_repeats=1)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--arch",
        default="resnet50",
        choices=["resnet50", "resnet101", "tiny"],
        help="tiny: a two-convolution stand-in backbone (benchmark only; what --smoke uses)",
    )
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="timed training steps per repeat (also the warm-up length)")
    p.add_argument("--repeats", type=int, default=3, help="timings per figure; the median is reported")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list of ours,limit,legacy")
    p.add_argument("--mixed-precision", default="auto", help="auto (on with a GPU), on, off: ours and limit")
    p.add_argument("--xla", default="auto", help="auto (on with a GPU), on, off: ours and limit")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="TensorFlow intra-op threads")
    p.add_argument("--n-classes", type=int, default=8)
    p.add_argument("--shear", type=float, default=0.2)
    p.add_argument("--shear-unit", default="radians", choices=["radians", "degrees"])
    p.add_argument("--augment-size", type=int, default=224, help="size of the augmentation-alone timing; 0 skips it")
    p.add_argument("--augment-batch", type=int, default=None, help="default: --batch")
    p.add_argument("--augment-steps", type=int, default=10)
    p.add_argument("--augment-repeats", type=int, default=None, help="default: --repeats")
    p.add_argument(
        "--augment-jit",
        default="auto",
        help="auto (on with a GPU, as --xla), on, off: XLA for the augmentation-alone timing",
    )
    p.add_argument("--epoch-images", type=int, default=0, help="also time one full epoch of N images via the real path")
    p.add_argument("--epoch-val-images", type=int, default=0, help="validation images evaluated after that epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--barrier", default=None, help="folder: wait after warm-up until --barrier-count processes are ready"
    )
    p.add_argument("--barrier-count", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="tiniest settings, for CI: " + str(SMOKE))
    p.add_argument("--name", default=None)
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<name>.json)")
    args = p.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    args.augment_batch = args.augment_batch or args.batch
    args.augment_repeats = args.augment_repeats or args.repeats
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        p.error(f"--variants: unknown {sorted(unknown)}")
    return args


# ---------------------------------------------------------------- machine and versions


def cpu_info() -> dict:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"model": model, "cores": os.cpu_count(), "usable_cores": usable, "load_average": load}


def versions(tf, keras, np) -> dict:
    import scipy

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
    }


# ---------------------------------------------------------------- data and timing


def random_data(n: int, size: int, n_classes: int, seed: int):
    """uint8 images and int labels; content does not change the speed of any variant."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = np.frombuffer(rng.bytes(n * size * size * 3), dtype=np.uint8).reshape(n, size, size, 3).copy()
    labels = rng.integers(0, n_classes, n).astype(np.int64)
    return images, labels


def make_timer(keras, barrier: str | None = None, barrier_count: int = 1):
    """A callback that times each epoch (training part and validation part) with a device sync at each edge."""

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs: list[dict] = []

        def _sync(self):
            # Reading a variable waits for every step already queued on the device.
            self.model.optimizer.iterations.numpy()
            return time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1 and barrier:
                wait_at_barrier(barrier, barrier_count)
            self._wall = time.time()
            self._start = self._sync()
            self._train_end = None

        def on_test_begin(self, logs=None):
            if getattr(self, "_start", None) is not None and self._train_end is None:
                self._train_end = self._sync()

        def on_epoch_end(self, epoch, logs=None):
            end = self._sync()
            train_end = self._train_end or end
            self.epochs.append(
                {
                    "epoch": epoch,
                    "train_seconds": train_end - self._start,
                    "val_seconds": end - train_end,
                    "wall_start": self._wall,
                    "wall_end": time.time(),
                }
            )

    return EpochTimer()


def wait_at_barrier(folder: str, count: int, timeout: float = 600.0) -> None:
    """Mark this process ready and wait until `count` processes are (so concurrent timings overlap)."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    (path / f"ready-{os.getpid()}").touch()
    deadline = time.time() + timeout
    while len(list(path.glob("ready-*"))) < count and time.time() < deadline:
        time.sleep(0.05)


def summarize(images_per_timing: int, epochs: list[dict]) -> dict:
    timed = epochs[1:]  # epoch 0 is the warm-up (tracing, compiling, autotuning)
    seconds = [e["train_seconds"] for e in timed]
    rates = [images_per_timing / s for s in seconds]
    return {
        "images_per_s": statistics.median(rates),
        "runs_images_per_s": rates,
        "seconds": seconds,
        "warmup_seconds": epochs[0]["train_seconds"],
        "images_per_timing": images_per_timing,
        "wall_start": timed[0]["wall_start"] if timed else None,
        "wall_end": timed[-1]["wall_end"] if timed else None,
    }


# ---------------------------------------------------------------- the three training variants


def augmentation_config(args):
    from bloodcells.model import Augmentation

    return Augmentation(shear=args.shear, shear_unit=args.shear_unit)


def tiny_backbone(include_top=False, weights=None, input_tensor=None, **_):
    """A two-convolution stand-in for the ResNets, so --smoke exercises every code path in seconds."""
    import keras

    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="tiny_conv1")(input_tensor)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="tiny_conv2")(x)
    return keras.Model(keras.utils.get_source_inputs(input_tensor), x, name="tiny")


def build(args, keras, augmented: bool, mixed: bool):
    from bloodcells import model as model_module
    from bloodcells.model import build_model

    model_module.ARCHITECTURES.setdefault("tiny", tiny_backbone)  # benchmark-only entry, never in the workflow

    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    augmentation = augmentation_config(args) if augmented else None
    return build_model(args.arch, args.size, args.n_classes, weights=None, augmentation=augmentation, seed=args.seed)


def run_ours(args, keras, tf, mixed, xla, timer_kwargs, images=None, labels=None, epochs=None):
    from bloodcells.inputs import epoch_dataset
    from bloodcells.optimizers import compile_model
    from bloodcells.training import RunSpec

    spec = RunSpec(arch=args.arch, size=args.size, batch_size=args.batch, seed=args.seed)
    model = build(args, keras, augmented=True, mixed=mixed)
    compile_model(model, spec, xla)
    n = args.steps * args.batch
    if images is None:
        images, labels = random_data(n, args.size, args.n_classes, args.seed)
    steps = math.ceil(len(labels) / args.batch)
    epochs = epochs or args.repeats + 1
    ds = epoch_dataset(images, labels, args.n_classes, args.batch, args.seed, 0, epochs)
    timer = make_timer(keras, **timer_kwargs)
    model.fit(ds, epochs=epochs, steps_per_epoch=steps, callbacks=[timer], verbose=0, shuffle=False)
    return model, summarize(steps * args.batch, timer.epochs)


def run_limit(args, keras, tf, mixed, xla):
    import numpy as np

    from bloodcells.optimizers import compile_model
    from bloodcells.training import RunSpec

    spec = RunSpec(arch=args.arch, size=args.size, batch_size=args.batch, seed=args.seed)
    model = build(args, keras, augmented=False, mixed=mixed)
    compile_model(model, spec, xla)
    images, labels = random_data(args.batch, args.size, args.n_classes, args.seed)
    one_hot = np.eye(args.n_classes, dtype="float32")[labels]
    ds = tf.data.Dataset.from_tensors((images, one_hot)).repeat()
    timer = make_timer(keras)
    model.fit(ds, epochs=args.repeats + 1, steps_per_epoch=args.steps, callbacks=[timer], verbose=0)
    return model, summarize(args.steps * args.batch, timer.epochs)


def legacy_generator(args, keras):
    try:
        from keras.src.legacy.preprocessing.image import ImageDataGenerator
    except ImportError:  # older Keras 3 layouts
        from keras._tf_keras.keras.preprocessing.image import ImageDataGenerator
    shear_degrees = math.degrees(augmentation_config(args).shear_radians)  # the legacy unit is degrees
    return ImageDataGenerator(shear_range=shear_degrees, zoom_range=0.2, horizontal_flip=True)


def run_legacy(args, keras, tf):
    import numpy as np

    from bloodcells.optimizers import compile_model
    from bloodcells.training import RunSpec

    spec = RunSpec(arch=args.arch, size=args.size, batch_size=args.batch, seed=args.seed)
    model = build(args, keras, augmented=False, mixed=False)
    compile_model(model, spec, xla=False)
    images, labels = random_data(args.steps * args.batch, args.size, args.n_classes, args.seed)
    one_hot = np.eye(args.n_classes, dtype="float32")[labels]
    flow = legacy_generator(args, keras).flow(images, one_hot, batch_size=args.batch, shuffle=True, seed=args.seed)
    timer = make_timer(keras)
    model.fit(flow, epochs=args.repeats + 1, steps_per_epoch=args.steps, callbacks=[timer], verbose=0)
    return model, summarize(args.steps * args.batch, timer.epochs)


# ---------------------------------------------------------------- augmentation alone


def augment_ours(args, keras, tf, on_gpu: bool) -> dict:
    from bloodcells.hardware import resolve_switch
    from bloodcells.inputs import epoch_dataset
    from bloodcells.model import RandomShearZoomFlip

    aug = augmentation_config(args)
    # The layer resamples by two 1-D gather passes, which compile with XLA: the same auto rule as --xla.
    jit = resolve_switch(args.augment_jit, on_gpu)
    layer = RandomShearZoomFlip(aug.shear_radians, aug.zoom, aug.horizontal_flip, seed=args.seed, name="augment")
    augment = tf.function(lambda batch: layer(batch, training=True), jit_compile=jit, autograph=False)
    batch, steps = args.augment_batch, args.augment_steps
    images, labels = random_data(batch * steps, args.augment_size, args.n_classes, args.seed)
    epochs = args.augment_repeats + 1
    ds = epoch_dataset(images, labels, args.n_classes, batch, args.seed, 0, epochs)
    iterator = iter(ds)
    rates, seconds = [], []
    for repeat in range(epochs):
        start = time.perf_counter()
        for _ in range(steps):
            x, _ = next(iterator)
            out = augment(x)
        float(out[0, 0, 0, 0])  # wait for the device
        elapsed = time.perf_counter() - start
        if repeat:  # repeat 0 is the warm-up (tracing, compiling)
            seconds.append(elapsed)
            rates.append(batch * steps / elapsed)
    return {
        "images_per_s": statistics.median(rates),
        "runs_images_per_s": rates,
        "seconds": seconds,
        "jit_compile": jit,
        "device": "GPU" if on_gpu else "CPU",
        "what": "epoch_dataset batches -> augmentation layer (training=True) in a tf.function",
    }


def augment_legacy(args, keras) -> dict:
    batch, steps = args.augment_batch, args.augment_steps
    images, labels = random_data(batch * steps, args.augment_size, args.n_classes, args.seed)
    flow = legacy_generator(args, keras).flow(images, labels, batch_size=batch, shuffle=True, seed=args.seed)
    rates, seconds = [], []
    for repeat in range(args.augment_repeats + 1):
        start = time.perf_counter()
        for _ in range(steps):
            next(flow)
        elapsed = time.perf_counter() - start
        if repeat:
            seconds.append(elapsed)
            rates.append(batch * steps / elapsed)
    return {
        "images_per_s": statistics.median(rates),
        "runs_images_per_s": rates,
        "seconds": seconds,
        "what": "ImageDataGenerator(shear_range, zoom_range=0.2, horizontal_flip=True).flow batches (float32, CPU)",
    }


# ---------------------------------------------------------------- one full epoch


def time_epoch(args, keras, tf, mixed, xla, model=None) -> dict:
    """Two epochs of N images via the real path (the first one warms up); the second one is reported.

    `model`: the compiled model of the ours variant, reused so that its compiled step is too.
    """
    from bloodcells.inputs import epoch_dataset, eval_dataset
    from bloodcells.optimizers import compile_model
    from bloodcells.training import RunSpec

    images, labels = random_data(args.epoch_images, args.size, args.n_classes, args.seed + 1)
    validation = None
    if args.epoch_val_images:
        val = random_data(args.epoch_val_images, args.size, args.n_classes, args.seed + 2)
        validation = eval_dataset(*val, args.n_classes, args.batch)
    spec = RunSpec(arch=args.arch, size=args.size, batch_size=args.batch, seed=args.seed)
    if model is None:
        model = build(args, keras, augmented=True, mixed=mixed)
        compile_model(model, spec, xla)
    epochs = 2
    ds = epoch_dataset(images, labels, args.n_classes, args.batch, args.seed, 0, epochs)
    timer = make_timer(keras)
    model.fit(
        ds,
        epochs=epochs,
        steps_per_epoch=math.ceil(len(labels) / args.batch),
        validation_data=validation,
        callbacks=[timer],
        verbose=0,
        shuffle=False,
    )
    epochs_timed = timer.epochs
    last = epochs_timed[-1]
    return {
        "images": args.epoch_images,
        "val_images": args.epoch_val_images,
        "size": args.size,
        "batch": args.batch,
        "train_seconds": last["train_seconds"],
        "val_seconds": last["val_seconds"],
        "epoch_seconds": last["train_seconds"] + last["val_seconds"],
        "train_images_per_s": args.epoch_images / last["train_seconds"],
        "warmup_epoch_seconds": epochs_timed[0]["train_seconds"] + epochs_timed[0]["val_seconds"],
    }


# ---------------------------------------------------------------- main


def ratio(a, b):
    return a / b if a and b else float("nan")


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.time()
    import keras
    import numpy as np
    import tensorflow as tf

    from bloodcells.gpus import gpu_details, nvidia_smi_gpus
    from bloodcells.hardware import resolve_switch
    from bloodcells.training import TrainSettings, configure_tensorflow

    tf_gpus = tf.config.list_physical_devices("GPU")
    on_gpu = bool(tf_gpus)
    mixed = resolve_switch(args.mixed_precision, on_gpu)
    xla = resolve_switch(args.xla, on_gpu)
    configure_tensorflow(TrainSettings(mixed_precision=mixed, xla=xla, threads=args.threads), args.seed)
    device = "gpu" if on_gpu else "cpu"
    name = args.name or f"{args.arch}-{args.size}px-bs{args.batch}-{device}" + ("-smoke" if args.smoke else "")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"{name}.json"

    record = {
        "name": name,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": [sys.executable, *sys.argv],
        "hardware": {
            "cpu": cpu_info(),
            "gpus": [gpu_details(tf, device) for device in tf_gpus],
            "nvidia_smi": nvidia_smi_gpus(("name", "memory.total", "driver_version")),
            "device_used": device,
            "hostname": platform.node(),
        },
        "versions": versions(tf, keras, np),
        "settings": {
            "arch": args.arch,
            "size": args.size,
            "batch": args.batch,
            "steps": args.steps,
            "repeats": args.repeats,
            "threads": args.threads,
            "n_classes": args.n_classes,
            "mixed_precision": mixed,
            "xla": xla,
            "requested": {"mixed_precision": args.mixed_precision, "xla": args.xla},
            "augmentation": {
                "shear": args.shear,
                "shear_unit": args.shear_unit,
                "zoom": [0.8, 1.2],
                "horizontal_flip": True,
            },
            "augment_size": args.augment_size,
            "augment_batch": args.augment_batch,
            "augment_steps": args.augment_steps,
            "augment_repeats": args.augment_repeats,
            "smoke": args.smoke,
            "data": "random uint8 (content does not change speed)",
            "variants": args.variants,
        },
        "training": {},
        "augmentation": None,
        "epoch": None,
    }
    print(
        f"{name}: {args.arch} {args.size}px batch {args.batch} on {device} "
        f"(mixed precision {mixed}, XLA {xla}, {args.threads} threads)",
        flush=True,
    )
    timer_kwargs = {"barrier": args.barrier, "barrier_count": args.barrier_count}
    for variant in args.variants:
        if variant == "ours":
            model, result = run_ours(args, keras, tf, mixed, xla, timer_kwargs)
            result.update(mixed_precision=mixed, xla=xla)
            if args.epoch_images:
                record["epoch"] = time_epoch(args, keras, tf, mixed, xla, model=model)
        elif variant == "limit":
            model, result = run_limit(args, keras, tf, mixed, xla)
            result.update(mixed_precision=mixed, xla=xla)
        else:
            model, result = run_legacy(args, keras, tf)
            result.update(mixed_precision=False, xla=False)
        record["training"][variant] = result
        runs = ", ".join(f"{r:.1f}" for r in result["runs_images_per_s"])
        print(
            f"  train {variant:6s} {result['images_per_s']:9.1f} images/s  (runs: {runs}; "
            f"warm-up {result['warmup_seconds']:.1f} s)",
            flush=True,
        )
        del model
        keras.backend.clear_session()
        gc.collect()

    if args.augment_size:
        ours = augment_ours(args, keras, tf, on_gpu)
        legacy = augment_legacy(args, keras)
        record["augmentation"] = {
            "size": args.augment_size,
            "batch": args.augment_batch,
            "ours": ours,
            "legacy": legacy,
        }
        for key, result in (("ours", ours), ("legacy", legacy)):
            runs = ", ".join(f"{r:.1f}" for r in result["runs_images_per_s"])
            print(
                f"  augment {key:6s} {result['images_per_s']:9.1f} images/s at {args.augment_size} px (runs: {runs})",
                flush=True,
            )

    if args.epoch_images:
        if record["epoch"] is None:
            record["epoch"] = time_epoch(args, keras, tf, mixed, xla)
        epoch = record["epoch"]
        print(
            f"  epoch of {epoch['images']} images at {args.size} px: {epoch['train_seconds']:.1f} s training "
            f"({epoch['train_images_per_s']:.1f} images/s) + {epoch['val_seconds']:.1f} s validation "
            f"of {epoch['val_images']}",
            flush=True,
        )

    figure = {v: r["images_per_s"] for v, r in record["training"].items()}
    augment = record["augmentation"] or {}
    ratios = {
        "pipeline_efficiency": ratio(figure.get("ours"), figure.get("limit")),
        "speedup_vs_legacy": ratio(figure.get("ours"), figure.get("legacy")),
        "augment_speedup": ratio(
            augment.get("ours", {}).get("images_per_s"), augment.get("legacy", {}).get("images_per_s")
        ),
    }
    line = " ".join(f"{key}={value:.3f}" for key, value in ratios.items())
    record.update(ratios=ratios, summary_line=line, seconds_total=time.time() - started)
    record["hardware"]["cpu"]["load_average_end"] = cpu_info()["load_average"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=float, allow_nan=True) + "\n")
    print(f"wrote {out}", flush=True)
    print(line, flush=True)
    return record


if __name__ == "__main__":
    main()
