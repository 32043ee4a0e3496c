"""Where a report's numbers come from: the code's git state, package versions, the data files' MD5, the host of
each training session and of the report (the config's hash is bloodcells.plan.config_hash; job times are read by
bloodcells.report)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from .download import file_md5
from .gpus import nvidia_smi_gpus, tensorflow_info

PACKAGES = ("tensorflow", "keras", "numpy", "pandas", "scikit-learn", "matplotlib", "jinja2")


def git_state(repo: str | Path) -> dict:
    """The commit checked out at `repo` and whether tracked files differ from it; 'unknown' outside git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown (not a git checkout, or git is missing)", "dirty": None}
    return {"commit": commit, "dirty": dirty}


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of the packages the results depend on ('not installed' where absent)."""
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def data_files(paths: Sequence[str | Path]) -> list[dict]:
    """Path, size and MD5 of each data file."""
    return [{"path": str(p), "bytes": Path(p).stat().st_size, "md5": file_md5(Path(p))} for p in paths]


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux), else what platform reports."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib(meminfo: str | Path = "/proc/meminfo") -> float | None:
    """Total memory in GiB (Linux), None where unknown."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def host() -> dict:
    """This machine: host name, OS, CPU model and count, memory."""
    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": memory_gib(),
    }


def training_session(xla: bool, mixed_precision: bool, threads: int, environ: Mapping[str, str] | None = None) -> dict:
    """Where and how this training job runs: host, GPUs (model, driver), TensorFlow build, switches, SLURM job."""
    environ = os.environ if environ is None else environ
    tf = tensorflow_info()
    return host() | {
        "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "gpus": nvidia_smi_gpus(),  # the machine's cards, as nvidia-smi names them
        "gpus_tensorflow": tf.get("gpu_details", []),  # the cards this job trains on
        "cuda_visible_devices": environ.get("CUDA_VISIBLE_DEVICES"),
        "tensorflow": tf.get("version"),
        "cuda_build": tf.get("cuda_version"),
        "cudnn_build": tf.get("cudnn_version"),
        "xla": xla,
        "mixed_precision": mixed_precision,
        "threads": threads,
        "slurm_job_id": environ.get("SLURM_JOB_ID"),
        "slurm_job_nodelist": environ.get("SLURM_JOB_NODELIST"),
    }


def training_hosts(runs: Sequence[str], paths: Sequence[str | Path]) -> dict[str, list[dict]]:
    """The training sessions of each run, read from its host.json (written by rule train)."""
    hosts = {}
    for run, path in zip(runs, paths, strict=True):
        record = json.loads(Path(path).read_text())
        if record.get("run") != run or not isinstance(record.get("sessions"), list):
            raise ValueError(
                f"{path}: expected the host record of run '{run}' with a 'sessions' list, "
                f"found run {record.get('run')!r} and keys {sorted(record)}"
            )
        hosts[run] = record["sessions"]
    return hosts
