"""Check the machine before a long run: TensorFlow, its GPUs, its CUDA/cuDNN build and free disk space.

The first thing to run on a "GPU not found" problem:

    python scripts/check_environment.py [--results results] [--strict]
    snakemake check_environment --use-conda      # the same, inside the tensorflow env (on a GPU node via a profile)

It prints TensorFlow's version, the GPUs TensorFlow sees, the CUDA and cuDNN versions TensorFlow
was built with, what the machine itself shows (nvidia-smi, /dev/nvidia*), and the free space
where results/ lives; and a WARNING when the machine has a GPU that TensorFlow does not see, so
the GPU rules (train, evaluate, gradcam, transfer) would run on the CPU (with training.require_gpu:
auto they stop with the same diagnosis instead). --strict exits 1 on warnings.

No `from __future__` import: Snakemake's script: directive puts its preamble above the first line.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bloodcells, when run directly

from bloodcells.hardware import (  # noqa: E402
    GPU_RULES,
    gpu_not_seen_reasons,
    machine_gpus,
    machine_has_gpu,
    tensorflow_info,
)

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
            "Use the tensorflow env (snakemake --use-conda) or pip install -r requirements.txt."
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


def check(
    results: str | Path = "results", environ: dict | None = None, devices: str | Path = "/dev"
) -> tuple[str, list[str]]:
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
