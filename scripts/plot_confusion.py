"""Snakemake adapter: the confusion matrix of one run's test predictions."""

import json
from pathlib import Path

from bloodcells.curves import plot_confusion
from bloodcells.logs import log_to_file


def main(smk) -> None:
    """Draw the run's confusion matrix."""
    log_to_file(smk.log[0])
    metrics = json.loads(Path(smk.input[0]).read_text())
    title = f"{smk.wildcards.run}: test accuracy {metrics['accuracy']:.4f}"
    plot_confusion(metrics["confusion_matrix"], metrics["class_names"], title, smk.output[0])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
