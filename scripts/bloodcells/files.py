"""Where the workflow's files lie: each path pattern built here once, and the files a planned config's rules read
and a full build makes. Imported when the Snakefile is parsed (on a cluster's login node): no numpy, pandas or
TensorFlow here."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .download import imagenet_weights_file
from .plan import GRID_TABLES, TABLE_STUDIES, Plan, synthesized_datasets
from .user_folders import missing_folder_message, user_folders

TABLE_FORMATS = ("csv", "html", "tex")


def data_file(dataset: str, size: int) -> str:
    """A prepared dataset: one npz in the BloodMNIST schema per dataset and size."""
    return f"results/data/{dataset}/{size}.npz"


def run_data(values: dict) -> str:
    """The prepared dataset file a run trains and is evaluated on."""
    return data_file(values["dataset"], values["size"])


# The sizes of MedMNIST's official files (medmnist 3.0.2 INFO; tests/test_quick.py checks them against it).
MEDMNIST_SIZES = (28, 64, 128, 224)


def medmnist_download_size(size: int) -> int:
    """The official file a `size` px dataset is prepared from: the smallest MedMNIST size that is at least `size`."""
    larger = [official for official in MEDMNIST_SIZES if official >= size]
    if not larger:
        raise ValueError(f"MedMNIST has no file of at least {size} px; official sizes: {list(MEDMNIST_SIZES)}")
    return larger[0]


def medmnist_mirror(datasets: dict[str, dict], flag: str) -> dict[str, str]:
    """The `url` and `md5` that the medmnist datasets of `flag` set in place of the official file ({} where none
    does); they name one file, so two datasets of one flag must not set different ones."""
    mirrors = {
        (source["url"], source["md5"].lower()): name
        for name, source in datasets.items()
        if source["source"] == "medmnist" and source.get("flag", "bloodmnist") == flag and "url" in source
    }
    if len(mirrors) > 1:
        raise ValueError(f"config key datasets: {sorted(mirrors.values())} set different url/md5 for one file ({flag})")
    return next(({"url": url, "md5": md5} for url, md5 in mirrors), {})


def download_file(source: dict, size: int | str) -> str | None:
    """The verified official download a medmnist dataset is prepared from (the smallest official size of at least
    `size` px); None for the other sources."""
    if source["source"] != "medmnist":
        return None
    return f"results/downloads/{source.get('flag', 'bloodmnist')}_{medmnist_download_size(int(size))}.npz"


def run_files(runs: Iterable[str], *names: str) -> list[str]:
    """The named files of each run, run by run, e.g. run_files(runs, 'metrics.json')."""
    return [f"results/runs/{run}/{name}" for run in runs for name in names]


def gradcam_files(runs: Iterable[str], *names: str) -> list[str]:
    """The named Grad-CAM files of each explained run, run by run, e.g. gradcam_files(runs, 'panel.png')."""
    return [f"results/gradcam/{run}/{name}" for run in runs for name in names]


def transfer_files(runs: Iterable[str], dataset: str, *names: str) -> list[str]:
    """The named files (metrics.json, predictions.npz) of each run's transfer evaluation on `dataset`."""
    return [f"results/transfer/{run}/{dataset}/{name}" for run in runs for name in names]


def benchmark_files(rule: str, jobs: Iterable[str]) -> list[str]:
    """The benchmark file of each job of a rule (train, evaluate, gradcam: a run id; transfer: '{run}_{dataset}')."""
    return [f"benchmarks/{rule}/{job}.tsv" for job in jobs]


def table_files(tables: Iterable[str], formats: Iterable[str] = TABLE_FORMATS) -> list[str]:
    """The files of each table in each format."""
    return [f"results/tables/{table}.{ext}" for table in tables for ext in formats]


def prepare_inputs(config: dict, dataset: str, size: int) -> list[str]:
    """What a dataset is prepared from: a synthesized folder, the verified download (medmnist), or nothing."""
    if dataset in synthesized_datasets(config):
        return [f"results/folders/{dataset}"]
    download = download_file(config["datasets"][dataset], size)
    return [download] if download else []


def missing_user_folder(config: dict, plan: Plan, dataset: str, size: int | str, root: Path) -> str | None:
    """Why the dataset's job cannot read the user folder (Raabin-WBC, PBC) it prepares from, or None: the folder is
    there, the dataset is no user folder, or its npz is already made (then nothing reads the folder)."""
    if dataset not in user_folders(config, plan.runs) or (root / data_file(dataset, int(size))).exists():
        return None
    return missing_folder_message(config, dataset, root)


def train_inputs(config: dict, values: dict) -> dict[str, str]:
    """What a run trains from: its prepared dataset and, with ImageNet initialisation, the downloaded weights."""
    weights = imagenet_weights_file(config, values["arch"])
    return {"data": run_data(values)} | ({"weights": weights} if weights else {})


def data_files_used(config: dict, runs: dict[str, dict]) -> list[str]:
    """Every prepared dataset file a run reads, the initial weights, and the verified downloads the data came from."""
    used = sorted({(values["dataset"], values["size"]) for values in runs.values()})
    weights = sorted({imagenet_weights_file(config, values["arch"]) for values in runs.values()} - {None})
    downloads = [download_file(config["datasets"][dataset], size) for dataset, size in used]
    return sorted({data_file(*pair) for pair in used}) + weights + [path for path in downloads if path]


def templates(paper: Path, kind: str) -> list[str]:
    """The HTML and LaTeX templates of the tables or the report ('table', 'report'), then the HTML macros and the
    LaTeX table they use; the first file's folder is the template folder."""
    return [str(paper / f"{name}.j2") for name in (f"{kind}.html", f"{kind}.tex", "macros.html", "result_table.tex")]


def table_inputs(config: dict, plan: Plan, table: str, paper: Path) -> dict[str, list[str] | str]:
    """What a study table reads: per run, transfer metrics, or metrics, bootstrap intervals and histories; then the
    poster's values, the tables' texts and the templates from the repository's `paper` folder."""
    runs = plan.studies[TABLE_STUDIES[table]]
    if table == "transfer":
        inputs = {"transfer": transfer_files(runs, config["transfer"]["to"], "metrics.json")}
    else:
        names = {"metrics": "metrics.json", "bootstrap": "bootstrap.json", "history": "history.csv"}
        inputs = {key: run_files(runs, name) for key, name in names.items()}
    texts = {"poster": str(paper / "poster_values.yaml"), "texts": str(paper / "tables.yaml")}
    return inputs | texts | {"templates": templates(paper, "table")}


def montage_file(dataset: str) -> str:
    """The montage of a dataset's training images."""
    return f"results/figures/montage_{dataset}.png"


def report_inputs(config: dict, plan: Plan, paper: Path) -> dict[str, list[str] | str]:
    """What the paper report reads: the workflow's tables, statistics, figures, provenance and benchmarks, and from
    the repository's `paper` folder the conclusions to check, the report's texts and its templates."""
    names = [*GRID_TABLES, *plan.tables]
    return {
        "tables": table_files(names, ["json"]),
        "table_csvs": table_files(names, ["csv"]),
        "significance": "results/stats/significance.json",
        "metrics": run_files(plan.table3, "metrics.json"),
        "histories": run_files(plan.table3, "history.csv"),
        "curves": run_files(plan.table3, "curves.png"),
        "confusion": run_files(plan.table3, "confusion.png"),
        "compared": "results/figures/curves_compared.png",
        "montage": montage_file(config["dataset"]),
        "panels": gradcam_files(plan.gradcam, "panel.png"),
        "focus": gradcam_files(plan.gradcam, "focus.csv"),
        "provenance": "results/report/provenance.json",
        "benchmarks": benchmark_files("train", plan.runs),
        "poster": str(paper / "poster_values.yaml"),
        "conclusions": str(paper / "conclusions.yaml"),
        "texts": str(paper / "report.yaml"),
        "templates": templates(paper, "report"),
    }


def targets(config: dict, plan: Plan, tex_found: bool) -> list[str]:
    """Everything a full build makes, in build order: the Table 3 grid's metrics and curves, Tables 1 and 3, the
    montage, every run's evaluation, the study tables and statistics, the Grad-CAM panels, and the report."""
    files = run_files(plan.table3, "metrics.json") + run_files(plan.table3, "curves.png")
    files += table_files(GRID_TABLES) + [montage_file(config["dataset"])]
    files += run_files(plan.runs, "metrics.json", "bootstrap.json", "curves.png")
    files += table_files(plan.tables)
    files += [f"results/stats/{name}" for name in ("significance.json", "significance.csv", "bootstrap.csv")]
    files += gradcam_files(plan.gradcam, "panel.png", "focus.csv")
    pdf = "report.pdf" if tex_found else "report_pdf_not_built.txt"
    return files + ["results/report/report.html", f"results/report/{pdf}"]
