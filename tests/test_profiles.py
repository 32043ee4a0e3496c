"""profiles/local-gpu and profiles/slurm: every key is a real Snakemake 9 option, GPU rules get a GPU,
and the SLURM plugin (pinned version) turns the training resources into the intended sbatch flags."""

import re

import pytest
import yaml
from conftest import REPO, SCHEMA, rule_blocks

from bloodcells.config import validate_config

PROFILES = {name: REPO / f"profiles/{name}/config.yaml" for name in ("local-gpu", "slurm")}


def gpu_rules() -> list[str]:
    """The rules that ask for a GPU in their own `resources:` (gpu=N with N >= 1)."""
    return sorted(
        name
        for name, block in rule_blocks().items()
        if re.search(r"^\s+resources:\s*\n(\s+\w+=.*\n)*?\s+gpu=[1-9]", block, flags=re.MULTILINE)
    )


GPU_RULES = gpu_rules()


def test_gpu_rules_are_read_from_the_rules():
    # the rules that run TensorFlow; a new one (e.g. transfer) is found without editing this test
    assert {"train", "evaluate", "gradcam", "transfer", "check_environment"} <= set(GPU_RULES)
    assert "prepare_dataset" not in GPU_RULES and "report" not in GPU_RULES


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
    assert profile["rerun-incomplete"] is True and profile["keep-going"] is False


def test_gpu_rules_declare_one_gpu():
    for rule in GPU_RULES:
        assert re.search(r"resources:\s*\n\s+gpu=1,", rule_blocks()[rule]), rule


def test_slurm_profile_resources_are_complete_and_commented():
    profile = load("slurm")
    assert profile["executor"] == "slurm" and profile["slurm-status-command"] == "squeue"
    assert {"slurm_partition", "runtime", "mem_mb", "cpus_per_task"} <= set(profile["default-resources"])
    for rule in GPU_RULES:
        resources = profile["set-resources"].get(rule, {})
        assert set(resources) >= {"gpu", "slurm_partition", "runtime", "mem_mb", "cpus_per_task"}, rule
        assert resources["gpu"] == 1 and resources["slurm_partition"] == "gpu", rule
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


def minutes(runtime) -> int:
    """A profile runtime (minutes, or a span such as '4h') in minutes, as Snakemake hands it to the plugin."""
    from humanfriendly import parse_timespan

    return int(runtime) if isinstance(runtime, int) else int(parse_timespan(runtime) / 60)


@pytest.mark.parametrize("rule", GPU_RULES)
def test_plugin_turns_gpu_rule_resources_into_sbatch_flags(rule):
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    resources = load("slurm")["set-resources"][rule]
    job = FakeJob({**resources, "runtime": minutes(resources["runtime"])}, threads=resources["cpus_per_task"])
    params = {
        "run_uuid": "run",
        "slurm_logfile": "log",
        "comment_str": f"rule_{rule}",
        "account": "",
        "partition": f" -p {resources['slurm_partition']}",
        "workdir": "/work",
    }
    call = get_submit_command(job, params) + set_gres_string(job)
    print(f"\nsbatch line of {rule}: {call}")
    assert (
        " -p gpu" in call and f" -t {minutes(resources['runtime'])}" in call and f"--mem {resources['mem_mb']}" in call
    )
    assert f"--cpus-per-task={resources['cpus_per_task']}" in call and "--gpus=1" in call


@pytest.mark.parametrize("name", PROFILES)
def test_conda_is_chosen_on_the_command_line(name):
    # Snakemake's own argument parsing with the profile: pip users get no conda, --use-conda turns it on
    from snakemake.cli import parse_args

    _, plain = parse_args(["--profile", str(PROFILES[name].parent), "-n"])
    _, with_conda = parse_args(["--profile", str(PROFILES[name].parent), "-n", "--use-conda"])
    assert plain.use_conda is False and with_conda.use_conda is True


def rule_threads(config: dict) -> dict[str, int]:
    """Every rule's `threads:` with this config (1 where a rule sets none), its expression evaluated as in Snakemake."""
    threads = {}
    for name, block in rule_blocks().items():
        found = re.search(r"^\s+threads:\s*(.+?)\s*$", block, flags=re.MULTILINE)
        threads[name] = int(eval(found.group(1), {"config": config})) if found else 1  # noqa: S307 (our own rules)
    return threads


def test_every_rule_gets_its_threads_as_slurm_cpus():
    config = validate_config(yaml.safe_load((REPO / "config.yaml").read_text()), SCHEMA)  # schema defaults filled
    profile = load("slurm")
    default = profile["default-resources"]["cpus_per_task"]
    threads = rule_threads(config)
    assert threads["train"] == config["training"]["threads"] == 8 and threads["check_environment"] == 1
    cpus = {rule: profile["set-resources"].get(rule, {}).get("cpus_per_task", default) for rule in threads}
    differ = {rule: (threads[rule], cpus[rule]) for rule in threads if threads[rule] != cpus[rule]}
    assert not differ, f"rule: (threads with config.yaml, cpus_per_task of profiles/slurm): {differ}"


def test_conda_is_the_software_deployment_method_the_readme_names():
    # the README's conda block passes --software-deployment-method conda; Snakemake's own parser turns it into conda
    from snakemake.cli import parse_args
    from snakemake.settings.types import DeploymentMethod

    _, args = parse_args(["--profile", str(PROFILES["slurm"].parent), "-n", "--software-deployment-method", "conda"])
    assert args.software_deployment_method == {DeploymentMethod.CONDA}
    _, plain = parse_args(["--profile", str(PROFILES["slurm"].parent), "-n"])
    assert not plain.software_deployment_method
