"""Config validation and the expansion of studies into uniquely named runs."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

RUN_KEYS = ("arch", "size", "batch_size", "optimizer", "learning_rate", "momentum", "dropout", "class_weights")


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
    return config


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
    raise KeyError(key)


def run_id(dataset: str, values: dict, defaults: dict, seed: int) -> str:
    """A readable id such as 'bloodmnist-64-resnet50-bs32-rmsprop-lr1e-4-s0'."""
    parts = [dataset, str(values["size"]), values["arch"], f"bs{values['batch_size']}"]
    parts += [format_value(k, values[k]) for k in RUN_KEYS[3:] if values[k] != defaults[k]]
    return "-".join(parts + [f"s{seed}"])


def expand_grid(grid: dict, defaults: dict) -> list[dict]:
    """Run values of every combination of the grid's axes, other values from the defaults."""
    axes = [key for key in RUN_KEYS if key in grid]
    return [{**defaults, **dict(zip(axes, combo))} for combo in itertools.product(*(grid[a] for a in axes))]


def plan_runs(config: dict) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """All distinct runs by id (values + dataset + seed) and the run ids of each study."""
    runs: dict[str, dict] = {}
    studies: dict[str, list[str]] = {}
    dataset = config["dataset"]
    for study, spec in config["studies"].items():
        ids = []
        for values in expand_grid(spec["grid"], config["defaults"]):
            for seed in config["seeds"]:
                rid = run_id(dataset, values, config["defaults"], seed)
                runs[rid] = {**values, "dataset": dataset, "seed": seed}
                if rid not in ids:
                    ids.append(rid)
        studies[study] = ids
    return runs, studies
