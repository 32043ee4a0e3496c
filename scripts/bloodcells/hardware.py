"""Hardware switches: 'auto' of mixed precision and XLA, training.require_gpu, TensorFlow's threads and memory.

A GPU rule stops at its start where training.require_gpu forbids it to run on a CPU."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from . import gpus

# The rules with `resources: gpu=1`; each stops at its start when training.require_gpu forbids the CPU.
GPU_RULES = ("train", "evaluate", "gradcam", "transfer")
CHECK_COMMANDS = (
    "`snakemake check_environment --use-conda` (with your profile, on a GPU node) or "
    "`python scripts/check_environment.py`"
)
PIP_INSTALL = "pip install --require-hashes -r requirements-gpu.lock"
INSTALL_ADVICE = f"Use the tensorflow env (snakemake --use-conda) or {PIP_INSTALL}"

_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0"}


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


def hidden_by_visible_devices(environ: Mapping[str, str]) -> list[str]:
    """The reason to unset CUDA_VISIBLE_DEVICES when it is set to hide every GPU ('', '-1'); [] otherwise."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and not gpus.parse_visible_devices(visible):
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
    if not resolve_switch(require, gpus.machine_has_gpu(machine)):
        return None
    setting = f"config training.require_gpu: {str(require).lower()}"
    if "error" in tf_info:
        return (
            f"TensorFlow cannot be imported ({tf_info['error']}); {setting}. {INSTALL_ADVICE}, then check with "
            f"{CHECK_COMMANDS}."
        )
    if tf_info["gpus"]:
        return None
    if gpus.machine_has_gpu(machine):
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
    machine = gpus.machine_gpus(devices)
    if not resolve_switch(require, gpus.machine_has_gpu(machine)):
        return
    message = gpu_requirement_error(require, machine, gpus.tensorflow_info(), environ)
    if message:
        raise GpuRequiredError(f"{rule}: {message}")
