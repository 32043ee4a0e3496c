"""Which NVIDIA GPUs this machine has and which of them TensorFlow sees.

Device nodes, nvidia-smi and CUDA_VISIBLE_DEVICES without TensorFlow; TensorFlow's devices and CUDA build in the
functions that say they import it."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path


def has_gpu(devices: str | Path = "/dev") -> bool:
    """Whether this machine has an NVIDIA GPU, judged by its device nodes, without importing TensorFlow.

    A device node says a card is there, not that the installed TensorFlow can use it (a CPU-only
    build, or CUDA libraries missing): code that has TensorFlow imported anyway should prefer
    `tf.config.list_physical_devices("GPU")`.
    """
    return bool(device_node_ids(devices))


def device_node_ids(devices: str | Path = "/dev") -> list[str]:
    """Card indices from the device nodes /dev/nvidia0, /dev/nvidia1, ... (not nvidiactl or nvidia-uvm)."""
    found = [path.name[len("nvidia") :] for path in Path(devices).glob("nvidia[0-9]*")]
    return sorted((name for name in found if name.isdigit()), key=int)


def parse_visible_devices(value: str) -> list[str]:
    """The card ids of a CUDA_VISIBLE_DEVICES value ("0,1", "GPU-3f2c...", ""); "-1" or "" means none."""
    ids = [part.strip() for part in value.split(",") if part.strip()]
    # CUDA ignores everything from the first invalid index on; "-1" is the usual way to hide all cards.
    cards = []
    for card in ids:
        if card.startswith("-"):
            break
        cards.append(card)
    return cards


def nvidia_smi(arguments: Sequence[str], check: bool = False) -> str | None:
    """What `nvidia-smi arguments` prints; None where nvidia-smi is missing, cannot run, or (with `check`) fails."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        command = ["nvidia-smi", *arguments]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=check).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def parse_nvidia_smi(listing: str) -> list[str]:
    """Card indices from `nvidia-smi -L` ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)"); MIG lines are skipped."""
    return [match.group(1) for match in re.finditer(r"^GPU (\d+):", listing, flags=re.MULTILINE)]


def nvidia_smi_ids(run: Callable[[Sequence[str]], str] | None = None) -> list[str] | None:
    """Card indices that `nvidia-smi -L` lists (through `run` where given), or None when nvidia-smi is missing or
    fails."""
    if run is None:
        listing = nvidia_smi(["-L"], check=True)
        return None if listing is None else parse_nvidia_smi(listing)
    try:
        return parse_nvidia_smi(run(["nvidia-smi", "-L"]))
    except (OSError, subprocess.SubprocessError):
        return None


def nvidia_smi_gpus(fields: Sequence[str] = ("name", "driver_version")) -> list[dict]:
    """Each NVIDIA GPU of the machine as nvidia-smi --query-gpu gives `fields` (field -> value); [] without
    nvidia-smi."""
    listing = nvidia_smi(["--query-gpu=" + ",".join(fields), "--format=csv,noheader"]) or ""
    rows = [[value.strip() for value in line.split(",")] for line in listing.splitlines()]
    return [dict(zip(fields, row, strict=True)) for row in rows if len(row) == len(fields) and all(row)]


def machine_gpus(devices: str | Path = "/dev") -> dict:
    """The NVIDIA GPUs of the machine, independent of TensorFlow: nvidia-smi -L lines and device nodes."""
    listing = nvidia_smi(["-L"])
    return {
        "nvidia_smi": [line.strip() for line in (listing or "").splitlines() if line.startswith("GPU ")],
        "device_nodes": [f"/dev/nvidia{n}" for n in device_node_ids(devices)],
        "nvidia_smi_found": shutil.which("nvidia-smi") is not None,
    }


def machine_has_gpu(machine: dict) -> bool:
    """Whether the machine shows an NVIDIA GPU (a machine_gpus() dict): nvidia-smi lists one or /dev/nvidia* exist."""
    return bool(machine["nvidia_smi"] or machine["device_nodes"])


def tensorflow_sees_gpu() -> bool:
    """Whether TensorFlow can run on a GPU in this process (imports TensorFlow)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


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


def cuda_packages() -> list[str]:
    """The nvidia-* pip packages (CUDA, cuDNN, ...) in this environment, as tensorflow[and-cuda] installs them."""
    names = {dist.metadata["Name"] for dist in metadata.distributions()}
    return sorted(name for name in names if name and name.lower().startswith("nvidia-"))
