"""Config validation: the schema's checks and defaults, and the cross-references a schema cannot state. Imported
when the Snakefile is parsed (on a cluster's login node): standard library and PyYAML only."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from .runs import OPTIONAL_RUN_DEFAULTS


class ConfigError(ValueError):
    """A config that breaks the schema or refers to something that does not exist."""


def _key_path(path) -> str:
    """'a.b[0]' from a jsonschema error path."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def resolve_ref(schema: dict, root: dict) -> dict:
    """`schema` with a local `$ref` ('#/$defs/name') replaced by the schema it points to (its siblings kept)."""
    if "$ref" not in schema:
        return schema
    target: Any = root
    for part in schema["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return {**resolve_ref(target, root), **{key: value for key, value in schema.items() if key != "$ref"}}


def fill_defaults(value: Any, schema: dict, validator) -> None:
    """Fill in the schema's `default` of every absent key of `value` and its nested objects, following `$ref`s,
    `additionalProperties`, allOf, the anyOf/oneOf branches `value` matches, and the then/else branch its `if` picks.

    `validator` is a jsonschema validator of the whole schema: it resolves `$ref`s and decides the branches.
    """
    if not isinstance(value, dict) or not isinstance(schema, dict):  # a boolean schema (`true`) has no defaults
        return
    schema = resolve_ref(schema, validator.schema)
    properties = schema.get("properties", {})
    for key, sub in properties.items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if key in value:
            fill_defaults(value[key], sub, validator)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in value.keys() - properties.keys():
            fill_defaults(value[key], extra, validator)
    branches = list(schema.get("allOf", []))
    branches += [sub for sub in schema.get("anyOf", []) + schema.get("oneOf", []) if _matches(validator, value, sub)]
    if "if" in schema:
        branches.append(schema.get("then" if _matches(validator, value, schema["if"]) else "else", {}))
    for branch in branches:
        fill_defaults(value, branch, validator)


def _matches(validator, value: Any, schema: dict) -> bool:
    """Whether `value` is valid against the subschema `schema` of the validator's schema."""
    return validator.evolve(schema=schema).is_valid(value)


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Check `config` against the schema and cross-references; raise ConfigError naming every bad key."""
    import jsonschema  # here: Snakemake's environment has it, the rule environments that import this module do not

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
    fill_defaults(config, schema, validator)
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
