"""Snakemake adapter: say, in the log and in a file beside the report, why report.pdf was not built."""

from bloodcells.atomic import write_text_atomic
from bloodcells.logs import log_to_file


def main(smk) -> None:
    """Write why report.pdf was not built."""
    log_to_file(smk.log[0])
    print(smk.params.reason)
    write_text_atomic(smk.output[0], smk.params.reason + "\n")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
