"""Snakemake adapter: the paper report, results/report/report.html (self-contained) and report.tex (+ figures/)."""

import json
from pathlib import Path

import pandas as pd
import yaml

from bloodcells.atomic import write_text_atomic
from bloodcells.conclusions import Evidence, assess
from bloodcells.curves import comparison_panels
from bloodcells.history import loss_behaviour
from bloodcells.logs import log_to_file
from bloodcells.report import (
    benchmark_rows,
    copy_tex_figures,
    fidelity_notes,
    figure,
    ordered_tables,
    render_report,
    training_host_rows,
    verdict_counts,
)

REBUILD_COMMANDS = [
    "snakemake --cores all --configfile CONFIG --forcerun report",
    "snakemake --cores all --configfile CONFIG --report results/report/snakemake-report.zip",
]


def read_json(path: str) -> dict:
    return json.loads(Path(path).read_text())


def significance_rows(significance: dict) -> list[dict]:
    """One row per paired test: the claim, the two models, their accuracies, p and the verdict."""
    return [
        {
            "claim": c["claim"],
            "a": c["a"],
            "b": c["b"],
            "a_accuracy": t["a_accuracy"],
            "b_accuracy": t["b_accuracy"],
            "only_a": t["b"],
            "only_b": t["c"],
            "p": t["p_exact"],
            "verdict": c["verdict"],
        }
        for c in significance["comparisons"]
        for t in c["tests"]
    ]


def comparison_note(values: dict[str, dict]) -> str:
    """Which of the poster's curve comparisons this grid allows."""
    panels = [key for key, _ in comparison_panels(values)]
    sizes = sorted({v["size"] for v in values.values()})
    text = []
    text.append(
        f"By image size: {', '.join(f'{s} px' for s in sizes)}."
        if "size" in panels
        else f"The grid has one image size ({sizes[0]} px), so the poster's 224 px vs 64 px comparison cannot be "
        "drawn from these runs."
    )
    text.append(
        "By architecture: ResNet-50 vs ResNet-101."
        if "arch" in panels
        else "The grid has one architecture, so ResNet-50 vs ResNet-101 cannot be compared."
    )
    return " ".join(text)


def main(smk) -> None:
    """Build the data model from the workflow's outputs and render both report formats."""
    log_to_file(smk.log[0])
    config, params = smk.config, smk.params
    runs, values = params.table3_runs, params.table3_values
    tables = {Path(p).stem: read_json(p) for p in smk.input.tables}
    frames = {Path(p).stem: pd.read_csv(p) for p in smk.input.table_csvs}
    built, missing = ordered_tables(tables)
    metrics = {run: read_json(p) for run, p in zip(runs, smk.input.metrics)}
    histories = {run: pd.read_csv(p) for run, p in zip(runs, smk.input.histories)}
    significance = read_json(smk.input.significance)
    focus = {run: pd.read_csv(p) for run, p in zip(params.gradcam_runs, smk.input.focus)}
    evidence = Evidence(
        grid=values,
        metrics=metrics,
        behaviour={run: loss_behaviour(h["val_loss"].tolist()) for run, h in histories.items()},
        comparisons=significance["comparisons"],
        tables=frames,
        focus=focus,
    )
    conclusions = assess(yaml.safe_load(Path(smk.input.conclusions).read_text()), evidence)

    figures = {
        "montage": figure(smk.input.montage, f"Four training images of each class of '{params.dataset}'.", "montage"),
        "compared": figure(smk.input.compared, comparison_note(values), "compared"),
        "curves": [
            figure(p, f"Training and validation loss and accuracy of {run}.", "curves")
            for run, p in zip(runs, smk.input.curves)
        ],
        "confusion": [
            figure(p, f"Confusion matrix of {run} on its test split (rows: true class).", "confusion")
            for run, p in zip(runs, smk.input.confusion)
        ],
        "gradcam": [
            figure(
                p,
                f"Grad-CAM of {run} at layer {params.gradcam_layer}: the most confident correct images "
                "and mistakes of each class, each beside its heatmap.",
                "gradcam",
            )
            for run, p in zip(params.gradcam_runs, smk.input.panels)
        ],
    }
    provenance = read_json(smk.input.provenance)
    model = {
        "synthetic": params.synthetic,
        "dataset": params.dataset,
        "n_runs": len(params.all_runs),
        "tables": built,
        "missing_tables": missing,
        "significance": {
            "method": significance["method"],
            "alpha": significance["alpha"],
            "rows": significance_rows(significance),
        },
        "figures": figures,
        "focus": {run: frame.to_dict("records") for run, frame in focus.items()},
        "conclusions": conclusions,
        "verdict_counts": verdict_counts(conclusions),
        "fidelity": fidelity_notes(config, params.dataset),
        "provenance": provenance,
        "training_hosts": training_host_rows(provenance["training_hosts"]),
        "benchmarks": benchmark_rows(params.all_runs, smk.input.benchmarks),
        "commands": [c.replace("CONFIG", params.configfile) for c in REBUILD_COMMANDS],
        "pdf_note": params.pdf_note,
    }
    template_dir = Path(smk.input.templates[0]).parent
    all_figures = [
        figures["montage"],
        figures["compared"],
        *figures["curves"],
        *figures["confusion"],
        *figures["gradcam"],
    ]
    copy_tex_figures(all_figures, smk.output.figures)
    write_text_atomic(smk.output.tex, render_report(template_dir, "report.tex.j2", model))
    write_text_atomic(smk.output.html, render_report(template_dir, "report.html.j2", model))
    print(
        f"report: {len(built)} tables, {len(all_figures)} figures, {len(conclusions)} conclusions "
        f"({verdict_counts(conclusions)}); missing tables: {[m['name'] for m in missing]}"
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
