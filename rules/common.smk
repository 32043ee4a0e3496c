# Config validation, run planning and the helper functions the rules share.

import sys

REPO = Path(workflow.basedir)
sys.path.insert(0, str(REPO / "scripts"))

from bloodcells.hardware import has_gpu, resolve_switch
from bloodcells.plan import plan_runs, validate_config

# Stops the run before any job starts, naming every bad key.
validate_config(config, REPO / "rules/schema/config.schema.yaml")

RUNS, STUDIES = plan_runs(config)
TABLE3_RUNS = STUDIES["table3"]


wildcard_constraints:
    run="|".join(sorted(RUNS)),
    dataset="[a-z0-9_]+",
    size=r"\d+",


def repo_file(relative: str) -> str:
    """A file of the repository itself, wherever the working directory is (--directory)."""
    return str(REPO / relative)


def run_values(wildcards) -> dict:
    """The values (arch, size, optimizer, ...) of the run named by the wildcards."""
    return RUNS[wildcards.run]


def run_data(wildcards) -> str:
    """The prepared dataset file a run trains and is evaluated on."""
    values = RUNS[wildcards.run]
    return f"results/data/{values['dataset']}/{values['size']}.npz"


def dataset_config(wildcards) -> dict:
    """The config block of the dataset named by the wildcards."""
    return config["datasets"][wildcards.dataset]


def download_input(wildcards) -> list[str]:
    """The verified official download a medmnist dataset is prepared from, if that is its source."""
    source = config["datasets"][wildcards.dataset]
    if source["source"] != "medmnist":
        return []
    return [
        f"results/downloads/{source.get('flag', 'bloodmnist')}_{wildcards.size}.npz"
    ]


def hardware_switch(value) -> bool:
    """Resolve 'auto' of mixed_precision/xla: on with a GPU, off on a CPU."""
    return resolve_switch(value, has_gpu())


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
    targets += expand(
        "results/gradcam/{run}/{name}",
        run=GRADCAM_RUNS,
        name=["panel.png", "focus.csv"],
    )
    return targets
