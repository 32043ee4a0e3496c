"""Snakemake adapter: bootstrap intervals of every run and paired McNemar tests of the poster's conclusions."""

import json

import numpy as np

from bloodcells.atomic import write_text_atomic
from bloodcells.comparisons import (
    bootstrap_frame,
    planned_comparisons,
    prediction_outcomes,
    run_comparisons,
    significance_frame,
)
from bloodcells.logs import log_to_file
from bloodcells.tables import read_json
from bloodcells.texts import load_paper_yaml


def main(smk) -> None:
    """Write results/stats/bootstrap.csv, significance.json and significance.csv."""
    log_to_file(smk.log[0])
    labels, correct = {}, {}
    for run, path in zip(smk.params.runs, smk.input.predictions, strict=True):
        with np.load(path) as predictions:
            labels[run], correct[run] = prediction_outcomes(predictions["labels"], predictions["probabilities"])
    accuracy = {run: float(outcome.mean()) for run, outcome in correct.items()}
    boots = [read_json(path) for path in smk.input.bootstrap]
    write_text_atomic(smk.output.bootstrap, bootstrap_frame(smk.params.boot_runs, boots).to_csv(index=False))

    poster = load_paper_yaml(smk.input.poster)
    studies = {name: [(values, members) for values, members in configs] for name, configs in smk.params.studies.items()}
    results = run_comparisons(
        planned_comparisons(studies, accuracy, poster), correct, labels, accuracy, smk.params.alpha
    )
    method = load_paper_yaml(smk.input.texts)["significance_method"]
    summary = {"method": method, "alpha": smk.params.alpha, "comparisons": results}
    write_text_atomic(smk.output.json, json.dumps(summary, indent=1))
    frame = significance_frame(results)
    write_text_atomic(smk.output.csv, frame.to_csv(index=False))
    print(frame.to_string())


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
