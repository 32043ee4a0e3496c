"""The schema's defaults reach the validated config, and the facts the schema repeats agree with their home."""

import copy
from collections.abc import Iterator

import jsonschema
import pytest
import yaml
from conftest import SCHEMA, TINY

from bloodcells.config import validate_config
from bloodcells.names import ARCHITECTURES

Path = tuple[str, ...]


def load_schema() -> dict:
    """The config schema as a dict."""
    return yaml.safe_load(SCHEMA.read_text())


def default_pointers(node, pointer: str = "#") -> Iterator[str]:
    """The JSON pointer of every subschema of `node` that states a `default`."""
    if isinstance(node, dict):
        if "default" in node:
            yield pointer
        for key, child in node.items():
            if key != "default":
                yield from default_pointers(child, f"{pointer}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from default_pointers(child, f"{pointer}/{index}")


def defaults_reached(node: dict, pointer: str, instance, path: Path, validator) -> Iterator[tuple[str, Path, object]]:
    """(schema pointer, config path, default) of every default the schema applies to a key of `instance`: followed
    through `$ref`s, properties, additionalProperties and the allOf/anyOf/oneOf/then/else branches `instance` takes."""
    if not isinstance(node, dict):  # a boolean schema (`true`) states nothing
        return
    if "$ref" in node:
        target = node["$ref"]
        resolved = validator.schema
        for part in target.removeprefix("#/").split("/"):
            resolved = resolved[part]
        yield from defaults_reached(resolved, target, instance, path, validator)
    if not isinstance(instance, dict):
        return
    properties = node.get("properties", {})
    for key, sub in properties.items():
        if isinstance(sub, dict) and "default" in sub:
            yield f"{pointer}/properties/{key}", (*path, key), sub["default"]
        if key in instance:
            yield from defaults_reached(sub, f"{pointer}/properties/{key}", instance[key], (*path, key), validator)
    if isinstance(node.get("additionalProperties"), dict):
        for key in instance.keys() - properties.keys():
            extra = node["additionalProperties"]
            yield from defaults_reached(
                extra, f"{pointer}/additionalProperties", instance[key], (*path, key), validator
            )
    for kind in ("allOf", "anyOf", "oneOf"):
        for index, sub in enumerate(node.get(kind, [])):
            if kind == "allOf" or validator.evolve(schema=sub).is_valid(instance):
                yield from defaults_reached(sub, f"{pointer}/{kind}/{index}", instance, path, validator)
    if "if" in node:
        branch = "then" if validator.evolve(schema=node["if"]).is_valid(instance) else "else"
        if branch in node:
            yield from defaults_reached(node[branch], f"{pointer}/{branch}", instance, path, validator)


def every_source_config() -> dict:
    """The tiny test config (synthetic data and a synthesized folder) with a PBC folder too: a dataset of every source
    that has defaults, every optional section present."""
    config = yaml.safe_load(TINY.read_text())
    config["datasets"]["pbc"] = {"source": "pbc", "path": "data/PBC"}
    return config


def without(config: dict, path: Path) -> dict:
    """A copy of `config` without the key at `path`."""
    copied = copy.deepcopy(config)
    parent = copied
    for key in path[:-1]:
        parent = parent[key]
    parent.pop(path[-1], None)
    return copied


def value_at(config: dict, path: Path):
    """The value at `path` of a nested config."""
    for key in path:
        config = config[key]
    return config


def test_every_schema_default_reaches_the_config_that_omits_its_key():
    schema, config = load_schema(), every_source_config()
    validator = jsonschema.Draft202012Validator(schema)
    reached = list(defaults_reached(schema, "#", config, (), validator))
    missed = set(default_pointers(schema)) - {pointer for pointer, _, _ in reached}
    assert not missed, (
        f"defaults no key of every_source_config() takes: add a dataset or section that has them {missed}"
    )
    for _, path, default in reached:
        filled = value_at(validate_config(without(config, path), SCHEMA), path)
        if isinstance(default, dict):  # an object's default: {} with its own keys' defaults filled in
            assert isinstance(filled, dict) and default.items() <= filled.items(), path
        else:
            assert filled == default, (".".join(path), filled, default)


def test_a_branchs_defaults_fill_only_the_datasets_whose_if_it_matches():
    datasets = validate_config(every_source_config(), SCHEMA)["datasets"]
    assert datasets["raabin"]["train"] == "Train" and datasets["raabin"]["synthesize"]["size"] == 48
    assert datasets["pbc"] == {"source": "pbc", "path": "data/PBC", "seed": 0}
    assert set(datasets["synthetic"]) == {"source", "n_train", "n_val", "n_test", "seed"}


def test_defaults_in_the_config_pass_the_schema_again():
    config = validate_config(every_source_config(), SCHEMA)
    validator = jsonschema.Draft202012Validator(load_schema())
    assert not list(validator.iter_errors(config))


@pytest.mark.parametrize(
    "keys",
    [("$defs", "arch", "enum"), ("properties", "training", "properties", "weights_md5", "properties")],
    ids=["arch enum", "weights_md5 keys"],
)
def test_the_schema_names_the_architectures_of_names(keys):
    assert list(value_at(load_schema(), keys)) == list(ARCHITECTURES)
