"""A rule's log gets everything its process writes: Python, C-level writes, child processes, TensorFlow's C++ lines."""

import ast
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO

from bloodcells.logs import CPU_HOST_NOISE, no_gpu_note

SCRIPTS = REPO / "scripts"

WRITER = r"""
import ctypes, os, subprocess, sys
from bloodcells.logs import log_to_file
print("0 before the redirect")
log_to_file(sys.argv[1])
print("1 print")
sys.stderr.write("2 sys.stderr\n")
os.write(2, b"3 os.write to fd 2\n")
ctypes.CDLL(None).write(2, b"4 libc write to fd 2\n", 21)
subprocess.run(["sh", "-c", "echo 5 child stderr >&2; echo 6 child stdout"], check=True)
os.write(2, b"E0000 00:00:1.2 42 cuda_executor.cc:99] 7 a real CUDA error stays\n")
import tensorflow as tf
tf.config.list_physical_devices("GPU")  # the first device query: cuInit, where it fails
print("8 after tensorflow")
for i in range(20000):  # more than a pipe holds: where a filter reads them, it is still busy when the job ends
    print(f"filler {i}")
sys.stdout.write("9 last words, no newline")
"""


def machine_shows_no_gpu() -> bool:
    """Judged here without the code under test: no /dev/nvidia* node and nvidia-smi (if any) lists no GPU."""
    if list(Path("/dev").glob("nvidia[0-9]*")):
        return False
    if shutil.which("nvidia-smi"):
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60).stdout
        return not re.search(r"^GPU \d+:", listing, flags=re.MULTILINE)
    return True


def run_python(code: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {
        key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")
    }
    env["PYTHONPATH"] = str(SCRIPTS)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, env=env, timeout=300, **kwargs)


def test_everything_the_process_writes_lands_in_its_log_in_order(tmp_path):
    log = tmp_path / "logs" / "rule.log"
    result = run_python(WRITER, str(log))
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout.decode() == "0 before the redirect\n"  # written before log_to_file: stays where it was
    assert result.stderr.decode() == ""  # nothing after the redirect escapes, TensorFlow's C++ lines included
    text = log.read_text()
    lines = text.splitlines()
    expected = [
        "1 print",
        "2 sys.stderr",
        "3 os.write to fd 2",
        "4 libc write to fd 2",
        "5 child stderr",
        "6 child stdout",
        "7 a real CUDA error stays",
        "8 after tensorflow",
        "9 last words, no newline",
    ]
    positions = [next((i for i, line in enumerate(lines) if line.endswith(marker)), None) for marker in expected]
    assert None not in positions, (
        f"missing from the log: {[m for m, p in zip(expected, positions, strict=True) if p is None]}\n{text}"
    )
    assert positions == sorted(positions), text
    assert lines[-1] == "9 last words, no newline"  # the job's exit waits until the log has everything
    assert lines[positions[7] + 1 : -1] == [f"filler {i}" for i in range(20000)]
    assert "port.cc" in text or "cpu_feature_guard" in text or "oneDNN" in text, text  # TensorFlow's own lines are here
    note = f"no NVIDIA GPU on {socket.gethostname()} (no /dev/nvidia*, "
    if machine_shows_no_gpu():
        for noise in ("cudart_stub", "cuInit", "Could not find cuda drivers"):
            assert noise not in text, text
        notes = [i for i, line in enumerate(lines) if line.startswith(note)]
        assert len(notes) == 1, text
        assert lines[notes[0]].endswith("): TensorFlow runs on the CPU")
        assert positions[6] < notes[0] < positions[7]  # where TensorFlow's noise was, between 7 and 8
    else:
        assert note not in text  # on a GPU host nothing is filtered or added


def test_the_log_is_complete_when_the_job_has_ended(tmp_path):
    # A long last line: where a filter process writes the log, it is still writing it when the job ends.
    log = tmp_path / "long.log"
    code = (
        "import sys\nfrom bloodcells.logs import log_to_file\nlog_to_file(sys.argv[1])\n"
        "print('x' * 8_000_000)\nsys.stdout.write('last')\n"
    )
    result = run_python(code, str(log))
    assert result.returncode == 0 and result.stdout == result.stderr == b""
    assert log.stat().st_size == 8_000_001 + 4


def test_what_a_job_wrote_just_before_it_was_killed_reaches_the_log(tmp_path):
    log = tmp_path / "killed.log"
    code = (
        "import os, signal, sys\nfrom bloodcells.logs import log_to_file\nlog_to_file(sys.argv[1])\n"
        "print('last line before SIGKILL')\nos.write(2, b'F0000 fatal: written to fd 2, then killed\\n')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = run_python(code, str(log))
    assert result.returncode == -signal.SIGKILL
    assert result.stdout == result.stderr == b""
    deadline = time.time() + 10  # a filter, where there is one, outlives the job and writes what is left
    while time.time() < deadline and "fatal" not in (log.read_text() if log.exists() else ""):
        time.sleep(0.05)
    assert log.read_text().splitlines() == ["last line before SIGKILL", "F0000 fatal: written to fd 2, then killed"]


def test_no_log_path_changes_nothing():
    result = run_python(
        "import os\nfrom bloodcells.logs import log_to_file\nlog_to_file(None)\nprint('out')\nos.write(2, b'err\\n')\n"
    )
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")


def test_the_no_gpu_line_is_decided_from_device_nodes_and_nvidia_smi(tmp_path):
    (tmp_path / "nvidia0").touch()
    assert no_gpu_note(tmp_path) is None  # a device node: a GPU host, nothing is filtered
    (tmp_path / "nvidia0").unlink()
    note = no_gpu_note(tmp_path)
    if shutil.which("nvidia-smi") is None:
        smi = "no nvidia-smi"
    elif machine_shows_no_gpu():
        smi = "nvidia-smi lists none"  # a driver without a card, or a container that shows none
    else:
        assert note is None  # nvidia-smi lists a GPU
        return
    assert note == f"no NVIDIA GPU on {socket.gethostname()} (no /dev/nvidia*, {smi}): TensorFlow runs on the CPU"


def test_only_the_known_cuda_noise_is_dropped():
    noise = re.compile(CPU_HOST_NOISE)
    dropped = [
        "I0000 00:00:1796053664.285838    4526 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
        "GPU will not be used.",
        "E0000 00:00:1796053663.035470    4439 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
        "Failed call to cuInit: UNKNOWN ERROR (303)",
        "2023-05-01 10:00:00.000000: E tensorflow/compiler/xla/stream_executor/cuda/cuda_driver.cc:268] failed call to "
        "cuInit: CUDA_ERROR_NO_DEVICE: no CUDA-capable device is detected",
        "2023-05-01 10:00:00.000000: I tensorflow/compiler/xla/stream_executor/cuda/cuda_diagnostics.cc:168] "
        "retrieving CUDA diagnostic information for host: node1",
    ]
    kept = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796053664.285545    4526 port.cc:153] oneDNN custom operations are on.",
        "E0000 00:00:1796053663.0 4439 cuda_dnn.cc:8310] Could not create cudnn handle: CUDNN_STATUS_INTERNAL_ERROR",
        "F0000 00:00:1796053663.0 4439 gpu_device.cc:100] Check failed: cuInit succeeded",
        "Epoch 1/3 - 2s - loss: 2.0 - accuracy: 0.2",
        "could not find cuda drivers, says the user",
    ]
    assert all(noise.search(line) for line in dropped)
    assert not any(noise.search(line) for line in kept)


def test_rule_scripts_redirect_their_log_before_tensorflow_is_imported():
    # Module level: loading every rule script (its imports run, main does not) imports no TensorFlow ...
    code = (
        "import importlib.util, sys\n"
        "for path in sys.argv[1:]:\n"
        "    spec = importlib.util.spec_from_file_location('rule_script', path)\n"
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "    assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, path\n"
    )
    scripts = sorted(SCRIPTS.glob("*.py"))
    result = run_python(code, *map(str, scripts))
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    # ... and log_to_file (for TensorFlow jobs: start_tensorflow_job, which calls it first) comes first in main (or
    # the __main__ block), before any import or other work.
    for script in scripts:
        if script.name == "check_environment.py":  # prints its report to the terminal and writes it to its log
            continue
        blocks = [
            node.body
            for node in ast.walk(ast.parse(script.read_text()))
            if isinstance(getattr(node, "body", None), list)
        ]
        calls = [
            (body, i)
            for body in blocks
            for i, stmt in enumerate(body)
            if isinstance(stmt, ast.Expr)
            and isinstance(stmt.value, ast.Call)
            and getattr(stmt.value.func, "id", None) in ("log_to_file", "start_tensorflow_job")
        ]
        assert len(calls) == 1, f"{script.name}: log_to_file or start_tensorflow_job is called {len(calls)} times"
        body, index = calls[0]
        before = [ast.unparse(stmt) for stmt in body[:index]]
        allowed = [stmt for stmt in before if stmt == "smk = snakemake" or (stmt.startswith(("'", '"')))]
        assert before == allowed, f"{script.name}: {before} run before the log redirect"
