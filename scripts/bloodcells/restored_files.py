"""What a restored file may hold: each kind of file a results bundle carries is checked before it is put in place,
JSON against rules/schema/bundle.schema.yaml, CSV and TSV cell by cell, images and arrays by their headers, class
names against the dataset's. Standard library, yaml and jsonschema only: it runs when the Snakefile is parsed."""

from __future__ import annotations

import ast
import copy
import csv
import functools
import io
import json
import math
import re
import zipfile
from pathlib import Path, PurePosixPath

import yaml

from .bundle_contents import PROVENANCE
from .download import restore_max_bytes
from .names import class_names_of
from .quoting import shown

SCHEMA = Path(__file__).resolve().parents[2] / "rules/schema/bundle.schema.yaml"
CONFIG_SCHEMA = SCHEMA.with_name("config.schema.yaml")
TEXT_MAX_BYTES = 16 << 20  # the largest JSON or CSV file of the full study is about 1 MB
MAX_ROWS = 100_000
# The most bytes one bundled file of each kind may have, checked on the manifest before anything is unpacked: ten
# times the largest of the full study (a ResNet-101 model.keras 172 MB, the Grad-CAM heatmaps 8 MB, a panel 4 MB).
MAX_FILE_BYTES = {
    ".json": TEXT_MAX_BYTES,
    ".csv": TEXT_MAX_BYTES,
    ".tsv": TEXT_MAX_BYTES,
    ".png": 64 << 20,
    ".pdf": 64 << 20,
    ".npz": 256 << 20,
    ".keras": 2 << 30,
}
MAX_ARRAYS = 20
FOCUS_COLUMNS = (
    "class",
    "n_images",
    "n_empty_maps",
    "focus_mean",
    "focus_sd",
    "region_area_share",
    "focus_ratio",
    "region",
)
COLUMN_NAME = re.compile(r"[a-z0-9_:]{1,50}")
DURATION = re.compile(r"(\d+ days?, )?\d+:\d{2}:\d{2}(\.\d+)?")
ARRAY_NAME = re.compile(r"[a-z_]{1,50}\.npy")


class ContentError(ValueError):
    """A restored file whose content is not what the workflow writes; the message names the field or cell."""


@functools.cache
def _schema() -> dict:
    """rules/schema/bundle.schema.yaml, parsed once."""
    return yaml.safe_load(SCHEMA.read_text())


@functools.cache
def _validator(kind: str):
    """A validator of the bundle schema's definition `kind`."""
    import jsonschema  # here: Snakemake's environment has it, the rule environments that import bundle do not

    return jsonschema.Draft202012Validator({**_schema(), "$ref": f"#/$defs/{kind}"})


def _field(path) -> str:
    """'a.b[0]' from a jsonschema error path."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".") or "<top level>"


def checked_json(data: bytes, kind: str):
    """The JSON document in `data`, checked against the bundle schema's definition `kind`; a ContentError names the
    field at fault."""
    if len(data) > TEXT_MAX_BYTES:
        raise ContentError(f"{len(data)} bytes, more than the {TEXT_MAX_BYTES} such a file may have")
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ContentError(f"not JSON ({shown(str(error))})") from error
    import jsonschema

    if (error := jsonschema.exceptions.best_match(_validator(kind).iter_errors(value))) is not None:
        raise ContentError(f"{shown(_field(error.absolute_path))}: {shown(error.message)}")
    return value


def check_bundle_config(config: dict) -> None:
    """A bundle's config.json: a config this workflow accepts (rules/schema/config.schema.yaml)."""
    from .config import ConfigError, validate_config  # here: rule bundle imports this module, and never validates

    try:
        validate_config(copy.deepcopy(config), CONFIG_SCHEMA)
    except (ConfigError, KeyError, TypeError, AttributeError) as error:
        raise ContentError(f"not a config of this workflow: {shown(str(error), 500)}") from error


def _same(found, expected, what: str) -> None:
    """Raise a ContentError unless `found` is `expected`."""
    if list(found) != list(expected):
        raise ContentError(f"{what} {shown(str(list(found)))} are not this config's {list(expected)}")


def check_metrics(record: dict, classes: tuple[str, ...]) -> None:
    """A run's metrics.json: its classes are the dataset's, per class and in the confusion matrix."""
    _same(record["class_names"], classes, "class_names")
    _same(record["per_class"], classes, "per_class classes")
    matrix = record["confusion_matrix"]
    if len(matrix) != len(classes) or any(len(row) != len(classes) for row in matrix):
        raise ContentError(f"confusion_matrix is not {len(classes)} x {len(classes)}")


def check_transfer(record: dict, source: tuple[str, ...], target: tuple[str, ...], run: str) -> None:
    """A transfer evaluation's metrics.json: its run, and the classes of both datasets."""
    _check_run(record, run)
    _same(record["source_classes"], source, "source_classes")
    _same(record["target_classes"], target, "target_classes")
    _same(record["restricted_per_class"], target, "restricted_per_class classes")


def _number(cell: str, where: str) -> float:
    """A CSV cell as a number (empty, nan and inf allowed, as pandas writes them)."""
    try:
        return float(cell) if cell else math.nan
    except ValueError:
        raise ContentError(f"{where}: {shown(cell)} is not a number") from None


def read_rows(data: bytes, delimiter: str = ",") -> tuple[list[str], list[list[str]]]:
    """The header and rows of a bounded CSV (or TSV) file; a ContentError for a ragged or over-long one."""
    if len(data) > TEXT_MAX_BYTES:
        raise ContentError(f"{len(data)} bytes, more than the {TEXT_MAX_BYTES} such a file may have")
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8")), delimiter=delimiter))
    except (UnicodeDecodeError, csv.Error) as error:
        raise ContentError(f"not a CSV file ({shown(str(error))})") from error
    if not rows or len(rows) > MAX_ROWS + 1:
        raise ContentError(f"{len(rows)} lines: expected a header and at most {MAX_ROWS} rows")
    header, body = rows[0], rows[1:]
    if bad := [name for name in header if not COLUMN_NAME.fullmatch(name)]:
        raise ContentError(f"column name {shown(bad[0])} is not a lower-case identifier")
    if ragged := next((n for n, row in enumerate(body, 2) if len(row) != len(header)), None):
        raise ContentError(f"line {ragged} has not the header's {len(header)} cells")
    return header, body


def check_history(data: bytes) -> None:
    """A run's history.csv: an epoch column of positive whole numbers, every other cell a number."""
    header, rows = read_rows(data)
    if "epoch" not in header:
        raise ContentError("no epoch column")
    for line, row in enumerate(rows, 2):
        for name, cell in zip(header, row, strict=True):
            value = _number(cell, f"line {line}, column {name}")
            if name == "epoch" and not (value >= 1 and value == int(value)):
                raise ContentError(f"line {line}: epoch {shown(cell)} is not a whole number from 1")


def check_focus(data: bytes, classes: tuple[str, ...]) -> None:
    """A Grad-CAM focus.csv: its columns, one row per dataset class and 'all', counts whole, the rest numbers."""
    header, rows = read_rows(data)
    _same(header, FOCUS_COLUMNS, "columns")
    _same([row[0] for row in rows], (*classes, "all"), "classes")
    for line, row in enumerate(rows, 2):
        for name, cell in zip(header[1:-1], row[1:-1], strict=True):
            value = _number(cell, f"line {line}, column {name}")
            if name.startswith("n_") and not (value >= 0 and value == int(value)):
                raise ContentError(f"line {line}: {name} {shown(cell)} is not a count")
        if not re.fullmatch(r"[A-Za-z0-9 _-]{1,50}", row[-1]):
            raise ContentError(f"line {line}: region {shown(row[-1])} is not a short name")


def check_benchmark(data: bytes) -> None:
    """A Snakemake benchmark .tsv: numbers (or NA), the h:m:s column a duration."""
    header, rows = read_rows(data, "\t")
    for line, row in enumerate(rows, 2):
        for name, cell in zip(header, row, strict=True):
            if name == "h:m:s":
                if not DURATION.fullmatch(cell):
                    raise ContentError(f"line {line}: h:m:s {shown(cell)} is not a duration")
            elif cell not in ("NA", "-"):
                _number(cell, f"line {line}, column {name}")


def npy_header(data: bytes, name: str) -> dict:
    """The header of an .npy array: a literal dict, read without numpy and without running any code."""
    if not data.startswith(b"\x93NUMPY") or len(data) < 10:
        raise ContentError(f"{name} is not an .npy array")
    width = 2 if data[6] == 1 else 4  # format 1.0 has a 2-byte header length, 2.0 and 3.0 a 4-byte one
    length, start = int.from_bytes(data[8 : 8 + width], "little"), 8 + width
    try:
        header = ast.literal_eval(data[start : start + length].decode("latin1"))
    except (ValueError, SyntaxError, MemoryError, RecursionError) as error:
        raise ContentError(f"{name}: an unreadable array header") from error
    if not isinstance(header, dict) or not isinstance(header.get("descr"), str):
        raise ContentError(f"{name}: an array header without a dtype")
    return header


def check_zip(path: Path, max_bytes: int, arrays: bool) -> None:
    """An .npz (`arrays`: .npy members only, no Python objects, which only pickle can load) or a .keras zip, its
    unpacked size at most `max_bytes` (a zip bomb inside the bundle)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if sum(member.file_size for member in members) > max_bytes:
                raise ContentError(f"unpacks to more than {max_bytes} bytes (config key restore_max_bytes)")
            if not arrays:
                return
            if len(members) > MAX_ARRAYS or not members:
                raise ContentError(f"{len(members)} arrays: expected 1 to {MAX_ARRAYS}")
            for member in members:
                if not ARRAY_NAME.fullmatch(member.filename):
                    raise ContentError(f"member {shown(member.filename)} is not a named .npy array")
                with archive.open(member) as handle:
                    header = npy_header(handle.read(4096), member.filename)
                if "O" in header["descr"] or not isinstance(header.get("shape"), tuple):
                    raise ContentError(f"{member.filename}: dtype {shown(header['descr'])} holds Python objects")
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ContentError(f"not a readable zip file ({shown(str(error))})") from error


def size_problems(entries: list[dict]) -> list[str]:
    """One line per manifest entry larger than a file of its kind may be (MAX_FILE_BYTES)."""
    problems = []
    for entry in entries:
        path, size, suffix = entry["path"], entry["bytes"], PurePosixPath(entry["path"]).suffix
        if size > (limit := MAX_FILE_BYTES.get(suffix, 0)):
            problems.append(f"{shown(path)}: {size} bytes, more than the {limit} a {suffix} file of a bundle may have")
    return problems


def run_of(path: str) -> str | None:
    """The run a bundled file belongs to, from its folder or benchmark name (None for the build's files)."""
    parts = PurePosixPath(path).parts
    if parts[0] == "results" and parts[1] in ("runs", "gradcam", "transfer"):
        return parts[2]
    if parts[0] == "benchmarks":
        return PurePosixPath(path).stem
    return None


def _read(file: Path) -> bytes:
    """A staged text file's bytes, refused unread when it is larger than such a file may be."""
    if (size := file.stat().st_size) > TEXT_MAX_BYTES:
        raise ContentError(f"{size} bytes, more than the {TEXT_MAX_BYTES} such a file may have")
    return file.read_bytes()


def check_file(file: Path, path: str, config: dict, planned: dict[str, dict]) -> None:
    """Raise a ContentError where the staged `file` (bundled as `path`) is not what the workflow writes there."""
    parts, run = PurePosixPath(path).parts, run_of(path)
    name = parts[-1]
    if parts[0] == "benchmarks":
        check_benchmark(_read(file))
    elif name.endswith(".png"):
        _check_magic(file, b"\x89PNG\r\n\x1a\n", "PNG")
    elif name == "panel.pdf":
        _check_magic(file, b"%PDF-", "PDF")
    elif name in ("predictions.npz", "heatmaps.npz", "model.keras"):
        check_zip(file, restore_max_bytes(config), arrays=name != "model.keras")
    elif path == PROVENANCE:
        record = checked_json(_read(file), "provenance")
        if unknown := sorted(set(record["training_hosts"]) - set(planned)):
            raise ContentError(f"training_hosts names runs this config does not plan: {shown(', '.join(unknown))}")
    elif run not in planned:
        raise ContentError("a file of a run this config does not plan")  # restoring.name_problems admits none
    else:
        classes = class_names_of(config["datasets"][planned[run]["dataset"]])
        if parts[1] == "transfer" and name == "metrics.json":
            target = class_names_of(config["datasets"][parts[3]])
            check_transfer(checked_json(_read(file), "transfer_metrics"), classes, target, run)
        elif name == "metrics.json":
            check_metrics(checked_json(_read(file), "metrics"), classes)
        elif name in ("bootstrap.json", "host.json"):
            _check_run(checked_json(_read(file), "bootstrap" if name == "bootstrap.json" else "host_record"), run)
        elif name == "history.csv":
            check_history(_read(file))
        elif name == "focus.csv":
            check_focus(_read(file), classes)
        else:
            raise ContentError("no check is known for this file")  # restoring.name_problems admits no other name


def _check_run(record: dict, run: str | None) -> None:
    """A record that names its run: the run of the folder it is in."""
    if record["run"] != run:
        raise ContentError(f"run {shown(record['run'])} is not the folder's {run}")


def _check_magic(file: Path, magic: bytes, kind: str) -> None:
    """A file that must start as a `kind` file does."""
    with open(file, "rb") as handle:
        if handle.read(len(magic)) != magic:
            raise ContentError(f"not a {kind} file")


def content_problems(stage: Path, paths: list[str], config: dict, planned: dict[str, dict]) -> list[str]:
    """One line per staged file whose content is not what the workflow writes there, naming the file and field."""
    problems = []
    for path in paths:
        try:
            check_file(stage / path, path, config, planned)
        except ContentError as error:
            problems.append(f"{shown(path)}: {error}")
    return problems
