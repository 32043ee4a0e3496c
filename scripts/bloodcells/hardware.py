"""Hardware switches: whether a GPU is there, and how 'auto' of mixed precision and XLA resolves."""

from __future__ import annotations

from pathlib import Path

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
