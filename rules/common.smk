# Config loading and validation, and the small input functions the rules share; planning is package code.

import os
import shutil
import sys

from snakemake import __version__ as SNAKEMAKE_VERSION
from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod
from snakemake.logging import logger

REPO = Path(workflow.basedir)
sys.path.insert(0, str(REPO / "scripts"))

from bloodcells import (
    bundle,
    bundle_contents,
    download,
    files,
    plan,
    restoring,
    software,
)
from bloodcells.config import validate_config
from bloodcells.names import ARCHITECTURES
from bloodcells.runs import training_priority
from bloodcells.texts import load_paper_yaml, pdf_note

# Stops the run before any job starts, naming every bad key.
validate_config(config, REPO / "rules/schema/config.schema.yaml")
PLAN = plan.make_plan(config)
# A results bundle (config key restore) is verified and unpacked now, so that the plan finds its files made.
RESTORED = restoring.restore_configured(config, PLAN, Path.cwd(), logger.info)
RUNS, TABLE3_RUNS = PLAN.runs, PLAN.table3
GRADCAM_RUNS, TABLES = PLAN.gradcam, PLAN.tables
# report.pdf needs a TeX installation (not a conda package here); without one the workflow says so and finishes.
TEX_FOUND = all(shutil.which(tool) for tool in ("latexmk", "pdflatex"))
PDF_NOTE = pdf_note(load_paper_yaml(REPO / "paper/report.yaml"), TEX_FOUND)
if not TEX_FOUND:
    logger.warning(PDF_NOTE)
# The config file as the user named it, for the rebuild commands printed in the report.
CONFIG_FILES = workflow.config_settings.configfiles
CONFIG_FILE_NAME = os.path.relpath(CONFIG_FILES[-1]) if CONFIG_FILES else "config.yaml"


# Before the first job is started or submitted (dry runs and planning in a login venv stay possible): without conda
# every job runs with this Python, so it must have the jobs' packages.
onstart:
    conda = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    missing = software.missing_modules(software.JOB_MODULES)
    if problem := software.job_software_problem(conda, missing, sys.executable):
        raise WorkflowError(problem)


wildcard_constraints:
    run="|".join(sorted(RUNS)),
    dataset="[a-z0-9_]+",
    size=r"\d+",
    table="|".join(TABLES) or "(?!)",
    arch="|".join(ARCHITECTURES),


def paper_file(name: str) -> str:
    """A file of the repository's paper/ folder, wherever the working directory is."""
    return str(REPO / "paper" / name)


def run_values(wildcards) -> dict:
    """The values (arch, size, optimizer, ...) of the run named by the wildcards."""
    return RUNS[wildcards.run]


def train_priority(wildcards) -> int:
    """The Snakemake priority of the run's training job: costlier runs first."""
    return training_priority(RUNS[wildcards.run])


def train_input(wildcards) -> dict:
    """A run's prepared dataset and, with ImageNet initialisation, the weights."""
    return files.train_inputs(config, RUNS[wildcards.run])


def run_data(wildcards) -> str:
    """The prepared dataset file a run trains and is evaluated on."""
    return files.run_data(RUNS[wildcards.run])


def dataset_config(wildcards) -> dict:
    """The config block of the dataset named by the wildcards."""
    return config["datasets"][wildcards.dataset]


def medmnist_mirror(wildcards) -> dict:
    """The url and md5 the config sets in place of MedMNIST's official file of a flag ({} for the official one)."""
    return files.medmnist_mirror(config["datasets"], wildcards.flag)


def run_dataset_config(wildcards) -> dict:
    """The config block of the dataset of the run named by the wildcards."""
    return config["datasets"][RUNS[wildcards.run]["dataset"]]


def download_input(wildcards) -> list[str]:
    """What a dataset is prepared from: a medmnist download or a synthesized folder; stops if a user folder is missing."""
    # Checked while the DAG of a run (or dry run) is built, before any job starts, and only where a job reads the
    # folder: --list-rules, --unlock, check_environment, a restore and --report (no executor) work without it.
    dataset, size, here = wildcards.dataset, wildcards.size, Path.cwd()
    if workflow.executor_plugin is not None:
        if message := files.missing_user_folder(config, PLAN, dataset, size, here):
            raise WorkflowError(message)
    return files.prepare_inputs(config, dataset, size)


def transfer_data(wildcards) -> str:
    """The target dataset of a transfer evaluation, at the source run's size."""
    return files.data_file(wildcards.dataset, RUNS[wildcards.run]["size"])


def study_table_input(wildcards) -> dict:
    """A study table's per-run files, the poster's values, its texts and templates."""
    return files.table_inputs(config, PLAN, wildcards.table, REPO / "paper")


def table_params(wildcards) -> dict:
    """Runs, configurations, dataset and synthetic flag of a study table (once per job)."""
    return plan.table_params(config, PLAN, wildcards.table)


def report_input(wildcards) -> dict:
    """What the report reads: the workflow's outputs, conclusions, texts, templates."""
    return files.report_inputs(config, PLAN, REPO / "paper")
