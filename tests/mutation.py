"""Mutation testing of the science modules with mutmut (docs/testing.md); not part of the test suite, not run by CI.

mutmut names a mutant by its file's path (bloodcells/metrics.py -> bloodcells.metrics) and needs tests to import the
module under that name; the repository keeps the package under scripts/ (pytest's pythonpath), so this stages a copy
with bloodcells/ at the top, the fast unit tests beside it, and runs mutmut there:

    python tests/mutation.py [--stage DIR] [--modules metrics stats ...] [--max-children N] [--repo TREE]

It prints mutmut's counts and writes DIR/survivors.txt (every surviving mutant with its diff).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The modules of the science: metrics, statistics, verdicts, paired comparisons, study tables, the loss-curve summary.
MODULES = ["metrics", "stats", "conclusions", "comparisons", "studies", "tables", "history"]
# The fast unit tests that exercise them (no training, no snakemake run, no TensorFlow).
TESTS = [
    "test_metrics.py",
    "test_stats.py",
    "test_verdicts.py",
    "test_studies.py",
    "test_tables.py",
    "test_report.py",
]
# Tests of those files that run snakemake, render the whole report, TeX or a browser, and the bootstrap coverage
# simulation (minutes per mutant): slow, and the verdict, metric and table code is reached by the others.
DESELECT = (
    "not (dry_run or html_report_is or test_report_pairs or test_report_states or test_report_provenance"
    " or test_report_shows or real_data_report or latex_build or pdf_compiles or chromium or browser_check"
    " or bootstrap_coverage)"
)

# What the tests read besides the package, the tests and scripts/: copied beside them, and by mutmut into its sandbox.
READ = ("paper", "rules", "envs", "profiles", "docs", "config.yaml", "config.demo.yaml", "Snakefile", "README.md")


def stage(directory: Path, modules: list[str], repo: Path = REPO) -> None:
    """Copy the package (top level), the tests and the files they read into `directory`, with mutmut's config."""
    tests = [name for name in TESTS if (repo / "tests" / name).exists()]  # an older tree may lack some
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    shutil.copytree(repo / "scripts/bloodcells", directory / "bloodcells", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(repo / "tests", directory / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    # the rule adapters (scripts/*.py, which some tests load) beside the package they import
    shutil.copytree(repo / "scripts", directory / "scripts", ignore=shutil.ignore_patterns("__pycache__", "bloodcells"))
    for name in READ:
        (shutil.copytree if (repo / name).is_dir() else shutil.copy2)(repo / name, directory / name)
    (directory / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        'pythonpath = ["."]\n'
        'testpaths = ["tests"]\n\n'
        "[tool.mutmut]\n"
        'source_paths = ["bloodcells/"]\n'
        f"only_mutate = {json.dumps([f'bloodcells/{m}.py' for m in modules])}\n"
        f"also_copy = {json.dumps(['scripts', *READ])}\n"
        f'pytest_add_cli_args = ["-p", "no:cacheprovider", "-k", "{DESELECT}"]\n'
        f"pytest_add_cli_args_test_selection = {json.dumps([f'tests/{t}' for t in tests])}\n"
    )


def main() -> None:
    """Stage, run mutmut, print its counts and write the survivors with their diffs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", type=Path, default=Path("/tmp/bloodcells-mutation"))
    parser.add_argument("--modules", nargs="+", default=MODULES)
    parser.add_argument("--repo", type=Path, default=REPO, help="the tree to test (default: this one)")
    parser.add_argument("--max-children", type=int, default=1)  # a shared machine: one mutant at a time
    args = parser.parse_args()
    stage(args.stage, args.modules, args.repo)
    mutmut = [sys.executable, "-m", "mutmut"]
    subprocess.run([*mutmut, "run", "--max-children", str(args.max_children)], cwd=args.stage, check=True)
    subprocess.run([*mutmut, "export-cicd-stats"], cwd=args.stage, check=True)
    stats = json.loads((args.stage / "mutants/mutmut-cicd-stats.json").read_text())
    print(json.dumps(stats, indent=1))
    results = subprocess.run([*mutmut, "results"], cwd=args.stage, capture_output=True, text=True, check=True).stdout
    survivors = [line.split(":")[0].strip() for line in results.splitlines() if line.strip().endswith("survived")]
    with open(args.stage / "survivors.txt", "w") as out:
        for name in survivors:
            diff = subprocess.run([*mutmut, "show", name], cwd=args.stage, capture_output=True, text=True).stdout
            out.write(f"=== {name}\n{diff}\n")
    print(f"{len(survivors)} surviving mutants: {args.stage / 'survivors.txt'}")


if __name__ == "__main__":
    main()
