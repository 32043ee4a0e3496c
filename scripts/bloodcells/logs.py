"""Send everything a script's process writes (Python, C/C++ libraries such as TensorFlow's, child processes)
to its Snakemake log file."""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
from pathlib import Path

from .gpus import has_gpu, machine_gpus, machine_has_gpu

# What TensorFlow prints on a machine without NVIDIA GPU, which reads like a failure but only says "no GPU here":
#   I... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.  (twice, at import)
#   E... cuda_platform.cc:52] failed call to cuInit: ... UNKNOWN ERROR (303)
#        (first device query, CUDA stubs, no driver)
#   I... cuda_diagnostics.cc:...] retrieving CUDA diagnostic information for host: ...   (older TF, after cuInit fails)
# TF_CPP_MIN_LOG_LEVEL cannot remove them: the cudart_stub lines come before absl::InitializeLog() and are printed
# at any level (checked with TF 2.21, levels 1-3), and the cuInit line is at E, so hiding it (level 3) would hide
# every real error too. So only where the machine shows no GPU (no /dev/nvidia*, nvidia-smi lists none), fds 1 and 2
# go through a filter that drops just these lines and writes one line saying so instead; on a GPU host nothing is
# filtered (there a failing cuInit is a real error).
CPU_HOST_NOISE = (
    r"cudart_stub\.cc:\d+\] Could not find cuda drivers|\] failed call to cuInit: |cuda_diagnostics\.cc:\d+\] "
)

# The filter: a separate process (python -I), so that it still writes out what a crashing or killed job wrote last;
# it ignores SIGINT/SIGTERM/SIGHUP and ends at end of input, when every writer (the job, its children) has ended.
_FILTER = """
import os, re, signal, sys
for name in ("SIGINT", "SIGTERM", "SIGHUP"):
    signal.signal(getattr(signal, name), signal.SIG_IGN)
noise, note = re.compile(sys.argv[1].encode()), sys.argv[2].encode() + b"\\n"
for line in sys.stdin.buffer:
    if noise.search(line):
        line, note = note, b""
    try:
        while line:
            line = line[os.write(1, line):]
    except OSError:
        pass  # a full disk: keep reading, so the job never blocks or fails writing its output
"""

_filtered: dict = {}  # this process's log fd, filter process and pipe, while fds 1 and 2 go through the filter


def no_gpu_note(devices: str | Path = "/dev") -> str | None:
    """The line that replaces TensorFlow's CUDA-stub noise where the machine shows no NVIDIA GPU; None where it does."""
    if has_gpu(devices):  # device nodes: no need to start nvidia-smi
        return None
    machine = machine_gpus(devices)
    if machine_has_gpu(machine):
        return None
    smi = "nvidia-smi lists none" if machine["nvidia_smi_found"] else "no nvidia-smi"
    return f"no NVIDIA GPU on {socket.gethostname()} (no /dev/nvidia*, {smi}): TensorFlow runs on the CPU"


def _start_filter(log: int, note: str) -> int:
    """Start the noise filter writing to `log`; return the write end of the pipe that feeds it."""
    read, write = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-c", _FILTER, CPU_HOST_NOISE, note],
            stdin=read,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    except BaseException:
        os.close(write)
        raise
    finally:
        os.close(read)
    if not _filtered:
        atexit.register(_finish_filter)
    else:  # called again (tests calling several adapters in one process): the earlier filter ends by itself
        os.close(_filtered["log"])
    stat = os.fstat(write)
    _filtered.update(log=log, process=process, pipe=(stat.st_dev, stat.st_ino))
    return write


def _finish_filter() -> None:
    """At exit: point fds 1 and 2 straight at the log, so the filter reads to the end; wait until it has written it."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    for fd in (1, 2):
        try:
            stat = os.fstat(fd)
        except OSError:
            continue
        if (stat.st_dev, stat.st_ino) == _filtered["pipe"]:  # not when someone (pytest) has redirected it since
            os.dup2(_filtered["log"], fd)
    try:
        _filtered["process"].wait(timeout=10)  # longer only if a child process still holds the pipe
    except subprocess.TimeoutExpired:
        pass


def log_to_file(path: str | None) -> None:
    """Point fds 1 and 2 at the rule's log (C/C++ and child output too), sys.stdout/stderr line-buffered onto them."""
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):  # what was written before the redirect still goes where it was headed
        if stream is not None:
            stream.flush()
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    note = no_gpu_note()
    target = log
    if note:
        try:
            target = _start_filter(log, note)
        except OSError:
            pass  # no filter (no sys.executable, no processes left): the log gets TensorFlow's lines as they are
    os.dup2(target, 1)
    os.dup2(target, 2)
    if target not in (1, 2):  # (it is, where the process started with fd 1 or 2 closed)
        os.close(target)  # the log itself stays open where the filter's exit handler needs it
    # One line-buffered object for both, writing to fd 1: Python's lines reach the log in the order they were
    # written, each before any later C-level write (Keras' per-epoch lines among TensorFlow's).
    sys.stdout = sys.stderr = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
