"""The login node of a cluster: a venv with only requirements-login.txt parses the full study and plans it
through profiles/slurm, and the workflow's own code imports none of the jobs' scientific stack while parsing."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, TINY, place_raabin_folder
from test_slurm import cluster  # noqa: F401 (the fixture that requires a SLURM cluster)

# What the jobs need and a login node need not have. numpy and pandas are installed there anyway (the SLURM
# plugin depends on them), so the parse-time check below blocks them only for imports from the repository.
JOB_PACKAGES = ("tensorflow", "keras", "PIL", "matplotlib", "sklearn", "scipy", "h5py")
BLOCKED_AT_PARSE = ("numpy", "pandas", "tensorflow", "keras", "PIL", "matplotlib", "sklearn", "scipy", "h5py")

# Loaded by every Python of the venv (PYTHONPATH): an import statement in a file under BLOCK_ROOT that names one
# of BLOCK_PACKAGES fails, even where the package is already loaded (the plugin imports pandas and numpy first).
SITECUSTOMIZE = textwrap.dedent("""
    import builtins, os, sys
    ROOT = os.environ["BLOCK_ROOT"]
    BLOCKED = set(os.environ["BLOCK_PACKAGES"].split(","))
    original_import = builtins.__import__
    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.split(".")[0] in BLOCKED:
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(ROOT):
                raise ImportError(f"{caller} imports {name} while the workflow is parsed")
        return original_import(name, globals, locals, fromlist, level)
    builtins.__import__ = guarded_import
""")


@pytest.fixture(scope="module")
def login_venv(tmp_path_factory):
    """A fresh venv with requirements-login.lock only (as the README's conda block installs it); returns (python, env
    with the parse-time import guard)."""
    root = tmp_path_factory.mktemp("login")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin/python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--require-hashes", "-r", str(REPO / "requirements-login.lock")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    guard = root / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {
        "PYTHONPATH": str(guard),
        "BLOCK_ROOT": str(REPO) + os.sep,
        "BLOCK_PACKAGES": ",".join(BLOCKED_AT_PARSE),
        "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
    }
    return python, env


def test_login_venv_has_none_of_the_jobs_packages(login_venv):
    python, env = login_venv
    for package in JOB_PACKAGES:
        probe = subprocess.run([str(python), "-c", f"import {package}"], capture_output=True, text=True, env=env)
        assert probe.returncode != 0, f"{package} is installed in the login venv"


def test_import_guard_refuses_workflow_code(login_venv, tmp_path):
    python, env = login_venv
    script = tmp_path / "uses_numpy.py"
    script.write_text("import numpy\n")
    refused = subprocess.run(
        [str(python), str(script)], capture_output=True, text=True, env=env | {"BLOCK_ROOT": str(tmp_path) + os.sep}
    )
    assert refused.returncode != 0 and "uses_numpy.py imports numpy while the workflow is parsed" in refused.stderr


def test_login_venv_plans_the_full_study_through_the_slurm_profile(login_venv, tmp_path):
    python, env = login_venv
    place_raabin_folder(tmp_path)
    result = subprocess.run(
        [
            str(python),
            "-m",
            "snakemake",
            "-n",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(REPO / "config.yaml"),
            "--profile",
            str(REPO / "profiles/slurm"),
            "--quiet",
            "rules",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.MULTILINE))
    print(f"\nlogin venv dry run: {counts}")
    assert counts["train"] == "34" and counts["download_weights"] == "2" and counts["download_medmnist"] == "3"


def test_network_rules_are_local_rules():
    # a cluster's compute nodes may have no internet: the downloads run where Snakemake runs
    local = set()
    for smk in (REPO / "rules").glob("*.smk"):
        for block in re.findall(r"^localrules:\s*\n((?:\s+\w+,?\s*\n)+)", smk.read_text(), flags=re.MULTILINE):
            local |= set(re.findall(r"\w+", block))
    assert {"download_medmnist", "download_weights"} <= local


def test_login_pins_are_those_of_requirements_txt():
    from test_envs import requirements

    login, full = requirements(REPO / "requirements-login.txt"), requirements()
    assert login and all(full.get(name) == version for name, version in login.items()), (login, full)


@pytest.mark.parametrize("script", ["download_medmnist", "download_weights", "build_pdf", "pdf_not_built"])
def test_local_rule_scripts_import_in_the_login_venv(login_venv, script):
    # local rules run in the Snakemake process's environment: on a cluster, the login venv
    python, env = login_venv
    load = (
        "import importlib.util, sys; sys.path.insert(0, sys.argv[1]); "
        "spec = importlib.util.spec_from_file_location('rule_script', sys.argv[2]); "
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))"
    )
    result = subprocess.run(
        [str(python), "-c", load, str(REPO / "scripts"), str(REPO / f"scripts/{script}.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]


# Snakemake asks conda for its version, prefix and channel priority before a dry run with conda; no conda channel is
# reachable on the test machines, so this stand-in answers those three questions and refuses everything else (an
# attempt to create an env would fail the test).
FAKE_CONDA = """#!/bin/sh
case "$*" in
  "info --json") echo '{"conda_prefix": "/nonexistent/conda", "platform": "linux-64"}' ;;
  "--version") echo "conda 24.11.3" ;;
  "config --get channel_priority --json") echo '{"get": {"channel_priority": "strict"}}' ;;
  *) echo "fake conda asked: $*" >&2; exit 1 ;;
esac
"""


def test_login_venv_plans_conda_jobs_through_the_slurm_profile(login_venv, tmp_path):
    # the README's conda block: the light venv drives one conda env per rule (envs/*.yaml)
    python, env = login_venv
    fake = tmp_path / "fake-conda"
    fake.mkdir()
    (fake / "conda").write_text(FAKE_CONDA)
    (fake / "conda").chmod(0o755)
    command = [str(python), "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"), "--directory"]
    command += [str(tmp_path), "--configfile", str(TINY), "--profile", str(REPO / "profiles/slurm")]
    command += ["--software-deployment-method", "conda"]
    env = env | {"PATH": f"{fake}{os.pathsep}{env['PATH']}"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    created = re.findall(r"^Conda environment (\S+) will be created\.$", output, flags=re.MULTILINE)
    assert sorted(os.path.basename(path) for path in created) == ["data.yaml", "report.yaml", "tensorflow.yaml"]
    assert "fake conda asked" not in output


def test_login_venv_without_conda_stops_before_submitting(cluster, login_venv, tmp_path):  # noqa: F811
    # the README's conda block without its --software-deployment-method conda: every job would lack TensorFlow & co.
    python, env = login_venv
    command = [str(python), "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path)]
    command += ["--configfile", str(TINY), "--profile", str(REPO / "profiles/slurm")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    assert f"The jobs would run with Snakemake's own Python, {python}" in output, output[-4000:]
    assert "lacks h5py, keras, matplotlib, PIL, scipy, sklearn, tensorflow" in output
    assert "--software-deployment-method conda" in output and "requirements-gpu.lock" in output
    assert "has been submitted" not in output and not (tmp_path / "results").exists()


def test_the_modules_the_rules_import_load_none_of_the_jobs_packages():
    # Without a login venv or a cluster: every bloodcells module the Snakefile and rules import, and what they import.
    rules = "".join(path.read_text() for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))])
    modules = set()
    for module, names in re.findall(r"^from bloodcells(?:\.(\w+))? import (\([^)]*\)|.*)$", rules, re.M):
        modules |= {module} if module else set(re.findall(r"\w+", names))
    probe = (
        "import json, sys\n"
        + "".join(f"import bloodcells.{m}\n" for m in modules)
        + "print(json.dumps(list(sys.modules)))"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO / "scripts", capture_output=True, text=True, check=True
    )
    loaded = {name.split(".")[0] for name in json.loads(run.stdout)}
    assert {"restoring", "config", "plan"} <= modules, modules
    assert not loaded & {*BLOCKED_AT_PARSE, "jinja2", "jsonschema"}, sorted(modules)
