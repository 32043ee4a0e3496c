"""The BloodMNIST npz schema that every data source is converted to, and its checks."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path

SPLITS: tuple[str, ...] = ("train", "val", "test")


MIN_SIZE = 32  # smallest input the Keras ResNets accept
TEST_MASKS = "test_masks"  # synthetic data only: the cell of each test image (N x H x W bool), for Grad-CAM


class DatasetError(ValueError):
    """A dataset file that does not follow the BloodMNIST npz schema."""


@dataclass(frozen=True)
class Split:
    """Images (N x H x W x 3, uint8) and integer labels (N,) of one split."""

    images: np.ndarray
    labels: np.ndarray


def check_arrays(arrays: dict[str, np.ndarray], n_classes: int, source: str = "<arrays>") -> None:
    """Raise DatasetError naming `source` and the key when `arrays` break the npz schema."""
    for split in SPLITS:
        for kind in ("images", "labels"):
            key = f"{split}_{kind}"
            if key not in arrays:
                raise DatasetError(f"{source}: missing key '{key}' (expected keys {_expected_keys()})")
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8:
            raise DatasetError(f"{source}: '{split}_images' has dtype {images.dtype}, expected uint8")
        if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
            raise DatasetError(
                f"{source}: '{split}_images' has shape {images.shape}, expected N x H x H x 3 (square RGB)"
            )
        if images.shape[1] < MIN_SIZE:
            raise DatasetError(f"{source}: '{split}_images' are {images.shape[1]} px, expected at least {MIN_SIZE}")
        if labels.ndim not in (1, 2) or (labels.ndim == 2 and labels.shape[1] != 1):
            raise DatasetError(f"{source}: '{split}_labels' has shape {labels.shape}, expected N x 1")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DatasetError(f"{source}: '{split}_labels' has dtype {labels.dtype}, expected integers")
        if len(labels) != len(images):
            raise DatasetError(
                f"{source}: {len(images)} '{split}_images' but {len(labels)} '{split}_labels'; counts must match"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
            raise DatasetError(
                f"{source}: '{split}_labels' range {labels.min()}..{labels.max()} is outside 0..{n_classes - 1}"
            )
    sizes = {arrays[f"{split}_images"].shape[1] for split in SPLITS}
    if len(sizes) != 1:
        raise DatasetError(f"{source}: splits have different image sizes {sorted(sizes)}")


def _expected_keys() -> list[str]:
    """The keys every dataset npz holds."""
    return [f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels")]


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The schema's arrays present in the npz at `path`; DatasetError naming the file when it cannot be read."""
    path = Path(path)
    try:
        with np.load(path) as data:
            return {key: data[key] for key in _expected_keys() if key in data.files}
    # A truncated or corrupted npz fails inside zipfile (BadZipFile, EOFError), not only with OSError/ValueError.
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DatasetError(
            f"{path}: not a readable npz file ({type(error).__name__}: {error}); "
            "delete it so that the workflow makes it again"
        ) from error


def load_split(path: str | os.PathLike, split: str, n_classes: int) -> Split:
    """Load and check one split of a dataset npz."""
    path = Path(path)
    arrays = read_npz(path)
    check_arrays(arrays, n_classes, str(path))
    return Split(arrays[f"{split}_images"], arrays[f"{split}_labels"].reshape(-1).astype(np.int64))


def save_dataset(path: str | os.PathLike, arrays: dict[str, np.ndarray], n_classes: int) -> None:
    """Check `arrays` and write them atomically as an uncompressed npz (fast to load)."""
    check_arrays(arrays, n_classes, str(path))
    normalised = {
        key: (value.reshape(-1, 1).astype(np.uint8) if key.endswith("_labels") else value)
        for key, value in arrays.items()
        if key in _expected_keys()
    }
    if TEST_MASKS in arrays:
        normalised[TEST_MASKS] = np.asarray(arrays[TEST_MASKS], bool)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **normalised)


def load_test_masks(path: str | os.PathLike) -> np.ndarray | None:
    """The cell masks of the test images stored in a dataset npz, None where it holds none."""
    with np.load(path) as data:
        return data[TEST_MASKS] if TEST_MASKS in data.files else None
