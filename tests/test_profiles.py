"""profiles/local-gpu and profiles/slurm: every key is a real Snakemake 9 option, GPU rules get a GPU,
and the SLURM plugin (pinned version) turns the training resources into the intended sbatch flags."""

import re

import pytest
import yaml

from conftest import REPO

PROFILES = {name: REPO / f"profiles/{name}/config.yaml" for name in ("local-gpu", "slurm")}
GPU_RULES = ("train", "evaluate", "gradcam")


def load(name: str) -> dict:
    return yaml.safe_load(PROFILES[name].read_text())


def snakemake_options() -> set[str]:
    """Every long option of this Snakemake, executor plugins' included (the profile keys are these without '--')."""
    from snakemake.cli import get_argument_parser

    parser = get_argument_parser()
    return {option[2:] for action in parser._actions for option in action.option_strings if option.startswith("--")}


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_key_is_a_snakemake_option(name):
    unknown = set(load(name)) - snakemake_options()
    assert not unknown, f"{name}: not Snakemake options: {unknown}"


@pytest.mark.parametrize("name", PROFILES)
def test_profile_is_read_by_snakemakes_own_parser(name):
    from snakemake.profiles import ProfileConfigFileParser

    with PROFILES[name].open() as stream:
        parsed = ProfileConfigFileParser().parse(stream)
    if name == "slurm":
        assert "train:gpu=1" in parsed["set-resources"] and "slurm_partition=cpu" in parsed["default-resources"]
    else:
        assert parsed["resources"] == ["gpu=2"]


def test_local_gpu_profile():
    profile = load("local-gpu")
    assert profile["cores"] == "all" and profile["resources"]["gpu"] >= 1
    assert profile["use-conda"] is True and profile["rerun-incomplete"] is True and profile["keep-going"] is False


def test_gpu_rules_declare_one_gpu():
    for rule in GPU_RULES:
        text = (REPO / f"rules/{rule}.smk").read_text()
        block = re.search(rf"^rule {rule}:.*?(?=^rule |\Z)", text, flags=re.S | re.M).group(0)
        assert re.search(r"resources:\s*\n\s+gpu=1,", block), rule


def test_slurm_profile_resources_are_complete_and_commented():
    profile = load("slurm")
    assert profile["executor"] == "slurm" and profile["slurm-status-command"] == "squeue"
    assert {"slurm_partition", "runtime", "mem_mb", "cpus_per_task"} <= set(profile["default-resources"])
    for rule in GPU_RULES:
        assert set(profile["set-resources"][rule]) >= {"gpu", "slurm_partition", "runtime", "mem_mb", "cpus_per_task"}
        assert profile["set-resources"][rule]["gpu"] == 1
    # each resource line carries its reason, on the line or on the comment line above
    lines = PROFILES["slurm"].read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\s{4,}(gpu|slurm_partition|runtime|mem_mb|cpus_per_task):", line):
            assert "#" in line or lines[number - 1].strip().startswith("#"), line


class FakeResources(dict):
    def __getattr__(self, name):
        return self[name]


class FakeJob:
    def __init__(self, resources: dict, threads: int):
        self.resources = FakeResources(resources)
        self.threads = threads


def test_plugin_turns_training_resources_into_sbatch_flags():
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    train = load("slurm")["set-resources"]["train"]
    job = FakeJob({**train, "runtime": 240}, threads=8)  # Snakemake turns "4h" into minutes before the plugin sees it
    params = {"run_uuid": "run", "slurm_logfile": "log", "comment_str": "rule_train", "account": "",
              "partition": f" -p {train['slurm_partition']}", "workdir": "/work"}
    call = get_submit_command(job, params) + set_gres_string(job)
    assert " -p gpu" in call and " -t 240" in call and f"--mem {train['mem_mb']}" in call
    assert f"--cpus-per-task={train['cpus_per_task']}" in call and "--gpus=1" in call
