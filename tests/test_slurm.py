"""The workflow through `--profile profiles/slurm` against a real (single-node) SLURM cluster.

Start the cluster first with `.ci/slurm-setup.sh` (root; stop it with `.ci/slurm-teardown.sh`).
Without `sbatch` on PATH or a responding controller the test is skipped, unless
BLOODCELLS_REQUIRE_SLURM=1 (set by CI), which turns a missing cluster into a failure.

The run is CPU-only: a profile layered on top of profiles/slurm sets `gpu: 0` for the GPU rules
(the test node has no GPU), shrinks memory requests to fit the node, drops conda (the test venv
has every package) and sends no account (no accounting on the test cluster). Everything else,
partitions, runtimes, the status command, comes from profiles/slurm unchanged.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SNAKEMAKE

PROFILE = REPO / "profiles/slurm"
TINY = REPO / "tests/configs/tiny.yaml"
GPU_RULES = ("train", "evaluate", "gradcam")
RUN = "synthetic-32-resnet50-bs32-s0"
# explicit targets, so that studies added to tiny.yaml later do not grow this test
TARGETS = ["results/tables/table3.csv", f"results/gradcam/{RUN}/panel.png", "results/figures/montage_synthetic.png"]
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")


def cluster_problem() -> str | None:
    """Why no SLURM cluster can be used here, or None when one answers with an idle or busy node."""
    for tool in ("sbatch", "squeue", "sinfo"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH"
    try:
        states = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True,
                                timeout=20).stdout.split()
    except (OSError, subprocess.SubprocessError) as error:
        return f"sinfo failed: {error}"
    if not any(state.rstrip("*~#") in ("idle", "mixed", "allocated") for state in states):
        return f"no usable SLURM node (sinfo: {states or 'no answer'}); run .ci/slurm-setup.sh"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = cluster_problem()
    if problem:
        if os.environ.get("BLOODCELLS_REQUIRE_SLURM") == "1":
            pytest.fail(f"SLURM required (BLOODCELLS_REQUIRE_SLURM=1) but {problem}")
        pytest.skip(problem)


def node_cpus() -> int:
    out = subprocess.run(["sinfo", "--noheader", "--format=%c"], capture_output=True, text=True, timeout=20).stdout
    return min(int(value.rstrip("+")) for value in out.split())


def ci_overlay(profile: dict, cpus: int) -> dict:
    """The settings that make profiles/slurm run CPU-only on the small test node (top-level keys replace the profile's)."""
    defaults = dict(profile["default-resources"])
    defaults["mem_mb"] = min(defaults["mem_mb"], 1000)
    rules = {}
    for rule, resources in profile["set-resources"].items():
        resources = dict(resources)
        if "gpu" in resources:
            resources["gpu"] = 0
            resources.pop("gpu_model", None)
        resources["mem_mb"] = min(resources.get("mem_mb", 4000), 3000)
        resources["cpus_per_task"] = min(resources.get("cpus_per_task", 1), cpus)
        rules[rule] = resources
    return {
        "default-resources": defaults,
        "set-resources": rules,
        "use-conda": False,                    # the test's venv already has every package
        "slurm-no-account": True,              # no accounting on the test cluster
        "slurm-init-seconds-before-status-checks": 3,
        "seconds-between-status-checks": 3,
        "retries": 0,                          # a failure should fail the test, not be retried
        "keep-going": False,
    }


def small_config(path: Path) -> Path:
    """tests/configs/tiny.yaml with a one-run Table 3 grid (ResNet-50, batch 32): one train -> evaluate -> gradcam chain."""
    config = yaml.safe_load(TINY.read_text())
    config["studies"]["table3"]["grid"] = {"arch": ["resnet50"], "batch_size": [32]}
    config["training"]["threads"] = 1
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """The small workflow run through the SLURM profile; returns (workdir, snakemake output)."""
    workdir = tmp_path_factory.mktemp("slurm")
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    overlay = workdir / "ci-profile"
    overlay.mkdir()
    (overlay / "config.yaml").write_text(yaml.safe_dump(ci_overlay(profile, node_cpus())))
    config = small_config(workdir / "config.yaml")
    command = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(config), "--profile", str(PROFILE), "--profile", str(overlay), "--verbose", *TARGETS]
    env = os.environ | {"CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("SLURM_JOB_ID", None)
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=900, env=env)
    output = result.stdout + result.stderr
    (workdir / "snakemake-output.txt").write_text(output)
    assert result.returncode == 0, f"snakemake via SLURM failed:\n{output[-8000:]}"
    return workdir, output


def test_workflow_finishes_through_slurm(slurm_run):
    workdir, output = slurm_run
    assert re.search(r"\d+ of \d+ steps \(100%\) done", output)
    for path in (f"results/runs/{RUN}/metrics.json", *TARGETS):
        assert (workdir / path).stat().st_size > 0, path


def test_every_job_was_a_slurm_job(slurm_run):
    workdir, output = slurm_run
    submitted = dict(SUBMITTED.findall(output))            # snakemake job id -> SLURM job id
    planned = re.search(r"Job stats:\n.*?\n\s*total\s+(\d+)", output, flags=re.S)
    assert planned, "no job stats in snakemake's output"
    n_jobs = int(planned.group(1))
    assert len(submitted) == n_jobs == 7  # prepare_dataset, montage, train, evaluate, bootstrap, gradcam, tables_grid
    assert len(set(submitted.values())) == n_jobs            # one SLURM job each
    # SLURM itself knows these jobs and says they completed (MinJobAge keeps them in squeue)
    states = subprocess.run(["squeue", "--states=all", "--noheader", "--format=%i|%T|%j", "--jobs",
                             ",".join(submitted.values())], capture_output=True, text=True, timeout=20).stdout
    seen = {line.split("|")[0]: line.split("|")[1] for line in states.split()}
    assert seen == {job: "COMPLETED" for job in submitted.values()}
    # and the plugin kept one SLURM log per job, named by its SLURM job id, under slurm-logdir
    logdir = workdir / "logs/slurm"
    logs = {path.stem for path in logdir.rglob("*.log")}
    assert set(submitted.values()) <= logs
    for rule in ("prepare_dataset", *GPU_RULES, "bootstrap", "tables_grid"):
        assert (logdir / f"rule_{rule}").is_dir(), rule


def test_gpu_rules_got_their_profile_resources(slurm_run):
    workdir, output = slurm_run
    calls = re.findall(r"sbatch call: (sbatch .*)", output)
    assert calls, "no sbatch call in the --verbose output"
    (workdir / "sbatch-calls.txt").write_text("\n".join(calls) + "\n")
    train = [call for call in calls if "--comment rule_train_wildcards_" in call]
    assert len(train) == 1, calls
    print("\nsbatch call of the training job:\n" + train[0])
    # partition and runtime straight from profiles/slurm; memory, CPUs and gpu=0 from the CI overlay
    assert " -p gpu" in train[0] and " -t 240" in train[0] and "--mem 3000" in train[0]
    assert f"--cpus-per-task={min(8, node_cpus())}" in train[0]
    assert "--gpus" not in train[0] and "--gres" not in train[0] and " -A " not in train[0]
    prepare = next(call for call in calls if "rule_prepare_dataset" in call)
    assert " -p cpu" in prepare and " -t 30" in prepare and "--mem 1000" in prepare
