"""The workflow end to end on a tiny synthetic config and its lint (killed jobs: test_reliability_kill.py)."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import TINY, run_snakemake

from bloodcells.names import BLOODMNIST_CLASSES


def declared_outputs(workdir: Path) -> list[str]:
    """Every output file the workflow declares for the tiny config, from snakemake --summary."""
    summary = run_snakemake(workdir, "--cores", "1", "--configfile", str(TINY), "--summary").stdout
    lines = [line.split("\t") for line in summary.splitlines() if "\t" in line]
    return [fields[0] for fields in lines[1:]]


def test_every_declared_output_exists(tiny_run):
    outputs = declared_outputs(tiny_run)
    # per run: model, history, predictions, metrics, curves; tables; data, montage; Grad-CAM of one run
    assert len(outputs) >= 4 * 5 + 6 + 2 + 4
    for output in outputs:
        assert (tiny_run / output).stat().st_size > 0, output
    nothing_left = run_snakemake(tiny_run, "-n", "--cores", "1", "--configfile", str(TINY))
    assert "Nothing to be done" in nothing_left.stdout + nothing_left.stderr


def test_metrics_and_predictions_of_every_run(tiny_run):
    runs = sorted(f"synthetic-32-{a}-bs{b}-s0" for a in ("resnet50", "resnet101") for b in (16, 32))
    assert set(runs) <= {p.name for p in (tiny_run / "results/runs").iterdir()}  # the studies add more runs
    for run in runs:
        metrics = json.loads((tiny_run / f"results/runs/{run}/metrics.json").read_text())
        assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["auc"] <= 1
        assert set(metrics["per_class"]) == set(BLOODMNIST_CLASSES)
        assert np.array(metrics["confusion_matrix"]).sum() == 32
        with np.load(tiny_run / f"results/runs/{run}/predictions.npz") as predictions:
            assert predictions["probabilities"].shape == (32, 8)
            assert np.allclose(predictions["probabilities"].sum(axis=1), 1, atol=1e-4)
        history = pd.read_csv(tiny_run / f"results/runs/{run}/history.csv")
        assert list(history["epoch"]) == [1]
        assert re.search(r"\d+/\d+ - \d+m?s - .*val_loss", (tiny_run / f"logs/train/{run}.log").read_text())
        assert not (tiny_run / f"results/checkpoints/{run}").exists()


def test_gradcam_panels_of_the_poster_model(tiny_run):
    folder = tiny_run / "results/gradcam/synthetic-32-resnet101-bs16-s0"
    for name in ("panel.png", "panel.pdf", "heatmaps.npz", "focus.csv"):
        assert (folder / name).stat().st_size > 0, name
    focus = pd.read_csv(folder / "focus.csv")
    assert focus["region"].str.contains("mask").all()


def test_tables_hold_every_grid_run(tiny_run):
    table3 = pd.read_csv(tiny_run / "results/tables/table3.csv")
    assert len(table3) == 4 * 2 and set(table3["metric"]) == {"accuracy", "auc"}
    table1 = pd.read_csv(tiny_run / "results/tables/table1.csv")
    assert len(table1) == 4 * 8
    html = (tiny_run / "results/tables/table3.html").read_text()
    assert "synthetic demo cells" in html and "ResNet-101 (32 px), batch 16" in html
    assert "\\begin{tabular}" in (tiny_run / "results/tables/table1.tex").read_text()


def test_lint_is_clean(tmp_path):
    result = run_snakemake(tmp_path, "--lint", "--configfile", str(TINY), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr
