"""Hardware switches: whether a GPU is there, and how 'auto' of mixed precision and XLA resolves."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .gpu_lock import device_node_ids

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


def machine_gpus(devices: str | Path = "/dev") -> dict:
    """The NVIDIA GPUs of the machine, independent of TensorFlow: nvidia-smi -L lines and device nodes."""
    listing = None
    if shutil.which("nvidia-smi"):
        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            listing = None
    lines = [line.strip() for line in (listing or "").splitlines() if line.startswith("GPU ")]
    return {"nvidia_smi": lines, "device_nodes": [f"/dev/nvidia{n}" for n in device_node_ids(devices)],
            "nvidia_smi_found": shutil.which("nvidia-smi") is not None}


def tensorflow_info() -> dict:
    """TensorFlow's version, the GPUs it sees and its CUDA/cuDNN build; 'error' when it cannot be imported."""
    try:
        import tensorflow as tf
    except Exception as error:  # ImportError, or a broken install failing inside TensorFlow
        return {"error": f"{type(error).__name__}: {error}"}
    build = dict(tf.sysconfig.get_build_info())
    return {
        "version": tf.__version__,
        "gpus": [device.name for device in tf.config.list_physical_devices("GPU")],
        "built_with_cuda": bool(build.get("is_cuda_build", tf.test.is_built_with_cuda())),
        "cuda_version": build.get("cuda_version"),
        "cudnn_version": build.get("cudnn_version"),
    }
