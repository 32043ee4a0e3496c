"""Where a report's numbers come from: the code's git state, package versions, the data files' MD5 and the
hardware (the config's hash is bloodcells.plan.config_hash; job times are read by bloodcells.report)."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path


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
    return {"hostname": platform.node(), "os": platform.platform(), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "memory_gib": memory_gib()}
