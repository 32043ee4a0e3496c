"""The environment check's report: Python, TensorFlow and its CUDA build, the machine's GPUs, free disk, warnings.

scripts/check_environment.py and rule check_environment print it."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from . import gpus
from .hardware import GPU_RULES, INSTALL_ADVICE, gpu_not_seen_reasons

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
        warnings.append(f"TensorFlow cannot be imported ({tf_info['error']}): {rules} will fail. {INSTALL_ADVICE}.")
    elif gpus.machine_has_gpu(machine) and not tf_info["gpus"]:
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
    machine = gpus.machine_gpus(devices)
    tf_info = gpus.tensorflow_info()
    where, free = free_bytes(results)
    warnings = diagnose(machine, tf_info, environ, free)
    return format_report(machine, tf_info, where, free, warnings, environ), warnings
