"""Config validation and the expansion of studies into runs."""

import copy
import re

import pytest
import yaml
from conftest import REPO, SCHEMA, place_raabin_folder, run_snakemake

from bloodcells.config import ConfigError, validate_config
from bloodcells.plan import gradcam_runs
from bloodcells.runs import expand_grid, plan_runs, run_id, training_priority


def load(name: str) -> dict:
    """A config file of the repository."""
    return yaml.safe_load((REPO / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "config.demo.yaml", "tests/configs/tiny.yaml"])
def test_shipped_configs_are_valid(name):
    config = validate_config(load(name), SCHEMA)
    assert config["training"]["mixed_precision"] in ("auto", True, False)


def test_defaults_are_filled_in():
    config = load("tests/configs/tiny.yaml")
    config["training"].pop("threads")
    assert validate_config(config, SCHEMA)["training"]["threads"] == 8


BAD_CONFIGS = [
    (lambda c: c["defaults"].update(arch="resnet18"), "defaults.arch", "'resnet18' is not one of"),
    (
        lambda c: c["studies"]["table3"]["grid"].update(size=[64, 16]),
        "studies.table3.grid.size[1]",
        "16 is less than the minimum of 32",
    ),
    (lambda c: c["defaults"].update(bach_size=32), "defaults", "'bach_size' was unexpected"),
    (lambda c: c["defaults"].update(learning_rate="fast"), "defaults.learning_rate", "'fast' is not of type 'number'"),
    (
        lambda c: c["defaults"].update(learning_rate=-0.1),
        "defaults.learning_rate",
        "-0.1 is less than or equal to the minimum of 0",
    ),
    (lambda c: c["studies"]["table3"]["grid"].update(arch=[]), "studies.table3.grid.arch", "should be non-empty"),
    (lambda c: c.update(dataset="nope"), "dataset", "'nope' is not one of the datasets"),
    (lambda c: c["studies"]["table3"].update(grid={}), "studies.table3.grid", "{} should be non-empty"),
    (lambda c: c["training"].update(max_epochs="30"), "training.max_epochs", "'30' is not of type 'integer'"),
]


@pytest.mark.parametrize("mutate, key, message", BAD_CONFIGS)
def test_bad_config_names_key_and_value(mutate, key, message):
    config = copy.deepcopy(load("config.yaml"))
    mutate(config)
    with pytest.raises(ConfigError) as error:
        validate_config(config, SCHEMA)
    assert f"config key '{key}'" in str(error.value)
    assert message in str(error.value)


@pytest.mark.parametrize("mutate, key, message", BAD_CONFIGS[:3])
def test_snakemake_stops_before_any_job(tmp_path, mutate, key, message):
    config = load("tests/configs/tiny.yaml")
    mutate(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_snakemake(tmp_path, "--cores", "1", "--configfile", str(path), check=False)
    assert result.returncode != 0
    assert f"config key '{key}'" in result.stderr and message in result.stderr
    assert not (tmp_path / "results").exists()


def test_run_id_names_only_non_default_values():
    defaults = load("config.yaml")["defaults"]
    assert run_id("bloodmnist", defaults, defaults, 0) == "bloodmnist-64-resnet50-bs32-s0"
    values = defaults | {
        "optimizer": "sgd",
        "learning_rate": 1e-3,
        "momentum": 0.8,
        "dropout": 0.5,
        "class_weights": True,
    }
    assert run_id("bloodmnist", values, defaults, 2) == "bloodmnist-64-resnet50-bs32-sgd-lr1e-3-m0.8-do0.5-cw-s2"


def test_expand_grid_is_cartesian_over_defaults():
    defaults = load("config.yaml")["defaults"]
    runs = expand_grid({"arch": ["resnet50", "resnet101"], "size": [64, 224]}, defaults)
    assert len(runs) == 4
    assert {(r["arch"], r["size"]) for r in runs} == {
        ("resnet50", 64),
        ("resnet50", 224),
        ("resnet101", 64),
        ("resnet101", 224),
    }
    assert all(r["batch_size"] == 32 and r["dropout"] == 0.3 for r in runs)


def test_runs_shared_by_studies_are_planned_once():
    config = load("config.yaml")
    config["seeds"] = [0, 1]
    config["studies"] = {"table3": config["studies"]["table3"], "batch": {"grid": {"batch_size": [16, 32]}}}
    config.pop("transfer")
    runs, studies = plan_runs(config)
    assert len(runs) == 24  # 12 grid configurations x 2 seeds; the batch study adds nothing new
    assert set(studies["batch"]) <= set(studies["table3"])
    assert len(studies["batch"]) == 4


def test_dry_run_of_full_config_plans_the_twelve_table3_jobs(tmp_path):
    place_raabin_folder(tmp_path)
    result = run_snakemake(
        tmp_path, "-n", "--cores", "1", "--quiet", "rules", "--configfile", str(REPO / "config.yaml")
    )
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.MULTILINE))
    # 12 Table 3 runs + 22 more of the studies (Table 2, methods tables, external dataset); shared runs once
    assert counts["train"] == "34"
    assert counts["evaluate"] == "34"
    # BloodMNIST at 64/128/224 px, and the external Raabin-WBC folder at 64 px
    assert counts["download_medmnist"] == "3" and counts["prepare_dataset"] == "4"
    # ImageNet weights are fetched once per architecture, not by the 34 training jobs
    assert counts["download_weights"] == "2"
    listing = run_snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(REPO / "config.yaml")).stdout
    trained = set(re.findall(r"results/runs/(bloodmnist-\d+-resnet\d+-bs\d+-s0)/model\.keras", listing))
    expected = {
        f"bloodmnist-{s}-{a}-bs{b}-s0" for s in (64, 128, 224) for a in ("resnet50", "resnet101") for b in (16, 32)
    }
    assert trained == expected


def test_gradcam_runs_default_to_the_posters_model():
    runs = {
        f"d-{size}-{arch}-bs{bs}-s{seed}": {"arch": arch, "size": size, "batch_size": bs, "seed": seed}
        for arch in ("resnet50", "resnet101")
        for size in (64, 224)
        for bs in (16, 32)
        for seed in (1, 0)
    }
    table3 = list(runs)
    assert gradcam_runs(None, runs, table3, seed=1) == ["d-224-resnet101-bs16-s1"]
    assert gradcam_runs([], runs, table3, seed=0) == ["d-224-resnet101-bs16-s0"]
    assert gradcam_runs(["d-64-resnet50-bs32-s0"], runs, table3, seed=0) == ["d-64-resnet50-bs32-s0"]
    with pytest.raises(ValueError, match="'gradcam.runs'.*nope"):
        gradcam_runs(["nope"], runs, table3, seed=0)
    only50 = {k: v for k, v in runs.items() if v["arch"] == "resnet50" and v["batch_size"] == 32}
    assert gradcam_runs(None, only50, list(only50), seed=0) == ["d-224-resnet50-bs32-s0"]


def test_missing_external_folder_stops_the_dry_run_with_one_message(tmp_path):
    result = run_snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(REPO / "config.yaml"), check=False)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "Dataset 'raabin' is read from data/Raabin-WBC" in message
    assert f"{tmp_path}/data/Raabin-WBC/Train is not there" in message
    assert "raabindata.com" in message and "Basophil, Eosinophil, Lymphocyte, Monocyte, Neutrophil" in message
    assert "--config external=False" in message
    assert not (tmp_path / "results").exists()
    # the switch the message names leaves Table 4 and the transfer evaluation out, and plans the rest
    result = run_snakemake(
        tmp_path,
        "-n",
        "--cores",
        "1",
        "--quiet",
        "rules",
        "--configfile",
        str(REPO / "config.yaml"),
        "--config",
        "external=False",
    )
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.MULTILINE))
    assert counts["train"] == "33" and counts["prepare_dataset"] == "3" and "transfer" not in counts


def test_external_switch_drops_other_datasets_studies_and_transfer():
    config = load("config.yaml") | {"external": False}
    validate_config(config, SCHEMA)
    assert "external" not in config["studies"] and "transfer" not in config
    runs, _ = plan_runs(config)
    assert {values["dataset"] for values in runs.values()} == {"bloodmnist"}


def test_training_jobs_are_ordered_costliest_first():
    def run(arch: str, size: int, batch_size: int) -> dict:
        return {"arch": arch, "size": size, "batch_size": batch_size}

    demo = [run("resnet101", 32, 16), run("resnet101", 32, 32), run("resnet50", 32, 16), run("resnet50", 32, 32)]
    priorities = [training_priority(values) for values in demo]
    assert priorities == sorted(priorities, reverse=True) and len(set(priorities)) == 4
    assert min(priorities) >= 10  # every training job before the other rules (priority 0)
    assert training_priority(run("resnet50", 224, 32)) > training_priority(run("resnet101", 64, 16))
