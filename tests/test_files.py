"""The plan of a config beyond its runs (tables, Grad-CAM runs, table params) and the files its rules read and make:
bloodcells.plan, bloodcells.files, bloodcells.texts, bloodcells.names."""

import copy

import pytest
import yaml
from conftest import REPO, SCHEMA, TINY

from bloodcells import files, plan
from bloodcells.config import ConfigError, validate_config
from bloodcells.names import model_label
from bloodcells.texts import load_paper_yaml, pdf_note, rebuild_commands, row_header, table_notes

PAPER = REPO / "paper"


def validated(path) -> dict:
    """A repository config, validated (defaults filled in)."""
    return validate_config(yaml.safe_load(path.read_text()), SCHEMA)


@pytest.fixture(scope="module")
def tiny() -> tuple[dict, plan.Plan]:
    """The tiny test config (every study, reduced) and its plan."""
    config = validated(TINY)
    return config, plan.make_plan(config)


@pytest.fixture(scope="module")
def full() -> tuple[dict, plan.Plan]:
    """The poster's full study (config.yaml) and its plan."""
    config = validated(REPO / "config.yaml")
    return config, plan.make_plan(config)


def test_plan_names_every_study_table_and_the_posters_model(tiny):
    config, planned = tiny
    assert planned.tables == list(plan.TABLE_STUDIES)  # every study of the tiny config, transfer included
    assert len(planned.table3) == 4 and planned.table3 == planned.studies["table3"]
    assert planned.gradcam == ["synthetic-32-resnet101-bs16-s0"]


def test_a_table_is_made_where_its_study_is_planned():
    assert plan.study_tables({"table3": [], "dropout": [], "transfer_source": []}) == ["methods_dropout", "transfer"]
    assert plan.study_tables({"table3": []}) == []


def test_table_params_of_a_methods_table_and_of_the_transfer_table(tiny):
    config, planned = tiny
    dropout = plan.table_params(config, planned, "methods_dropout")
    assert dropout["runs"] == planned.studies["dropout"]
    assert [values["dropout"] for values, _ in dropout["configs"]] == [0.3, 0.5]
    assert (dropout["dataset"], dropout["source"], dropout["synthetic"]) == ("synthetic", "synthetic", True)
    transfer = plan.table_params(config, planned, "transfer")
    assert transfer["runs"] == planned.studies["transfer_source"]
    assert (transfer["dataset"], transfer["source"], transfer["synthetic"]) == ("raabin", "folder", True)


def test_compared_studies_and_runs(tiny):
    config, planned = tiny
    compared = plan.compared_configs(planned)
    assert list(compared) == [s for s in plan.COMPARED_STUDIES if s in planned.studies]
    assert all(isinstance(pair, list) and len(pair) == 2 for pairs in compared.values() for pair in pairs)
    runs = plan.compared_runs(config, planned.runs)
    assert runs and all(planned.runs[run]["dataset"] == "synthetic" for run in runs)
    assert not any(run.startswith("raabin") for run in runs)


def test_prepare_inputs_by_source(tiny, full):
    config, _ = tiny
    assert files.prepare_inputs(config, "raabin", 32) == ["results/folders/raabin"]  # synthesized folder
    assert files.prepare_inputs(config, "synthetic", 32) == []
    config, _ = full
    assert files.prepare_inputs(config, "bloodmnist", 224) == ["results/downloads/bloodmnist_224.npz"]
    assert files.prepare_inputs(config, "raabin", 64) == []  # read from the user's folder


def test_data_files_used_lists_data_weights_and_downloads_once(full):
    config, planned = full
    used = files.data_files_used(config, planned.runs)
    assert len(used) == len(set(used))
    assert {f"results/data/bloodmnist/{size}.npz" for size in (64, 128, 224)} <= set(used)
    assert "results/data/raabin/64.npz" in used
    assert {f"results/downloads/bloodmnist_{size}.npz" for size in (64, 128, 224)} <= set(used)
    assert sum(path.endswith("_notop.h5") for path in used) == 2  # one weights file per architecture


def test_train_inputs_name_the_weights_only_with_imagenet_initialisation(tiny, full):
    config, planned = full
    run = planned.table3[0]
    assert set(files.train_inputs(config, planned.runs[run])) == {"data", "weights"}
    config, planned = tiny
    assert files.train_inputs(config, planned.runs[planned.table3[0]]) == {"data": "results/data/synthetic/32.npz"}


def test_table_and_report_inputs(tiny):
    config, planned = tiny
    transfer = files.table_inputs(config, planned, "transfer", PAPER)
    assert transfer["transfer"] == [
        f"results/transfer/{run}/raabin/metrics.json" for run in planned.studies["transfer_source"]
    ]
    table2 = files.table_inputs(config, planned, "table2", PAPER)
    assert set(table2) == {"metrics", "bootstrap", "history", "poster", "texts", "templates"}
    assert table2["texts"].endswith("paper/tables.yaml") and table2["templates"][0].endswith("table.html.j2")
    report = files.report_inputs(config, planned, PAPER)
    assert report["tables"] == [f"results/tables/{t}.json" for t in ("table1", "table3", *planned.tables)]
    assert report["panels"] == ["results/gradcam/synthetic-32-resnet101-bs16-s0/panel.png"]
    assert report["templates"][:2] == [str(PAPER / "report.html.j2"), str(PAPER / "report.tex.j2")]


def test_targets_cover_every_run_table_and_the_report(tiny):
    config, planned = tiny
    targets = files.targets(config, planned, tex_found=False)
    assert all(f"results/runs/{run}/bootstrap.json" in targets for run in planned.runs)
    assert all(f"results/tables/{t}.tex" in targets for t in ("table1", "table3", *planned.tables))
    assert targets[-2:] == ["results/report/report.html", "results/report/report_pdf_not_built.txt"]
    assert files.targets(config, planned, tex_found=True)[-1] == "results/report/report.pdf"


def test_a_missing_user_folder_is_named_only_where_a_job_would_read_it(full, tmp_path):
    config, planned = full
    message = files.missing_user_folder(config, planned, "raabin", "64", tmp_path)
    assert "Dataset 'raabin' is read from data/Raabin-WBC" in message and "external=False" in message
    assert files.missing_user_folder(config, planned, "bloodmnist", "64", tmp_path) is None  # a download, no folder
    (tmp_path / files.data_file("raabin", 64)).parent.mkdir(parents=True)
    (tmp_path / files.data_file("raabin", 64)).touch()
    assert files.missing_user_folder(config, planned, "raabin", "64", tmp_path) is None  # made already: not read
    assert files.missing_user_folder(config, planned, "raabin", "128", tmp_path) is not None
    for name in ("Basophil", "Neutrophil"):
        (tmp_path / "data/Raabin-WBC/Train" / name).mkdir(parents=True)
    assert files.missing_user_folder(config, planned, "raabin", "128", tmp_path) is None


def test_report_config_holds_what_the_fidelity_notes_state(full):
    config, _ = full
    build = plan.report_config(config)
    assert build["training"] == config["training"] and build["seeds"] == config["seeds"]
    assert list(build["datasets"]) == [config["dataset"]]


def test_table_notes_come_from_paper_tables_yaml(tiny):
    config, _ = tiny
    texts = load_paper_yaml(PAPER / "tables.yaml")
    facts = plan.recipe_facts(config) | {"dataset": "synthetic", "source": "synthetic", "confidence": "one seed"}
    grid = table_notes(texts, "table3", facts)
    assert grid[0] == "Data: 'synthetic' (synthetic source); one seed."
    assert "Initial weights: random (no ImageNet); shear ±0.2 radians, zoom [0.8, 1.2], horizontal flip." in grid
    assert any(
        note.startswith("Attention layer: the poster does not define it")
        for note in table_notes(texts, "table2", facts)
    )
    assert not any("Attention layer" in note for note in grid)
    assert set(texts["titles"]) == {"table1", "table3", *plan.TABLE_STUDIES}  # a title for every table
    assert (row_header(texts, "table4"), row_header(texts, "methods_batch")) == ("class", "metric")


def test_report_texts():
    texts = load_paper_yaml(PAPER / "report.yaml")
    assert pdf_note(texts, False).startswith("report.pdf was not built: latexmk and pdflatex were not found")
    assert rebuild_commands(texts, "my.yaml")[0] == "snakemake --cores all --configfile my.yaml --forcerun report"


def test_model_label_has_one_home():
    assert model_label({"arch": "resnet101", "size": 224, "batch_size": 16}) == "ResNet-101 (224 px), batch 16"
    assert model_label({"arch": "vgg", "size": 64, "batch_size": 8}) == "vgg (64 px), batch 8"


def test_gradcam_runs_named_in_the_config_are_checked():
    config = copy.deepcopy(validated(TINY))
    config["gradcam"]["runs"] = ["nope"]
    with pytest.raises(ConfigError, match="'gradcam.runs'"):
        plan.make_plan(config)
