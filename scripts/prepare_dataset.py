"""Snakemake adapter: convert a dataset source to results/data/{dataset}/{size}.npz."""

from pathlib import Path

import numpy as np

from bloodcells.dataset import save_dataset
from bloodcells.logs import log_to_file
from bloodcells.names import class_names_of
from bloodcells.sources import import_folder, import_pbc, load_medmnist_npz
from bloodcells.synthetic import make_synthetic_dataset


def load_source(source: dict, size: int, inputs: list[str]) -> dict[str, np.ndarray]:
    """The arrays of one dataset at one size, from whichever source its config names."""
    kind = source["source"]
    if kind == "medmnist":
        # The official file of the smallest size at least `size` px (files.download_file), resized if larger.
        return load_medmnist_npz(Path(inputs[0]), size=size)
    if kind == "synthetic":
        # With the cell masks: save_dataset keeps the test split's, Grad-CAM's focus region.
        return make_synthetic_dataset(
            size, source["n_train"], source["n_val"], source["n_test"], source["seed"], with_masks=True
        )
    if kind == "pbc":
        return import_pbc(Path(source["path"]), size, source["seed"])
    if kind == "folder":
        # A synthesized folder arrives as this rule's input; otherwise the folder is read from `path`.
        root = Path(inputs[0]) if inputs else Path(source["path"])
        return import_folder(
            root,
            size,
            source["classes"],
            train=source["train"],
            test=source["test"],
            val_fraction=source["val_fraction"],
            test_fraction=source["test_fraction"],
            seed=source["seed"],
        )
    raise ValueError(f"source: '{kind}' is not one of ['medmnist', 'synthetic', 'pbc', 'folder']")


def main(smk) -> None:
    """Convert the dataset named by the wildcards to the npz of its size."""
    log_to_file(smk.log[0])
    source = smk.params.source
    arrays = load_source(source, int(smk.wildcards.size), list(smk.input))
    save_dataset(smk.output[0], arrays, len(class_names_of(source)))
    counts = {split: len(arrays[f"{split}_labels"]) for split in ("train", "val", "test")}
    print(f"{smk.wildcards.dataset} at {smk.wildcards.size} px from {source['source']}: {counts}")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
