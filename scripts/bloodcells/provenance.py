"""Where a report's numbers come from: the code's git state, package versions, the config's hash, the data
files' MD5, the hardware, and each training job's wall time and peak memory (Snakemake benchmark files)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import pandas as pd

from .sources import file_md5

PACKAGES = ("tensorflow", "keras", "numpy", "pandas", "scikit-learn", "matplotlib", "jinja2")


def git_state(repo: str | Path) -> dict:
    """The commit checked out at `repo` and whether tracked files differ from it; 'unknown' outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()
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


def config_hash(config: dict) -> str:
    """SHA-256 of the config as canonical JSON (sorted keys): equal configs hash equal however they were written."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


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


def benchmark_rows(runs: Sequence[str], paths: Sequence[str | Path]) -> list[dict]:
    """Wall time (s) and peak resident memory (MiB) of each run's training job, from Snakemake's benchmark files."""
    rows = []
    for run, path in zip(runs, paths):
        frame = pd.read_csv(path, sep="\t")
        missing = {"s", "max_rss"} - set(frame.columns)
        if missing:
            raise ValueError(f"{path}: benchmark file lacks columns {sorted(missing)}")
        last = frame.iloc[-1]  # with --benchmark-repeats, the last repeat
        rows.append({"run": run, "wall_s": float(last["s"]), "max_rss_mib": float(last["max_rss"])})
    return rows


def host() -> dict:
    """This machine: host name, OS, CPU model and count, memory."""
    return {"hostname": platform.node(), "os": platform.platform(), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "memory_gib": memory_gib()}
