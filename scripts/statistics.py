"""Snakemake adapter: bootstrap intervals of every run and paired McNemar tests of the poster's conclusions."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bloodcells.atomic import write_text_atomic
from bloodcells.logs import log_to_file
from bloodcells.studies import planned_comparisons, run_comparisons


def main(smk) -> None:
    """Write results/stats/bootstrap.csv, significance.json and significance.csv."""
    log_to_file(smk.log[0])
    runs = smk.params.runs
    correct, labels, accuracy = {}, {}, {}
    for run, path in zip(runs, smk.input.predictions):
        with np.load(path) as predictions:
            labels[run] = predictions["labels"].reshape(-1)
            correct[run] = np.argmax(predictions["probabilities"], axis=1) == labels[run]
            accuracy[run] = float(correct[run].mean())
    rows = []
    for run, path in zip(smk.params.boot_runs, smk.input.bootstrap):
        boot = json.loads(Path(path).read_text())
        rows.append(
            {
                "run": run,
                "accuracy_ci95_low": boot["accuracy"]["low"],
                "accuracy_ci95_high": boot["accuracy"]["high"],
                "auc_ci95_low": boot["auc"]["low"],
                "auc_ci95_high": boot["auc"]["high"],
                "n_boot": boot["n_boot"],
            }
        )
    write_text_atomic(smk.output.bootstrap, pd.DataFrame(rows).to_csv(index=False))

    poster = yaml.safe_load(Path(smk.input.poster).read_text())
    studies = {name: [(values, members) for values, members in configs] for name, configs in smk.params.studies.items()}
    planned = planned_comparisons(studies, accuracy, poster["table3"]["values"], poster["table2"]["values"])
    results = run_comparisons(planned, correct, labels, accuracy, smk.params.alpha)
    summary = {
        "method": "paired McNemar test per seed on the same test images; p = exact two-sided binomial test of the "
        "discordant pairs (b ~ Bin(b + c, 1/2)); chi-square with continuity correction reported beside it. "
        "A claim is 'supported' when every seed's test is significant (p < alpha) in the poster's "
        "direction, 'contradicted' when one is significant the other way, else 'not significant'. "
        "No correction for multiple comparisons.",
        "alpha": smk.params.alpha,
        "comparisons": results,
    }
    write_text_atomic(smk.output.json, json.dumps(summary, indent=1))
    # McNemar's b and c are the discordant counts; the models' labels go under model_a / model_b.
    frame = pd.DataFrame(
        [
            {
                "comparison": r["comparison"],
                "claim": r["claim"],
                "model_a": r["a"],
                "model_b": r["b"],
                "a_run": t["a_run"],
                "b_run": t["b_run"],
                "a_accuracy": t["a_accuracy"],
                "b_accuracy": t["b_accuracy"],
                "only_a_correct": t["b"],
                "only_b_correct": t["c"],
                "p_exact": t["p_exact"],
                "chi2": t["chi2"],
                "p_chi2": t["p_chi2"],
                "verdict": r["verdict"],
            }
            for r in results
            for t in r["tests"]
        ]
    )
    write_text_atomic(smk.output.csv, frame.to_csv(index=False))
    print(frame.to_string())


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
