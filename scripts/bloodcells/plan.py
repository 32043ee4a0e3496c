"""The plan of a validated config: its runs, the tables, Grad-CAM runs and comparisons it asks for, and what each
rule's job needs of them. Imported when the Snakefile is parsed (on a cluster's login node): no numpy, pandas or
TensorFlow here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .config import ConfigError
from .runs import configurations, plan_runs

# Tables 1 and 3 show the Table 3 grid; every other table shows one study and is made where its study is planned
# (the transfer table: where the config has a transfer evaluation). Any other study only trains and evaluates.
GRID_TABLES = ("table1", "table3")
TABLE_STUDIES = {
    "table2": "table2",
    "table4": "external",
    "methods_batch": "batch",
    "methods_attention": "attention",
    "methods_optimizer": "optimizer",
    "methods_dropout": "dropout",
    "transfer": "transfer_source",
}
# Studies whose configurations the significance tests compare (bloodcells.comparisons.PLANNED_COMPARISONS).
COMPARED_STUDIES = ("table3", "table2", "attention", "optimizer", "dropout", "batch")


def config_hash(config: dict) -> str:
    """SHA-256 of the config as canonical JSON (sorted keys): equal configs hash equal however they were written."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def gradcam_runs(requested: list[str] | None, runs: dict[str, dict], table3: list[str], seed: int) -> list[str]:
    """The runs to explain: `requested` (checked against the planned runs), else the poster's model.

    The poster's model is the Table 3 run with ResNet-101 (if the grid has it), the largest size,
    batch 16 (if present, else the smallest batch) and the first seed.
    """
    if requested:
        unknown = [run for run in requested if run not in runs]
        if unknown:
            raise ConfigError(
                f"config key 'gradcam.runs': {unknown} are not runs of any study; known runs: {sorted(runs)}"
            )
        return list(requested)
    values = [runs[run] for run in table3]
    arch = "resnet101" if any(v["arch"] == "resnet101" for v in values) else values[0]["arch"]
    size = max(v["size"] for v in values if v["arch"] == arch)
    batches = {v["batch_size"] for v in values if v["arch"] == arch and v["size"] == size}
    batch = 16 if 16 in batches else min(batches)
    matches = [
        run
        for run in table3
        if (runs[run]["arch"], runs[run]["size"], runs[run]["batch_size"], runs[run]["seed"])
        == (arch, size, batch, seed)
    ]
    if not matches:
        raise ConfigError(f"no Table 3 run with {arch}, {size} px, batch {batch} and seed {seed} to explain")
    return matches[:1]


@dataclass(frozen=True)
class Plan:
    """What one config asks for: every run by id, the run ids of each study, the runs Grad-CAM explains, and the
    study tables (Tables 1 and 3 are always made)."""

    runs: dict[str, dict]
    studies: dict[str, list[str]]
    gradcam: list[str]
    tables: list[str]

    @property
    def table3(self) -> list[str]:
        """The runs of the Table 3 grid."""
        return self.studies["table3"]


def make_plan(config: dict) -> Plan:
    """The plan of a validated config: runs, studies, Grad-CAM runs (config key gradcam.runs, else the poster's
    model) and the study tables whose studies are planned."""
    runs, studies = plan_runs(config)
    gradcam = gradcam_runs(config["gradcam"].get("runs"), runs, studies["table3"], config["seeds"][0])
    return Plan(runs, studies, gradcam, study_tables(studies))


def study_tables(studies: dict[str, list[str]]) -> list[str]:
    """The study tables made, in TABLE_STUDIES order: those whose study is planned."""
    return [table for table, study in TABLE_STUDIES.items() if study in studies]


def synthesized_datasets(config: dict) -> list[str]:
    """Folder datasets the workflow draws itself (tests, demo: rule synthesize_folder) instead of reading a path."""
    return [
        name for name, source in config["datasets"].items() if source["source"] == "folder" and "synthesize" in source
    ]


def is_synthetic(config: dict, dataset: str) -> bool:
    """Whether a dataset is drawn by the workflow (synthetic source or synthesized folder), not real cells."""
    return config["datasets"][dataset]["source"] == "synthetic" or dataset in synthesized_datasets(config)


def table_params(config: dict, plan: Plan, table: str) -> dict:
    """What a study table's job needs: its runs, their configurations ([values, run ids] lists), its dataset (the
    transfer table: the target) and that dataset's source, and whether any of its data is synthetic."""
    runs = plan.studies[TABLE_STUDIES[table]]
    dataset = config["transfer"]["to"] if table == "transfer" else plan.runs[runs[0]]["dataset"]
    synthetic = any(is_synthetic(config, plan.runs[run]["dataset"]) for run in runs)
    return {
        "runs": runs,
        "configs": [[values, members] for values, members in configurations(runs, plan.runs)],
        "dataset": dataset,
        "source": config["datasets"][dataset]["source"],
        "synthetic": synthetic or is_synthetic(config, dataset),
    }


def compared_runs(config: dict, runs: dict[str, dict]) -> list[str]:
    """Runs whose test predictions the McNemar tests read: every run on the main dataset."""
    return [run for run, values in runs.items() if values["dataset"] == config["dataset"]]


def compared_configs(plan: Plan) -> dict[str, list[list]]:
    """[values, run ids] of each configuration of each compared study that is planned."""
    return {
        study: [[values, members] for values, members in configurations(plan.studies[study], plan.runs)]
        for study in COMPARED_STUDIES
        if study in plan.studies
    }


def recipe_facts(config: dict) -> dict:
    """The training recipe and seeds as the notes under the tables state them (paper/tables.yaml)."""
    training, augmentation = config["training"], config["training"]["augmentation"]
    return {
        "max_epochs": training["max_epochs"],
        "patience": training["patience"],
        "weights": training["weights"],
        "shear": augmentation["shear"],
        "shear_unit": augmentation["shear_unit"],
        "zoom": augmentation["zoom"],
        "n_seeds": len(config["seeds"]),
    }


def report_config(config: dict) -> dict:
    """The part of the config the report's fidelity notes state (bloodcells.report.fidelity_notes): the training
    recipe, defaults, seeds, statistics and the main dataset's source, passed to the report rule as a param."""
    sections = {key: config[key] for key in ("training", "defaults", "seeds", "statistics")}
    return sections | {"datasets": {config["dataset"]: config["datasets"][config["dataset"]]}}
