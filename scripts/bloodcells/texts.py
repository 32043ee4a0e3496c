"""The paper/ YAML files, and the prose of tables and report (paper/tables.yaml, report.yaml) filled in for a build."""

from __future__ import annotations

from pathlib import Path

import yaml


def load_paper_yaml(path: str | Path) -> dict:
    """One of the paper/ YAML files: the poster's values, its conclusions, or the titles, notes and captions."""
    return yaml.safe_load(Path(path).read_text())


def table_notes(texts: dict, table: str, facts: dict) -> list[str]:
    """The notes printed under one table (paper/tables.yaml), in order, their {fields} filled from `facts`."""
    facts = facts | {"weights": facts.get("weights") or texts["random_weights"]}
    return [note["text"].format(**facts) for note in texts["notes"] if table in note["tables"]]


def row_header(texts: dict, table: str) -> str:
    """The header of a study table's row labels."""
    return texts["row_headers"].get(table, texts["default_row_header"])


def pdf_note(texts: dict, tex_found: bool) -> str:
    """Whether report.pdf is built, and how to build it where TeX is missing."""
    return texts["pdf"]["built" if tex_found else "not_built"]


def rebuild_commands(texts: dict, configfile: str) -> list[str]:
    """The commands that rebuild the report from the config file as the user named it."""
    return [command.format(configfile=configfile) for command in texts["rebuild_commands"]]
