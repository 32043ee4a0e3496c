"""GPU pinning: concurrent jobs on four faked cards never share one, and a killed job frees its card."""

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO

from bloodcells import gpu_lock, gpus

# One job: claim a card among four faked ones, say so, hold it until the test releases every job, record
# (card, start, end). Events, not sleeps, order the jobs: a loaded machine changes nothing the test asserts.
WORKER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from bloodcells.gpu_lock import claim_gpu
    folder, index = Path(sys.argv[1]), int(sys.argv[2])
    def waiting(message):
        with open(folder / f"waiting-{index}", "a") as out:
            out.write(message + "\\n")
    card = claim_gpu(label=f"job {index}", poll_seconds=0.02, log=waiting)
    start = time.monotonic()
    (folder / f"claim-{index}").write_text(card)
    os.rename(folder / f"claim-{index}", folder / f"holds-{index}")  # seen complete or not at all
    while not (folder / "release").exists():
        time.sleep(0.01)
    end = time.monotonic()
    line = json.dumps({"job": index, "card": card, "start": start, "end": end,
                       "visible": os.environ["CUDA_VISIBLE_DEVICES"]}) + "\\n"
    with open(folder / "intervals.jsonl", "a") as out:   # O_APPEND: one short write per job, lines never interleave
        out.write(line)
    # exits still holding the card: the kernel releases the lock only after `end` was taken
""")

# Holds a card until killed; says so through a file once it holds it.
HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from bloodcells.gpu_lock import claim_gpu
    card = claim_gpu(label="holder", poll_seconds=0.02)
    Path(sys.argv[1]).write_text(card)
    time.sleep(120)
""")


def job_env(lock_dir: Path, cards: str) -> dict:
    return os.environ | {
        "CUDA_VISIBLE_DEVICES": cards,
        gpu_lock.LOCK_DIR_VARIABLE: str(lock_dir),
        "PYTHONPATH": str(REPO / "scripts"),
    }


def release(claim: gpu_lock.GpuClaim) -> None:
    """Drop a claim's lock, as the end of the process that holds it does (closing its only descriptor)."""
    os.close(claim.fd)


def poll(condition, what: str, seconds: float = 120):
    """Wait until condition() is true; fail naming `what` after `seconds` (generous: the machine may be loaded)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(0.02)


def wait_for(path: Path, seconds: float = 20) -> str:
    """The text of `path` once it exists and is not empty."""
    poll(lambda: path.exists() and path.read_text(), f"{path} never appeared", seconds)
    return path.read_text()


def test_concurrent_jobs_never_share_a_card(tmp_path):
    env = job_env(tmp_path / "locks", "0,1,2,3")
    jobs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(index)], env=env) for index in range(12)]
    try:
        holders = lambda: sorted(tmp_path.glob("holds-*"))  # noqa: E731
        poll(lambda: len(holders()) >= 4, "four jobs holding the four cards")
        # every other job finds all four held and waits, saying so; none claims a card while the four hold them
        others = [i for i in range(12) if not (tmp_path / f"holds-{i}").exists()]
        poll(lambda: all((tmp_path / f"waiting-{i}").exists() for i in others), "the other eight jobs waiting")
        assert len(others) == 8 and len(holders()) == 4
        assert sorted(path.read_text() for path in holders()) == ["0", "1", "2", "3"]
        assert "waiting for one to be free" in (tmp_path / f"waiting-{others[0]}").read_text()
        (tmp_path / "release").touch()
        for job in jobs:
            assert job.wait(timeout=120) == 0
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
                job.wait()
    intervals = [json.loads(line) for line in (tmp_path / "intervals.jsonl").read_text().splitlines()]
    assert sorted(interval["job"] for interval in intervals) == list(range(12))
    for interval in intervals:
        assert interval["visible"] == interval["card"]  # the job sees only its own card
    for card in "0123":
        on_card = sorted((i for i in intervals if i["card"] == card), key=lambda i: i["start"])
        for before, after in itertools.pairwise(on_card):
            assert before["end"] <= after["start"], f"jobs {before['job']} and {after['job']} overlap on GPU {card}"


def test_a_killed_holder_frees_its_card_and_a_waiting_job_gets_it(tmp_path):
    env = job_env(tmp_path / "locks", "5")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "holder")], env=env)
    waiter = None
    try:
        assert wait_for(tmp_path / "holder") == "5"
        # the only card is held: a non-blocking claim finds none, a blocking one waits and says so
        assert gpu_lock.try_claim(["5"], tmp_path / "locks") is None
        waiter_log = tmp_path / "waiter.log"
        with open(waiter_log, "w") as stderr:
            waiter = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "waiter")], env=env, stderr=stderr)
        poll(lambda: "all 1 GPU(s) are held by other jobs" in waiter_log.read_text(), "the waiter saying it waits")
        assert waiter.poll() is None and not (tmp_path / "waiter").exists()
        holder.send_signal(signal.SIGKILL)  # no cleanup code runs: the kernel must drop the lock
        holder.wait(timeout=10)
        assert wait_for(tmp_path / "waiter", 10) == "5"
    finally:
        for process in (holder, waiter):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    stderr = waiter_log.read_text()
    assert "all 1 GPU(s) are held by other jobs" in stderr and "5: holder" in stderr
    assert "pinned to GPU 5" in stderr


def test_release_and_reclaim_in_one_process(tmp_path):
    claim = gpu_lock.try_claim(["0", "1"], tmp_path)
    second = gpu_lock.try_claim(["0", "1"], tmp_path)
    assert (claim.card, second.card) == ("0", "1")
    assert gpu_lock.try_claim(["0", "1"], tmp_path) is None
    release(claim)
    again = gpu_lock.try_claim(["0", "1"], tmp_path)
    assert again.card == "0"
    release(again), release(second)


def test_claim_times_out_when_every_card_stays_held(tmp_path):
    held = gpu_lock.try_claim(["3"], tmp_path)
    environ = {"CUDA_VISIBLE_DEVICES": "3", gpu_lock.LOCK_DIR_VARIABLE: str(tmp_path)}
    messages = []
    try:
        with pytest.raises(TimeoutError):
            gpu_lock.claim_gpu(environ=environ, poll_seconds=0.05, timeout=0.3, log=messages.append)
    finally:
        release(held)
    # (an earlier test may have started TensorFlow in this process: then a warning says so first)
    assert environ["CUDA_VISIBLE_DEVICES"] == "3" and any("waiting for one to be free" in m for m in messages)


def test_no_gpu_is_a_no_op(tmp_path):
    for environ in ({"CUDA_VISIBLE_DEVICES": ""}, {"CUDA_VISIBLE_DEVICES": "-1"}, {}):
        environ[gpu_lock.LOCK_DIR_VARIABLE] = str(tmp_path / "locks")
        before = dict(environ)
        assert gpu_lock.claim_gpu(environ=environ, smi=lambda: None, devices=tmp_path) is None
        assert environ == before
    assert not (tmp_path / "locks").exists()


def test_inside_a_slurm_gpu_job_slurm_decides(tmp_path):
    environ = {
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_GPUS": "2",
        "CUDA_VISIBLE_DEVICES": "0",
        gpu_lock.LOCK_DIR_VARIABLE: str(tmp_path / "locks"),
    }
    assert gpu_lock.claim_gpu(environ=environ, log=lambda message: None) is None
    assert environ["CUDA_VISIBLE_DEVICES"] == "0" and not (tmp_path / "locks").exists()
    assert gpu_lock.slurm_assigned_gpus({"SLURM_JOB_ID": "42"}) is None  # a CPU-only SLURM job


def test_card_discovery(tmp_path):
    assert gpus.parse_visible_devices("0, 2,3") == ["0", "2", "3"]
    assert gpus.parse_visible_devices("GPU-3f2c1a,GPU-77") == ["GPU-3f2c1a", "GPU-77"]
    assert gpus.parse_visible_devices("1,-1,2") == ["1"]
    listing = (
        "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaa)\n"
        "  MIG 1g.10gb     Device  0: (UUID: MIG-bbb)\n"
        "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-ccc)\n"
    )
    assert gpus.parse_nvidia_smi(listing) == ["0", "1"]
    for name in ("nvidia0", "nvidia1", "nvidia10", "nvidiactl", "nvidia-uvm", "nvidia-modeset"):
        (tmp_path / name).touch()
    assert gpus.device_node_ids(tmp_path) == ["0", "1", "10"]
    # CUDA_VISIBLE_DEVICES wins, then nvidia-smi, then the device nodes
    assert gpu_lock.candidate_cards({"CUDA_VISIBLE_DEVICES": "3"}, smi=lambda: ["0"], devices=tmp_path) == ["3"]
    assert gpu_lock.candidate_cards({}, smi=lambda: ["0", "1"], devices=tmp_path) == ["0", "1"]
    assert gpu_lock.candidate_cards({}, smi=lambda: None, devices=tmp_path) == ["0", "1", "10"]
    assert gpus.nvidia_smi_ids(run=lambda command: listing) == ["0", "1"]


def test_pin_job_to_gpu_only_for_gpu_rules(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.delenv("TF_FORCE_GPU_ALLOW_GROWTH", raising=False)
    monkeypatch.setenv(gpu_lock.LOCK_DIR_VARIABLE, str(tmp_path))
    monkeypatch.setattr(gpu_lock, "_HELD", None)
    assert gpu_lock.pin_job_to_gpu(0, gpu_lock.job_label("train", {})) is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    try:
        assert gpu_lock.pin_job_to_gpu(1, gpu_lock.job_label("train", {"run": "r1"})) == "0"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
        assert "rule train (run=r1)" in (tmp_path / "gpu0.lock").read_text()
    finally:
        if gpu_lock._HELD is not None:
            release(gpu_lock._HELD)
