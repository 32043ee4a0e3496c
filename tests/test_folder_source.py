"""The `folder` source (Raabin-WBC layout): class mapping, odd image modes, unreadable files, missing classes."""

import numpy as np
import pytest
from conftest import LAYOUT
from PIL import Image

from bloodcells.dataset import DatasetError
from bloodcells.names import class_names_of
from bloodcells.sources import grey_top, import_folder, read_square, to_rgb
from bloodcells.synthetic import write_synthetic_folder

CLASSES = {
    "Basophil": "basophil",
    "Eosinophil": "eosinophil",
    "Lymphocyte": "lymphocyte",
    "Monocyte": "monocyte",
    "Neutrophil": "neutrophil",
}


@pytest.fixture
def raabin(tmp_path):
    """Synthetic cells in Raabin's layout: 40 training and 20 test images, with odd modes and one broken file each."""
    write_synthetic_folder(tmp_path, CLASSES, 40, 20, size=48, seed=0, odd_files=True, train="Train", test="TestA")
    return tmp_path


def test_folder_becomes_the_npz_schema_with_a_20_percent_validation_split(raabin):
    messages = []
    arrays = import_folder(raabin, 32, CLASSES, **LAYOUT, log=messages.append)
    assert arrays["train_images"].shape == (30, 32, 32, 3) and arrays["train_images"].dtype == np.uint8
    assert len(arrays["val_labels"]) == 10 and len(arrays["test_labels"]) == 20
    assert np.bincount(arrays["val_labels"].ravel()).tolist() == [2] * 5  # stratified
    assert np.bincount(arrays["test_labels"].ravel()).tolist() == [4] * 5
    assert class_names_of({"source": "folder", "classes": CLASSES}) == tuple(CLASSES.values())


def test_unreadable_files_are_skipped_and_named_with_a_count(raabin):
    messages = []
    import_folder(raabin, 32, CLASSES, **LAYOUT, log=messages.append)
    log = "\n".join(messages)
    assert "skipping unreadable file Basophil/broken.jpg" in log
    assert "Train: skipped 1 unreadable file(s): Basophil/broken.jpg" in log
    assert "TestA: skipped 1 unreadable file(s)" in log


def test_grayscale_rgba_and_16_bit_images_are_converted(tmp_path):
    grey = Image.fromarray(np.full((10, 12), 128, np.uint8), "L")
    rgba = Image.fromarray(np.dstack([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)]), "RGBA")
    sixteen = Image.fromarray(np.full((6, 6), 65535, np.uint16))
    assert sixteen.mode.startswith("I")
    assert np.asarray(to_rgb(grey)).tolist()[0][0] == [128, 128, 128]
    assert np.asarray(to_rgb(rgba))[0, 0].tolist() == [255, 255, 255]  # transparent pixels on white
    assert np.asarray(to_rgb(sixteen))[0, 0].tolist() == [255, 255, 255]  # scaled from 16 bits, not clipped
    for name, image in (("g.png", grey), ("a.png", rgba), ("s.png", sixteen)):
        image.save(tmp_path / name)
        assert read_square(tmp_path / name, 32).shape == (32, 32, 3)


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_16_bit_images_are_scaled_by_their_bit_depth_not_their_own_maximum(tmp_path, fmt):
    # a uniform 200 was taken for 8 bits (kept at 200) and a uniform 300 for 16 bits (made 1): one scale for all now
    for value in (0, 200, 300, 30000, 65535):
        path = tmp_path / f"{value}.{fmt}"
        Image.fromarray(np.full((6, 6), value, np.uint16)).save(path)
        with Image.open(path) as image:
            assert image.mode == "I;16"
            assert np.asarray(to_rgb(image))[0, 0].tolist() == [round(value / 65535 * 255)] * 3
        assert (read_square(path, 32) == round(value / 65535 * 255)).all()


def test_32_bit_tiff_is_scaled_by_its_declared_bit_depth(tmp_path):
    path = tmp_path / "deep.tiff"
    Image.fromarray(np.full((6, 6), 1 << 30, np.int32)).save(path)  # signed: 31 bits of range
    with Image.open(path) as image:
        assert image.mode == "I" and grey_top(image) == 2**31 - 1
        assert np.asarray(to_rgb(image))[0, 0].tolist() == [round((1 << 30) / (2**31 - 1) * 255)] * 3


def test_class_folders_that_differ_only_in_case_are_an_error_naming_both(raabin):
    twin = raabin / "Train/basophil"
    twin.mkdir()
    for path in sorted((raabin / "Train/Basophil").iterdir())[:3]:
        (twin / path.name).write_bytes(path.read_bytes())
    with pytest.raises(DatasetError) as error:
        import_folder(raabin, 32, CLASSES, **LAYOUT, log=lambda _: None)
    message = str(error.value)
    assert "'Basophil' and 'basophil'" in message and "differ only in case" in message
    assert str(raabin / "Train") in message
    # folders of no configured class may differ in case: nothing of theirs is read
    twin.rename(raabin / "Train/notes")
    (raabin / "Train/NOTES").mkdir()
    assert len(import_folder(raabin, 32, CLASSES, **LAYOUT, log=lambda _: None)["train_labels"]) == 30


def test_config_classes_that_differ_only_in_case_are_an_error_naming_both(raabin):
    classes = {**CLASSES, "BASOPHIL": "basophil_again"}
    with pytest.raises(DatasetError, match=r"\['Basophil', 'BASOPHIL'\] of the config differ only in case"):
        import_folder(raabin, 32, classes, **LAYOUT, log=lambda _: None)


def test_missing_class_folder_is_an_error_that_names_it(raabin):
    for path in (raabin / "TestA/Monocyte").iterdir():
        path.unlink()
    (raabin / "TestA/Monocyte").rmdir()
    with pytest.raises(DatasetError, match="class folder 'Monocyte' is missing in .*TestA"):
        import_folder(raabin, 32, CLASSES, **LAYOUT)


def test_empty_class_folder_is_an_error_that_names_it(raabin):
    for path in (raabin / "Train/Eosinophil").iterdir():
        path.unlink()
    with pytest.raises(DatasetError, match="Train/Eosinophil is empty"):
        import_folder(raabin, 32, CLASSES, **LAYOUT)


def test_class_folder_of_only_unreadable_files_is_an_error(raabin):
    for path in (raabin / "Train/Lymphocyte").iterdir():
        path.write_bytes(b"junk")
    with pytest.raises(DatasetError, match="Train/Lymphocyte holds no readable image"):
        import_folder(raabin, 32, CLASSES, **LAYOUT)


def test_test_split_is_held_out_where_the_test_folder_is_absent(raabin):
    arrays = import_folder(raabin, 32, CLASSES, **(LAYOUT | {"test": "TestB"}), log=lambda _: None)
    assert len(arrays["test_labels"]) == 10 and len(arrays["train_labels"]) + len(arrays["val_labels"]) == 30


def test_each_image_gets_the_label_of_its_folders_class(tmp_path):
    # the mapping in neither alphabetical nor folder order, and each folder's images one solid colour of its own
    classes = {"Mono": "monocyte", "Baso": "basophil", "Neutro": "neutrophil"}
    colour = {"Mono": (200, 30, 30), "Baso": (30, 200, 30), "Neutro": (30, 30, 200)}
    for split, count in (("Train", 10), ("TestA", 4)):
        for folder, rgb in colour.items():
            (tmp_path / split / folder).mkdir(parents=True)
            for index in range(count):
                Image.new("RGB", (40, 40), rgb).save(tmp_path / split / folder / f"{index}.png")
    arrays = import_folder(tmp_path, 32, classes, **LAYOUT, log=lambda message: None)
    names = class_names_of({"source": "folder", "classes": classes})
    assert names == ("monocyte", "basophil", "neutrophil")  # label k is names[k], in the mapping's order
    expected = {names.index(classes[folder]): rgb for folder, rgb in colour.items()}
    for split in ("train", "val", "test"):
        labels = arrays[f"{split}_labels"].ravel()
        assert set(labels) == {0, 1, 2}, split
        for image, label in zip(arrays[f"{split}_images"], labels, strict=True):
            assert tuple(image[16, 16]) == expected[label], (split, label)
