"""The README and docs/: the Layout section names every top-level folder, and every relative link resolves."""

import re
from pathlib import Path

import pytest
from conftest import REPO

GENERATED = {"results", "logs", "data", "__pycache__"}  # made by runs or by hand, git-ignored
DOCS = sorted((REPO / "docs").glob("*.md"))


def readme_section(title: str) -> str:
    """The text of one '## ' section of the README."""
    text = (REPO / "README.md").read_text()
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def relative_links(markdown: str) -> list[str]:
    """Targets of the markdown links and images that point into the repository (no URL, no bare anchor)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", markdown)
    return [target.split("#")[0] for target in targets if not re.match(r"[a-z]+:|#", target)]


def test_layout_names_every_top_level_folder():
    layout = readme_section("Layout")
    folders = [p.name for p in REPO.iterdir() if p.is_dir() and (not p.name.startswith(".") or p.name == ".ci")]
    missing = [name for name in folders if name not in GENERATED and f"{name}/" not in layout]
    assert not missing, f"README's Layout section misses {missing}"
    for rules_file in sorted((REPO / "rules").glob("*.smk")):
        assert rules_file.stem in layout, f"README's Layout section misses rules/{rules_file.name}"


def test_readme_links_every_docs_page():
    links = relative_links((REPO / "README.md").read_text())
    assert DOCS and all(f"docs/{page.name}" in links for page in DOCS)


@pytest.mark.parametrize("page", [REPO / "README.md", *DOCS], ids=lambda p: p.name)
def test_relative_links_resolve(page: Path):
    broken = [target for target in relative_links(page.read_text()) if not (page.parent / target).exists()]
    assert not broken, f"{page.name}: links to missing files {broken}"


def test_package_map_names_every_module_and_only_modules_that_exist():
    package = REPO / "scripts/bloodcells"
    named = set(re.findall(r"`(\w+)\.py`", (package / "README.md").read_text()))
    modules = {p.stem for p in package.glob("*.py")} - {"__init__"}
    assert named == modules, f"scripts/bloodcells/README.md: unnamed {modules - named}, gone {named - modules}"
