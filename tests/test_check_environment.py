"""scripts/check_environment.py and bloodcells.environment's report: the warnings a user with a "GPU not
found" problem gets (no TensorFlow import here)."""

import pytest
from conftest import CPU_MACHINE, GPU_MACHINE, NODES_ONLY, TF_GPU, TF_NO_GPU, load_rule_script

from bloodcells import environment, gpus

check_environment = load_rule_script("check_environment")

PLENTY = 100 * 1024**3


def test_gpu_seen_by_tensorflow_is_fine():
    assert environment.diagnose(GPU_MACHINE, TF_GPU, {}, PLENTY) == []


def test_cpu_machine_is_fine():
    assert environment.diagnose(CPU_MACHINE, TF_NO_GPU, {}, PLENTY) == []


def test_gpu_present_but_not_seen_warns_with_the_cause():
    [warning] = environment.diagnose(GPU_MACHINE, TF_NO_GPU, {}, PLENTY)
    assert "GPU present but TensorFlow sees none" in warning and "run on the CPU" in warning
    assert "CUDA 12.5.1" in warning and "tensorflow[and-cuda]" in warning
    [cpu_build] = environment.diagnose(GPU_MACHINE, TF_NO_GPU | {"built_with_cuda": False}, {}, PLENTY)
    assert "CPU-only build" in cpu_build
    [hidden] = environment.diagnose(GPU_MACHINE, TF_NO_GPU, {"CUDA_VISIBLE_DEVICES": ""}, PLENTY)
    assert "CUDA_VISIBLE_DEVICES='' hides every GPU" in hidden
    # device nodes alone (nvidia-smi missing from PATH) still count as a GPU
    [warning] = environment.diagnose(NODES_ONLY, TF_NO_GPU, {}, PLENTY)
    assert "nvidia-smi lists no GPU" in warning


def test_tensorflow_missing_and_low_disk_warn():
    warnings = environment.diagnose(CPU_MACHINE, {"error": "ModuleNotFoundError: tensorflow"}, {}, 5 * 1024**3)
    assert len(warnings) == 2
    assert "TensorFlow cannot be imported" in warnings[0] and "5.0 GB free" in warnings[1]


def test_report_shows_every_fact_and_the_warning(tmp_path):
    warnings = environment.diagnose(GPU_MACHINE, TF_NO_GPU, {}, PLENTY)
    report = environment.format_report(GPU_MACHINE, TF_NO_GPU, tmp_path, PLENTY, warnings, {})
    for text in (
        "TensorFlow:           2.21.0",
        "GPUs TensorFlow sees: none",
        "12.5.1 (cuDNN 9)",
        "NVIDIA H100",
        "/dev/nvidia0",
        "100.0 GB",
        "WARNING: GPU present but TensorFlow sees none",
    ):
        assert text in report
    assert "OK: no problems found" in environment.format_report(CPU_MACHINE, TF_GPU, tmp_path, PLENTY, [], {})


def test_free_space_of_a_results_folder_that_does_not_exist_yet(tmp_path):
    where, free = environment.free_bytes(tmp_path / "results/not/yet")
    assert where == tmp_path and free > 0


def test_machine_gpus_from_device_nodes(tmp_path, monkeypatch):
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    monkeypatch.setattr(gpus.shutil, "which", lambda name: None)
    machine = gpus.machine_gpus(tmp_path)
    assert machine["device_nodes"] == ["/dev/nvidia0", "/dev/nvidia1"] and machine["nvidia_smi"] == []


@pytest.mark.parametrize("strict,expected", [(False, 0), (True, 1)])
def test_main_exit_code(monkeypatch, capsys, tmp_path, strict, expected):
    monkeypatch.setattr(gpus, "tensorflow_info", lambda: TF_NO_GPU)
    monkeypatch.setattr(gpus, "machine_gpus", lambda devices="/dev": GPU_MACHINE)
    assert check_environment.command_line(["--results", str(tmp_path)] + (["--strict"] if strict else [])) == expected
    assert "WARNING: GPU present but TensorFlow sees none" in capsys.readouterr().out
