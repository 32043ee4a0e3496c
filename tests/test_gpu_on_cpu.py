"""The GPU configuration executed on the CPU (issue 22): every switch a GPU turns on, forced on, end to end.

On every machine the tests run on, `auto` turns mixed precision, XLA and the graph optimizer off, so the other
workflow tests train the CPU configuration only. Here tests/configs/gpu_on_cpu.yaml forces them on: mixed_float16
(float16 compute, FusedAdam inside the LossScaleOptimizer Keras adds), jit_compile, Grappler, ImageNet
initialisation from a stand-in weights file in Keras' layout, and a checkpoint every epoch. One run trains
uninterrupted (train only); the same run is trained again, killed after its first committed epoch, and resumed by
the whole workflow (evaluate, gradcam, transfer, tables, report); a float32 run with the same seed is the baseline
of its accuracy. TensorFlow runs the same Keras code on a CPU; what only a GPU can show is in docs/gpu.md.

Each training job XLA-compiles its training step, most of its time: the uninterrupted and the killed job compile
side by side, the resumed job once more. (TensorFlow's persistent XLA cache does not help: its key changes with
the number of functions a process traced before, which differs between a fresh and a resumed job.)
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import REPO, SNAKEMAKE, TINY
from test_download import legacy_weights_file
from test_reliability_kill import model_weights

from bloodcells.download import file_md5, imagenet_weights_name

OVERLAY = REPO / "tests/configs/gpu_on_cpu.yaml"
RUN = "synthetic-32-resnet50-bs16-s0"
MODEL = f"results/runs/{RUN}/model.keras"
METRICS = f"results/runs/{RUN}/metrics.json"
REPORT = "results/report/report.html"  # everything but the PDF: tables, Grad-CAM, transfer, statistics, figures
INITIAL_SCALE = 2.0**15  # Keras' LossScaleOptimizer starts here and halves it at every step it skips
STEPS_PER_EPOCH = 192 // 16  # n_train / batch_size of the overlay


def gpu_on_cpu_config(weights_md5: str, **training) -> dict:
    """tests/configs/tiny.yaml with the overlay's keys, and config.yaml's training section with the overlay's."""
    config = yaml.safe_load(TINY.read_text())
    overlay = yaml.safe_load(OVERLAY.read_text())
    full = yaml.safe_load((REPO / "config.yaml").read_text())
    config |= {key: value for key, value in overlay.items() if key != "training"}
    config["training"] = full["training"] | overlay["training"] | {"weights_md5": {"resnet50": weights_md5}} | training
    return config


def snakemake(workdir: Path, config: Path, *targets: str, log: Path, cores: int = 1) -> subprocess.Popen:
    """Start snakemake on `targets` in a new session (so that one signal reaches it and its jobs)."""
    command = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    with log.open("w") as output:  # the child writes to its own copy of the descriptor
        return subprocess.Popen(
            [*command, "--cores", str(cores), "--configfile", str(config), "--rerun-incomplete", *targets],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )


def finished(process: subprocess.Popen, log: Path, timeout: float = 900) -> None:
    """Wait for snakemake to succeed; on failure show the end of its output."""
    assert process.wait(timeout=timeout) == 0, log.read_text()[-6000:]


def stop(processes: list[subprocess.Popen]) -> None:
    """Kill the snakemake sessions still running (a failed fixture leaves none behind)."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)


def checkpointed_loss_scaling(path: Path) -> tuple[float, int]:
    """The LossScaleOptimizer's dynamic scale and the steps FusedAdam applied, from a checkpoint's weights file.

    Keras lists the optimizer's variables as iteration, learning_rate, step_counter, dynamic_scale, then the
    inner FusedAdam's: iteration (the steps applied, skipped ones not counted), learning_rate, moments.
    """
    with h5py.File(path, "r") as h5:
        return float(h5["optimizer/vars/3"][()]), int(h5["optimizer/vars/4"][()])


def last_val_loss(history: Path) -> float:
    """The validation loss of a history.csv's last epoch."""
    return float(list(csv.DictReader(history.open()))[-1]["val_loss"])


def logged_scales(log: str) -> list[float]:
    """The loss scales a training log names: on resuming, and after the last step."""
    return [float(line.split("loss scale ")[1].split()[0]) for line in log.splitlines() if "loss scale " in line]


def layer_dtype_policies(model_path: Path) -> dict[str, str]:
    """Layer name -> its dtype policy name, from a .keras file's config.json (read without TensorFlow)."""
    with zipfile.ZipFile(model_path) as archive:
        layers = json.loads(archive.read("config.json"))["config"]["layers"]
    dtypes = {layer["name"]: layer["config"]["dtype"] for layer in layers}
    return {name: dtype["config"]["name"] for name, dtype in dtypes.items() if isinstance(dtype, dict)}  # not uint8


@pytest.fixture(scope="module")
def gpu_runs(tmp_path_factory) -> dict:
    """Three workdirs: `reference` (trained uninterrupted), `resumed` (killed after epoch 1, then the whole workflow),
    `float32` (the same run with every switch off); the checkpointed loss scale and timings."""
    started = time.monotonic()
    folder = tmp_path_factory.mktemp("gpu_on_cpu")
    weights = folder / imagenet_weights_name("resnet50")
    legacy_weights_file(weights, seed=7)  # a stand-in for Keras' ImageNet file: same layout, random values
    config = gpu_on_cpu_config(file_md5(weights))
    float32 = gpu_on_cpu_config(file_md5(weights), mixed_precision=False, xla=False, grappler=False)
    paths = {}
    for name, values in (("gpu", config), ("float32", float32)):
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(values))
    work = {name: folder / name for name in ("reference", "resumed", "float32")}
    for workdir in work.values():
        (workdir / "weights").mkdir(parents=True)
        (workdir / "weights" / weights.name).write_bytes(weights.read_bytes())
    logs = {name: folder / f"{name}.log" for name in ("reference", "killed", "resumed", "float32")}

    # The uninterrupted run and the one to kill train side by side, one core each.
    reference = snakemake(work["reference"], paths["gpu"], MODEL, log=logs["reference"])
    killed = snakemake(work["resumed"], paths["gpu"], log=logs["killed"])
    running = [reference, killed]
    try:
        state = work["resumed"] / f"results/checkpoints/{RUN}/state.json"
        deadline = time.monotonic() + 600
        while not (state.exists() and json.loads(state.read_text())["epochs_done"] >= 1):
            assert killed.poll() is None, f"ended before the kill:\n{logs['killed'].read_text()[-4000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.05)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=60)
        committed = json.loads(state.read_text())
        scale, applied = checkpointed_loss_scaling(state.parent / committed["files"]["model"])
        killed_s = time.monotonic() - started

        finished(snakemake(work["resumed"], paths["gpu"], "--unlock", log=logs["resumed"]), logs["resumed"])
        # Two cores: evaluate and transfer side by side once the resumed training is done.
        resumed = snakemake(work["resumed"], paths["gpu"], REPORT, log=logs["resumed"], cores=2)
        running.append(resumed)
        finished(reference, logs["reference"])
        baseline = snakemake(work["float32"], paths["float32"], METRICS, log=logs["float32"])
        running.append(baseline)
        finished(resumed, logs["resumed"])
        finished(baseline, logs["float32"])
        seconds = time.monotonic() - started
    finally:
        stop(running)
    return work | {"scale": scale, "applied": applied, "killed_s": killed_s, "seconds": seconds}


def test_the_switches_were_on_in_every_training_session(gpu_runs):
    sessions = json.loads((gpu_runs["resumed"] / f"results/runs/{RUN}/host.json").read_text())["sessions"]
    assert [session["epochs"] for session in sessions] == [[1], [2]]  # killed after epoch 1, resumed for epoch 2
    assert all(session["mixed_precision"] and session["xla"] for session in sessions)
    settings = (gpu_runs["resumed"] / f"logs/train/{RUN}.log").read_text()
    assert "mixed_precision=True, xla=True, grappler=True" in settings
    print(f"killed {gpu_runs['killed_s']:.0f} s after the start; all done after {gpu_runs['seconds']:.0f} s")


def test_resumed_run_equals_the_uninterrupted_one_bit_for_bit(gpu_runs):
    reference, resumed = gpu_runs["reference"], gpu_runs["resumed"]
    log = (resumed / f"logs/train/{RUN}.log").read_text().split("resuming from")[-1]
    assert "epoch-1.weights.h5 after epoch 1" in log and "Epoch 1/" not in log
    history = (resumed / f"results/runs/{RUN}/history.csv").read_text()
    assert history == (reference / f"results/runs/{RUN}/history.csv").read_text()  # every metric of both epochs
    weights, expected = model_weights(resumed / MODEL), model_weights(reference / MODEL)
    assert weights.keys() == expected.keys()
    unequal = [name for name in weights if not np.array_equal(weights[name], expected[name])]
    assert unequal == [], f"{len(unequal)} of {len(weights)} weight arrays differ, e.g. {unequal[:3]}"
    print(history)


def test_the_loss_scale_survives_the_resume(gpu_runs):
    scale, applied = gpu_runs["scale"], gpu_runs["applied"]
    # Epoch 1 skipped steps (float16 gradients overflowed at 2^15: the scale fell) and applied others (the moments
    # of FusedAdam moved): both are state a resumed job must continue from.
    assert scale < INITIAL_SCALE and np.log2(scale).is_integer()
    assert 0 < applied < STEPS_PER_EPOCH and scale == INITIAL_SCALE / 2 ** (STEPS_PER_EPOCH - applied)
    resumed = logged_scales((gpu_runs["resumed"] / f"logs/train/{RUN}.log").read_text().split("resuming from")[-1])
    reference = logged_scales((gpu_runs["reference"] / f"logs/train/{RUN}.log").read_text())
    assert resumed[0] == scale  # what the resumed job loaded
    assert resumed[-1] == reference[-1]  # and where both ended
    print(
        f"loss scale {scale:g} after epoch 1 ({applied} of {STEPS_PER_EPOCH} steps applied), "
        f"{reference[-1]:g} at the end"
    )


def test_the_mixed_precision_model_predicts_float32_probabilities_in_evaluate(gpu_runs):
    policies = layer_dtype_policies(gpu_runs["resumed"] / MODEL)
    assert policies["conv1_conv"] == policies["conv3_block4_out"] == "mixed_float16"  # evaluate computes in float16
    assert policies["predictions"] == "float32"  # the softmax head
    with np.load(gpu_runs["resumed"] / f"results/runs/{RUN}/predictions.npz") as saved:
        probabilities = saved["probabilities"]
    assert probabilities.dtype == np.float32 and np.isfinite(probabilities).all()
    # A float32 softmax sums to 1 within float32 rounding; a float16 one would be off by up to ~1e-3.
    assert np.abs(probabilities.sum(axis=1) - 1).max() < 1e-5


def test_the_forced_run_learns_as_the_float32_run_with_the_same_seed(gpu_runs):
    mixed = json.loads((gpu_runs["resumed"] / METRICS).read_text())
    float32 = json.loads((gpu_runs["float32"] / METRICS).read_text())
    val_loss = {
        name: last_val_loss(gpu_runs[name] / f"results/runs/{RUN}/history.csv") for name in ("resumed", "float32")
    }
    print(f"test accuracy: mixed precision + XLA {mixed['accuracy']:.4f}, float32 {float32['accuracy']:.4f}")
    print(f"test AUC: mixed precision + XLA {mixed['auc']:.4f}, float32 {float32['auc']:.4f}")
    print(f"last val_loss: mixed precision + XLA {val_loss['resumed']:.4f}, float32 {val_loss['float32']:.4f}")
    # Two epochs from a random stand-in for ImageNet barely learn: both stay near chance (1/8), and the forced run
    # skipped 8 of its 24 steps. The validation loss, a mean over every image, is the sharper comparison.
    assert abs(val_loss["resumed"] - val_loss["float32"]) < 0.05 * val_loss["float32"]
    assert abs(mixed["accuracy"] - float32["accuracy"]) <= 0.2


def test_gradcam_maps_of_the_float16_model_are_finite(gpu_runs):
    with np.load(gpu_runs["resumed"] / f"results/gradcam/{RUN}/heatmaps.npz") as saved:
        maps = saved["maps"]
    assert maps.shape == (48, 4, 4) and np.isfinite(maps).all()
    assert (maps.reshape(len(maps), -1).max(axis=1) > 0).mean() > 0.5  # float16 gradients did not underflow to 0


def test_transfer_tables_and_report_were_made_from_the_forced_run(gpu_runs):
    resumed = gpu_runs["resumed"]
    metrics = json.loads((resumed / METRICS).read_text())
    table3 = list(csv.DictReader((resumed / "results/tables/table3.csv").open()))
    assert [float(row["mean"]) for row in table3] == [metrics["accuracy"], metrics["auc"]]
    transfer = json.loads((resumed / f"results/transfer/{RUN}/raabin/metrics.json").read_text())
    table = {row["row"]: float(row["mean"]) for row in csv.DictReader((resumed / "results/tables/transfer.csv").open())}
    assert table["Accuracy, all source classes"] == pytest.approx(transfer["unrestricted_accuracy"])
    # The report's provenance table: both training sessions, XLA and mixed precision on in each.
    report = " ".join((resumed / REPORT).read_text().split())
    assert report.count("</td><td>on</td><td>on</td><td>") == 2  # the XLA and mixed precision columns


def test_a_weights_file_of_keras_layout_is_checked_against_training_weights_md5(tmp_path):
    from bloodcells.download import DownloadError, verified_weights

    weights = tmp_path / imagenet_weights_name("resnet50")
    weights.write_bytes(b"weights of a lab's own pretraining")
    assert verified_weights(str(weights), "resnet50", file_md5(weights)) == str(weights)
    with pytest.raises(DownloadError, match="training.weights_md5.resnet50"):
        verified_weights(str(weights), "resnet50", "0" * 32)
    with pytest.raises(DownloadError, match="Keras' ImageNet no-top weights of resnet50"):
        verified_weights(str(weights), "resnet50")  # no MD5 in the config: Keras' own
