#!/usr/bin/env python
"""Training-step throughput of the workflow's exact Keras model on Keras 3's JAX backend (GPU-hour estimates).

For each (arch, size, batch) of the poster's grid (ResNet-50/101 x 64/128/224 px x batch 16/32 by
default): build_model with the RandomShearZoomFlip augmentation layer, weights=None (ImageNet
weights change no step time), compile as optimizers.compile_model does (Adam 1e-4, categorical
cross-entropy, accuracy + AUC, jit_compile=True), then

  train  an untimed warm-up model.fit of --warmup-steps steps (traces and compiles), then
         --repeats timed model.fit epochs of --steps full batches each, on in-memory random
         uint8 images and one-hot labels (shuffle=True); the median is reported;
  val    an untimed warm-up model.evaluate of 2 batches, then a timed model.evaluate of
         floor(1712 / batch) full batches (fit's validation pass is an evaluate);

and the implied seconds per epoch of the workflow: ceil(11959 / batch) training steps plus
ceil(1712 / batch) validation batches. The augmentation layer alone is timed at --augment-size px,
batch --augment-batch, as a jax.jit of its stateless call on device-resident uint8 images.

Compilation dominates a short benchmark, so with --compile-workers N > 0 a first phase compiles
every configuration in N parallel worker processes into JAX's persistent compilation cache (each
worker claims the next configuration not yet claimed); the timing phase then runs alone on the
device, one configuration after another, and reads its executables from the cache. Every timing
is taken with no other process on the device.

--budget caps the whole run in seconds: the compile phase is stopped at --compile-share of it
(unfinished workers are killed), and a configuration is skipped when the time left is less than
what it is expected to take. The JSON (--out, by default $OUT/gpu_jax_steps.json, else
benchmarks/results/gpu_jax_steps.json) is rewritten after every configuration, so a run cut off
still leaves what it measured. A table is printed last.

Precision: --precision auto (default) is mixed_float16 when nvidia-smi finds a GPU, else float32,
like the workflow's training.mixed_precision: auto.

Smoke test on a CPU (needs jax and keras, no TensorFlow):
  KERAS_BACKEND=jax python benchmarks/gpu_jax_steps.py --archs resnet50 --sizes 32 --batches 8 \
      --steps 2 --repeats 1 --warmup-steps 1 --augment-size 32 --augment-batch 8 --augment-steps 2 \
      --val-images 16 --compile-workers 1 --out /tmp/gpu_jax_steps.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"  # this benchmark is JAX-only; set before keras is imported anywhere
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bloodcells import gpus  # noqa: E402

TRAIN_IMAGES = 11959  # BloodMNIST training split
VAL_IMAGES = 1712  # BloodMNIST validation split
N_CLASSES = 8  # BloodMNIST classes
START = time.monotonic()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archs", default="resnet50,resnet101")
    p.add_argument("--sizes", default="64,128,224")
    p.add_argument("--batches", default="16,32")
    p.add_argument("--steps", type=int, default=50, help="timed training steps per repeat")
    p.add_argument("--repeats", type=int, default=3, help="timed training epochs of --steps steps; median reported")
    p.add_argument("--warmup-steps", type=int, default=3, help="untimed warm-up fit steps (compile)")
    p.add_argument(
        "--val-images",
        type=int,
        default=VAL_IMAGES,
        help="validation images per timed evaluate (rounded down to full batches)",
    )
    p.add_argument("--train-images", type=int, default=TRAIN_IMAGES, help="training images per epoch, for epoch_s")
    p.add_argument("--precision", default="auto", choices=["auto", "mixed_float16", "float32"])
    p.add_argument("--no-metrics", action="store_true", help="compile without accuracy/AUC (the workflow has them)")
    p.add_argument("--augment-size", type=int, default=224)
    p.add_argument("--augment-batch", type=int, default=32)
    p.add_argument("--augment-steps", type=int, default=50)
    p.add_argument("--budget", type=float, default=300.0, help="seconds for the whole run (then configs are skipped)")
    p.add_argument(
        "--compile-workers",
        type=int,
        default=4,
        help="parallel precompile processes (0 = compile inline in the timing phase)",
    )
    p.add_argument("--compile-share", type=float, default=0.55, help="share of --budget the compile phase may use")
    p.add_argument("--cache-dir", default=None, help="JAX persistent compilation cache (default: a fresh temp dir)")
    p.add_argument("--out", default=None)
    # Internal: a compile-phase worker.
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--claim-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.archs = [a for a in args.archs.split(",") if a]
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.batches = [int(b) for b in args.batches.split(",") if b]
    return args


def log(msg: str) -> None:
    print(f"[{time.monotonic() - START:7.1f}s] {msg}", flush=True)


def configs(args) -> list[tuple[str, int, int]]:
    """Largest work first (size, then depth, then batch): if the budget runs out, the costly cells are measured."""
    cells = [(a, s, b) for a in args.archs for s in args.sizes for b in args.batches]
    depth = {"resnet50": 0, "resnet101": 1}
    return sorted(cells, key=lambda c: (-c[1], -depth.get(c[0], 0), -c[2]))


def cfg_name(cfg) -> str:
    arch, size, batch = cfg
    return f"{arch}-{size}px-bs{batch}"


def resolve_precision(name: str) -> str:
    if name != "auto":
        return name
    return "mixed_float16" if gpus.nvidia_smi_ids() else "float32"


def nvidia_smi() -> str | None:
    query = ["--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"]
    return (gpus.nvidia_smi(query) or "").strip() or None


# ---------------------------------------------------------------- JAX / Keras setup

CACHE_EVENTS = {"hits": 0, "misses": 0, "backend_compile_s": 0.0}


def setup_jax(cache_dir: str) -> None:
    import jax
    from jax import monitoring

    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

    def on_event(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            CACHE_EVENTS["hits"] += 1
        elif event == "/jax/compilation_cache/cache_misses":
            CACHE_EVENTS["misses"] += 1

    def on_duration(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            CACHE_EVENTS["backend_compile_s"] += float(duration)

    monitoring.register_event_listener(on_event)
    monitoring.register_event_duration_secs_listener(on_duration)


def make_data(n: int, size: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    labels = np.eye(N_CLASSES, dtype="float32")[rng.integers(0, N_CLASSES, size=n)]
    return images, labels


def build_compiled(cfg, precision: str, with_metrics: bool):
    import keras

    from bloodcells.model import Augmentation, build_model
    from bloodcells.optimizers import make_optimizer

    arch, size, _ = cfg
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(precision)
    model = build_model(arch, size, N_CLASSES, weights=None, dropout=0.3, augmentation=Augmentation(), seed=0)
    metrics = ["accuracy", keras.metrics.AUC(name="auc")] if with_metrics else None
    model.compile(
        optimizer=make_optimizer("adam", 1e-4), loss="categorical_crossentropy", metrics=metrics, jit_compile=True
    )
    return model


def sync(model) -> None:
    import jax

    jax.block_until_ready([v.value for v in model.trainable_variables[-2:]])


# ---------------------------------------------------------------- compile phase (workers)


def run_worker(args) -> int:
    setup_jax(args.cache_dir)
    done = {}
    out = Path(args.worker_out)
    for cfg in configs(args):
        claim = Path(args.claim_dir) / cfg_name(cfg)
        try:
            os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        t0 = time.monotonic()
        rec = {"worker_pid": os.getpid()}
        try:
            model = build_compiled(cfg, args.precision, not args.no_metrics)
            _, size, batch = cfg
            x, y = make_data(2 * batch, size)
            t1 = time.monotonic()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=True)
            sync(model)
            t2 = time.monotonic()
            model.evaluate(x, y, batch_size=batch, verbose=0)
            t3 = time.monotonic()
            rec.update(ok=True, build_s=t1 - t0, train_compile_s=t2 - t1, eval_compile_s=t3 - t2, total_s=t3 - t0)
        except Exception as e:  # noqa: BLE001 - recorded, the timing phase retries inline
            rec.update(ok=False, error=f"{type(e).__name__}: {e}"[:500], total_s=time.monotonic() - t0)
        done[cfg_name(cfg)] = rec
        out.write_text(json.dumps(done, indent=1))
        print(f"[worker {os.getpid()}] {cfg_name(cfg)} {rec}", flush=True)
    return 0


def compile_phase(args, deadline: float) -> dict:
    claim_dir = Path(tempfile.mkdtemp(prefix="claims-"))
    procs = []
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{min(0.75, 0.8 / args.compile_workers):.3f}")
    env["PYTHONUNBUFFERED"] = "1"
    base = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--claim-dir",
        str(claim_dir),
        "--cache-dir",
        args.cache_dir,
        "--precision",
        args.precision,
        "--archs",
        ",".join(args.archs),
        "--sizes",
        ",".join(map(str, args.sizes)),
        "--batches",
        ",".join(map(str, args.batches)),
    ]
    if args.no_metrics:
        base.append("--no-metrics")
    for i in range(args.compile_workers):
        wout = claim_dir / f"worker{i}.json"
        procs.append((subprocess.Popen(base + ["--worker-out", str(wout)], env=env), wout))
    log(f"compile phase: {len(procs)} workers, until {deadline - START:.0f}s")
    killed = 0
    while any(p.poll() is None for p, _ in procs):
        if time.monotonic() > deadline:
            for p, _ in procs:
                if p.poll() is None:
                    p.kill()  # only our own worker processes, by their Popen handle
                    killed += 1
            for p, _ in procs:
                p.wait()
            break
        time.sleep(0.5)
    result = {}
    for _, wout in procs:
        if wout.exists():
            result.update(json.loads(wout.read_text()))
    log(f"compile phase done: {sum(r.get('ok', False) for r in result.values())} compiled, {killed} workers killed")
    return {
        "seconds": time.monotonic() - START,
        "workers": args.compile_workers,
        "killed_workers": killed,
        "configs": result,
    }


# ---------------------------------------------------------------- timing phase


def time_augmentation(args) -> dict:
    import jax
    import jax.numpy as jnp

    from bloodcells.model import Augmentation, RandomShearZoomFlip

    aug = Augmentation()
    size, batch = args.augment_size, args.augment_batch
    layer = RandomShearZoomFlip(aug.shear_radians, aug.zoom, aug.horizontal_flip, seed=0, name="augment")
    layer.build((batch, size, size, 3))
    x, _ = make_data(batch, size, seed=1)
    x = jax.device_put(jnp.asarray(x))
    tv = [v.value for v in layer.trainable_variables]
    ntv = [v.value for v in layer.non_trainable_variables]

    @jax.jit
    def step(ntv, images):
        out, ntv = layer.stateless_call(tv, ntv, images, training=True)
        return out, ntv

    t0 = time.monotonic()
    out, ntv = step(ntv, x)
    jax.block_until_ready(out)
    compile_s = time.monotonic() - t0
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(args.augment_steps):
            out, ntv = step(ntv, x)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {
        "size": size,
        "batch": batch,
        "steps": args.augment_steps,
        "repeats_s": times,
        "compile_s": compile_s,
        "ms_per_batch": 1000 * med / args.augment_steps,
        "images_per_s": batch * args.augment_steps / med,
        "n_state_variables": len(ntv),
    }


def time_config(cfg, args, pools: dict) -> dict:
    arch, size, batch = cfg
    rec = {"arch": arch, "size": size, "batch": batch, "precision": args.precision}
    hits0, misses0, comp0 = CACHE_EVENTS["hits"], CACHE_EVENTS["misses"], CACHE_EVENTS["backend_compile_s"]
    t0 = time.monotonic()
    model = build_compiled(cfg, args.precision, not args.no_metrics)
    rec["build_s"] = time.monotonic() - t0
    n_train = args.steps * batch
    n_val = max(1, args.val_images // batch) * batch
    need = max(n_train, n_val, args.warmup_steps * batch, 2 * batch)
    if pools.get(size, (None,))[0] is None or len(pools[size][0]) < need:
        pools[size] = make_data(need, size)
    x, y = pools[size]

    t0 = time.monotonic()
    model.fit(
        x[: args.warmup_steps * batch],
        y[: args.warmup_steps * batch],
        batch_size=batch,
        epochs=1,
        verbose=0,
        shuffle=True,
    )
    sync(model)
    rec["train_warmup_s"] = time.monotonic() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        model.fit(x[:n_train], y[:n_train], batch_size=batch, epochs=1, verbose=0, shuffle=True)
        sync(model)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    step_s = med / args.steps
    rec["train"] = {"steps": args.steps, "repeats_s": times, "step_ms": 1000 * step_s, "images_per_s": n_train / med}

    t0 = time.monotonic()
    model.evaluate(x[: 2 * batch], y[: 2 * batch], batch_size=batch, verbose=0)
    rec["val_warmup_s"] = time.monotonic() - t0
    t0 = time.perf_counter()
    model.evaluate(x[:n_val], y[:n_val], batch_size=batch, verbose=0)
    val_s = time.perf_counter() - t0
    val_batch_s = val_s / (n_val // batch)
    rec["val"] = {
        "batches": n_val // batch,
        "seconds": val_s,
        "batch_ms": 1000 * val_batch_s,
        "images_per_s": n_val / val_s,
    }

    train_epoch = math.ceil(args.train_images / batch) * step_s
    val_epoch = math.ceil(VAL_IMAGES / batch) * val_batch_s
    rec["epoch_s"] = {
        "train": train_epoch,
        "val": val_epoch,
        "total": train_epoch + val_epoch,
        "train_steps": math.ceil(args.train_images / batch),
        "val_batches": math.ceil(VAL_IMAGES / batch),
    }
    rec["cache"] = {
        "hits": CACHE_EVENTS["hits"] - hits0,
        "misses": CACHE_EVENTS["misses"] - misses0,
        "backend_compile_s": CACHE_EVENTS["backend_compile_s"] - comp0,
    }
    del model
    return rec


def table(result: dict) -> str:
    lines = [
        f"device: {result['device'].get('device_kind')} ({result['device'].get('nvidia_smi')}); "
        f"precision {result['settings']['precision']}; keras {result['versions'].get('keras')} "
        f"jax {result['versions'].get('jax')}",
        f"{'config':24} {'step ms':>8} {'train img/s':>11} {'val img/s':>10} {'epoch s':>8} "
        f"{'warmup s':>9} {'cache h/m':>9}",
    ]
    for r in result["runs"]:
        if "train" not in r:
            lines.append(f"{cfg_name((r['arch'], r['size'], r['batch'])):24} {r.get('status', 'failed')}")
            continue
        lines.append(
            f"{cfg_name((r['arch'], r['size'], r['batch'])):24} {r['train']['step_ms']:8.1f} "
            f"{r['train']['images_per_s']:11.0f} {r['val']['images_per_s']:10.0f} "
            f"{r['epoch_s']['total']:8.1f} {r['train_warmup_s'] + r['val_warmup_s']:9.1f} "
            f"{r['cache']['hits']:>4}/{r['cache']['misses']:<4}"
        )
    for s in result["skipped"]:
        lines.append(f"{s:24} skipped (budget)")
    a = result.get("augment")
    if a and "images_per_s" in a:
        lines.append(
            f"augmentation alone {a['size']}px bs{a['batch']}: {a['ms_per_batch']:.3f} ms/batch, "
            f"{a['images_per_s']:.0f} img/s"
        )
    lines.append(f"elapsed {result['elapsed_s']:.0f}s")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.precision = resolve_precision(args.precision)
    if args.cache_dir is None:
        args.cache_dir = tempfile.mkdtemp(prefix="jaxcache-")
    if args.worker:
        return run_worker(args)
    out = (
        Path(args.out)
        if args.out
        else (
            Path(os.environ["OUT"]) / "gpu_jax_steps.json"
            if os.environ.get("OUT")
            else ROOT / "benchmarks" / "results" / "gpu_jax_steps.json"
        )
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    deadline = START + args.budget
    result = {
        "schema": "gpu_jax_steps/1",
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "claim_dir", "worker_out")},
        "epoch_images": {"train": args.train_images, "val": VAL_IMAGES},
        "device": {"nvidia_smi": nvidia_smi()},
        "versions": {"python": platform.python_version()},
        "runs": [],
        "skipped": [],
        "elapsed_s": 0.0,
    }

    def save():
        result["elapsed_s"] = time.monotonic() - START
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(out)

    save()
    cells = configs(args)
    if args.compile_workers > 0:
        result["compile_phase"] = compile_phase(args, START + args.budget * args.compile_share)
        save()

    setup_jax(args.cache_dir)
    import jax
    import keras

    dev = jax.devices()[0]
    result["device"].update(
        platform=dev.platform, device_kind=getattr(dev, "device_kind", str(dev)), n_devices=len(jax.devices())
    )
    result["versions"].update(
        jax=jax.__version__,
        jaxlib=getattr(__import__("jaxlib"), "__version__", None),
        keras=keras.__version__,
        backend=keras.backend.backend(),
    )
    assert keras.backend.backend() == "jax", keras.backend.backend()
    log(f"timing phase on {result['device']['device_kind']} ({dev.platform}), precision {args.precision}")

    try:
        result["augment"] = time_augmentation(args)
        log(f"augmentation {result['augment']['ms_per_batch']:.3f} ms/batch")
    except Exception as e:  # noqa: BLE001
        result["augment"] = {"error": f"{type(e).__name__}: {e}"[:500]}
        log(f"augmentation timing failed: {result['augment']['error']}")
    save()

    precompiled = result.get("compile_phase", {}).get("configs", {})
    expected_by_arch: dict[tuple[str, bool], float] = {}
    pools: dict = {}
    for cfg in cells:
        name = cfg_name(cfg)
        left = deadline - time.monotonic()
        cached = precompiled.get(name, {}).get("ok", False)
        expect = expected_by_arch.get((cfg[0], cached), 25.0 if cached else 90.0)
        if left < expect:
            log(f"{name}: skipped, {left:.0f}s left < {expect:.0f}s expected")
            result["skipped"].append(name)
            save()
            continue
        t0 = time.monotonic()
        try:
            rec = time_config(cfg, args, pools)
            rec["status"] = "ok"
            rec["precompiled"] = cached
        except Exception as e:  # noqa: BLE001 - keep going with the other configs
            rec = {"arch": cfg[0], "size": cfg[1], "batch": cfg[2], "status": f"failed: {type(e).__name__}: {e}"[:500]}
        rec["wall_s"] = time.monotonic() - t0
        expected_by_arch[(cfg[0], cached)] = 1.2 * rec["wall_s"]
        result["runs"].append(rec)
        save()
        if "train" in rec:
            log(
                f"{name}: {rec['train']['step_ms']:.1f} ms/step, {rec['train']['images_per_s']:.0f} img/s, "
                f"epoch {rec['epoch_s']['total']:.1f}s, cache {rec['cache']}, wall {rec['wall_s']:.1f}s"
            )
        else:
            log(f"{name}: {rec['status']}")
    save()
    print(table(result), flush=True)
    print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
