"""What a results bundle of a config carries: the files rule bundle packs (and a restore accepts), and its config."""

from __future__ import annotations

from . import files
from .plan import Plan

PROVENANCE = "results/report/provenance.json"
RUN_FILES = ("metrics.json", "predictions.npz", "history.csv", "bootstrap.json", "host.json")
GRADCAM_FILES = ("panel.png", "panel.pdf", "heatmaps.npz", "focus.csv")
TRANSFER_FILES = ("predictions.npz", "metrics.json")
# Config keys of bundles and restores: they say how results are packed and where they come from, not how they were
# made, so they are left out of the config a bundle records and of the config hash in the provenance.
BUNDLE_KEYS = ("bundle_models", "restore", "restore_sha256", "restore_shared_runs", "restore_max_bytes")


def bundled_files(config: dict, plan: Plan, models: bool = False) -> dict[str, str | None]:
    """Every file a bundle of this plan holds (what no job can rebuild without a model or the data), sorted:
    path -> the run it belongs to, or None for the files of the whole build (montage, provenance)."""
    names = RUN_FILES + (("model.keras",) if models else ())
    paths = {path: run for run in plan.runs for path in files.run_files([run], *names)}
    paths |= {path: run for run in plan.runs for path in files.benchmark_files("train", [run])}
    paths |= {path: run for run in plan.runs for path in files.benchmark_files("evaluate", [run])}
    paths |= {path: run for run in plan.gradcam for path in files.gradcam_files([run], *GRADCAM_FILES)}
    paths |= {path: run for run in plan.gradcam for path in files.benchmark_files("gradcam", [run])}
    if config.get("transfer"):
        target = config["transfer"]["to"]
        for run in plan.studies["transfer_source"]:
            paths |= {path: run for path in files.transfer_files([run], target, *TRANSFER_FILES)}
            paths |= {path: run for path in files.benchmark_files("transfer", [f"{run}_{target}"])}
    paths |= {files.montage_file(config["dataset"]): None, PROVENANCE: None}
    return dict(sorted(paths.items()))


def results_config(config: dict) -> dict:
    """The config without the keys of bundles and restores: what a bundle records and the provenance hashes."""
    return {key: value for key, value in config.items() if key not in BUNDLE_KEYS}
