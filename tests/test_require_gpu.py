"""training.require_gpu: a GPU rule stops at its start, with the diagnosis, instead of training for hours on the CPU."""

import ast
import os
import re
import time

import pytest
from conftest import CPU_MACHINE, GPU_MACHINE, NODES_ONLY, REPO, TF_GPU, TF_NO_GPU, TINY, run_snakemake

from bloodcells import gpus, hardware
from bloodcells.hardware import GpuRequiredError, enforce_gpu_requirement, gpu_requirement_error

TF_BROKEN = {"error": "ImportError: libcudart.so.12: cannot open shared object file"}


@pytest.mark.parametrize("require", ["auto", True, False, "on", "off"])
def test_a_gpu_tensorflow_sees_never_stops(require):
    assert gpu_requirement_error(require, GPU_MACHINE, TF_GPU, {}) is None


@pytest.mark.parametrize("require", ["auto", False, "false"])
def test_a_cpu_machine_trains_on_the_cpu_unless_a_gpu_is_required(require):
    assert gpu_requirement_error(require, CPU_MACHINE, TF_NO_GPU, {}) is None
    assert gpu_requirement_error(require, CPU_MACHINE, TF_BROKEN, {}) is None  # auto on a CPU: nothing to check


@pytest.mark.parametrize("machine", [GPU_MACHINE, NODES_ONLY])
def test_auto_stops_where_the_machine_has_a_gpu_tensorflow_does_not_see(machine):
    message = gpu_requirement_error("auto", machine, TF_NO_GPU, {"CUDA_VISIBLE_DEVICES": ""})
    assert "but TensorFlow 2.21.0 sees none" in message and "stopped before any work" in message
    assert "(1) CUDA_VISIBLE_DEVICES='' hides every GPU; unset it." in message
    assert "`pip install tensorflow[and-cuda]==2.21.0`" in message and "CUDA 12.5.1 / cuDNN 9" in message
    assert "`snakemake check_environment --use-conda`" in message and "`python scripts/check_environment.py`" in message
    assert "config training.require_gpu: auto" in message and "set training.require_gpu: false" in message
    shown = "GPU 0: NVIDIA H100 80GB HBM3" if machine is GPU_MACHINE else "/dev/nvidia0"
    assert f"this machine has a GPU ({shown}" in message
    assert ("nvidia-smi lists no GPU" in message) is (machine is NODES_ONLY)


def test_auto_names_what_is_missing():
    no_packages = gpu_requirement_error("auto", GPU_MACHINE, TF_NO_GPU | {"cuda_packages": []}, {})
    assert "none of the nvidia-* CUDA packages is installed in this environment" in no_packages
    assert "CUDA_VISIBLE_DEVICES" not in no_packages  # not set: not a reason
    cpu_build = gpu_requirement_error("auto", GPU_MACHINE, TF_NO_GPU | {"built_with_cuda": False}, {})
    assert "CPU-only build; install the CUDA build: `pip install tensorflow[and-cuda]==2.21.0`" in cpu_build
    broken = gpu_requirement_error("auto", GPU_MACHINE, TF_BROKEN, {})
    assert broken.startswith("TensorFlow cannot be imported (ImportError: libcudart.so.12")


@pytest.mark.parametrize("require", [True, "true", "yes"])
def test_true_stops_whenever_tensorflow_sees_no_gpu(require):
    message = gpu_requirement_error(require, CPU_MACHINE, TF_NO_GPU, {})
    assert message.startswith(
        "TensorFlow sees no GPU and this machine shows none (nvidia-smi: not found, no "
        "/dev/nvidia* device nodes); stopped before any work (config training.require_gpu: "
    )
    assert "Run the GPU rules on a GPU node" in message and "set training.require_gpu: false" in message
    assert "hides every GPU" in gpu_requirement_error(require, CPU_MACHINE, TF_NO_GPU, {"CUDA_VISIBLE_DEVICES": "-1"})
    assert "but TensorFlow 2.21.0 sees none" in gpu_requirement_error(require, GPU_MACHINE, TF_NO_GPU, {})


def test_an_unknown_value_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="'maybe' is not 'auto', true or false"):
        gpu_requirement_error("maybe", GPU_MACHINE, TF_NO_GPU, {})


def test_enforce_looks_only_as_far_as_it_must(monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("called")

    monkeypatch.setattr(gpus, "machine_gpus", must_not_run)
    enforce_gpu_requirement(False, "train")  # false: not even nvidia-smi runs
    monkeypatch.setattr(gpus, "machine_gpus", lambda devices="/dev": CPU_MACHINE)
    monkeypatch.setattr(gpus, "tensorflow_info", must_not_run)
    enforce_gpu_requirement("auto", "train")  # auto on a CPU machine: TensorFlow is not imported for the check
    monkeypatch.setattr(gpus, "machine_gpus", lambda devices="/dev": GPU_MACHINE)
    monkeypatch.setattr(gpus, "tensorflow_info", lambda: TF_NO_GPU)
    with pytest.raises(GpuRequiredError, match=r"^evaluate: this machine has a GPU \(GPU 0: NVIDIA H100"):
        enforce_gpu_requirement("auto", "evaluate", environ={})
    monkeypatch.setattr(gpus, "tensorflow_info", lambda: TF_GPU)
    enforce_gpu_requirement("auto", "evaluate", environ={})


def test_every_gpu_rule_passes_the_setting_and_checks_it_first():
    rules = "".join(path.read_text() for path in REPO.glob("rules/*.smk"))
    gpu_rules = re.findall(r"rule (\w+):(?:(?!\nrule ).)*?gpu=1", rules, re.S)
    assert sorted(set(gpu_rules) - {"check_environment"}) == sorted(hardware.GPU_RULES)
    for rule in hardware.GPU_RULES:
        body = rules.split(f"rule {rule}:")[1].split("\nrule ")[0]
        assert 'require_gpu=config["training"]["require_gpu"]' in body, rule
        script = (REPO / re.search(r'"\.\./scripts/(\w+\.py)"', body).group(1).join(["scripts/", ""])).read_text()
        [main] = [node for node in ast.parse(script).body if isinstance(node, ast.FunctionDef) and node.name == "main"]
        first = ast.unparse(main.body[1])  # after the docstring, before any data is read
        assert first.startswith("start_tensorflow_job(smk.log[0], " + repr(rule)), rule
        assert "smk.params.require_gpu" in first, rule


def test_job_setup_checks_the_setting_after_pinning_and_before_tensorflow_starts(monkeypatch):
    from bloodcells import jobsetup

    calls = []
    monkeypatch.setattr(jobsetup, "log_to_file", lambda path: calls.append(("log", path)))
    monkeypatch.setattr(jobsetup, "pin_job_to_gpu", lambda gpus, label: calls.append(("pin", gpus, label[:23])))
    monkeypatch.setattr(jobsetup, "enforce_gpu_requirement", lambda require, rule: calls.append(("check", require)))
    monkeypatch.setattr(jobsetup, "set_threads_and_memory", lambda threads: calls.append(("threads", threads)) or 1)
    jobsetup.start_tensorflow_job("logs/x.log", "evaluate", {"run": "r1"}, 1, "auto", 3)
    assert calls == [("log", "logs/x.log"), ("pin", 1, "rule evaluate (run=r1) "), ("check", "auto"), ("threads", 3)]


def test_train_job_stops_on_a_gpu_machine_whose_gpu_tensorflow_cannot_see(tmp_path, monkeypatch):
    # A GPU node as nvidia-smi shows it; CUDA_VISIBLE_DEVICES="" (run_snakemake) keeps TensorFlow from seeing a GPU.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    nvidia_smi = fake_bin / "nvidia-smi"
    nvidia_smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-fake)'\n")
    nvidia_smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    run = "synthetic-32-resnet50-bs16-s0"
    workdir = tmp_path / "work"
    workdir.mkdir()
    args = ("--cores", "1", "--configfile", str(TINY))
    run_snakemake(workdir, "results/data/synthetic/32.npz", *args)  # the data, made before the clock starts
    started = time.monotonic()
    result = run_snakemake(workdir, f"results/runs/{run}/model.keras", *args, check=False)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    log = (workdir / f"logs/train/{run}.log").read_text()
    print(log[-3000:], f"\n{elapsed:.1f} s")
    assert (
        "GpuRequiredError: train: this machine has a GPU (GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-fake)) but TensorFlow"
    ) in log
    for text in (
        "CUDA_VISIBLE_DEVICES='' hides every GPU",
        "pip install tensorflow[and-cuda]==",
        "snakemake check_environment",
        "training.require_gpu: false",
    ):
        assert text in log, text
    assert "Epoch 1/1" not in log and f"run {run}:" not in log  # stopped before the data was read and any epoch
    assert not (workdir / "results/checkpoints" / run).exists()
    assert not (workdir / f"results/runs/{run}").exists() or not any((workdir / f"results/runs/{run}").iterdir())
