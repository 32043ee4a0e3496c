"""Tests of the synthetic blood-cell generator and the montage writer."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bloodcells import dataset, montage, names, synthetic
from bloodcells.synthetic import BASOPHIL, EOSINOPHIL, LYMPHOCYTE, MONOCYTE, NEUTROPHIL, PLATELET


@pytest.fixture(scope="module")
def small() -> dict[str, np.ndarray]:
    """A 64 px dataset with masks, shared by the read-only tests."""
    return synthetic.make_synthetic_dataset(64, 400, 40, 40, seed=7, with_masks=True)


def test_same_seed_same_images_and_different_seed_different_images() -> None:
    first = synthetic.make_synthetic_dataset(32, 30, 10, 10, seed=3)
    again = synthetic.make_synthetic_dataset(32, 30, 10, 10, seed=3)
    other = synthetic.make_synthetic_dataset(32, 30, 10, 10, seed=4)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["train_images"], other["train_images"])


def test_draw_images_is_deterministic_and_typed() -> None:
    labels = np.array([EOSINOPHIL])
    image, mask = synthetic.draw_images(labels, 48, np.random.SeedSequence(11))
    image_again, mask_again = synthetic.draw_images(labels, 48, np.random.SeedSequence(11))
    other, _ = synthetic.draw_images(labels, 48, np.random.SeedSequence(12))
    assert image.shape == (1, 48, 48, 3) and image.dtype == np.uint8
    assert mask.shape == (1, 48, 48) and mask.dtype == bool
    np.testing.assert_array_equal(image, image_again)
    np.testing.assert_array_equal(mask, mask_again)
    assert not np.array_equal(image, other)


@pytest.mark.parametrize("size", [31, 16, 0, -64])
def test_too_small_sizes_are_rejected_naming_the_size(size: int) -> None:
    with pytest.raises(ValueError, match=str(size)):
        synthetic.make_synthetic_dataset(size, 8, 8, 8, seed=0)
    with pytest.raises(ValueError, match=str(size)):
        synthetic.draw_images(np.array([NEUTROPHIL]), size, np.random.SeedSequence(0))


def test_bad_label_is_rejected() -> None:
    with pytest.raises(ValueError, match="label 8"):
        synthetic.sample_scene(8, 1, np.random.default_rng(0))


def test_dataset_follows_the_bloodmnist_schema(small: dict[str, np.ndarray]) -> None:
    dataset.check_arrays(small, len(names.BLOODMNIST_CLASSES))
    for split, n in zip(dataset.SPLITS, (400, 40, 40), strict=True):
        assert small[f"{split}_images"].shape == (n, 64, 64, 3)
        assert small[f"{split}_images"].dtype == np.uint8
        assert small[f"{split}_labels"].shape == (n, 1)
        assert small[f"{split}_labels"].dtype == np.uint8
        assert small[f"{split}_masks"].shape == (n, 64, 64)
        assert small[f"{split}_masks"].dtype == bool
    assert "train_masks" not in synthetic.make_synthetic_dataset(32, 8, 8, 8, seed=0)


def test_dataset_can_be_saved_and_loaded(tmp_path) -> None:
    arrays = synthetic.make_synthetic_dataset(32, 16, 8, 8, seed=1)
    path = tmp_path / "synthetic" / "32.npz"
    dataset.save_dataset(path, arrays, 8)
    split = dataset.load_split(path, "train", 8)
    np.testing.assert_array_equal(split.images, arrays["train_images"])
    np.testing.assert_array_equal(split.labels, arrays["train_labels"].reshape(-1))


def test_splits_share_no_images(small: dict[str, np.ndarray]) -> None:
    hashes = {split: {image.tobytes() for image in small[f"{split}_images"]} for split in dataset.SPLITS}
    assert len(hashes["train"]) == 400
    assert not hashes["train"] & hashes["val"]
    assert not hashes["train"] & hashes["test"]
    assert not hashes["val"] & hashes["test"]


def test_proportions_are_bloodmnist_training_proportions() -> None:
    assert len(synthetic.BLOODMNIST_PROPORTIONS) == 8
    assert sum(synthetic.BLOODMNIST_PROPORTIONS) == pytest.approx(1.0)
    assert synthetic.BLOODMNIST_PROPORTIONS[6] == pytest.approx(2330 / 11959)
    np.testing.assert_array_equal(synthetic.stratified_counts(11959), synthetic.BLOODMNIST_TRAIN_COUNTS)


@pytest.mark.parametrize("n", [8, 9, 13, 100, 1712, 3421])
def test_stratified_counts_are_exact_and_cover_every_class(n: int) -> None:
    counts = synthetic.stratified_counts(n)
    assert counts.sum() == n
    assert counts.min() >= 1
    expected = n * np.asarray(synthetic.BLOODMNIST_PROPORTIONS)
    assert np.all(np.abs(counts - expected) <= 1.0 + (n < 20))


def test_split_labels_follow_the_proportions(small: dict[str, np.ndarray]) -> None:
    for split in dataset.SPLITS:
        labels = small[f"{split}_labels"].reshape(-1)
        counts = np.bincount(labels, minlength=8)
        np.testing.assert_array_equal(counts, synthetic.stratified_counts(len(labels)))
    # Shuffled, not sorted by class.
    assert np.any(np.diff(small["train_labels"].reshape(-1).astype(int)) < 0)


def test_same_seed_draws_the_same_cells_at_every_size() -> None:
    at_64 = synthetic.make_synthetic_dataset(64, 48, 8, 8, seed=5, with_masks=True)
    at_128 = synthetic.make_synthetic_dataset(128, 48, 8, 8, seed=5, with_masks=True)
    np.testing.assert_array_equal(at_64["train_labels"], at_128["train_labels"])
    small = at_64["train_images"].astype(np.float32)
    down = at_128["train_images"].astype(np.float32).reshape(48, 64, 2, 64, 2, 3).mean(axis=(2, 4))
    matched = np.abs(small - down).mean(axis=(1, 2, 3))
    mismatched = np.abs(small - np.roll(down, 1, axis=0)).mean(axis=(1, 2, 3))
    assert matched.mean() < 8.0
    assert matched.mean() < 0.4 * mismatched.mean()
    mask_down = at_128["train_masks"].reshape(48, 64, 2, 64, 2).mean(axis=(2, 4)) > 0.5
    agreement = (mask_down == at_64["train_masks"]).mean()
    assert agreement > 0.98


def test_masks_cover_the_central_cell(small: dict[str, np.ndarray]) -> None:
    masks = small["train_masks"]
    labels = small["train_labels"].reshape(-1)
    assert masks.reshape(len(masks), -1).any(axis=1).all()
    cells = labels != PLATELET
    # White cells sit near the centre and are large, so they cover the central pixels.
    assert masks[cells, 30:34, 30:34].all()
    fraction = masks.mean(axis=(1, 2))
    assert fraction[cells].min() > 0.05 and fraction[cells].max() < 0.7
    # Platelet clumps are small and near the centre.
    platelets = masks[labels == PLATELET]
    assert fraction[labels == PLATELET].max() < 0.12
    ys, xs = np.mgrid[:64, :64]
    for mask in platelets:
        assert abs(ys[mask].mean() - 31.5) < 16 and abs(xs[mask].mean() - 31.5) < 16


def _cell_colour(arrays: dict[str, np.ndarray], label: int) -> np.ndarray:
    """Mean RGB inside the cell masks of one class."""
    chosen = arrays["train_labels"].reshape(-1) == label
    return arrays["train_images"][chosen][arrays["train_masks"][chosen]].astype(np.float64).mean(axis=0)


def test_classes_differ_the_way_the_real_cells_do(small: dict[str, np.ndarray]) -> None:
    eosinophil = _cell_colour(small, EOSINOPHIL)
    basophil = _cell_colour(small, BASOPHIL)
    neutrophil = _cell_colour(small, NEUTROPHIL)
    # Red-orange eosinophil granules versus dark purple basophil granules.
    assert eosinophil[0] - eosinophil[2] > basophil[0] - basophil[2] + 20
    assert basophil.mean() < neutrophil.mean() - 25
    labels = small["train_labels"].reshape(-1)
    area = small["train_masks"].mean(axis=(1, 2))
    assert area[labels == LYMPHOCYTE].mean() < 0.6 * area[labels == MONOCYTE].mean()


def test_background_is_pale_and_warm(small: dict[str, np.ndarray]) -> None:
    corners = small["train_images"][:, :6, :6].reshape(-1, 3).astype(np.float64).mean(axis=0)
    assert corners.min() > 170
    assert corners[0] > corners[2]


def test_montage_writes_a_png(tmp_path, small: dict[str, np.ndarray]) -> None:
    path = tmp_path / "figures" / "montage.png"
    montage.make_montage(
        small["train_images"],
        small["train_labels"],
        names.BLOODMNIST_CLASSES,
        str(path),
        per_class=3,
        title="synthetic 64 px",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        width, height = image.size
    assert height > width / 2 and width > 200
    assert [p.name for p in path.parent.iterdir()] == ["montage.png"]


def test_montage_rejects_mismatched_inputs(tmp_path) -> None:
    images = np.zeros((4, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        montage.make_montage(images, np.zeros(3, np.uint8), ["a"], str(tmp_path / "m.png"))
    with pytest.raises(ValueError, match="per_class"):
        montage.make_montage(images, np.zeros(4, np.uint8), ["a"], str(tmp_path / "m.png"), per_class=0)
    assert not (tmp_path / "m.png").exists()
