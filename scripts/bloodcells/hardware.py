"""Hardware switches: whether a GPU is there, how 'auto' of mixed precision and XLA resolves, whether a GPU
rule may run where TensorFlow sees no GPU (training.require_gpu), TensorFlow's threads and memory, and the
environment check's report (scripts/check_environment.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from .gpu_lock import device_node_ids, parse_visible_devices

# The rules with `resources: gpu=1`; each stops at its start when training.require_gpu forbids the CPU.
GPU_RULES = ("train", "evaluate", "gradcam", "transfer")
CHECK_COMMANDS = (
    "`snakemake check_environment --use-conda` (with your profile, on a GPU node) or "
    "`python scripts/check_environment.py`"
)

_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0"}


def has_gpu(devices: str | Path = "/dev") -> bool:
    """Whether this machine has an NVIDIA GPU, judged by its device nodes, without importing TensorFlow.

    A device node says a card is there, not that the installed TensorFlow can use it (a CPU-only
    build, or CUDA libraries missing): code that has TensorFlow imported anyway should prefer
    `tf.config.list_physical_devices("GPU")`.
    """
    return any(Path(devices).glob("nvidia[0-9]*"))


def resolve_switch(value, has_gpu: bool) -> bool:
    """Resolve a mixed_precision / xla config value: 'auto' is on with a GPU and off on a CPU.

    Booleans pass through; the strings true/false, on/off, yes/no, 1/0 are accepted as well
    (YAML and command lines spell them either way). Anything else is an error, never a silent True.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word == "auto":
            return bool(has_gpu)
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"hardware switch: {value!r} is not 'auto', true or false")


def tensorflow_sees_gpu() -> bool:
    """Whether TensorFlow can run on a GPU in this process (imports TensorFlow)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def set_threads_and_memory(threads: int, inter_op_threads: int | None = None) -> bool:
    """Set TensorFlow's thread counts and GPU memory growth; False where TensorFlow had started already (kept as is)."""
    import tensorflow as tf

    try:  # only possible before TensorFlow's first op (always so in a Snakemake job)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        if inter_op_threads is not None:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
        for gpu in tf.config.list_physical_devices("GPU"):  # take GPU memory as needed, not the whole card
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        return False  # TensorFlow already ran an op in this process (tests): its thread and memory settings stay
    return True


def machine_gpus(devices: str | Path = "/dev") -> dict:
    """The NVIDIA GPUs of the machine, independent of TensorFlow: nvidia-smi -L lines and device nodes."""
    listing = None
    if shutil.which("nvidia-smi"):
        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            listing = None
    lines = [line.strip() for line in (listing or "").splitlines() if line.startswith("GPU ")]
    return {
        "nvidia_smi": lines,
        "device_nodes": [f"/dev/nvidia{n}" for n in device_node_ids(devices)],
        "nvidia_smi_found": shutil.which("nvidia-smi") is not None,
    }


def tensorflow_info() -> dict:
    """TensorFlow's version, the GPUs it sees and its CUDA/cuDNN build; 'error' when it cannot be imported."""
    try:
        import tensorflow as tf
    except Exception as error:  # ImportError, or a broken install failing inside TensorFlow
        return {"error": f"{type(error).__name__}: {error}"}
    build = dict(tf.sysconfig.get_build_info())
    devices = tf.config.list_physical_devices("GPU")
    return {
        "version": tf.__version__,
        "gpus": [device.name for device in devices],
        "gpu_details": [gpu_details(tf, device) for device in devices],
        "built_with_cuda": bool(build.get("is_cuda_build", tf.test.is_built_with_cuda())),
        "cuda_version": build.get("cuda_version"),
        "cudnn_version": build.get("cudnn_version"),
        "cuda_packages": cuda_packages(),
    }


def gpu_details(tf, device) -> dict:
    """A GPU as TensorFlow describes it: device name, model and compute capability (where TensorFlow reports them)."""
    try:
        details = tf.config.experimental.get_device_details(device)
    except (RuntimeError, ValueError):
        details = {}
    capability = details.get("compute_capability")
    return {
        "device": device.name,
        "name": details.get("device_name"),
        "compute_capability": ".".join(map(str, capability)) if capability else None,
    }


def nvidia_smi_gpus() -> list[dict]:
    """Name and driver version of each NVIDIA GPU of the machine (nvidia-smi --query-gpu); [] without nvidia-smi."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [[field.strip() for field in line.split(",")] for line in listing.splitlines()]
    return [{"name": row[0], "driver_version": row[1]} for row in rows if len(row) == 2 and all(row)]


def cuda_packages() -> list[str]:
    """The nvidia-* pip packages (CUDA, cuDNN, ...) in this environment, as tensorflow[and-cuda] installs them."""
    names = {dist.metadata["Name"] for dist in metadata.distributions()}
    return sorted(name for name in names if name and name.lower().startswith("nvidia-"))


def machine_has_gpu(machine: dict) -> bool:
    """Whether the machine shows an NVIDIA GPU (a machine_gpus() dict): nvidia-smi lists one or /dev/nvidia* exist."""
    return bool(machine["nvidia_smi"] or machine["device_nodes"])


def hidden_by_visible_devices(environ: Mapping[str, str]) -> list[str]:
    """The reason to unset CUDA_VISIBLE_DEVICES when it is set to hide every GPU ('', '-1'); [] otherwise."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and not parse_visible_devices(visible):
        return [f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU; unset it"]
    return []


def gpu_not_seen_reasons(machine: dict, tf_info: dict, environ: Mapping[str, str]) -> list[str]:
    """Why TensorFlow may see none of the machine's GPUs, each with what to install or check (tensorflow_info dicts)."""
    reasons = hidden_by_visible_devices(environ)
    install = f"`pip install tensorflow[and-cuda]=={tf_info['version']}`"
    if not tf_info["built_with_cuda"]:
        reasons.append(f"this TensorFlow is a CPU-only build; install the CUDA build: {install} (envs/tensorflow.yaml)")
    else:
        packages = tf_info.get("cuda_packages")
        missing = "none of the nvidia-* CUDA packages is installed in this environment; " if packages == [] else ""
        reasons.append(
            f"TensorFlow {tf_info['version']} was built for CUDA {tf_info['cuda_version']} / cuDNN "
            f"{tf_info['cudnn_version']} but could not load them: {missing}install the CUDA libraries with "
            f"{install} (envs/tensorflow.yaml has them), and check that the driver (nvidia-smi) is new "
            "enough for that CUDA"
        )
    if not machine["nvidia_smi"]:
        reasons.append("nvidia-smi lists no GPU (driver not loaded, or not on PATH)")
    return reasons


class GpuRequiredError(RuntimeError):
    """A GPU rule that training.require_gpu forbids to run on the CPU."""


def gpu_requirement_error(require, machine: dict, tf_info: dict, environ: Mapping[str, str]) -> str | None:
    """Why a GPU rule must stop under training.require_gpu, or None when it may run.

    auto: stop where the machine has a GPU (nvidia-smi, /dev/nvidia*) that TensorFlow does not see; true: stop
    whenever TensorFlow sees no GPU; false: never stop (CPU training allowed).
    """
    if not resolve_switch(require, machine_has_gpu(machine)):
        return None
    setting = f"config training.require_gpu: {str(require).lower()}"
    if "error" in tf_info:
        return (
            f"TensorFlow cannot be imported ({tf_info['error']}); {setting}. Use the tensorflow env "
            "(snakemake --use-conda) or pip install --require-hashes -r requirements-gpu.lock, then check with "
            + CHECK_COMMANDS
            + "."
        )
    if tf_info["gpus"]:
        return None
    if machine_has_gpu(machine):
        shown = "; ".join(machine["nvidia_smi"]) or ", ".join(machine["device_nodes"])
        head = (
            f"this machine has a GPU ({shown}) but TensorFlow {tf_info['version']} sees none, so this job would "
            f"run on the CPU, many times slower; stopped before any work ({setting})."
        )
        reasons = gpu_not_seen_reasons(machine, tf_info, environ)
    else:
        head = (
            f"TensorFlow sees no GPU and this machine shows none (nvidia-smi: "
            f"{'no GPU listed' if machine['nvidia_smi_found'] else 'not found'}, no /dev/nvidia* device nodes); "
            f"stopped before any work ({setting}). Run the GPU rules on a GPU node "
            "(e.g. --profile profiles/slurm)."
        )
        reasons = hidden_by_visible_devices(environ)
    return (
        head
        + "".join(f" ({i}) {reason}." for i, reason in enumerate(reasons, 1))
        + f" Check the machine with {CHECK_COMMANDS}. To train on the CPU anyway, set training.require_gpu: false."
    )


def enforce_gpu_requirement(
    require, rule: str, environ: Mapping[str, str] | None = None, devices: str | Path = "/dev"
) -> None:
    """Raise GpuRequiredError, naming the rule, when training.require_gpu forbids this job to run on the CPU.

    Cheap where it cannot stop: false returns at once, and auto on a machine without GPU never imports TensorFlow.
    bloodcells.jobsetup calls it after gpu_lock.pin_job_to_gpu (which sets CUDA_VISIBLE_DEVICES), before any data.
    """
    environ = os.environ if environ is None else environ
    if not resolve_switch(require, has_gpu=True):  # false, in any spelling: never stops
        return
    machine = machine_gpus(devices)
    if not resolve_switch(require, machine_has_gpu(machine)):
        return
    message = gpu_requirement_error(require, machine, tensorflow_info(), environ)
    if message:
        raise GpuRequiredError(f"{rule}: {message}")


# --- The environment check (scripts/check_environment.py, rule check_environment) ---

LOW_DISK_BYTES = 20 * 1024**3  # the full study writes ~10 GB (datasets, 12 models, checkpoints)


def free_bytes(path: str | Path) -> tuple[Path, int]:
    """Free space of the file system `path` is on (or will be on: its nearest existing parent)."""
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    return path, shutil.disk_usage(path).free


def diagnose(machine: dict, tf_info: dict, environ: dict, free: int) -> list[str]:
    """The warnings to print: GPU rules that would run on the CPU, and why; little disk space."""
    warnings = []
    rules = ", ".join(GPU_RULES)
    if "error" in tf_info:
        warnings.append(
            f"TensorFlow cannot be imported ({tf_info['error']}): {rules} will fail. "
            "Use the tensorflow env (snakemake --use-conda) or pip install --require-hashes -r requirements-gpu.lock."
        )
    elif machine_has_gpu(machine) and not tf_info["gpus"]:
        reasons = gpu_not_seen_reasons(machine, tf_info, environ)
        warnings.append(
            f"GPU present but TensorFlow sees none: the GPU rules ({rules}) would run on the CPU, many "
            "times slower (with training.require_gpu: auto, the default, they stop instead). "
            + " ".join(f"({i}) {r}." for i, r in enumerate(reasons, 1))
        )
    if free < LOW_DISK_BYTES:
        warnings.append(f"only {free / 1024**3:.1f} GB free for results/; the full study needs about 20 GB")
    return warnings


def format_report(machine: dict, tf_info: dict, results: Path, free: int, warnings: list[str], environ: dict) -> str:
    """The environment check's report: Python, TensorFlow and its CUDA build, the machine's GPUs, disk, warnings."""
    lines = [
        "Environment check (scripts/check_environment.py)",
        f"  python:               {sys.version.split()[0]} ({sys.executable})",
    ]
    if "error" in tf_info:
        lines.append(f"  TensorFlow:           NOT IMPORTABLE: {tf_info['error']}")
    else:
        lines += [
            f"  TensorFlow:           {tf_info['version']}",
            f"  GPUs TensorFlow sees: {', '.join(tf_info['gpus']) or 'none'}",
            f"  built with CUDA:      {tf_info['cuda_version'] or '-'} (cuDNN {tf_info['cudnn_version'] or '-'})"
            + ("" if tf_info["built_with_cuda"] else "  [CPU-only build]"),
            f"  nvidia-* packages:    {', '.join(tf_info.get('cuda_packages') or []) or 'none'}",
        ]
    no_gpu_listed = "no GPU listed" if machine["nvidia_smi_found"] else "nvidia-smi not found"
    lines += [
        f"  nvidia-smi -L:        {'; '.join(machine['nvidia_smi']) or no_gpu_listed}",
        f"  device nodes:         {', '.join(machine['device_nodes']) or 'none'}",
        f"  CUDA_VISIBLE_DEVICES: {environ.get('CUDA_VISIBLE_DEVICES', '(not set)')!s}",
        f"  free disk at {results}: {free / 1024**3:.1f} GB",
    ]
    lines += [f"WARNING: {warning}" for warning in warnings]
    if not warnings:
        lines.append("OK: no problems found")
    return "\n".join(lines)


def environment_report(
    results: str | Path = "results", environ: dict | None = None, devices: str | Path = "/dev"
) -> tuple[str, list[str]]:
    """Check this machine and environment: the report to print and its warnings."""
    environ = dict(os.environ if environ is None else environ)
    machine = machine_gpus(devices)
    tf_info = tensorflow_info()
    where, free = free_bytes(results)
    warnings = diagnose(machine, tf_info, environ, free)
    return format_report(machine, tf_info, where, free, warnings, environ), warnings
