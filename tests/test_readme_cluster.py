"""The README's cluster block (pip: one full environment) as written, on CI's single-node SLURM.

The test copies the repository (tracked and untracked, not ignored files: a fresh clone) into a new folder and runs
the first bash block of the README's "On a cluster" section there, line by line as a user pastes it, with bash: the
venv is made and filled exactly as the block says (requirements-gpu.lock with its hashes, CUDA libraries included),
and Snakemake runs from it with `--profile profiles/slurm` as it is. One thing is swapped: the copy's config.yaml is
replaced by the tiny test config cut down to one run (tests/configs/tiny.yaml: synthetic cells, 32 px, one epoch;
Table 3 of one ResNet-50, no external studies), so that the run takes minutes, not GPU-hours. The block reads
config.yaml because it names no --configfile; nothing else of the block or the profile changes.

CI's SLURM (.ci/slurm-setup.sh) has one node that claims 16 CPUs, 64 GB and one GPU (device file /dev/null), so the
profile's GPU requests are scheduled as written; TensorFlow finds no GPU there and the jobs run on the CPU
(training.require_gpu: auto stops only where the machine shows a GPU).

Cost: the venv (about 3 GB of wheels, 6.7 GB installed) and 14 SLURM jobs, polled with the profile's own intervals.
On the 2-core CI machine shared with three other test runs (load 11-18), 19 minutes: 12 for the venv, 6 for the jobs.
A light login venv without conda stops before any submission instead: tests/test_login_env.py.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY
from test_slurm import cluster, slurm_jobs  # noqa: F401 (cluster: the fixture that requires a SLURM cluster)

SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: [^)]*/rule_(\w+)/")
RUN = "synthetic-32-resnet50-bs32-s0"


def readme_bash_blocks(section: str) -> list[str]:
    """The ```bash blocks of one '## ' section of the README, in order."""
    text = (REPO / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```bash\n(.*?)^```$", body, flags=re.MULTILINE | re.DOTALL)


def one_run_config() -> dict:
    """tests/configs/tiny.yaml cut down to one training run (its Table 3: ResNet-50, batch 32) and no other study."""
    config = yaml.safe_load(TINY.read_text())
    config["studies"] = {"table3": {"grid": {"arch": ["resnet50"], "batch_size": [32]}}}
    config["external"] = False
    return config


def fresh_copy(destination: Path) -> None:
    """The repository's files as a clone has them: tracked ones and untracked ones that git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def user_environment() -> dict:
    """This environment without the test's venv (a user's shell before the block): no VIRTUAL_ENV, none on PATH."""
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH", "SLURM_JOB_ID")}
    env["PATH"] = os.pathsep.join(entry for entry in env["PATH"].split(os.pathsep) if entry != venv_bin)
    return env


def test_the_cluster_section_has_the_pip_block_first():
    pip_block, conda_block = readme_bash_blocks("On a cluster")
    assert "requirements-gpu.lock" in pip_block and "--software-deployment-method conda" not in pip_block
    assert "requirements-login.lock" in conda_block and conda_block.count("--software-deployment-method conda") == 3


@pytest.fixture(scope="module")
def block_run(cluster, tmp_path_factory):  # noqa: F811
    """The pip block run in a fresh copy; returns (the copy, the block's output)."""
    clone = tmp_path_factory.mktemp("readme-cluster")
    fresh_copy(clone)
    (clone / "config.yaml").write_text(yaml.safe_dump(one_run_config()))
    block = readme_bash_blocks("On a cluster")[0]
    print(f"\nthe README's cluster block, run in {clone}:\n{block}")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=clone,
        env=user_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=2700,
    )
    (clone / "block-output.txt").write_text(result.stdout)
    assert result.returncode == 0, f"the README's cluster block failed:\n{result.stdout[-8000:]}"
    return clone, result.stdout


def test_every_job_ran_as_a_finished_slurm_job(block_run):
    clone, output = block_run
    submitted = SUBMITTED.findall(output)
    rules = {rule for _, rule in submitted}
    print(f"\nSLURM jobs of the README block: {sorted(rules)}")
    assert {"check_environment", "prepare_dataset", "train", "evaluate", "gradcam", "tables_grid", "report"} <= rules
    assert not rules & {"download_medmnist", "download_weights", "report_pdf", "all"}  # local rules stay local
    states = {job: info["state"] for job, info in slurm_jobs([job for job, _ in submitted]).items()}
    assert set(states.values()) == {"COMPLETED"}, states
    assert len(submitted) == len(states)  # none retried


def test_the_jobs_ran_in_the_blocks_venv(block_run):
    clone, _ = block_run
    # check_environment ran on the "GPU node" as a SLURM job, with the TensorFlow the block installed into .venv
    check = (clone / "logs/check_environment.log").read_text()
    assert "2.21.0" in check and str(clone / ".venv") in check, check[-3000:]
    assert (clone / f"results/runs/{RUN}/metrics.json").stat().st_size > 0
    assert (clone / f"results/gradcam/{RUN}/panel.png").stat().st_size > 0
    assert (clone / "results/report/report.html").stat().st_size > 0
