# Config validation, run planning and the helper functions the rules share.

import os
import shutil
import sys

from snakemake import __version__ as SNAKEMAKE_VERSION
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

REPO = Path(workflow.basedir)
sys.path.insert(0, str(REPO / "scripts"))

from bloodcells.plan import (
    config_hash,
    configurations,
    gradcam_runs,
    imagenet_weights_file,
    imagenet_weights_pattern,
    missing_folder_message,
    plan_runs,
    training_priority,
    user_folders,
    validate_config,
)

# Stops the run before any job starts, naming every bad key.
validate_config(config, REPO / "rules/schema/config.schema.yaml")

RUNS, STUDIES = plan_runs(config)
TABLE3_RUNS = STUDIES["table3"]
# Folders a user downloads by hand (Raabin-WBC, PBC) are checked now, not by a job after hours in a queue.
MISSING_FOLDERS = [
    message
    for dataset in user_folders(config, RUNS)
    if (message := missing_folder_message(config, dataset, Path.cwd()))
]
if MISSING_FOLDERS:
    raise WorkflowError("\n".join(MISSING_FOLDERS))
# config key gradcam.runs, checked against the planned runs; empty = the poster's model (ResNet-101, largest size, bs 16).
GRADCAM_RUNS = gradcam_runs(
    config["gradcam"].get("runs"), RUNS, TABLE3_RUNS, config["seeds"][0]
)
# Study tables by name -> the study they show; a table is made where its study is in the config.
STUDY_TABLES = {
    "table2": "table2",
    "table4": "external",
    "methods_batch": "batch",
    "methods_attention": "attention",
    "methods_optimizer": "optimizer",
    "methods_dropout": "dropout",
}
TABLES = [name for name, study in STUDY_TABLES.items() if study in STUDIES]
TABLES += ["transfer"] if config.get("transfer") else []
# Synthesized folder datasets (tests, demo): written by rule synthesize_folder.
SYNTHESIZED = [
    name
    for name, source in config["datasets"].items()
    if source["source"] == "folder" and "synthesize" in source
]
ATTENTION_NOTE = (
    "'se' = squeeze-and-excitation (Hu, Shen & Sun, 'Squeeze-and-Excitation Networks', CVPR 2018; reduction 16); "
    "'cbam' = Convolutional Block Attention Module, channel then spatial attention (Woo, Park, Lee & Kweon, "
    "'CBAM: Convolutional Block Attention Module', ECCV 2018; reduction 16, 7x7 spatial kernel); either acts on "
    "conv5_block3_out, before global average pooling."
)


wildcard_constraints:
    run="|".join(sorted(RUNS)),
    dataset="[a-z0-9_]+",
    size=r"\d+",
    table="|".join(TABLES) or "(?!)",
    arch="resnet50|resnet101",


def repo_file(relative: str) -> str:
    """A file of the repository itself, wherever the working directory is (--directory)."""
    return str(REPO / relative)


def run_values(wildcards) -> dict:
    """The values (arch, size, optimizer, ...) of the run named by the wildcards."""
    return RUNS[wildcards.run]


def train_priority(wildcards) -> int:
    """The Snakemake priority of the run's training job: costlier runs first."""
    return training_priority(RUNS[wildcards.run])


def train_input(wildcards) -> dict:
    """What a run trains from: its prepared dataset and, with ImageNet initialisation, the downloaded weights."""
    values = RUNS[wildcards.run]
    inputs = {"data": run_data(wildcards)}
    weights = imagenet_weights_file(config, values["arch"])
    return inputs | ({"weights": weights} if weights else {})


def run_data(wildcards) -> str:
    """The prepared dataset file a run trains and is evaluated on."""
    values = RUNS[wildcards.run]
    return f"results/data/{values['dataset']}/{values['size']}.npz"


def dataset_config(wildcards) -> dict:
    """The config block of the dataset named by the wildcards."""
    return config["datasets"][wildcards.dataset]


def download_input(wildcards) -> list[str]:
    """What a dataset is prepared from: the verified official download (medmnist) or a synthesized folder."""
    source = config["datasets"][wildcards.dataset]
    if wildcards.dataset in SYNTHESIZED:
        return [f"results/folders/{wildcards.dataset}"]
    if source["source"] != "medmnist":
        return []
    return [
        f"results/downloads/{source.get('flag', 'bloodmnist')}_{wildcards.size}.npz"
    ]


# The table templates and the macros they import; the first file's folder is the template folder.
TABLE_TEMPLATES = [
    repo_file(f"paper/{name}")
    for name in ("table.html.j2", "table.tex.j2", "macros.html.j2", "macros.tex.j2")
]


def transfer_data(wildcards) -> str:
    """The target dataset of a transfer evaluation, at the source run's size."""
    return f"results/data/{wildcards.dataset}/{RUNS[wildcards.run]['size']}.npz"


def study_configs(study: str) -> list[list]:
    """[values, run ids] of each configuration of a study, in study order."""
    return [[values, runs] for values, runs in configurations(STUDIES[study], RUNS)]


def table_runs(table: str) -> list[str]:
    """The run ids a study table reads, in order."""
    study = "transfer_source" if table == "transfer" else STUDY_TABLES[table]
    return STUDIES[study]


def study_table_input(wildcards) -> dict:
    """The per-run files one study table reads."""
    runs = table_runs(wildcards.table)
    inputs = {
        "poster": repo_file("paper/poster_values.yaml"),
        "templates": TABLE_TEMPLATES,
    }
    if wildcards.table == "transfer":
        target = config["transfer"]["to"]
        inputs["transfer"] = [
            f"results/transfer/{run}/{target}/metrics.json" for run in runs
        ]
        return inputs
    inputs["metrics"] = [f"results/runs/{run}/metrics.json" for run in runs]
    inputs["bootstrap"] = [f"results/runs/{run}/bootstrap.json" for run in runs]
    inputs["history"] = [f"results/runs/{run}/history.csv" for run in runs]
    return inputs


def table_params(wildcards) -> dict:
    """Runs, configurations and dataset of a study table."""
    runs = table_runs(wildcards.table)
    study = (
        "transfer_source"
        if wildcards.table == "transfer"
        else STUDY_TABLES[wildcards.table]
    )
    dataset = RUNS[runs[0]]["dataset"]
    if wildcards.table == "transfer":
        dataset = config["transfer"]["to"]
    return {
        "runs": runs,
        "configs": study_configs(study),
        "dataset": dataset,
        "synthetic": any(
            config["datasets"][RUNS[run]["dataset"]]["source"] == "synthetic"
            or RUNS[run]["dataset"] in SYNTHESIZED
            for run in runs
        )
        or dataset in SYNTHESIZED,
    }


# Studies whose configurations the significance tests compare.
COMPARED_STUDIES = [
    s
    for s in ("table3", "table2", "attention", "optimizer", "dropout", "batch")
    if s in STUDIES
]


def compared_runs() -> list[str]:
    """Runs whose test predictions the McNemar tests read: every run on the main dataset."""
    return [
        run for run, values in RUNS.items() if values["dataset"] == config["dataset"]
    ]


# The config file as the user named it, for the rebuild commands printed in the report.
CONFIG_FILE_NAME = (
    os.path.relpath(workflow.config_settings.configfiles[-1])
    if workflow.config_settings.configfiles
    else "config.yaml"
)
# report.pdf needs a TeX installation (not a conda package here); without one the workflow says so and finishes.
TEX_FOUND = all(shutil.which(tool) for tool in ("latexmk", "pdflatex"))
PDF_NOTE = (
    "report.pdf is compiled from report.tex by latexmk (pdflatex) in results/report/."
    if TEX_FOUND
    else "report.pdf was not built: latexmk and pdflatex were not found on PATH. Install TeX (Debian/Ubuntu: "
    "apt install latexmk texlive-latex-base texlive-latex-recommended), then run: "
    "snakemake --cores 1 results/report/report.pdf"
)
if not TEX_FOUND:
    logger.warning(PDF_NOTE)


def data_files_used() -> list[str]:
    """Every prepared dataset file a run reads, the verified downloads they were made from, and initial weights."""
    files = sorted(
        {f"results/data/{v['dataset']}/{v['size']}.npz" for v in RUNS.values()}
    )
    files += sorted(
        {imagenet_weights_file(config, v["arch"]) for v in RUNS.values()} - {None}
    )
    for dataset, size in sorted({(v["dataset"], v["size"]) for v in RUNS.values()}):
        source = config["datasets"][dataset]
        if source["source"] == "medmnist":
            files.append(
                f"results/downloads/{source.get('flag', 'bloodmnist')}_{size}.npz"
            )
    return files


def report_input(wildcards) -> dict:
    """Everything the paper report reads: tables, statistics, figures, provenance, benchmarks, templates."""
    names = ["table1", "table3"] + TABLES
    return {
        "tables": [f"results/tables/{name}.json" for name in names],
        "table_csvs": [f"results/tables/{name}.csv" for name in names],
        "significance": "results/stats/significance.json",
        "metrics": expand("results/runs/{run}/metrics.json", run=TABLE3_RUNS),
        "histories": expand("results/runs/{run}/history.csv", run=TABLE3_RUNS),
        "curves": expand("results/runs/{run}/curves.png", run=TABLE3_RUNS),
        "confusion": expand("results/runs/{run}/confusion.png", run=TABLE3_RUNS),
        "compared": "results/figures/curves_compared.png",
        "montage": f"results/figures/montage_{config['dataset']}.png",
        "panels": expand("results/gradcam/{run}/panel.png", run=GRADCAM_RUNS),
        "focus": expand("results/gradcam/{run}/focus.csv", run=GRADCAM_RUNS),
        "provenance": "results/report/provenance.json",
        "benchmarks": expand("benchmarks/train/{run}.tsv", run=RUNS),
        "conclusions": repo_file("paper/conclusions.yaml"),
        "templates": [
            repo_file(f"paper/{name}")
            for name in (
                "report.html.j2",
                "report.tex.j2",
                "macros.html.j2",
                "macros.tex.j2",
            )
        ],
    }


def all_targets() -> list[str]:
    """Everything a full build makes: per-run metrics and curves, the montage, Grad-CAM panels, Tables 1 and 3."""
    targets = expand("results/runs/{run}/metrics.json", run=TABLE3_RUNS)
    targets += expand("results/runs/{run}/curves.png", run=TABLE3_RUNS)
    targets += expand(
        "results/tables/{table}.{ext}",
        table=["table1", "table3"],
        ext=["csv", "html", "tex"],
    )
    targets.append(f"results/figures/montage_{config['dataset']}.png")
    # The studies: every run evaluated with its bootstrap interval and curves, the study tables, the statistics.
    targets += expand(
        "results/runs/{run}/{name}",
        run=RUNS,
        name=["metrics.json", "bootstrap.json", "curves.png"],
    )
    targets += expand(
        "results/tables/{table}.{ext}", table=TABLES, ext=["csv", "html", "tex"]
    )
    targets += [
        "results/stats/significance.json",
        "results/stats/significance.csv",
        "results/stats/bootstrap.csv",
    ]
    targets += expand(
        "results/gradcam/{run}/{name}",
        run=GRADCAM_RUNS,
        name=["panel.png", "focus.csv"],
    )
    targets.append("results/report/report.html")
    targets.append(
        "results/report/report.pdf"
        if TEX_FOUND
        else "results/report/report_pdf_not_built.txt"
    )
    return targets
