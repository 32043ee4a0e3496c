"""Names and keys shared by the planning, the tables and the report: the one home of each (standard library only,
so that the Snakefile can import it on a login node)."""

from __future__ import annotations

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
ARCH_LABELS = {"resnet50": "ResNet-50", "resnet101": "ResNet-101"}
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
    return ARCH_LABELS.get(arch, arch)


def arch_size_label(values: dict) -> str:
    """'ResNet-101 (224 px)'."""
    return f"{arch_label(values['arch'])} ({values['size']} px)"


def model_label(values: dict) -> str:
    """'ResNet-101 (224 px), batch 16': how tables, comparisons and conclusions name a grid model."""
    return f"{arch_size_label(values)}, batch {values['batch_size']}"
