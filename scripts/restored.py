"""Snakemake adapter of rule restored: a file put in place from a results bundle has gone; say which, and fail."""

from pathlib import Path


def main(smk) -> None:
    """Write why the job stops to its log and stop: nothing here can rebuild a restored file."""
    message = (
        f"{smk.output[0]} was restored from a results bundle ({smk.params.marker}) and is gone: run again with "
        f"config key restore to put it back, or delete {smk.params.marker} to build it here"
    )
    Path(smk.log[0]).parent.mkdir(parents=True, exist_ok=True)
    Path(smk.log[0]).write_text(message + "\n")
    raise SystemExit(message)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
