"""Runs and their names: the expansion of a config's studies into uniquely named runs, each trained once. Imported
when the Snakefile is parsed (on a cluster's login node): standard library only."""

from __future__ import annotations

import itertools
from typing import Any

from .names import ARCHITECTURES, RUN_KEYS

# Run values added after the first configs: absent from `defaults`, they take these values.
OPTIONAL_RUN_DEFAULTS = {"attention": "none", "epochs": None}


def run_id_token(key: str, value: Any) -> str:
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
        run_id_token(k, values[k])
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


def training_priority(values: dict) -> int:
    """Snakemake priority of a run's training job: the costlier runs first, so that the last job to end is a short one.

    Cost per image grows with the architecture's FLOPs and the image area; smaller batches take longer per image.
    Every training job (10 and up) goes before the other rules (0).
    """
    cost = ARCHITECTURES[values["arch"]].gflops * (values["size"] / 224) ** 2 * (1 + 16 / values["batch_size"])
    return 10 + round(100 * cost)
