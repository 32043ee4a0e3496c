"""bloodcells.software: a run whose jobs would lack their packages (no conda, a light venv) stops before any job.

The workflow-level check, a login venv driving profiles/slurm on a real cluster, is in tests/test_readme_cluster.py."""

from test_envs import RULES, third_party_imports

from bloodcells.software import JOB_MODULES, job_software_problem, missing_modules


def test_job_modules_are_what_the_rule_scripts_import():
    imported = set()
    for _, _, script in RULES:
        imported |= set(third_party_imports(script))
    assert set(JOB_MODULES) == imported - {"medmnist"}  # read only by the download rule (bloodcells.software)


def test_missing_modules_are_found_without_importing_them():
    present = {"numpy", "yaml"}
    assert missing_modules(["numpy", "tensorflow", "yaml", "PIL"], lambda name: name if name in present else None) == [
        "tensorflow",
        "PIL",
    ]
    assert missing_modules(["json", "surely_no_such_module_here"]) == ["surely_no_such_module_here"]


def test_the_problem_names_the_python_what_it_lacks_and_both_ways_out():
    problem = job_software_problem(False, ["tensorflow", "keras"], "/login/venv/bin/python")
    assert "/login/venv/bin/python -m snakemake" in problem and "lacks tensorflow, keras" in problem
    assert "No job was started or submitted" in problem
    assert "pip install --require-hashes -r requirements-gpu.lock" in problem
    assert "--software-deployment-method conda" in problem


def test_no_problem_with_conda_or_with_every_package():
    assert job_software_problem(True, ["tensorflow"], "python") is None
    assert job_software_problem(False, [], "python") is None
