"""Snakemake adapter: plot one run's training curves."""

import pandas as pd

from bloodcells.curves import plot_history
from bloodcells.logs import log_to_file


def main(smk) -> None:
    """Plot the run's loss and accuracy curves."""
    log_to_file(smk.log[0])
    plot_history(pd.read_csv(smk.input[0]), smk.wildcards.run, smk.output[0])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
