"""Snakemake adapter: the paper report, results/report/report.html (self-contained) and report.tex (+ figures/)."""

from pathlib import Path

import pandas as pd

from bloodcells import report as paper
from bloodcells.atomic import write_text_atomic
from bloodcells.conclusions import Evidence, assess
from bloodcells.history import loss_behaviour
from bloodcells.logs import log_to_file
from bloodcells.tables import read_json
from bloodcells.texts import load_paper_yaml, rebuild_commands

# The report rule's figure inputs.
FIGURE_INPUTS = ("montage", "compared", "curves", "confusion", "panels")


def main(smk) -> None:
    """Build the data model from the workflow's outputs and render both report formats."""
    log_to_file(smk.log[0])
    inputs, params = smk.input, smk.params
    runs, texts = params.table3_runs, load_paper_yaml(inputs.texts)
    histories = {run: pd.read_csv(path) for run, path in zip(runs, inputs.histories, strict=True)}
    significance = read_json(inputs.significance)
    focus = {run: pd.read_csv(path) for run, path in zip(params.gradcam_runs, inputs.focus, strict=True)}
    evidence = Evidence(
        grid=params.table3_values,
        metrics={run: read_json(path) for run, path in zip(runs, inputs.metrics, strict=True)},
        behaviour={run: loss_behaviour(history["val_loss"].tolist()) for run, history in histories.items()},
        comparisons=significance["comparisons"],
        tables={Path(path).stem: pd.read_csv(path) for path in inputs.table_csvs},
        focus=focus,
    )
    conclusions = assess(load_paper_yaml(inputs.conclusions), evidence)
    facts = {"dataset": params.dataset, "layer": params.gradcam_layer}
    figures = paper.report_figures(
        texts, {key: getattr(inputs, key) for key in FIGURE_INPUTS}, params.table3_values, params.gradcam_runs, facts
    )
    built, missing = paper.ordered_tables({Path(path).stem: read_json(path) for path in inputs.tables})
    provenance = read_json(inputs.provenance)
    model = {
        "synthetic": params.synthetic,
        "small_scale": paper.small_scale_note(texts, params.build, params.dataset),
        "dataset": params.dataset,
        "n_runs": len(params.all_runs),
        "tables": built,
        "missing_tables": missing,
        "significance": paper.significance_section(significance),
        "figures": figures,
        "focus": {run: frame.to_dict("records") for run, frame in focus.items()},
        "conclusions": conclusions,
        "verdict_counts": paper.verdict_counts(conclusions),
        "fidelity": paper.fidelity_notes(
            params.build, params.dataset, load_paper_yaml(inputs.poster)["text"]["recipe"]
        ),
        "provenance": provenance,
        "training_hosts": paper.training_host_rows(provenance["training_hosts"]),
        "benchmarks": paper.benchmark_rows(params.all_runs, inputs.benchmarks),
        "commands": rebuild_commands(texts, params.configfile),
        "pdf_note": params.pdf_note,
    }
    paper.copy_tex_figures(paper.all_figures(figures), smk.output.figures)
    template_dir = Path(inputs.templates[0]).parent
    write_text_atomic(smk.output.tex, paper.render_report(template_dir, "report.tex.j2", model))
    write_text_atomic(smk.output.html, paper.render_report(template_dir, "report.html.j2", model))
    print(f"report: {len(built)} tables, {len(paper.all_figures(figures))} figures, {len(conclusions)} conclusions")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
