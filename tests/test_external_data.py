"""config.yaml without the hand-downloaded data/Raabin-WBC: only a run whose DAG holds a job reading it stops, before
any job starts (tests/test_plan.py: test_missing_external_folder_stops_the_dry_run_with_one_message); the commands
that read no such folder work (README "The full study on a GPU")."""

import pytest
import yaml
from conftest import REPO, SCHEMA, run_snakemake

from bloodcells import bundle, plan, restoring
from bloodcells.config import validate_config

CONFIG = ["--configfile", str(REPO / "config.yaml")]
RAABIN_MESSAGE = "Dataset 'raabin' is read from data/Raabin-WBC (config key 'datasets.raabin.path')"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working directory with no data/ folder at all."""
    return tmp_path_factory.mktemp("no-raabin")


@pytest.mark.parametrize(
    "args",
    [["--list-rules"], ["--unlock"], ["--cores", "1", "-n", "check_environment"]],
    ids=["list-rules", "unlock", "check_environment"],
)
def test_commands_that_read_no_raabin_image_work_without_it(workdir, args):
    result = run_snakemake(workdir, *CONFIG, *args, check=False, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert RAABIN_MESSAGE not in result.stdout + result.stderr


def test_report_of_finished_results_works_without_it(workdir, tmp_path):
    # Every output of the full study's DAG as an empty file (the report embeds them as they are): the state after a
    # build with Raabin-WBC whose folder was then moved away, or of results copied from elsewhere.
    summary = run_snakemake(tmp_path, *CONFIG, "--summary", timeout=300).stdout.splitlines()
    outputs = [line.split("\t")[0] for line in summary[1:]]
    assert "results/tables/table4.csv" in outputs and len(outputs) > 200
    for name in outputs:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    result = run_snakemake(tmp_path, *CONFIG, "--report", "report.html", check=False, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert (tmp_path / "report.html").stat().st_size > 0 and not (tmp_path / "data").exists()


def full_study_runs(**changes) -> dict[str, dict]:
    """The runs config.yaml plans, with some of its keys changed."""
    config = yaml.safe_load((REPO / "config.yaml").read_text()) | changes
    return plan.make_plan(validate_config(config, SCHEMA)).runs


def test_a_bundle_built_without_the_external_study_is_refused_naming_external_false():
    bundle_runs = bundle.json_roundtrip(full_study_runs(external=False))
    manifest = {"runs": bundle_runs, "files": []}
    with pytest.raises(bundle.BundleError) as error:
        restoring.select_entries(manifest, full_study_runs(), shared=False, name="results-bundle.tar.gz")
    message = str(error.value)
    assert "raabin-64-resnet50-bs32-e10-s0: planned by this config, not in the bundle" in message
    assert "all on other datasets (raabin)" in message and "Add --config external=False" in message


def test_other_differences_get_no_external_advice():
    bundle_runs = bundle.json_roundtrip(full_study_runs(external=False))
    assert restoring.external_advice(bundle_runs, full_study_runs(seeds=[0, 1])) == ""  # more BloodMNIST runs
    assert restoring.external_advice(bundle_runs, full_study_runs(external=False)) == ""  # nothing differs
    more = bundle_runs | {"extra-run": next(iter(bundle_runs.values()))}
    assert restoring.external_advice(more, full_study_runs()) == ""  # the bundle has a run this config lacks
