"""The throughput benchmark's smallest setting runs and writes every field (timings are not judged)."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAST_LINE = re.compile(r"^pipeline_efficiency=(\S+) speedup_vs_legacy=(\S+) augment_speedup=(\S+)$")


def test_smoke_benchmark_writes_its_record(tmp_path):
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/throughput.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    match = LAST_LINE.match(last)
    assert match, last
    assert all(re.fullmatch(r"\d+\.\d{3}", value) for value in match.groups()), last

    record = json.loads(out.read_text())
    for key in (
        "name",
        "created",
        "hardware",
        "versions",
        "settings",
        "training",
        "augmentation",
        "ratios",
        "summary_line",
    ):
        assert key in record, key
    assert record["summary_line"] == last
    assert record["hardware"]["cpu"]["model"] and record["hardware"]["cpu"]["cores"] >= 1
    assert "gpus" in record["hardware"]
    for key in ("python", "tensorflow", "keras", "numpy"):
        assert record["versions"][key]
    assert record["settings"]["smoke"] is True
    for variant in ("ours", "limit", "legacy"):
        result = record["training"][variant]
        assert result["images_per_s"] > 0
        assert len(result["runs_images_per_s"]) == record["settings"]["repeats"]
    assert record["training"]["legacy"]["mixed_precision"] is False and record["training"]["legacy"]["xla"] is False
    for side in ("ours", "legacy"):
        assert record["augmentation"][side]["images_per_s"] > 0
    # The augmentation-alone timing uses the workflow's layer, with XLA by the same auto rule as training.
    assert record["augmentation"]["ours"]["jit_compile"] == record["settings"]["xla"]
    assert "impl" not in record["augmentation"]["ours"] and "impl" not in record["settings"]["augmentation"]
    for key in ("pipeline_efficiency", "speedup_vs_legacy", "augment_speedup"):
        assert math.isfinite(record["ratios"][key]) and record["ratios"][key] > 0
        assert f"{key}={record['ratios'][key]:.3f}" in last


def test_training_profile_prints_each_component_and_writes_its_figures(tmp_path):
    out = tmp_path / "profile.json"
    command = [
        sys.executable,
        str(ROOT / "benchmarks/profile_training.py"),
        "--config",
        str(ROOT / "tests/configs/tiny.yaml"),
        "--arch",
        "resnet50",
        "--batch-size",
        "16",
        "--epochs",
        "2",
        "--out",
        str(out),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for component in (
        "process start",
        "graph trace of the train step",
        "training steps per epoch",
        "validation pass",
        "checkpoint write per epoch",
        "evaluation job (32 test images)",
    ):
        assert component in proc.stdout, component
    figures = json.loads(out.read_text())
    assert figures["run"] == "synthetic-32-resnet50-bs16-s0" and len(figures["epochs"]) == 2
    first, second = figures["epochs"]
    assert first["n_steps"] == second["n_steps"] == 3  # 48 training images in batches of 16
    assert first["first_step_s"] > second["steady_step_s"] > 0  # the first step carries the graph trace
    assert first["checkpoint_s"] > 0 and figures["checkpoint_bytes"]["epoch"] > 0
    assert all(figures["evaluate"][key] > 0 for key in ("load_model_s", "first_predict_s"))
