"""Check the machine before a long run: TensorFlow, its GPUs, its CUDA/cuDNN build and free disk space.

The first thing to run on a "GPU not found" problem:

    python scripts/check_environment.py [--results results] [--strict]
    snakemake check_environment --use-conda      # the same, inside the tensorflow env (on a GPU node via a profile)

It prints TensorFlow's version, the GPUs TensorFlow sees, the CUDA and cuDNN versions TensorFlow
was built with, what the machine itself shows (nvidia-smi, /dev/nvidia*), and the free space
where results/ lives; and a WARNING when the machine has a GPU that TensorFlow does not see, so
the GPU rules (train, evaluate, gradcam) would silently run on the CPU. --strict exits 1 on warnings.

No `from __future__` import: Snakemake's script: directive puts its preamble above the first line.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bloodcells, when run directly

from bloodcells.gpu_lock import parse_visible_devices  # noqa: E402
from bloodcells.hardware import machine_gpus, tensorflow_info  # noqa: E402

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
    has_gpu = bool(machine["nvidia_smi"] or machine["device_nodes"])
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if "error" in tf_info:
        warnings.append(f"TensorFlow cannot be imported ({tf_info['error']}): train, evaluate and gradcam will fail. "
                        "Use the tensorflow env (snakemake --use-conda) or pip install -r requirements.txt.")
    elif has_gpu and not tf_info["gpus"]:
        reasons = []
        if visible is not None and not parse_visible_devices(visible):
            reasons.append(f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU; unset it")
        if not tf_info["built_with_cuda"]:
            reasons.append("this TensorFlow is a CPU-only build; install tensorflow[and-cuda] (envs/tensorflow.yaml)")
        else:
            reasons.append(f"TensorFlow was built for CUDA {tf_info['cuda_version']} / cuDNN {tf_info['cudnn_version']} "
                           "but could not load them: are the nvidia-* pip packages of tensorflow[and-cuda] installed "
                           "in this environment, and is the driver (nvidia-smi) new enough for that CUDA?")
        if not machine["nvidia_smi"]:
            reasons.append("nvidia-smi lists no GPU (driver not loaded, or not on PATH)")
        warnings.append("GPU present but TensorFlow sees none: the GPU rules (train, evaluate, gradcam) would run on "
                        "the CPU, many times slower. " + " ".join(f"({i}) {r}." for i, r in enumerate(reasons, 1)))
    if free < LOW_DISK_BYTES:
        warnings.append(f"only {free / 1024**3:.1f} GB free for results/; the full study needs about 20 GB")
    return warnings


def format_report(machine: dict, tf_info: dict, results: Path, free: int, warnings: list[str], environ: dict) -> str:
    lines = ["Environment check (scripts/check_environment.py)", f"  python:               {sys.version.split()[0]} ({sys.executable})"]
    if "error" in tf_info:
        lines.append(f"  TensorFlow:           NOT IMPORTABLE: {tf_info['error']}")
    else:
        lines += [
            f"  TensorFlow:           {tf_info['version']}",
            f"  GPUs TensorFlow sees: {', '.join(tf_info['gpus']) or 'none'}",
            f"  built with CUDA:      {tf_info['cuda_version'] or '-'} (cuDNN {tf_info['cudnn_version'] or '-'})"
            + ("" if tf_info["built_with_cuda"] else "  [CPU-only build]"),
        ]
    lines += [
        f"  nvidia-smi -L:        {'; '.join(machine['nvidia_smi']) or ('no GPU listed' if machine['nvidia_smi_found'] else 'nvidia-smi not found')}",
        f"  device nodes:         {', '.join(machine['device_nodes']) or 'none'}",
        f"  CUDA_VISIBLE_DEVICES: {environ.get('CUDA_VISIBLE_DEVICES', '(not set)')!s}",
        f"  free disk at {results}: {free / 1024**3:.1f} GB",
    ]
    lines += [f"WARNING: {warning}" for warning in warnings]
    if not warnings:
        lines.append("OK: no problems found")
    return "\n".join(lines)


def check(results: str | Path = "results", environ: dict | None = None, devices: str | Path = "/dev") -> tuple[str, list[str]]:
    environ = dict(os.environ if environ is None else environ)
    machine = machine_gpus(devices)
    tf_info = tensorflow_info()
    where, free = free_bytes(results)
    warnings = diagnose(machine, tf_info, environ, free)
    return format_report(machine, tf_info, where, free, warnings, environ), warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results", help="the results folder (its free disk space is shown)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when there is a warning")
    args = parser.parse_args(argv)
    report, warnings = check(args.results)
    print(report, flush=True)
    return 1 if warnings and args.strict else 0


def run_rule(smk) -> None:
    """Snakemake adapter: the report goes to stdout, the job's log and the rule's output file."""
    report, _ = check(smk.params.results)
    print(report, flush=True)
    for path in [*smk.log, *smk.output]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(report + "\n")


if __name__ == "__main__":
    if "snakemake" in globals():
        run_rule(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
    else:
        sys.exit(main())
