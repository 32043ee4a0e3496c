"""The paper report's data model: one dict, built from the workflow's outputs, that both paper/report.html.j2 and
paper/report.tex.j2 render. Nothing here trains or evaluates; every number comes from a file a rule wrote."""

from __future__ import annotations

import base64
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .curves import comparison_panels
from .plan import is_synthetic
from .studies import lr_label
from .tables import template_environment

# The poster's tables in the poster's order, with the study each needs (for the note when one was not run).
POSTER_TABLES = {
    "table1": ("Table 1: class-level F1", "the Table 3 grid"),
    "table2": ("Table 2: optimizers and learning rates", "studies.table2"),
    "table3": ("Table 3: test accuracy and AUC of the grid", "the Table 3 grid"),
    "table4": ("Table 4: the external dataset (Raabin-WBC)", "studies.external"),
    "methods_batch": ("Methods: batch size", "studies.batch"),
    "methods_attention": ("Methods: attention layer and class-weighted loss", "studies.attention"),
    "methods_optimizer": ("Methods: optimizers", "studies.optimizer"),
    "methods_dropout": ("Methods: dropout", "studies.dropout"),
    "transfer": ("Cross-dataset transfer (beyond the poster)", "transfer"),
}
VERDICT_CLASSES = {"supported": "supported", "not supported": "unsupported"}


def ordered_tables(tables: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    """The built tables in the poster's order, and a plain note for each poster table that was not built."""
    built = [tables[name] | {"name": name} for name in POSTER_TABLES if name in tables]
    missing = [
        {"name": name, "title": title, "reason": f"not built: the config does not run {needs}"}
        for name, (title, needs) in POSTER_TABLES.items()
        if name not in tables and name != "transfer"
    ]
    return built, missing


def png_data_uri(path: str | Path) -> str:
    """A PNG as a data: URI, so the HTML report is one file that can be mailed."""
    data = Path(path).read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"{path}: not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def tex_name(path: str | Path, prefix: str) -> str:
    """A file name for the LaTeX figure folder: letters, digits and dashes only (dots confuse graphicx)."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", f"{prefix}-{Path(path).parent.name}-{Path(path).stem}").strip("-") + ".png"


def figure(path: str | Path, caption: str, prefix: str) -> dict:
    """One figure of the report: its source path, embedded image, LaTeX file name and caption."""
    return {"source": str(path), "uri": png_data_uri(path), "tex_file": tex_name(path, prefix), "caption": caption}


def comparison_note(texts: dict, values: dict[str, dict]) -> str:
    """Which of the poster's curve comparisons this grid allows (texts: paper/report.yaml `comparison`)."""
    panels = [key for key, _ in comparison_panels(values)]
    sizes = sorted({v["size"] for v in values.values()})
    by_size = (
        texts["size"].format(sizes=", ".join(f"{s} px" for s in sizes))
        if "size" in panels
        else texts["one_size"].format(size=sizes[0])
    )
    return f"{by_size} {texts['arch' if 'arch' in panels else 'one_arch']}"


def report_figures(texts: dict, paths: dict, values: dict[str, dict], gradcam_runs: Sequence[str], facts: dict) -> dict:
    """The report's figures with their captions (paper/report.yaml): the montage, the compared curves, each grid run's
    curves and confusion matrix, each Grad-CAM panel. `paths` holds the report rule's figure inputs; `values` the
    grid's runs; `facts` the dataset and the Grad-CAM layer."""
    captions, runs = texts["figures"], list(values)
    return {
        "montage": figure(paths["montage"], captions["montage"].format(**facts), "montage"),
        "compared": figure(paths["compared"], comparison_note(texts["comparison"], values), "compared"),
        "curves": [
            figure(p, captions["curves"].format(run=r), "curves") for r, p in zip(runs, paths["curves"], strict=True)
        ],
        "confusion": [
            figure(p, captions["confusion"].format(run=r), "confusion")
            for r, p in zip(runs, paths["confusion"], strict=True)
        ],
        "gradcam": [
            figure(p, captions["gradcam"].format(run=r, **facts), "gradcam")
            for r, p in zip(gradcam_runs, paths["panels"], strict=True)
        ],
    }


def all_figures(figures: dict) -> list[dict]:
    """Every figure of the report, in order, for the LaTeX figures/ folder."""
    return [figures["montage"], figures["compared"], *figures["curves"], *figures["confusion"], *figures["gradcam"]]


def significance_section(significance: dict) -> dict:
    """The report's statistics section: the method, alpha, and one row per paired test (the claim, the two models,
    their accuracies, the discordant counts, p and the verdict)."""
    rows = [
        {"claim": c["claim"], "a": c["a"], "b": c["b"]}
        | {"a_accuracy": t["a_accuracy"], "b_accuracy": t["b_accuracy"], "only_a": t["b"], "only_b": t["c"]}
        | {"p": t["p_exact"], "verdict": c["verdict"]}
        for c in significance["comparisons"]
        for t in c["tests"]
    ]
    return {"method": significance["method"], "alpha": significance["alpha"], "rows": rows}


def copy_tex_figures(figures: Sequence[dict], folder: str | Path) -> None:
    """Copy every figure into the report's figures/ folder under its LaTeX name (report.tex includes them there)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for item in figures:
        shutil.copyfile(item["source"], folder / item["tex_file"])


# What the poster's recipe left at Keras' defaults where this build makes it a config value: a constant rate.
POSTER_RECIPE = {"lr_schedule": "constant", "bn_momentum": None, "zero_init_residual": False}


def recipe_note(config: dict, poster: dict) -> str:
    """The fidelity note on the training recipe: each config value that differs from the poster's, with its key.
    `poster` is the poster's recipe (paper/poster_values.yaml text.recipe: learning rate, epochs)."""
    training = config["training"]
    changes = []
    if config["defaults"]["learning_rate"] != poster["learning_rate"]:
        changes.append(
            f"learning rate {config['defaults']['learning_rate']:g} where the poster used "
            f"{lr_label(poster['learning_rate'])} (defaults.learning_rate)"
        )
    if training["lr_schedule"] != POSTER_RECIPE["lr_schedule"]:
        warmup = f" after a linear warm-up of {training['warmup_epochs']:g} epochs" if training["warmup_epochs"] else ""
        changes.append(
            f"the learning rate decays to 0 along a half cosine over the {training['max_epochs']} "
            f"epochs{warmup}, where the poster kept it constant (training.lr_schedule, training.warmup_epochs)"
        )
    if training["zero_init_residual"] and training["weights"] is None:
        changes.append(
            "the last batch norm of each residual branch starts with scale 0, so each block starts as the "
            "identity (training.zero_init_residual), where Keras starts it at 1"
        )
    if training["bn_momentum"] != POSTER_RECIPE["bn_momentum"]:
        changes.append(
            f"batch-normalisation statistics follow the batches with momentum {training['bn_momentum']:g}, "
            "where Keras' default is 0.99 (training.bn_momentum)"
        )
    if not changes:
        return "As the poster: a constant learning rate, Keras' batch-normalisation defaults."
    return "This build changes the poster's recipe: " + "; ".join(changes) + "."


# The poster's smallest image size (paper/poster_values.yaml, Table 3's 64 px columns).
POSTER_MIN_SIZE = 64


def small_scale_note(texts: dict, config: dict, dataset: str) -> str | None:
    """The report's opening note on real cells below the poster's smallest size (paper/report.yaml small_scale), else
    None: synthetic cells have their banner, and a build at the poster's sizes needs no such note."""
    if is_synthetic(config, dataset) or config["defaults"]["size"] >= POSTER_MIN_SIZE:
        return None
    training = config["training"]
    weights = "ImageNet weights" if training["weights"] == "imagenet" else "random weights"
    size, epochs = config["defaults"]["size"], training["max_epochs"]
    return texts["small_scale"].format(dataset=dataset, size=size, weights=weights, epochs=epochs)


def fidelity_notes(config: dict, dataset: str, poster: dict) -> list[dict]:
    """How this build relates to the poster's methods, topic by topic (`poster`: its recipe, as in recipe_note)."""
    training, source = config["training"], config["datasets"][dataset]
    augmentation = training["augmentation"]
    weights = training["weights"]
    return [
        {
            "topic": "Shear unit",
            "text": f"Keras' ImageDataGenerator takes shear_range in degrees; the poster's text "
            f"gives no unit. This build shears by ±{augmentation['shear']} {augmentation['shear_unit']} "
            f"(config training.augmentation.shear_unit), zoom {augmentation['zoom']}, horizontal flip.",
        },
        {
            "topic": "Epoch rule",
            "text": f"The poster trained for {poster['epochs']} epochs. This build trains at most "
            f"{training['max_epochs']} epochs with early stopping after {training['patience']} epochs without a lower "
            "validation loss, and evaluates the weights of the epoch with the lowest validation loss.",
        },
        {"topic": "Training recipe", "text": recipe_note(config, poster)},
        {
            "topic": "Weights",
            "text": "ImageNet weights, as the poster."
            if weights == "imagenet"
            else f"Initial weights: {weights or 'none (random initialisation)'}; "
            "the poster started from ImageNet weights, so these numbers are not comparable with the poster's.",
        },
        {
            "topic": "Attention design",
            "text": "The poster does not say what its attention layer is. This build offers "
            "squeeze-and-excitation (Hu et al. 2018) and CBAM (Woo et al. 2018) on the last ResNet block, before "
            "global average pooling; the tables name which one each run used.",
        },
        {
            "topic": "Data source",
            "text": f"Dataset '{dataset}' from the '{source['source']}' source."
            + (
                " Synthetic cells drawn by scripts/bloodcells/synthetic.py: they show that the workflow runs, not what "
                "the poster measured."
                if source["source"] == "synthetic"
                else " BloodMNIST's official npz files (MD5-checked) at the run's size."
                if source["source"] == "medmnist"
                else " Images read from a folder, resized whole to the run's size."
            ),
        },
        {
            "topic": "Metric definitions",
            "text": "As MedMNIST's evaluator: ACC = accuracy of the argmax class; AUC = "
            "the mean over classes of the one-vs-rest ROC AUC. The training AUC in the methods tables is Keras' "
            "AUC metric, which pools all one-hot outputs, so it is not the same quantity as the test AUC.",
        },
        {
            "topic": "Seeds and intervals",
            "text": f"Seeds {config['seeds']}. With one seed, [a, b] is the bootstrap 95 % "
            f"interval of the test set ({config['statistics']['bootstrap']} resamples); with several, Student's t "
            "interval of the mean over seeds. Paired McNemar tests on the same test images decide the comparisons.",
        },
    ]


def benchmark_rows(runs: Sequence[str], paths: Sequence[str | Path]) -> list[dict]:
    """Wall time (s) and peak resident memory (MiB) of each run's training job, from Snakemake's benchmark files."""
    rows = []
    for run, path in zip(runs, paths, strict=True):
        frame = pd.read_csv(path, sep="\t")
        missing = {"s", "max_rss"} - set(frame.columns)
        if missing:
            raise ValueError(f"{path}: benchmark file lacks columns {sorted(missing)}")
        last = frame.iloc[-1]  # with --benchmark-repeats, the last repeat
        rows.append({"run": run, "wall_s": float(last["s"]), "max_rss_mib": float(last["max_rss"])})
    return rows


def epoch_span(epochs: Sequence[int]) -> str:
    """The epochs a session trained, as '1-12', '7' or 'none' (a session that found the run already trained)."""
    if not epochs:
        return "none"
    return str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"


def training_device(session: dict) -> str:
    """What a session trained on: its GPU model(s) with the driver, or the CPU model with the threads used."""
    gpus = [gpu.get("name") or gpu["device"] for gpu in session.get("gpus_tensorflow", [])]
    if gpus:
        drivers = sorted({gpu["driver_version"] for gpu in session.get("gpus", [])})
        return f"GPU: {', '.join(gpus)}" + (f" (driver {', '.join(drivers)})" if drivers else "")
    if "cpu" not in session:
        return "unrecorded"
    threads = session.get("threads", "?")
    return f"CPU: {session['cpu']} ({threads} thread{'' if threads == 1 else 's'})"


def training_host_rows(hosts: dict[str, list[dict]]) -> list[dict]:
    """One row per training session of each run (provenance.json's training_hosts): where and how it trained."""

    def switch(value) -> str:
        return "-" if value is None else "on" if value else "off"

    rows = []
    for run, sessions in hosts.items():
        for session in sessions:
            slurm = session.get("slurm_job_id")
            host = session.get("hostname", "unrecorded") + (f" (SLURM job {slurm})" if slurm else "")
            rows.append(
                {
                    "run": run,
                    "host": host,
                    "device": training_device(session),
                    "tensorflow": session.get("tensorflow") or "-",
                    "xla": switch(session.get("xla")),
                    "mixed_precision": switch(session.get("mixed_precision")),
                    "epochs": epoch_span(session["epochs"]),
                }
            )
    return rows


def verdict_counts(conclusions: Sequence[dict]) -> dict[str, int]:
    """How many conclusions got each verdict."""
    counts: dict[str, int] = {}
    for item in conclusions:
        counts[item["verdict"]] = counts.get(item["verdict"], 0) + 1
    return counts


def render_report(template_dir: str | Path, template: str, model: dict) -> str:
    """Render report.html.j2 or report.tex.j2 (both escape every value) from the data model."""
    env = template_environment(template_dir, template)
    env.globals["verdict_class"] = lambda verdict: VERDICT_CLASSES.get(verdict, "untestable")
    return env.get_template(template).render(**model)
