"""Config validation, the expansion of studies into uniquely named runs, and the plan of a config: which tables,
Grad-CAM runs and comparisons it asks for, and what each table's job needs. Imported when the Snakefile is parsed
(on a cluster's login node): no numpy, pandas or TensorFlow here."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .download import IMAGENET_NOTOP_NAME, imagenet_weights_name
from .names import RUN_KEYS

# Run values added after the first configs: absent from `defaults`, they take these values.
OPTIONAL_RUN_DEFAULTS = {"attention": "none", "epochs": None}
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
# Studies whose configurations the significance tests compare (bloodcells.studies.planned_comparisons).
COMPARED_STUDIES = ("table3", "table2", "attention", "optimizer", "dropout", "batch")


# Forward-pass GFLOPs per image at 224 px (He et al. 2016, table 1): the relative cost of a training step.
ARCH_GFLOPS = {"resnet50": 4.1, "resnet101": 7.8}


def training_priority(values: dict) -> int:
    """Snakemake priority of a run's training job: the costlier runs first, so that the last job to end is a short one.

    Cost per image grows with the architecture's FLOPs and the image area; smaller batches take longer per image.
    Every training job (10 and up) goes before the other rules (0).
    """
    cost = ARCH_GFLOPS[values["arch"]] * (values["size"] / 224) ** 2 * (1 + 16 / values["batch_size"])
    return 10 + round(100 * cost)


class ConfigError(ValueError):
    """A config that breaks the schema or refers to something that does not exist."""


def _key_path(path) -> str:
    """'a.b[0]' from a jsonschema error path."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def fill_defaults(config: dict, schema: dict) -> None:
    """Fill in the schema's `default` values for absent keys of the nested objects."""
    for key, sub in schema.get("properties", {}).items():
        if "default" in sub and key not in config:
            config[key] = sub["default"]
        if sub.get("type") == "object" and isinstance(config.get(key), dict):
            fill_defaults(config[key], sub)


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Check `config` against the schema and cross-references; raise ConfigError naming every bad key."""
    import jsonschema  # here: Snakemake's environment has it, the rule environments that import plan do not

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"  config key '{_key_path(e.absolute_path)}': {e.message}" for e in errors]
        raise ConfigError("invalid config (checked against " + str(schema_path) + "):\n" + "\n".join(lines))
    if config["dataset"] not in config["datasets"]:
        raise ConfigError(
            f"config key 'dataset': '{config['dataset']}' is not one of the datasets {sorted(config['datasets'])}"
        )
    fill_defaults(config, schema)
    for key, value in OPTIONAL_RUN_DEFAULTS.items():
        config["defaults"].setdefault(key, value)
    check_cross_references(config)
    if not config["external"]:
        leave_out_external(config)
    return config


def leave_out_external(config: dict) -> None:
    """Remove the studies on other datasets than `dataset`, and the transfer evaluation, from `config`."""
    main = config["dataset"]
    config["studies"] = {name: spec for name, spec in config["studies"].items() if spec.get("dataset", main) == main}
    config.pop("transfer", None)


def check_cross_references(config: dict) -> None:
    """Datasets named by studies and the transfer evaluation must exist; folder classes must be unique."""
    for study, spec in config["studies"].items():
        if spec.get("dataset", config["dataset"]) not in config["datasets"]:
            raise ConfigError(
                f"config key 'studies.{study}.dataset': '{spec['dataset']}' is not one of the datasets "
                f"{sorted(config['datasets'])}"
            )
    for name, source in config["datasets"].items():
        if source["source"] == "folder":
            classes = list(source["classes"].values())
            if len(set(classes)) != len(classes):
                raise ConfigError(f"config key 'datasets.{name}.classes': class names {classes} repeat")
            if "path" not in source and "synthesize" not in source:
                raise ConfigError(f"config key 'datasets.{name}': a folder source needs 'path' or 'synthesize'")
    transfer = config.get("transfer")
    if transfer:
        for key in ("from", "to"):
            dataset = transfer[key]["dataset"] if key == "from" else transfer[key]
            if dataset not in config["datasets"]:
                raise ConfigError(
                    f"config key 'transfer.{key}': dataset '{dataset}' is not one of {sorted(config['datasets'])}"
                )


def format_value(key: str, value: Any) -> str:
    """The short token a non-default run value adds to a run id."""
    if key == "optimizer":
        return str(value)
    if key == "learning_rate":
        return f"lr{value:.0e}".replace("e-0", "e-")
    if key == "momentum":
        return f"m{value:g}"
    if key == "dropout":
        return f"do{value:g}"
    if key == "class_weights":
        return "cw" if value else "nocw"
    if key == "attention":
        return str(value)  # 'se', 'cbam' (or 'none' where the defaults use an attention layer)
    if key == "epochs":
        return f"e{value}" if value is not None else "estop"
    raise KeyError(key)


def run_id(dataset: str, values: dict, defaults: dict, seed: int) -> str:
    """A readable id such as 'bloodmnist-64-resnet50-bs32-rmsprop-lr1e-4-s0'."""
    parts = [dataset, str(values["size"]), values["arch"], f"bs{values['batch_size']}"]
    parts += [
        format_value(k, values[k])
        for k in RUN_KEYS[3:]
        if values.get(k, OPTIONAL_RUN_DEFAULTS.get(k)) != defaults.get(k, OPTIONAL_RUN_DEFAULTS.get(k))
    ]
    return "-".join(parts + [f"s{seed}"])


def expand_grid(grid: dict, defaults: dict) -> list[dict]:
    """Run values of every combination of the grid's axes, other values from the defaults."""
    axes = [key for key in RUN_KEYS if key in grid]
    return [
        {**defaults, **dict(zip(axes, combo, strict=True))} for combo in itertools.product(*(grid[a] for a in axes))
    ]


def study_values(spec: dict, defaults: dict) -> list[dict]:
    """The run values of one study, in order and without repeats.

    A study lists its runs in any of three forms, which may be combined:
    `grid` (one cartesian product), `grids` (a list of them, for tables that fill only some cells)
    and `runs` (a list of partial value dicts). `set` overrides the defaults for all of them.
    """
    base = {**OPTIONAL_RUN_DEFAULTS, **defaults, **spec.get("set", {})}
    values: list[dict] = []
    grids = ([spec["grid"]] if "grid" in spec else []) + list(spec.get("grids", []))
    for grid in grids:
        values += expand_grid(grid, base)
    values += [{**base, **partial} for partial in spec.get("runs", [])]
    unique: list[dict] = []
    for value in values:
        if value not in unique:
            unique.append(value)
    return unique


def plan_runs(config: dict) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """All distinct runs by id (values + dataset + seed) and the run ids of each study.

    A run shared by several studies (same dataset, values and seed) gets one id and trains once. The
    transfer evaluation's source run is planned as the pseudo-study 'transfer_source'.
    """
    runs: dict[str, dict] = {}
    studies: dict[str, list[str]] = {}
    defaults = {**OPTIONAL_RUN_DEFAULTS, **config["defaults"]}
    specs = dict(config["studies"])
    if config.get("transfer"):
        source = dict(config["transfer"]["from"])
        specs["transfer_source"] = {"dataset": source.pop("dataset"), "runs": [source]}
    for study, spec in specs.items():
        dataset = spec.get("dataset", config["dataset"])
        ids = []
        for values in study_values(spec, defaults):
            for seed in config["seeds"]:
                rid = run_id(dataset, values, defaults, seed)
                runs[rid] = {**values, "dataset": dataset, "seed": seed}
                if rid not in ids:
                    ids.append(rid)
        studies[study] = ids
    return runs, studies


def configurations(run_ids: list[str], runs: dict[str, dict]) -> list[tuple[dict, list[str]]]:
    """The run ids of a study grouped by configuration (values without the seed), in study order."""
    groups: list[tuple[dict, list[str]]] = []
    for rid in run_ids:
        values = {key: value for key, value in runs[rid].items() if key != "seed"}
        for known, members in groups:
            if known == values:
                members.append(rid)
                break
        else:
            groups.append((values, [rid]))
    return groups


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


def imagenet_weights_pattern(config: dict) -> str:
    """The path of the ImageNet weights files with an {arch} wildcard (the output of rule download_weights)."""
    return str(Path(config["training"]["weights_dir"]) / IMAGENET_NOTOP_NAME)


def imagenet_weights_file(config: dict, arch: str) -> str | None:
    """The ImageNet weights file a run of `arch` starts from, or None when training starts from random weights."""
    training = config["training"]
    if training["weights"] != "imagenet":
        return None
    return str(Path(training["weights_dir"]) / imagenet_weights_name(arch))


def user_folders(config: dict, runs: dict[str, dict]) -> dict[str, str]:
    """Dataset name -> the folder a user provides (pbc, or folder with `path`), for the datasets planned runs use."""
    used = {values["dataset"] for values in runs.values()}
    if config.get("transfer"):
        used.add(config["transfer"]["to"])
    return {
        name: source["path"]
        for name, source in config["datasets"].items()
        if name in used and source["source"] in ("pbc", "folder") and "synthesize" not in source
    }


def missing_folder_message(config: dict, dataset: str, root: Path) -> str | None:
    """Why the user folder of `dataset` cannot be read (missing folder or training subfolder), or None when present."""
    source = config["datasets"][dataset]
    train = source.get("train", "Train")
    folder = root / source["path"]
    needed = folder / train if source["source"] == "folder" else folder
    if needed.is_dir():
        return None
    lines = [
        f"Dataset '{dataset}' is read from {source['path']} (config key 'datasets.{dataset}.path'), "
        f"but {needed} is not there."
    ]
    if source.get("homepage"):
        lines.append(
            f"Download it from {source['homepage']} and unpack it there"
            + (
                f" so that {source['path']}/{train}/ holds one folder per class ({', '.join(source['classes'])})."
                if source["source"] == "folder"
                else "."
            )
        )
    if dataset != config["dataset"]:
        lines.append(
            f"Or leave out the studies that need '{dataset}' (Table 4) and the transfer evaluation: "
            "add --config external=False to the snakemake command, or set `external: false` in the config."
        )
    return " ".join(lines)


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
        "synthetic": synthetic or dataset in synthesized_datasets(config),
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
