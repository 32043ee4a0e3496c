"""Snakemake adapter: the results bundle (results/bundle/results-bundle.tar.gz): every file the tables, figures and
report are made from, the config and a manifest with each file's SHA-256, the planned runs and the git commit."""

from pathlib import Path

from bloodcells.bundle import write_bundle
from bloodcells.logs import log_to_file
from bloodcells.provenance import git_state


def main(smk) -> None:
    """Pack the build's results into one verified file."""
    log_to_file(smk.log[0])
    manifest = write_bundle(
        smk.output[0],
        Path.cwd(),
        smk.params.files,
        smk.params.runs,
        smk.params.config,
        git_state(smk.params.repo),
        smk.params.models,
    )
    total = sum(entry["bytes"] for entry in manifest["files"])
    size = Path(smk.output[0]).stat().st_size
    print(
        f"{smk.output[0]}: {len(manifest['files'])} files of {len(manifest['runs'])} runs, {total} bytes, {size} packed"
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
