"""Killed training (issue #8): SIGKILL or SIGTERM at a random point, then the same snakemake command again.

One run of the tiny config (ResNet-50, 32 px, 48 images, 4 epochs, deterministic: true) is trained uninterrupted
once; each kill test then trains it again, kills snakemake and its job at a random point, reruns, and checks that
the result equals the uninterrupted one bit for bit (history of every metric and every weight), and that no
declared output was ever half-written. The random point is printed with its seed; set BLOODCELLS_KILL_SEED to
replay one.
The kill lands after epoch 1 or 2, each at least two epochs before the end (so never after model.keras was written:
the rerun's --rerun-incomplete branch for that case is kept but is not what these random points reach).
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import REPO, SNAKEMAKE, TINY, run_snakemake

from bloodcells.checkpoint import Checkpoint

RUN = "synthetic-32-resnet50-bs16-s0"
MODEL = f"results/runs/{RUN}/model.keras"
HISTORY = f"results/runs/{RUN}/history.csv"
EPOCHS = 4  # kill points after epoch 1 or 2 (randint(1, EPOCHS - 2)), each with two epochs still to run
MAX_DELAY_S = 1.0  # below two epochs of this run (about 1.5 s each here), so the kill lands before training ends


def model_weights(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .keras file's weights (model and optimizer), read without TensorFlow."""
    with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as h5:
        arrays: dict[str, np.ndarray] = {}
        h5.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


def part_files(workdir: Path) -> list[Path]:
    """Temporary files of atomic writes anywhere under results/."""
    return sorted((workdir / "results").rglob(".part-*"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The workdir with the prepared data, the config, and the history and weights of an uninterrupted run."""
    folder = tmp_path_factory.mktemp("kill")
    config = yaml.safe_load(TINY.read_text())
    # threads: 2: the kill tests run one job at a time, so each job may use both cores of a CI machine.
    config["training"] |= {"max_epochs": EPOCHS, "patience": EPOCHS, "deterministic": True, "threads": 2}
    config["datasets"]["synthetic"]["n_train"] = 48
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    workdir = folder / "work"
    run_snakemake(workdir, "--cores", "2", MODEL, "--configfile", str(config_path))
    reference = {
        "workdir": workdir,
        "config": config_path,
        "history": (workdir / HISTORY).read_text(),
        "weights": model_weights(workdir / MODEL),
    }
    clear_run(workdir)  # each test trains the run again from the start
    return reference


def clear_run(workdir: Path) -> None:
    """Remove the run's outputs and checkpoint, so that it trains from the start."""
    for folder in (f"results/runs/{RUN}", f"results/checkpoints/{RUN}"):
        shutil.rmtree(workdir / folder, ignore_errors=True)


def start_and_kill(workdir: Path, config: Path, sig: signal.Signals) -> int:
    """Start snakemake for the run, send `sig` to it and its jobs at a random point; return the epochs committed."""
    seed = int(os.environ.get("BLOODCELLS_KILL_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    after_epoch, delay = rng.randint(1, EPOCHS - 2), rng.uniform(0, MAX_DELAY_S)
    print(f"{sig.name}: BLOODCELLS_KILL_SEED={seed}: {delay:.2f} s after epoch {after_epoch}'s checkpoint")
    command = [
        *SNAKEMAKE,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        MODEL,
        "--configfile",
        str(config),
    ]
    log = tempfile.TemporaryFile()
    # A new session: the signal goes to snakemake and its jobs together, as SLURM's scancel or an OOM killer does.
    started = time.time()
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=os.environ | {"CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    state = Checkpoint(workdir / f"results/checkpoints/{RUN}").state_path
    deadline = time.time() + 600
    while not (state.exists() and json.loads(state.read_text())["epochs_done"] >= after_epoch):
        assert process.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.05)
    time.sleep(delay)
    assert process.poll() is None, f"training ended within {delay:.2f} s, before the kill"
    os.killpg(process.pid, sig)
    process.wait(timeout=300)  # after SIGTERM snakemake must end by itself
    print(f"killed {time.time() - started:.0f} s after the start")
    log.seek(0)
    print(log.read().decode(errors="replace")[-1500:])
    assert process.returncode != 0
    return json.loads(state.read_text())["epochs_done"]


def assert_resumed_equals_uninterrupted(workdir: Path, config: Path, killed_after: int, reference: dict) -> None:
    """Rerun snakemake; it resumes after the last committed epoch and ends exactly where the uninterrupted run did."""
    assert 1 <= killed_after <= EPOCHS
    # Never half-written: a declared output is absent, or complete (killed after its rename, before the job ended).
    assert not (workdir / MODEL).exists() or model_weights(workdir / MODEL).keys() == reference["weights"].keys()
    assert not (workdir / HISTORY).exists()  # written after the model: absent whenever the model was
    # --rerun-incomplete: where the kill came after model.keras was renamed into place, Snakemake asks for it.
    started = time.time()
    run_snakemake(workdir, "--cores", "2", MODEL, "--configfile", str(config), "--rerun-incomplete")
    print(f"the rerun took {time.time() - started:.0f} s")
    log = (workdir / f"logs/train/{RUN}.log").read_text()
    resumed_part = log.split("resuming from")[-1]
    assert f"results/checkpoints/{RUN}/epoch-{killed_after}.weights.h5 after epoch {killed_after}" in resumed_part
    assert "Epoch 1/" not in resumed_part
    assert all(f"Epoch {epoch}/{EPOCHS}" in resumed_part for epoch in range(killed_after + 1, EPOCHS + 1))
    assert (workdir / HISTORY).read_text() == reference["history"]  # loss, accuracy, AUC of every epoch
    weights = model_weights(workdir / MODEL)
    assert weights.keys() == reference["weights"].keys()
    unequal = [name for name in weights if not np.array_equal(weights[name], reference["weights"][name])]
    assert unequal == [], f"{len(unequal)} of {len(weights)} weight arrays differ, e.g. {unequal[:3]}"
    assert part_files(workdir) == [] and not (workdir / f"results/checkpoints/{RUN}").exists()
    # host.json: the killed session and the resumed one, each with the epochs it trained (kept in the checkpoint)
    sessions = json.loads((workdir / f"results/runs/{RUN}/host.json").read_text())["sessions"]
    assert [session["epochs"] for session in sessions] == [
        list(range(1, killed_after + 1)),
        list(range(killed_after + 1, EPOCHS + 1)),
    ]
    assert all(session["hostname"] and session["tensorflow"] for session in sessions)


def test_sigkill_at_a_random_point_then_rerun_equals_the_uninterrupted_run(uninterrupted):
    workdir, config = uninterrupted["workdir"], uninterrupted["config"]
    clear_run(workdir)
    killed_after = start_and_kill(workdir, config, signal.SIGKILL)
    run_snakemake(workdir, "--unlock", "--configfile", str(config))  # a killed snakemake leaves its lock
    assert_resumed_equals_uninterrupted(workdir, config, killed_after, uninterrupted)


def test_sigterm_at_a_random_point_then_rerun_equals_the_uninterrupted_run(uninterrupted):
    workdir, config = uninterrupted["workdir"], uninterrupted["config"]
    clear_run(workdir)
    killed_after = start_and_kill(workdir, config, signal.SIGTERM)
    log = (workdir / f"logs/train/{RUN}.log").read_text()
    assert "train: received SIGTERM; stopping. The last committed epoch's checkpoint is kept" in log
    assert part_files(workdir) == []  # the job unwound: no temporary file left behind
    # No --unlock: on SIGTERM snakemake waits for its job to end, then releases its lock itself.
    assert_resumed_equals_uninterrupted(workdir, config, killed_after, uninterrupted)
