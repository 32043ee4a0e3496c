"""Names, keys and architecture facts shared by the planning, the jobs, the tables and the report: the one home of
each (standard library only, so that the Snakefile can import it on a login node)."""

from __future__ import annotations

from dataclasses import dataclass

# The values that define a run besides its dataset and seed, in the order a run id names them.
RUN_KEYS = (
    "arch",
    "size",
    "batch_size",
    "optimizer",
    "learning_rate",
    "momentum",
    "dropout",
    "class_weights",
    "attention",
    "epochs",
)


@dataclass(frozen=True)
class Architecture:
    """What the workflow knows of one ResNet a run may use (config value `arch`)."""

    label: str  # how tables, plots and the report name it
    keras_class: str  # its constructor in keras.applications
    gflops: float  # forward-pass GFLOPs per 224 px image (He et al. 2016, table 1): the relative cost of a step
    # The MD5 Keras checks its ImageNet weights without the top against (keras/src/applications/resnet.py,
    # WEIGHTS_HASHES[arch][1]), so that the download runs without Keras; tests/test_download.py compares them.
    imagenet_notop_md5: str


# The schema's enum of `arch` and its training.weights_md5 keys repeat these names (tests/test_config.py checks them).
ARCHITECTURES: dict[str, Architecture] = {
    "resnet50": Architecture("ResNet-50", "ResNet50", 4.1, "4d473c1dd8becc155b73f8504c6f6626"),
    "resnet101": Architecture("ResNet-101", "ResNet101", 7.8, "88cf7a10940856eca736dc7b7e228a21"),
}
# Label order of BloodMNIST (medmnist 3.0.2 INFO); short names for tables and plots.
BLOODMNIST_CLASSES: tuple[str, ...] = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "immature granulocyte",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)


def class_names_of(source: dict) -> tuple[str, ...]:
    """Class names in label order of a dataset's config block."""
    if source["source"] in ("medmnist", "synthetic", "pbc"):
        return BLOODMNIST_CLASSES
    if source["source"] == "folder":
        return tuple(source["classes"].values())  # folder name -> class name, in label order
    raise ValueError(f"source: '{source['source']}' has no known class list")


def arch_label(arch: str) -> str:
    """'ResNet-50' for 'resnet50'; an unknown architecture keeps its config name."""
    return ARCHITECTURES[arch].label if arch in ARCHITECTURES else arch


def arch_size_label(values: dict) -> str:
    """'ResNet-101 (224 px)'."""
    return f"{arch_label(values['arch'])} ({values['size']} px)"


def model_label(values: dict) -> str:
    """'ResNet-101 (224 px), batch 16': how tables, comparisons and conclusions name a grid model."""
    return f"{arch_size_label(values)}, batch {values['batch_size']}"
