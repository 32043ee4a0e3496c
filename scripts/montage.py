"""Snakemake adapter: a montage of training images, one row per class."""

from bloodcells.dataset import load_split
from bloodcells.logs import log_to_file
from bloodcells.montage import make_montage
from bloodcells.names import class_names_of


def main(smk) -> None:
    """Draw the montage of a dataset's training images."""
    log_to_file(smk.log[0])
    class_names = class_names_of(smk.params.source)
    train = load_split(smk.input[0], "train", len(class_names))
    make_montage(
        train.images, train.labels, class_names, smk.output[0], title=f"{smk.wildcards.dataset}: training images"
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
