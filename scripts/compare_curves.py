"""Snakemake adapter: validation loss of the grid's runs compared by image size and by architecture."""

import pandas as pd

from bloodcells.curves import plot_curve_comparison
from bloodcells.logs import log_to_file


def main(smk) -> None:
    """Draw the grid's validation losses side by side."""
    log_to_file(smk.log[0])
    histories = {run: pd.read_csv(path) for run, path in zip(smk.params.runs, smk.input, strict=True)}
    plot_curve_comparison(histories, {run: smk.params.values[run] for run in smk.params.runs}, smk.output[0])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
