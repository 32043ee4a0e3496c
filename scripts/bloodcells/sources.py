"""Data sources converted to the BloodMNIST npz schema: MedMNIST files, the PBC folder, one-folder-per-class sets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .dataset import MIN_SIZE, SPLITS, DatasetError, check_arrays, read_npz
from .names import BLOODMNIST_CLASSES

# The folder is named after the BloodMNIST class; "ig" pools metamyelocytes, myelocytes and promyelocytes.
PBC_FOLDERS: dict[str, int] = {
    "basophil": 0,
    "eosinophil": 1,
    "erythroblast": 2,
    "ig": 3,
    "lymphocyte": 4,
    "monocyte": 5,
    "neutrophil": 6,
    "platelet": 7,
}
PBC_SUBFOLDER = "PBC_dataset_normal_DIB"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})


# --- medmnist -------------------------------------------------------------------------------------


def load_medmnist_npz(path: Path, n_classes: int = 8, size: int | None = None) -> dict[str, np.ndarray]:
    """Load a MedMNIST npz, check it against the BloodMNIST schema and resize its images to `size` px if given."""
    arrays = read_npz(path)
    check_arrays(arrays, n_classes, str(path))
    if size is None or arrays["train_images"].shape[1] == size:
        return arrays
    if arrays["train_images"].shape[1] < size:
        raise DatasetError(f"{path}: images are {arrays['train_images'].shape[1]} px, smaller than the {size} px asked")
    return arrays | {f"{split}_images": resize_images(arrays[f"{split}_images"], size) for split in SPLITS}


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Square RGB uint8 images (N x H x H x 3) resized with LANCZOS to `size` px, as the PBC importer resizes."""
    resized = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for row, image in enumerate(images):
        resized[row] = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))
    return resized


# --- pbc ------------------------------------------------------------------------------------------


def center_crop_resize(image: Image.Image, crop: int, size: int) -> np.ndarray:
    """The centre `crop` x `crop` square (smaller if the image is) resized with LANCZOS to `size` x `size` RGB uint8."""
    if crop < 1 or size < 1:
        raise ValueError(f"crop and size must be positive, got crop={crop}, size={size}")
    rgb = image.convert("RGB")
    width, height = rgb.size
    side = min(crop, width, height)  # PIL would pad a too-large crop with black
    left, top = (width - side) // 2, (height - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def folders_ignoring_case(base: Path, names: Sequence[str]) -> dict[str, Path]:
    """The folder under `base` of each of `names` that is there, matched ignoring case; two folders that differ
    only in case are an error naming both (one of them would be dropped without a word)."""
    found: dict[str, list[Path]] = {}
    for child in sorted(base.iterdir()):
        if child.is_dir():
            found.setdefault(child.name.casefold(), []).append(child)
    folders = {}
    for name in names:
        matches = found.get(name.casefold(), [])
        if len(matches) > 1:
            raise DatasetError(
                f"folders {' and '.join(repr(path.name) for path in matches)} of {base} differ only in case, and "
                f"both would be read as '{name}': merge them into one folder"
            )
        if matches:
            folders[name] = matches[0]
    return folders


def _pbc_class_root(root: Path) -> Path:
    """Return the folder holding the class folders: `root` itself or its PBC_dataset_normal_DIB child."""
    if not root.is_dir():
        raise DatasetError(f"PBC folder {root} does not exist")
    return folders_ignoring_case(root, [PBC_SUBFOLDER]).get(PBC_SUBFOLDER, root)


def list_pbc_images(root: Path) -> tuple[list[Path], np.ndarray]:
    """Return the sorted image paths of the eight PBC class folders under `root` and their BloodMNIST labels."""
    base = _pbc_class_root(Path(root))
    folders = folders_ignoring_case(base, list(PBC_FOLDERS))
    paths: list[Path] = []
    labels: list[int] = []
    for name, label in PBC_FOLDERS.items():
        if name not in folders:
            raise DatasetError(f"PBC class folder '{name}' is missing in {base} (expected {sorted(PBC_FOLDERS)})")
        images = sorted(
            path
            for path in folders[name].iterdir()
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
        )
        if not images:
            raise DatasetError(f"PBC class folder {folders[name]} holds no images")
        paths += images
        labels += [label] * len(images)
    return paths, np.asarray(labels, dtype=np.int64)


def _class_parts(
    labels: np.ndarray, sizes: Callable[[int], Sequence[int]], rng: np.random.Generator
) -> list[np.ndarray]:
    """Indices per part: every class shuffled and cut into consecutive parts of `sizes(n)`, pooled over classes."""
    labels = np.asarray(labels).reshape(-1)
    per_class = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        per_class.append(np.split(members, np.cumsum(sizes(len(members)))[:-1]))
    return [np.concatenate(chunks) for chunks in zip(*per_class, strict=True)]


def _fraction_sizes(shares: np.ndarray, n: int) -> list[int]:
    """Part sizes of `n` members from rounded cumulative shares: 28/4/8 of 40, never losing or repeating one."""
    bounds = np.rint(np.cumsum(shares) * n).astype(int)
    return np.diff(bounds, prepend=0).tolist()


def _hold_out_sizes(fraction: float, n: int) -> tuple[int, int]:
    """(held out, kept) of a class of `n`: `fraction` held out, at least one and never all; none of a single one."""
    held = min(max(int(np.rint(fraction * n)), 1), n - 1) if n > 1 else 0
    return held, n - held


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float] = (0.7, 0.1, 0.2), *, seed: int
) -> dict[str, np.ndarray]:
    """Return shuffled indices per split (train/val/test), stratified by label and deterministic for `seed`."""
    shares = np.asarray(fractions, dtype=float)
    if shares.shape != (len(SPLITS),) or (shares < 0).any() or not np.isclose(shares.sum(), 1.0):
        raise ValueError(f"fractions must be {len(SPLITS)} non-negative numbers summing to 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    parts = _class_parts(labels, lambda n: _fraction_sizes(shares, n), rng) or [np.empty(0, np.int64)] * len(SPLITS)
    return {split: rng.permutation(part) for split, part in zip(SPLITS, parts, strict=True)}


def hold_out(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled indices (kept, held out), with a stratified `fraction` of every class held out (see _hold_out_sizes)."""
    rng = np.random.default_rng(seed)
    held, kept = _class_parts(labels, lambda n: _hold_out_sizes(fraction, n), rng)
    return rng.permutation(kept), rng.permutation(held)


def import_pbc(
    root: Path, size: int, seed: int, crop: int = 200, log: Callable[[str], None] = print
) -> dict[str, np.ndarray]:
    """Convert the PBC folder at `root` to BloodMNIST npz arrays: centre crop, resize, stratified 7:1:2 split."""
    if size < MIN_SIZE:
        raise ValueError(f"size {size} px is below the {MIN_SIZE} px the models accept")
    paths, labels = list_pbc_images(Path(root))
    log(f"PBC: {len(paths)} images in {len(PBC_FOLDERS)} classes under {root}")
    # Splitting the file list before decoding lets each image be written once into its split's array
    # (the full PBC set at 224 px is ~2.6 GB), and keeps the split of the other files when one is unreadable.
    arrays: dict[str, np.ndarray] = {}
    skipped = 0
    for split, indices in stratified_split(labels, seed=seed).items():
        images = np.empty((len(indices), size, size, 3), dtype=np.uint8)
        readable = np.zeros(len(indices), dtype=bool)
        for row, index in enumerate(indices):
            try:
                with Image.open(paths[index]) as image:
                    images[row] = center_crop_resize(image, crop, size)
                readable[row] = True
            except (OSError, ValueError, SyntaxError) as error:
                log(f"PBC: skipping unreadable image {paths[index].name} ({paths[index].parent.name}): {error}")
        skipped += int((~readable).sum())
        arrays[f"{split}_images"] = images if readable.all() else images[readable]
        arrays[f"{split}_labels"] = labels[indices][readable].astype(np.uint8).reshape(-1, 1)
    if skipped:
        log(f"PBC: skipped {skipped} unreadable image(s) of {len(paths)}")
    found = set(np.concatenate([arrays[f"{split}_labels"].reshape(-1) for split in SPLITS]).tolist())
    missing = sorted(set(PBC_FOLDERS.values()) - found)
    if missing:
        raise DatasetError(f"PBC: no readable images for classes {[BLOODMNIST_CLASSES[m] for m in missing]}")
    check_arrays(arrays, len(PBC_FOLDERS), f"PBC {root}")
    log("PBC: " + ", ".join(f"{split} {len(arrays[f'{split}_labels'])}" for split in SPLITS) + f" at {size} px")
    return arrays


# --- folder (e.g. Raabin-WBC) ---------------------------------------------------------------------

SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def grey_top(image: Image.Image) -> float:
    """The top of an integer grey image's range, from its bit depth: 65535 for 16 bits (and for PNM files, which
    Pillow scales to 16 bits), the BitsPerSample a TIFF declares (one bit less where signed)."""
    tags = getattr(image, "tag_v2", None)
    if image.mode != "I" or tags is None or 258 not in tags:
        return 65535.0
    bits, sample_format = (value[0] if isinstance(value, tuple) else value for value in (tags[258], tags.get(339, 1)))
    return float(2 ** (int(bits) - (sample_format == 2)) - 1)


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of any PIL image: grey, palette and CMYK converted, alpha composited on white,
    16-bit (and 32-bit integer) grey scaled from its bit depth's range to 0..255 instead of being clipped."""
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":  # floats have no bit depth: 0..1 or 0..255, whichever holds them
            top = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        else:  # the bit depth, not the image's own maximum: every image on one scale (a uniform 300 as dark as 200)
            top = grey_top(image)
        grey = np.clip(np.rint(values / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def read_square(path: Path, size: int) -> np.ndarray:
    """One image file as size x size RGB uint8: the whole image resized (LANCZOS), as flow_from_directory does."""
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft("RGB", (size, size))  # decode at the smallest JPEG scale still >= size (much faster)
        rgb = to_rgb(image)
        return np.asarray(rgb.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def _class_folders(base: Path, classes: dict[str, str]) -> dict[str, Path]:
    """The folder of each configured class under `base` (names matched case-insensitively); missing is an error."""
    if not base.is_dir():
        raise DatasetError(f"folder {base} does not exist")
    keys = [name.casefold() for name in classes]
    if twins := [name for name, key in zip(classes, keys, strict=True) if keys.count(key) > 1]:
        raise DatasetError(
            f"class folders {twins} of the config differ only in case, so they name the same folder of {base}: "
            "give each class one folder"
        )
    folders = folders_ignoring_case(base, list(classes))
    for name in classes:
        if name not in folders:
            raise DatasetError(f"class folder '{name}' is missing in {base} (expected {list(classes)})")
    return folders


def read_class_folders(
    base: Path, classes: dict[str, str], size: int, log: Callable[[str], None] = print
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels (the order of `classes`) of the class folders under `base`; unreadable files are skipped
    and logged by name; a class folder without a readable image is an error that names it."""
    folders = _class_folders(base, classes)
    images: list[np.ndarray] = []
    labels: list[int] = []
    skipped: list[str] = []
    for label, folder in enumerate(folders.values()):
        files = sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))
        readable = 0
        for path in files:
            try:
                images.append(read_square(path, size))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                skipped.append(f"{folder.name}/{path.name}")
                log(f"{base.name}: skipping unreadable file {folder.name}/{path.name}: {error}")
                continue
            labels.append(label)
            readable += 1
        if not files:
            raise DatasetError(f"class folder {folder} is empty")
        if not readable:
            raise DatasetError(f"class folder {folder} holds no readable image ({len(files)} unreadable files)")
    if skipped:
        log(f"{base.name}: skipped {len(skipped)} unreadable file(s): {', '.join(skipped)}")
    stack = np.stack(images) if images else np.empty((0, size, size, 3), np.uint8)
    return stack, np.asarray(labels, dtype=np.int64)


def import_folder(
    root: Path,
    size: int,
    classes: dict[str, str],
    *,
    train: str,
    test: str,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    log: Callable[[str], None] = print,
) -> dict[str, np.ndarray]:
    """A one-folder-per-class image set (Raabin-WBC: Train/ and TestA/) as BloodMNIST-schema arrays.

    Validation is a stratified `val_fraction` of train/ (the poster's 20 % validation split); the test split is
    the `test` folder, or a stratified `test_fraction` of train/ where that folder is absent.
    """
    if size < MIN_SIZE:
        raise ValueError(f"size {size} px is below the {MIN_SIZE} px the models accept")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"folder dataset {root} does not exist")
    train_images, train_labels = read_class_folders(root / train, classes, size, log)
    arrays: dict[str, np.ndarray] = {}
    test_dir = root / test
    if test_dir.is_dir():
        test_images, test_labels = read_class_folders(test_dir, classes, size, log)
    else:
        log(f"{root}: no '{test}' folder; holding out {test_fraction:.0%} of '{train}' as the test split")
        kept, held = hold_out(train_labels, test_fraction, seed + 1)
        test_images, test_labels = train_images[held], train_labels[held]
        train_images, train_labels = train_images[kept], train_labels[kept]
    kept, held = hold_out(train_labels, val_fraction, seed)
    for split, images, labels in (
        ("train", train_images[kept], train_labels[kept]),
        ("val", train_images[held], train_labels[held]),
        ("test", test_images, test_labels),
    ):
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.astype(np.uint8).reshape(-1, 1)
    check_arrays(arrays, len(classes), f"folder {root}")
    log(
        f"{root}: " + ", ".join(f"{split} {len(arrays[f'{split}_labels'])}" for split in SPLITS) + f" at {size} px; "
        f"classes {list(classes.values())}"
    )
    return arrays
