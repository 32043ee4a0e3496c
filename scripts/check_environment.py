"""Check the machine before a long run: TensorFlow, its GPUs, its CUDA/cuDNN build and free disk space.

The first thing to run on a "GPU not found" problem:

    python scripts/check_environment.py [--results results] [--strict]
    snakemake check_environment --use-conda      # the same, inside the tensorflow env (on a GPU node via a profile)

It prints TensorFlow's version, the GPUs TensorFlow sees, the CUDA and cuDNN versions TensorFlow
was built with, what the machine itself shows (nvidia-smi, /dev/nvidia*), and the free space
where results/ lives; and a WARNING when the machine has a GPU that TensorFlow does not see, so
the GPU rules (train, evaluate, gradcam, transfer) would run on the CPU (with training.require_gpu:
auto they stop with the same diagnosis instead). --strict exits 1 on warnings.
The checks themselves are bloodcells.environment.environment_report.

No `from __future__` import: Snakemake's script: directive puts its preamble above the first line.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bloodcells, when run directly

from bloodcells.environment import environment_report  # noqa: E402


def command_line(argv: list[str] | None = None) -> int:
    """The command: print the report; exit status 1 on a warning with --strict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results", help="the results folder (its free disk space is shown)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when there is a warning")
    args = parser.parse_args(argv)
    report, warnings = environment_report(args.results)
    print(report, flush=True)
    return 1 if warnings and args.strict else 0


def main(smk) -> None:
    """Snakemake adapter: the report goes to stdout (the terminal, so no log redirect), the job's log and outputs."""
    report, _ = environment_report(smk.params.results)
    print(report, flush=True)
    for path in [*smk.log, *smk.output]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(report + "\n")


if __name__ == "__main__":
    if "snakemake" in globals():
        main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
    else:
        sys.exit(command_line())
