"""Shared fixtures: paths of the repository and a runner for snakemake in a scratch directory."""

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TINY = REPO / "tests/configs/tiny.yaml"  # the end-to-end test config; the tiny_run fixture runs it once per session
SCHEMA = REPO / "rules/schema/config.schema.yaml"
PBC_SAMPLE = REPO.parent / "shared/data/pbc_sample"  # real PBC cells beside the clone; never copied into the repo
POSTER = yaml.safe_load((REPO / "paper/poster_values.yaml").read_text())  # the poster's published values


# config.yaml's `defaults`: the values of the baseline run (ResNet-50, 64 px, batch 32, Adam 1e-4, dropout 0.3).
RUN_VALUES = {
    "arch": "resnet50",
    "size": 64,
    "batch_size": 32,
    "optimizer": "adam",
    "learning_rate": 1e-4,
    "momentum": 0.0,
    "dropout": 0.3,
    "class_weights": False,
}

# The folder layout and splits of the schema's defaults (rules/schema/config.schema.yaml, datasets.* of a folder).
LAYOUT = {"train": "Train", "test": "TestA", "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0}


# What bloodcells.gpus reports of a machine with one NVIDIA GPU, of one without, of one with device nodes alone, and of
# TensorFlow on each.
GPU_MACHINE = {
    "nvidia_smi": ["GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-fake)"],
    "device_nodes": ["/dev/nvidia0"],
    "nvidia_smi_found": True,
}
CPU_MACHINE = {"nvidia_smi": [], "device_nodes": [], "nvidia_smi_found": False}
NODES_ONLY = {"nvidia_smi": [], "device_nodes": ["/dev/nvidia0"], "nvidia_smi_found": False}
TF_GPU = {
    "version": "2.21.0",
    "gpus": ["/physical_device:GPU:0"],
    "built_with_cuda": True,
    "cuda_version": "12.5.1",
    "cudnn_version": "9",
    "cuda_packages": ["nvidia-cudnn-cu12"],
}
TF_NO_GPU = TF_GPU | {"gpus": []}


def comparison_record(
    name: str, a: tuple[str, float], b: tuple[str, float], p_exact: float, verdict: str = "supported"
) -> dict:
    """A significance record of one seed with this verdict: (label, accuracy) of its two sides."""
    return {
        "comparison": name,
        "verdict": verdict,
        "a": a[0],
        "b": b[0],
        "tests": [{"a_accuracy": a[1], "b_accuracy": b[1], "p_exact": p_exact}],
    }


# Every snakemake run of the tests holds this lock shared; a test that edits a file of the repository holds it
# alone (editing_repository), so that no run on another xdist worker plans (or records) jobs from the edited file.
REPO_LOCK = Path(tempfile.gettempdir()) / f"bloodcells-tests-{hashlib.sha256(str(REPO).encode()).hexdigest()[:12]}.lock"
_editing = False  # this process holds REPO_LOCK exclusively: its own runs need no shared hold


@contextlib.contextmanager
def repository_lock(exclusive: bool) -> Iterator[None]:
    """Hold REPO_LOCK, shared (a snakemake run reads the repository) or exclusive (a test edits it)."""
    with open(REPO_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


@contextlib.contextmanager
def editing_repository() -> Iterator[None]:
    """While a test edits a file of the repository: no other worker's snakemake run starts or is under way."""
    global _editing
    with repository_lock(exclusive=True):
        _editing = True
        try:
            yield
        finally:
            _editing = False


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run snakemake on the repository's Snakefile with results in `workdir`."""
    command = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    with contextlib.nullcontext() if _editing else repository_lock(exclusive=False):
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def rule_blocks() -> dict[str, str]:
    """Rule name -> its text, for every rule of rules/*.smk."""
    blocks = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.MULTILINE):
            name = re.match(r"rule (\w+):", block)
            if name:
                blocks[name.group(1)] = block
    return blocks


def load_rule_script(name: str):
    """scripts/{name}.py as a module: its imports run, its main(snakemake) does not (it is not __main__)."""
    spec = importlib.util.spec_from_file_location(f"rule_script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gradcam_job(folder: Path, dataset: dict, layer: str, batch_size: int, threads: int) -> SimpleNamespace:
    """The `snakemake` object of rule gradcam: model.keras, predictions.npz and data.npz in folder as input."""
    return SimpleNamespace(
        input=SimpleNamespace(**{name: str(folder / f"{name}.{ext}") for name, ext in GRADCAM_INPUTS.items()}),
        output=SimpleNamespace(**{name: str(folder / "gradcam" / file) for name, file in GRADCAM_OUTPUTS.items()}),
        params=SimpleNamespace(
            dataset=dataset,
            layer=layer,
            per_class_correct=2,
            per_class_mistakes=1,
            batch_size=batch_size,
            disc_radius=0.35,
            require_gpu="auto",
        ),
        wildcards=SimpleNamespace(run="synthetic-32-resnet50-bs32-s0"),
        log=[None],
        threads=threads,
        resources=SimpleNamespace(gpu=0),
    )


GRADCAM_INPUTS = {"model": "keras", "predictions": "npz", "data": "npz"}
GRADCAM_OUTPUTS = {"panel": "panel.png", "pdf": "panel.pdf", "heatmaps": "heatmaps.npz", "focus": "focus.csv"}


@pytest.fixture
def repo() -> Path:
    """The repository root."""
    return REPO


def place_raabin_folder(workdir: Path) -> None:
    """An (empty) Raabin-WBC folder where config.yaml expects it, so that a dry run gets past the parse-time check."""
    for name in ("Basophil", "Eosinophil", "Lymphocyte", "Monocyte", "Neutrophil"):
        (workdir / "data/Raabin-WBC/Train" / name).mkdir(parents=True)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run of the whole workflow on the tiny config (every study), shared by the workflow tests."""
    # TINY_RUN_DIR reuses (and brings up to date) an earlier tiny run, e.g. while developing the tests.
    if os.environ.get("TINY_RUN_DIR"):
        workdir = Path(os.environ["TINY_RUN_DIR"])
    elif os.environ.get("PYTEST_XDIST_WORKER"):  # one run for all workers: in the folder they share
        workdir = tmp_path_factory.getbasetemp().parent / "tiny"
    else:
        workdir = tmp_path_factory.getbasetemp() / "tiny"
    workdir.mkdir(parents=True, exist_ok=True)
    # The first worker to get here runs it; the others wait on the lock, then find it done.
    with open(workdir.with_name("tiny.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = workdir / ".tiny-run-done"
        if not done.exists():
            # Every study's reduced version: 11 trainings, about 4 minutes on 2 free cores; slack for a shared machine.
            run_snakemake(workdir, "--cores", "2", "--configfile", str(TINY), timeout=2400)
            done.touch()
    return workdir


# The modules that take longest, started first when pytest-xdist spreads the suite over workers, one module at a time
# (pyproject.toml's addopts): the README's cluster block (a 3 GB venv, then SLURM jobs) and test_workflow, which makes
# the session's tiny run, start at once; the GPU-on-CPU, SLURM and learning runs take minutes; started last, they would
# set the wall time. The other users of the tiny run come later, when it is done.
LONGEST_FIRST = (
    "test_readme_cluster.py",
    "test_workflow.py",
    "test_gpu_on_cpu.py",
    "test_slurm.py",
    "test_reliability_kill.py",
    "test_model_training.py",
    "test_learning.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the modules longest first (the order xdist hands them out in), keeping the order within each."""
    rank = {module: position for position, module in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
