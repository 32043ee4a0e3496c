"""Snakemake adapter: bootstrap 95 % confidence intervals of one run's test ACC and AUC."""

import json

import numpy as np

from bloodcells.atomic import write_text_atomic
from bloodcells.logs import log_to_file
from bloodcells.stats import bootstrap_ci


def main(smk) -> None:
    """Write the bootstrap intervals of one run's test ACC and AUC."""
    log_to_file(smk.log[0])
    with np.load(smk.input[0]) as predictions:
        labels, probabilities = predictions["labels"], predictions["probabilities"]
    result = bootstrap_ci(labels, probabilities, smk.params.n_boot, 0.95, smk.params.seed)
    result["run"] = smk.wildcards.run
    write_text_atomic(smk.output[0], json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
