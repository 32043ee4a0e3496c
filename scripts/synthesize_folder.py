"""Snakemake adapter: write synthetic cells in Raabin-WBC's folder layout (the external dataset of tests and demos)."""

from bloodcells.atomic import atomic_directory
from bloodcells.logs import log_to_file
from bloodcells.synthetic import write_synthetic_folder


def main(smk) -> None:
    """Write the synthetic folder dataset named by the wildcard."""
    log_to_file(smk.log[0])
    source = smk.params.source
    spec = source["synthesize"]
    with atomic_directory(smk.output[0]) as folder:  # a killed job leaves no half-filled folder behind
        counts = write_synthetic_folder(
            folder,
            source["classes"],
            spec["n_train"],
            spec["n_test"],
            spec["size"],
            spec["seed"],
            spec["odd_files"],
            source["train"],
            source["test"],
        )
    print(f"wrote synthetic cells in folder layout to {smk.output[0]}: {counts}")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
