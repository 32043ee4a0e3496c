"""The paper report: the poster's conclusions checked, provenance, and the report rendered from a fixture results
tree (no training), compiled to PDF with latexmk and opened in headless Chromium.

Chromium and TeX tests skip where the tools are absent, except with BLOODCELLS_REQUIRE_REPORT_TOOLS=1 (set by CI),
which turns a missing tool into a failure.
"""

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from browser import chromium_binary, load_page, screenshot_is_blank
from conftest import POSTER, REPO, SCHEMA, comparison_record, load_rule_script
from markupsafe import escape as html_escape  # the escaping jinja2 applies
from PIL import Image

from bloodcells import files
from bloodcells.conclusions import NOT_SUPPORTED, NOT_TESTABLE, SUPPORTED, Evidence, assess
from bloodcells.config import validate_config
from bloodcells.history import loss_behaviour
from bloodcells.latex import allowed_control_words, compile_pdf, unexpected_commands
from bloodcells.names import BLOODMNIST_CLASSES
from bloodcells.plan import config_hash, report_config
from bloodcells.provenance import data_files, git_state, host, package_versions, training_hosts, training_session
from bloodcells.report import benchmark_rows, epoch_span, png_data_uri, recipe_note, tex_name, training_host_rows
from bloodcells.tables import compare, poster_frame, run_records, summarise, table_cells

CLASSES = list(BLOODMNIST_CLASSES)
CONCLUSIONS = yaml.safe_load((REPO / "paper/conclusions.yaml").read_text())
GRID = {  # a 2 x 2 x 2 corner of the poster's grid
    f"bloodmnist-{size}-{arch}-bs{batch}-s0": {
        "arch": arch,
        "size": size,
        "batch_size": batch,
        "seed": 0,
        "dataset": "bloodmnist",
    }
    for arch in ("resnet50", "resnet101")
    for size in (64, 224)
    for batch in (16, 32)
}


def require_tool(found: bool, name: str) -> None:
    """Skip without the tool, or fail where CI requires it."""
    if found:
        return
    if os.environ.get("BLOODCELLS_REQUIRE_REPORT_TOOLS") == "1":
        pytest.fail(f"{name} required (BLOODCELLS_REQUIRE_REPORT_TOOLS=1) but not installed")
    pytest.skip(f"{name} is not installed")


# --- the poster's conclusions -------------------------------------------------------------------------------


def fake_metrics(accuracy: float, recall: dict[str, float]) -> dict:
    """metrics.json with per-class precision = recall = f1 as given (1.0 for unnamed classes)."""
    per_class = {c: {m: recall.get(c, 1.0) for m in ("precision", "recall", "f1")} | {"support": 10} for c in CLASSES}
    return {
        "accuracy": accuracy,
        "auc": 0.99,
        "per_class": per_class,
        "class_names": CLASSES,
        "confusion_matrix": (np.eye(len(CLASSES), dtype=int) * 10).tolist(),
    }


def grid_evidence(**overrides) -> Evidence:
    """The grid with ResNet-101 224 bs16 best, monocyte and IG weakest, 224 px runs spiky, ResNet-50 steady."""
    metrics, behaviour = {}, {}
    for run, v in GRID.items():
        best = (v["arch"], v["size"], v["batch_size"]) == ("resnet101", 224, 16)
        weak = 0.85 if v["batch_size"] == 16 else 0.9
        metrics[run] = fake_metrics(
            0.99 if best else 0.975 if v["size"] == 224 else 0.96,
            {"monocyte": weak, "immature granulocyte": weak - 0.01},
        )
        losses = [1.0, 0.6, 0.9, 0.5] if v["size"] == 224 else [1.0, 0.8, 0.7, 0.6]
        if v["arch"] == "resnet101":
            losses = [1.0, 0.5, 0.95, 0.45]
        behaviour[run] = loss_behaviour(losses)
    comparison = comparison_record("table3_best_vs_second", ("R101", 0.99), ("R50", 0.975), p_exact=0.001)
    defaults = {"grid": GRID, "metrics": metrics, "behaviour": behaviour, "comparisons": [comparison]}
    return Evidence(**(defaults | overrides))


def verdicts(evidence: Evidence) -> dict[str, tuple[str, str]]:
    return {c["poster"]: (c["verdict"], c["evidence"]) for c in assess(CONCLUSIONS, evidence)}


def by_start(results: dict, start: str) -> tuple[str, str]:
    return next(value for key, value in results.items() if key.startswith(start))


def test_conclusions_on_a_grid_that_agrees_with_the_poster():
    results = verdicts(grid_evidence())
    assert by_start(results, "224x224 pixel models exceeded")[0] == SUPPORTED
    assert by_start(results, "The best model prior to tuning")[0] == SUPPORTED
    assert by_start(results, "Monocytes and immature granulocytes had lower recall")[0] == SUPPORTED
    assert by_start(results, "Higher batch size improved F-1")[0] == SUPPORTED
    assert by_start(results, "224 models showed occasional validation loss spikes")[0] == SUPPORTED
    assert by_start(results, "ResNet-50's loss changes were steadier")[0] == SUPPORTED
    verdict, text = by_start(results, "Eosinophils and platelets")
    assert verdict == SUPPORTED and "1.000" in text
    # studies the fixture did not run are 'not testable', never a guess
    for start in ("ResNet-50 (64) 0.3 dropout", "Adam with lr=1e-4", "Attention layers", "Grad-CAM", "Extension"):
        assert by_start(results, start)[0] == NOT_TESTABLE


def test_conclusions_turn_when_the_numbers_do():
    evidence = grid_evidence()
    worst = "bloodmnist-224-resnet101-bs16-s0"
    evidence.metrics[worst] = fake_metrics(0.90, {"monocyte": 0.5, "platelet": 0.5})  # the poster's best falls back
    evidence.comparisons[0]["verdict"] = "not significant"
    results = verdicts(evidence)
    assert by_start(results, "224x224 pixel models exceeded")[0] == NOT_SUPPORTED
    verdict, text = by_start(results, "The best model prior to tuning")
    assert verdict == NOT_SUPPORTED and "most accurate: ResNet-" in text
    assert by_start(results, "Eosinophils and platelets")[0] == NOT_SUPPORTED
    only_64 = Evidence(
        grid={r: v for r, v in GRID.items() if v["size"] == 64}, metrics=evidence.metrics, behaviour=evidence.behaviour
    )
    verdict, text = by_start(verdicts(only_64), "224x224 pixel models exceeded")
    assert verdict == NOT_TESTABLE and "no 224 px model" in text


def test_study_conclusions_read_the_study_tables_and_tests():
    dropout = pd.DataFrame(
        {
            "row": ["Test Accuracy", "Test Accuracy", "Test AUC", "Test AUC"],
            "column": ["Dropout 0.3", "Dropout 0.5"] * 2,
            "mean": [0.97, 0.95, 0.996, 0.997],
        }
    )
    table4 = pd.DataFrame({"row": ["accuracy"], "column": ["f1-score"], "mean": [0.93], "poster": [0.93]})
    attention = comparison_record("attention_se_cw_vs_none", ("none", 0.978), ("SE", 0.955), p_exact=0.01)
    focus = focus_frame(2.5, {c: 2.0 for c in CLASSES})
    evidence = grid_evidence(
        tables={"methods_dropout": dropout, "table4": table4}, comparisons=[attention], focus={"r": focus}
    )
    results = verdicts(evidence)
    verdict, text = by_start(results, "ResNet-50 (64) 0.3 dropout")
    assert verdict == NOT_SUPPORTED and "Test AUC: Dropout 0.3 0.9960, Dropout 0.5 0.9970" in text
    assert by_start(results, "Attention layers")[0] == SUPPORTED
    assert by_start(results, "Grad-CAM")[0] == SUPPORTED
    assert by_start(results, "Extension")[0] == SUPPORTED
    # the poster's number comes from the table's poster column (paper/poster_values.yaml), not from the code
    assert "external test accuracy 0.9300 (poster 0.93)" in by_start(results, "Extension")[1]


def focus_frame(pooled: float, ratios: dict[str, float], images: int = 300, area: float = 0.383) -> pd.DataFrame:
    """focus.csv of one run: per class and 'all', the focus ratio given and the share of heat it implies."""
    rows = [
        {
            "class": name,
            "n_images": n,
            "n_empty_maps": 0,
            "focus_mean": ratio * area,
            "focus_sd": 0.1,
            "region_area_share": area,
            "focus_ratio": ratio,
            "region": "centred disc",
        }
        for name, ratio, n in [(c, r, images) for c, r in ratios.items()] + [("all", pooled, images * 8)]
    ]
    return pd.DataFrame(rows)


GRADCAM_CHECK = next(c["check"] for c in CONCLUSIONS if c["check"]["kind"] == "gradcam_focus")


def gradcam_verdict(*frames: pd.DataFrame, check: dict = GRADCAM_CHECK) -> tuple[str, str]:
    results = assess([{"poster": "Grad-CAM", "check": check}], grid_evidence(focus=dict(enumerate(frames))))
    return results[0]["verdict"], results[0]["evidence"]


def test_gradcam_thresholds_are_stated_in_conclusions_yaml():
    assert GRADCAM_CHECK["pooled_ratio"] == 1.5 and GRADCAM_CHECK["class_ratio"] == 1.0
    assert GRADCAM_CHECK["min_class_images"] == 20
    text = (REPO / "paper/conclusions.yaml").read_text()
    for key in ("pooled_ratio", "class_ratio", "min_class_images"):  # each with its reason on the line(s) above
        assert re.search(rf"# [^\n]+\n(    #[^\n]*\n)*    {key}: ", text), key


def test_gradcam_verdict_on_the_real_pbc_run_names_the_classes_off_the_cell():
    # the PBC run: 42.9 % of the heat on 38.3 % of the image, eosinophils 0.17 and neutrophils 0.38
    ratios = {c: 1.3 for c in CLASSES} | {"eosinophil": 0.17, "neutrophil": 0.38}
    verdict, text = gradcam_verdict(focus_frame(1.12, ratios))
    assert verdict == NOT_SUPPORTED
    assert "pooled ratio 1.12" in text and "2 of 8 classes judged below 1.0: eosinophil 0.17" in text
    assert "neutrophil 0.38" in text
    assert "pooled focus ratio" in text and "at least 1.5" in text and "at least 20 test images" in text


def test_gradcam_verdict_needs_the_pooled_and_every_class_threshold():
    good = {c: 1.8 for c in CLASSES}
    verdict, text = gradcam_verdict(focus_frame(1.9, good))
    assert verdict == SUPPORTED and "all 8 classes judged reach 1.0 (lowest basophil 1.80)" in text
    # a good pooled ratio hides one class looked at off the cell: not supported, and the class is named
    verdict, text = gradcam_verdict(focus_frame(1.9, good | {"monocyte": 0.9}))
    assert verdict == NOT_SUPPORTED and "1 of 8 classes judged below 1.0: monocyte 0.90" in text
    # every class above 1 but the pooled ratio short of 1.5 (the old rule, ratio > 1, called this supported)
    assert gradcam_verdict(focus_frame(1.12, good))[0] == NOT_SUPPORTED
    # every run must pass
    assert gradcam_verdict(focus_frame(1.9, good), focus_frame(1.2, good))[0] == NOT_SUPPORTED
    # a class with too few test images is named but does not decide the verdict
    small = focus_frame(1.9, good | {"basophil": 0.5})
    small.loc[small["class"] == "basophil", "n_images"] = 5
    verdict, text = gradcam_verdict(small)
    assert verdict == SUPPORTED and "not judged (< 20 images): basophil" in text
    # the thresholds are read from the check, not fixed in the code
    assert gradcam_verdict(focus_frame(1.2, good), check=GRADCAM_CHECK | {"pooled_ratio": 1.1})[0] == SUPPORTED


def test_gradcam_verdict_without_a_class_large_enough_is_not_testable():
    verdict, text = gradcam_verdict(focus_frame(2.0, {c: 2.0 for c in CLASSES}, images=3))
    assert verdict == NOT_TESTABLE and "no class has 20 test images" in text


def test_other_descriptive_verdicts_state_and_apply_their_thresholds():
    by_kind = {c["check"]["kind"] + c["check"].get("metric", ""): c for c in CONCLUSIONS}
    assert by_kind["more_spikes"]["check"]["min_difference"] == 0.5
    assert by_kind["later_best_epoch"]["check"]["min_difference"] == 0.1
    assert by_kind["steadier_arch"]["check"]["max_ratio"] == 0.9
    assert by_kind["lowest_classesrecall"]["check"]["below"] == 0.9
    assert by_kind["batch_improves_f1"]["check"]["min_mean_gain"] == 0.01

    def one(kind: str, evidence: Evidence, **change) -> tuple[str, str]:
        conclusion = by_kind[kind] | {"check": by_kind[kind]["check"] | change}
        result = assess([conclusion], evidence)[0]
        return result["verdict"], result["evidence"]

    evidence = grid_evidence()  # spikes per run: 224 px 1.0, 64 px 0.5
    verdict, text = one("more_spikes", evidence)
    assert verdict == SUPPORTED and "difference +0.50; supported from 0.5" in text
    assert one("more_spikes", evidence, min_difference=0.6)[0] == NOT_SUPPORTED
    verdict, text = one("steadier_arch", evidence)
    assert verdict == SUPPORTED and "supported up to 0.9" in text
    assert one("steadier_arch", evidence, max_ratio=0.4)[0] == NOT_SUPPORTED  # ResNet-50 / ResNet-101 = 0.47
    verdict, text = one("lowest_classesrecall", evidence)  # monocyte 0.875, immature granulocyte 0.865
    assert verdict == SUPPORTED and "each below 0.9" in text
    assert one("lowest_classesrecall", evidence, below=0.87)[0] == NOT_SUPPORTED
    verdict, text = one("batch_improves_f1", evidence)  # batch 32 gains 0.05 in every case
    assert verdict == SUPPORTED and "mean gain of at least 0.01" in text
    assert one("batch_improves_f1", evidence, min_mean_gain=0.06)[0] == NOT_SUPPORTED
    slow = grid_evidence()  # 64 px runs reach their best at epoch 4 of 4, 224 px at epoch 2 of 4
    for run, values in GRID.items():
        slow.behaviour[run] = loss_behaviour([1.0, 0.8, 0.7, 0.6] if values["size"] == 64 else [1.0, 0.5, 0.6, 0.7])
    verdict, text = one("later_best_epoch", slow)
    assert verdict == SUPPORTED and "difference +0.50; supported from 0.1" in text
    assert one("later_best_epoch", slow, min_difference=0.6)[0] == NOT_SUPPORTED


def test_unknown_check_kind_is_named():
    with pytest.raises(ValueError, match="unknown check kind 'guess'"):
        assess([{"poster": "x", "check": {"kind": "guess"}}], grid_evidence())


def test_loss_behaviour_counts_spikes_and_steadiness():
    behaviour = loss_behaviour([1.0, 0.5, 0.8, 0.4])
    assert behaviour["spikes"] == 1 and behaviour["best_epoch"] == 4 and behaviour["epochs"] == 4
    assert behaviour["mean_relative_change"] == pytest.approx((0.5 + 0.6 + 0.5) / 3)
    assert math.isnan(loss_behaviour([0.7])["mean_relative_change"])
    with pytest.raises(ValueError, match="finite positive"):
        loss_behaviour([1.0, float("nan")])


# --- provenance ---------------------------------------------------------------------------------------------


def test_provenance_parts(tmp_path):
    assert (
        config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1}) != config_hash({"a": 2, "b": [1, 2]})
    )
    data = tmp_path / "d.npz"
    data.write_bytes(b"abc")
    assert data_files([data]) == [{"path": str(data), "bytes": 3, "md5": "900150983cd24fb0d6963f7d28e17f72"}]
    versions = package_versions(["numpy", "surely-not-installed-pkg"])
    assert versions["numpy"] == np.__version__ and versions["surely-not-installed-pkg"] == "not installed"
    assert host()["cpus"] == os.cpu_count()


def session(hostname: str, epochs: list[int], gpu: bool, slurm: str | None = None) -> dict:
    """A training session as training_session records it: on an H100 node (XLA, mixed precision) or a CPU."""
    return {
        "hostname": hostname,
        "cpu": "AMD EPYC 9454",
        "cpus": 96,
        "memory_gib": 1007.5,
        "os": "Linux",
        "gpus": [{"name": "NVIDIA H100 80GB HBM3", "driver_version": "550.54.15"}] if gpu else [],
        "gpus_tensorflow": [
            {"device": "/physical_device:GPU:0", "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
        ]
        if gpu
        else [],
        "tensorflow": "2.21.0",
        "cuda_build": "12.5.1",
        "cudnn_build": "9",
        "xla": gpu,
        "mixed_precision": gpu,
        "threads": 8,
        "slurm_job_id": slurm,
        "slurm_job_nodelist": hostname if slurm else None,
        "epochs": epochs,
    }


# A run killed on gpu-node-3 after epoch 4 and resumed on gpu-node-7; another trained on a laptop CPU.
TRAINING_HOSTS = {
    "bloodmnist-224-resnet101-bs16-s0": [
        session("gpu-node-3", [1, 2, 3, 4], True, "4242"),
        session("gpu-node-7", [5, 6, 7], True, "4250"),
    ],
    "bloodmnist-64-resnet50-bs32-s0": [session("laptop", [1, 2], False)],
}


def test_training_session_records_the_host_the_switches_and_the_slurm_job():
    record = training_session(
        xla=True,
        mixed_precision=False,
        threads=3,
        environ={"SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "gpu-node-[1-2]", "CUDA_VISIBLE_DEVICES": ""},
    )
    assert record["hostname"] == host()["hostname"] and record["cpus"] == os.cpu_count()
    assert (record["xla"], record["mixed_precision"], record["threads"]) == (True, False, 3)
    assert (record["slurm_job_id"], record["slurm_job_nodelist"]) == ("77", "gpu-node-[1-2]")
    import tensorflow as tf

    assert record["tensorflow"] == tf.__version__ and record["cuda_visible_devices"] == ""
    assert record["gpus_tensorflow"] == [] and isinstance(record["gpus"], list)  # this machine: TensorFlow sees none
    without_slurm = training_session(xla=False, mixed_precision=False, threads=1, environ={})
    assert without_slurm["slurm_job_id"] is None and without_slurm["slurm_job_nodelist"] is None


def test_training_hosts_are_read_per_run_and_checked(tmp_path):
    good = tmp_path / "a.json"
    good.write_text(json.dumps({"run": "a", "sessions": [session("n1", [1], False)]}))
    assert training_hosts(["a"], [good]) == {"a": [session("n1", [1], False)]}
    with pytest.raises(ValueError, match=re.escape(f"{good}: expected the host record of run 'b'")):
        training_hosts(["b"], [good])


def test_training_host_rows_one_per_session():
    rows = training_host_rows(TRAINING_HOSTS)
    assert [(r["run"], r["host"], r["epochs"]) for r in rows] == [
        ("bloodmnist-224-resnet101-bs16-s0", "gpu-node-3 (SLURM job 4242)", "1-4"),
        ("bloodmnist-224-resnet101-bs16-s0", "gpu-node-7 (SLURM job 4250)", "5-7"),
        ("bloodmnist-64-resnet50-bs32-s0", "laptop", "1-2"),
    ]
    assert rows[0]["device"] == "GPU: NVIDIA H100 80GB HBM3 (driver 550.54.15)"
    assert (rows[0]["xla"], rows[0]["mixed_precision"], rows[0]["tensorflow"]) == ("on", "on", "2.21.0")
    assert rows[2]["device"] == "CPU: AMD EPYC 9454 (8 threads)"
    assert (rows[2]["xla"], rows[2]["mixed_precision"]) == ("off", "off")
    unrecorded = training_host_rows({"r": [{"hostname": "unrecorded", "epochs": [1, 2]}]})
    assert unrecorded == [
        {
            "run": "r",
            "host": "unrecorded",
            "device": "unrecorded",
            "tensorflow": "-",
            "xla": "-",
            "mixed_precision": "-",
            "epochs": "1-2",
        }
    ]
    assert (epoch_span([]), epoch_span([3]), epoch_span([3, 4, 5])) == ("none", "3", "3-5")
    one_thread = training_host_rows({"r": [session("laptop", [1], False) | {"threads": 1}]})
    assert one_thread[0]["device"] == "CPU: AMD EPYC 9454 (1 thread)"


def test_git_state_commit_and_dirty(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True, text=True)  # noqa: E731
    git("init", "-q")
    (repo / "f").write_text("1")
    git("add", "f")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = git("rev-parse", "HEAD").stdout.strip()
    assert git_state(repo) == {"commit": head, "dirty": False}
    (repo / "f").write_text("2")
    assert git_state(repo) == {"commit": head, "dirty": True}
    assert git_state(tmp_path / "nowhere")["dirty"] is None


def test_benchmark_rows_read_wall_time_and_memory(tmp_path):
    good = tmp_path / "a.tsv"
    good.write_text("s\th:m:s\tmax_rss\n12.5\t0:00:12\t2048.0\n")
    assert benchmark_rows(["a"], [good]) == [{"run": "a", "wall_s": 12.5, "max_rss_mib": 2048.0}]
    bad = tmp_path / "b.tsv"
    bad.write_text("seconds\n1\n")
    with pytest.raises(ValueError, match=re.escape(f"{bad}: benchmark file lacks columns ['max_rss', 's']")):
        benchmark_rows(["b"], [bad])


def test_figures_are_embedded_and_named_for_latex(tmp_path):
    png = tmp_path / "x.png"
    Image.new("RGB", (4, 4), "red").save(png)
    assert png_data_uri(png).startswith("data:image/png;base64,iVBOR")
    (tmp_path / "y.png").write_text("not a png")
    with pytest.raises(ValueError, match="y.png: not a PNG file"):
        png_data_uri(tmp_path / "y.png")
    assert tex_name("results/runs/a-do0.5-s0/curves.png", "curves") == "curves-a-do0-5-s0-curves.png"


# --- the report rendered from a fixture results tree ---------------------------------------------------------


def noisy_png(path: Path, seed: int, size=(320, 200)) -> str:
    """A real, non-blank PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


def table_context(name: str, compared: pd.DataFrame, key: str, columns: list[str], synthetic: bool) -> dict:
    return table_cells(compared, key, columns) | {
        "title": f"{name} of the fixture",
        "caption": POSTER[name]["caption"],
        "notes": ["fixture note with 5 % & _under_"],
        "synthetic": synthetic,
    }


def build_fixture(root: Path, synthetic: bool) -> SimpleNamespace:
    """Every file the report rule reads, as the workflow would write them, and the adapter's smk object."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate_config(config, SCHEMA)
    evidence = grid_evidence()
    runs = list(GRID)
    records = summarise(run_records([v | {"run": r} for r, v in GRID.items()], [evidence.metrics[r] for r in runs]))
    tables, csvs = [], []
    for name, metrics, key, columns in (
        ("table3", ["accuracy", "auc"], "metric", ["accuracy", "auc"]),
        ("table1", ["f1"], "class", CLASSES),
    ):
        compared = compare(records, poster_frame(POSTER, name), metrics)
        tables.append(root / f"results/tables/{name}.json")
        csvs.append(root / f"results/tables/{name}.csv")
        tables[-1].parent.mkdir(parents=True, exist_ok=True)
        tables[-1].write_text(json.dumps(table_context(name, compared, key, columns, synthetic)))
        compared.to_csv(csvs[-1], index=False)
    metrics, histories = [], []
    for run in runs:
        folder = root / "results/runs" / run
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(evidence.metrics[run]))
        pd.DataFrame({"epoch": [1, 2, 3], "val_loss": [1.0, 0.7, 0.8]}).to_csv(folder / "history.csv", index=False)
        metrics.append(str(folder / "metrics.json"))
        histories.append(str(folder / "history.csv"))
    significance = root / "results/stats/significance.json"
    significance.parent.mkdir(parents=True)
    significance.write_text(
        json.dumps(
            {
                "method": "McNemar, exact.",
                "alpha": 0.05,
                "comparisons": [
                    {
                        "comparison": "table3_best_vs_second",
                        "claim": "best beats second (p < alpha)",
                        "a": "A",
                        "b": "B",
                        "verdict": "supported",
                        "tests": [{"a_accuracy": 0.99, "b_accuracy": 0.975, "b": 30, "c": 10, "p_exact": 0.002}],
                    }
                ],
            }
        )
    )
    gradcam_run = "bloodmnist-224-resnet101-bs16-s0"
    focus = root / f"results/gradcam/{gradcam_run}/focus.csv"
    focus.parent.mkdir(parents=True)
    pd.DataFrame(
        [
            {
                "class": "all",
                "n_images": 16,
                "n_empty_maps": 0,
                "focus_mean": 0.6,
                "focus_sd": 0.1,
                "region_area_share": 0.3,
                "focus_ratio": 2.0,
                "region": "centred disc",
            }
        ]
    ).to_csv(focus, index=False)
    provenance = root / "results/report/provenance.json"
    provenance.parent.mkdir(parents=True)
    provenance.write_text(
        json.dumps(
            {
                "created_utc": "2026-11-26T00:00:00+00:00",
                "git": git_state(REPO),
                "versions": package_versions(["numpy"]) | {"snakemake": "9"},
                "config_sha256": config_hash(config),
                "data_files": data_files([csvs[0]]),
                "training_hosts": TRAINING_HOSTS,
                "report_assembled_on": host()
                | {"hostname": "login-node", "gpus_tensorflow_sees": [], "gpus_machine": [], "cuda_build": None},
            }
        )
    )
    benchmarks = []
    for run in runs:
        benchmarks.append(root / f"benchmarks/train/{run}.tsv")
        benchmarks[-1].parent.mkdir(parents=True, exist_ok=True)
        benchmarks[-1].write_text("s\th:m:s\tmax_rss\n61.0\t0:01:01\t3000.5\n")
    templates = [
        str(REPO / "paper" / n) for n in ("report.html.j2", "report.tex.j2", "macros.html.j2", "result_table.tex.j2")
    ]
    out = root / "results/report"
    return SimpleNamespace(
        input=SimpleNamespace(
            tables=[str(p) for p in tables],
            table_csvs=[str(p) for p in csvs],
            significance=str(significance),
            metrics=metrics,
            histories=histories,
            curves=[noisy_png(root / f"results/runs/{r}/curves.png", i) for i, r in enumerate(runs)],
            confusion=[noisy_png(root / f"results/runs/{r}/confusion.png", 10 + i) for i, r in enumerate(runs)],
            compared=noisy_png(root / "results/figures/curves_compared.png", 20),
            montage=noisy_png(root / "results/figures/montage_bloodmnist.png", 21),
            panels=[noisy_png(root / f"results/gradcam/{gradcam_run}/panel.png", 22)],
            focus=[str(focus)],
            provenance=str(provenance),
            benchmarks=[str(p) for p in benchmarks],
            poster=str(REPO / "paper/poster_values.yaml"),
            conclusions=str(REPO / "paper/conclusions.yaml"),
            texts=str(REPO / "paper/report.yaml"),
            templates=templates,
        ),
        output=SimpleNamespace(
            html=str(out / "report.html"), tex=str(out / "report.tex"), figures=str(out / "figures")
        ),
        log=[str(root / "logs/report.log")],
        params=SimpleNamespace(
            table3_runs=runs,
            table3_values=GRID,
            all_runs=runs,
            gradcam_runs=[gradcam_run],
            gradcam_layer="conv5_block3_out",
            dataset="bloodmnist",
            synthetic=synthetic,
            configfile="config.yaml",
            pdf_note="fixture PDF note",
            build=report_config(config),
        ),
    )


def render_fixture(root: Path, synthetic: bool) -> SimpleNamespace:
    """Build the fixture and run the report adapter on it; the adapter's log redirect is undone afterwards."""
    import sys

    smk = build_fixture(root, synthetic)
    adapter = load_rule_script("report")
    stdout, stderr = sys.stdout, sys.stderr
    try:
        adapter.main(smk)
    finally:
        sys.stdout, sys.stderr = stdout, stderr
    return smk


@pytest.fixture(scope="module")
def fixture_report(tmp_path_factory) -> SimpleNamespace:
    """The report rendered from the synthetic-flagged fixture."""
    return render_fixture(tmp_path_factory.mktemp("report"), synthetic=True)


def test_html_report_is_one_self_contained_file(fixture_report):
    html = Path(fixture_report.output.html).read_text()
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == 1 + 1 + 8 + 8 + 1  # montage, compared, 8 curves, 8 confusion matrices, 1 Grad-CAM
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(src|href)="(https?:|file:|/)', html)
    assert 'class="banner"' in html and "synthetic demo cells" in html


def test_report_pairs_every_poster_table3_value_with_ours(fixture_report):
    html = Path(fixture_report.output.html).read_text()
    for entry in POSTER["table3"]["values"]:
        if entry["size"] in (64, 224):
            assert f"poster {entry['value']:.4f}" in html, entry
    assert "Table 2: optimizers and learning rates</strong>: not built: the config does not run studies.table2" in html
    tex = Path(fixture_report.output.tex).read_text()
    assert r"poster 0.9880" in tex and r"\includegraphics" in tex and "SYNTHETIC DEMO CELLS" in tex


def test_report_states_each_conclusion_with_a_verdict(fixture_report):
    html = Path(fixture_report.output.html).read_text()
    for conclusion in CONCLUSIONS:
        assert str(html_escape(conclusion["poster"])) in html
    assert html.count('class="verdict ') == len(CONCLUSIONS)
    assert "explicit thresholds, each written with its reason in <code>paper/conclusions.yaml</code>" in html
    assert "Supported when the pooled focus ratio" in html  # the Grad-CAM row states its rule


def test_report_provenance_and_benchmarks(fixture_report):
    html = Path(fixture_report.output.html).read_text()
    provenance = json.loads(Path(fixture_report.input.provenance).read_text())
    assert provenance["config_sha256"] in html and provenance["data_files"][0]["md5"] in html
    assert provenance["git"]["commit"] in html
    assert html.count("<td>61.0</td><td>3000</td>") == len(GRID)  # Snakemake's s and max_rss of every training job


def test_report_shows_where_each_run_trained(fixture_report):
    html = Path(fixture_report.output.html).read_text()
    hosts = html.split('id="training-hosts"')[1].split("</table>")[0]
    assert hosts.count("<tr><td><code>bloodmnist-224-resnet101-bs16-s0</code></td>") == 2  # one row per session
    assert (
        "<td>gpu-node-7 (SLURM job 4250)</td><td>GPU: NVIDIA H100 80GB HBM3 (driver 550.54.15)</td>"
        "<td>2.21.0</td><td>on</td><td>on</td><td>5-7</td>"
    ) in hosts
    assert (
        "<td>laptop</td><td>CPU: AMD EPYC 9454 (8 threads)</td><td>2.21.0</td><td>off</td><td>off</td><td>1-2</td>"
    ) in hosts
    assert "<th>Report assembled on</th><td>host login-node:" in html and "not where the runs trained" in html
    tex = Path(fixture_report.output.tex).read_text()
    assert (
        r"\texttt{bloodmnist-224-resnet101-bs16-s0} & gpu-node-3 (SLURM job 4242) & GPU: NVIDIA H100 80GB HBM3 "
        r"(driver 550.54.15) & 2.21.0 & on & on & 1-4 \\"
    ) in tex
    assert r"\item[Report assembled on] host login-node:" in tex


def test_real_data_report_has_no_banner(tmp_path):
    smk = render_fixture(tmp_path, synthetic=False)
    html = Path(smk.output.html).read_text()
    assert 'class="banner"' not in html and "SYNTHETIC" not in Path(smk.output.tex).read_text()


def test_report_pdf_compiles(fixture_report, tmp_path):
    require_tool(bool(shutil.which("latexmk") and shutil.which("pdflatex")), "latexmk/pdflatex")
    build_pdf = load_rule_script("build_pdf")
    pdf = tmp_path / "report.pdf"
    build_pdf.compile_pdf(Path(fixture_report.output.tex), pdf)
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 50_000
    assert not list(Path(fixture_report.output.tex).parent.glob("latexmk-*"))  # the scratch folder is gone


def test_failed_latex_build_leaves_no_pdf(tmp_path):
    require_tool(bool(shutil.which("latexmk") and shutil.which("pdflatex")), "latexmk/pdflatex")
    build_pdf = load_rule_script("build_pdf")
    tex = tmp_path / "broken.tex"
    tex.write_text(r"\documentclass{article}\begin{document}\undefinedcommand\end{document}")
    with pytest.raises(RuntimeError, match="latexmk could not compile .*broken.tex"):
        build_pdf.compile_pdf(tex, tmp_path / "broken.pdf")
    assert not (tmp_path / "broken.pdf").exists()


def test_report_in_headless_chromium(fixture_report):
    require_tool(chromium_binary() is not None, "chromium")
    page = load_page(fixture_report.output.html)
    assert len(page.images) == 19 and page.broken_images == []
    assert page.console_errors == []
    assert not screenshot_is_blank(page.screenshot)


def test_browser_check_catches_broken_pages(tmp_path):
    require_tool(chromium_binary() is not None, "chromium")
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="missing.png"><script>console.error("boom")</script></body></html>')
    page = load_page(bad)
    assert len(page.broken_images) == 1 and "boom" in page.console_errors
    assert screenshot_is_blank(page.screenshot)


def validated(path: Path) -> dict:
    """A config file as the workflow sees it: checked against the schema, defaults filled in."""
    config = yaml.safe_load(path.read_text())
    validate_config(config, SCHEMA)
    return config


def test_recipe_note_names_each_change_from_the_posters_recipe_with_its_config_key():
    recipe = POSTER["text"]["recipe"]  # the poster's learning rate and epochs
    assert recipe_note(validated(REPO / "config.yaml"), recipe) == (
        "As the poster: a constant learning rate, Keras' batch-normalisation defaults."
    )
    demo = recipe_note(validated(REPO / "config.demo.yaml"), recipe)
    for key in (
        "defaults.learning_rate",
        "training.lr_schedule",
        "training.warmup_epochs",
        "training.zero_init_residual",
        "training.bn_momentum",
    ):
        assert f"{key}" in demo
    assert "half cosine over the 3 epochs after a linear warm-up of 0.3 epochs" in demo
    assert "where the poster used 1e-4 (defaults.learning_rate)" in demo
    imagenet = validated(REPO / "config.demo.yaml")
    imagenet["training"]["weights"] = "imagenet"  # zero-initialised branches apply only to random initialisation
    assert "zero_init_residual" not in recipe_note(imagenet, recipe)


def test_report_tex_with_a_command_no_template_writes_is_not_compiled(fixture_report, tmp_path):
    # the second wall behind the templates' escaping: a report.tex that somehow carries TeX code is refused
    allowed = allowed_control_words(files.templates(REPO / "paper", "report"))
    tex = tmp_path / "report.tex"
    good = Path(fixture_report.output.tex).read_text()
    assert unexpected_commands(good, allowed) == []
    tex.write_text(good.replace(r"\end{document}", r"\immediate\pdfobj stream file {/etc/hostname}\end{document}"))
    assert unexpected_commands(tex.read_text(), allowed) == [r"\immediate", r"\pdfobj"]
    assert unexpected_commands("^^5cinput{x}", allowed) == ["^^"]
    with pytest.raises(RuntimeError, match=r"\\immediate, \\pdfobj"):
        compile_pdf(tex, tmp_path / "report.pdf", allowed)
    assert not (tmp_path / "report.pdf").exists()


def test_tex_reads_nothing_outside_its_build_folder(tmp_path):
    require_tool(bool(shutil.which("latexmk") and shutil.which("pdflatex")), "latexmk/pdflatex")
    secret = tmp_path / "secret" / "token.txt"
    secret.parent.mkdir()
    secret.write_text("PLANTED-SECRET-7f3a9c")
    folder = tmp_path / "report"
    folder.mkdir()
    tex = folder / "report.tex"
    tex.write_text(
        rf"\documentclass{{article}}\begin{{document}}x\input{{{secret}}}\input{{../secret/token.txt}}\end{{document}}"
    )
    with pytest.raises(RuntimeError, match="could not compile"):
        compile_pdf(tex, folder / "report.pdf")  # no check of control words: only kpathsea's walls
    assert not (folder / "report.pdf").exists() and list(folder.iterdir()) == [tex]
