"""Style: ruff (lint and format, configured in pyproject.toml) over the Python code, snakefmt over the rules."""

import shutil
import subprocess

import pytest
from conftest import REPO


def tool(name: str) -> str:
    """The tool of this environment (beside the test's Python), e.g. the venv's ruff."""
    path = shutil.which(name, path=str(REPO / ".venv/bin")) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: pip install -r requirements-dev.txt")
    return path


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_python_code_is_ruff_clean(command):
    result = subprocess.run([tool("ruff"), *command, "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, f"ruff {' '.join(command)} .:\n{result.stdout}{result.stderr}"


def test_rules_are_snakefmt_formatted():
    result = subprocess.run(
        [tool("snakefmt"), "--check", "Snakefile", "rules/"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, f"snakefmt --check Snakefile rules/ (run snakefmt to fix):\n{result.stderr}"
