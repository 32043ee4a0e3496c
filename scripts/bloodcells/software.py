"""Whether the jobs will find their packages: without conda every job runs with Snakemake's own Python.

Snakemake starts each job, local or SLURM, as `<its own sys.executable> -m snakemake ...` unless a software
deployment method (conda) gives the rule an environment of its own. A light login venv (requirements-login.txt)
plans and submits, but each of its jobs would fail on its first import; this says so before the first submission.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable

from .hardware import PIP_INSTALL

# The third-party modules the rule scripts import (tests/test_software.py checks this against the scripts), but
# medmnist: only BloodMNIST downloads read it (installed apart, --no-deps); the demo and the tests run without it.
JOB_MODULES = (
    "h5py",
    "jinja2",
    "keras",
    "matplotlib",
    "numpy",
    "pandas",
    "PIL",
    "scipy",
    "sklearn",
    "tensorflow",
    "yaml",
)


def missing_modules(modules: Iterable[str], find: Callable[[str], object] = importlib.util.find_spec) -> list[str]:
    """The modules that this Python cannot import (found without importing them: TensorFlow takes seconds)."""
    return [module for module in modules if find(module) is None]


def job_software_problem(uses_conda: bool, missing: list[str], python: str) -> str | None:
    """Why the jobs cannot run with this Python, naming both ways out, or None (conda envs, or nothing missing)."""
    if uses_conda or not missing:
        return None
    return (
        f"The jobs would run with Snakemake's own Python, {python} (no conda: each job, on SLURM too, starts as "
        f"'{python} -m snakemake'), which lacks {', '.join(missing)}: every training, evaluation and report job "
        "would fail. No job was started or submitted. Either install the full environment where this Python "
        f"lives, on a file system the nodes see (README 'On a cluster', pip: {PIP_INSTALL}), or give each job a "
        "conda env of its own: add --software-deployment-method conda (README 'On a cluster', conda)."
    )
