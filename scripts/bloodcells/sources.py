"""Data sources converted to the BloodMNIST npz schema: the official MedMNIST files and the original PBC folder."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_path
from .dataset import BLOODMNIST_CLASSES, MIN_SIZE, SPLITS, DatasetError, check_arrays

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
CHUNK_BYTES = 1 << 20
PROGRESS_BYTES = 10 * 1000 * 1000

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


class DownloadError(RuntimeError):
    """A download that failed or whose content does not match its MD5."""


# --- medmnist -------------------------------------------------------------------------------------


def _medmnist_info() -> dict[str, dict]:
    """Return medmnist.info.INFO without the package's 'install torch' message on stdout."""
    # Importing medmnist.info runs medmnist/__init__.py, which prints when torch is absent (our setup).
    with contextlib.redirect_stdout(io.StringIO()):
        from medmnist.info import INFO
    return INFO


def medmnist_url_and_md5(flag: str, size: int) -> tuple[str, str]:
    """Return the official URL and MD5 of the MedMNIST npz for `flag` (e.g. 'bloodmnist') at `size` px."""
    info = _medmnist_info()
    if flag not in info:
        raise ValueError(f"unknown MedMNIST flag {flag!r}; known flags: {sorted(info)}")
    entry = info[flag]
    sizes = sorted([28] + [int(key[4:]) for key in entry if key.startswith("url_") and key[4:].isdigit()])
    suffix = "" if size == 28 else f"_{size}"
    if f"url{suffix}" not in entry or f"MD5{suffix}" not in entry:
        raise ValueError(f"MedMNIST {flag!r} has no {size} px file; available sizes: {sizes}")
    return entry[f"url{suffix}"], entry[f"MD5{suffix}"].lower()


def file_md5(path: Path) -> str:
    """Return the hex MD5 of the file at `path`."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_url(url: str) -> bool:
    """Raise ValueError unless `url` is https (or http to loopback); return whether it is loopback."""
    parts = urllib.parse.urlsplit(url)
    loopback = parts.hostname in LOOPBACK_HOSTS
    if parts.scheme == "https" or (parts.scheme == "http" and loopback):
        return loopback
    raise ValueError(f"refusing to download {url!r}: only https:// URLs (or http:// to loopback for tests) are allowed")


def _stream(url: str, tmp: Path, timeout: float, log: Callable[[str], None]) -> str:
    """Copy `url` into `tmp`, logging progress; return the MD5 of what arrived."""
    loopback = _check_url(url)
    # A proxy from the environment must never see (or break) a test's loopback server.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if loopback else urllib.request.build_opener()
    try:
        response = opener.open(url, timeout=timeout)
    except (OSError, http.client.HTTPException) as error:
        raise DownloadError(f"{url}: could not download ({error})") from error
    with response, open(tmp, "wb") as out:
        _check_url(response.geturl())  # a redirect must not leave https either
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        step = min(PROGRESS_BYTES, max(total // 20, 1)) if total else PROGRESS_BYTES
        digest, done, next_report = hashlib.md5(), 0, step
        while True:
            try:
                chunk = response.read(CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as error:
                raise DownloadError(f"{url}: connection lost after {done} bytes ({error})") from error
            if not chunk:
                break
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if done >= next_report:
                of_total = f" of {total / 1e6:.1f} MB ({100 * done / total:.0f} %)" if total else ""
                log(f"{Path(urllib.parse.urlsplit(url).path).name}: {done / 1e6:.1f} MB{of_total}")
                next_report = done + step
    # http.client reads a short body as a clean end of file, so the length has to be checked here.
    if total is not None and done != total:
        raise DownloadError(f"{url}: connection closed after {done} of {total} bytes")
    return digest.hexdigest()


def download_verified(
    url: str, md5: str, dest: Path, timeout: float = 60, log: Callable[[str], None] = print
) -> Path:
    """Download `url` to `dest` atomically, keeping it only if its MD5 is `md5`; skip when `dest` already matches."""
    _check_url(url)
    dest, md5 = Path(dest), md5.lower()
    if dest.is_file():
        if file_md5(dest) == md5:
            log(f"{dest} is already present with MD5 {md5}; not downloading")
            return dest
        log(f"{dest} exists but its MD5 differs from {md5}; downloading it again")
    log(f"downloading {url} -> {dest}")
    with atomic_path(dest) as tmp:
        actual = _stream(url, tmp, timeout, log)
        if actual != md5:
            raise DownloadError(f"{url}: MD5 mismatch, expected {md5} but got {actual}; the file was not kept")
    log(f"{dest}: MD5 {md5} verified")
    return dest


def load_medmnist_npz(path: Path, n_classes: int = 8) -> dict[str, np.ndarray]:
    """Load a MedMNIST npz and check it against the BloodMNIST schema."""
    keys = [f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels")]
    try:
        with np.load(path) as data:
            arrays = {key: data[key] for key in keys if key in data.files}
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: not a readable npz file ({error})") from error
    check_arrays(arrays, n_classes, str(path))
    return arrays


# --- pbc ------------------------------------------------------------------------------------------


def center_crop_resize(image: Image.Image, crop: int, size: int) -> np.ndarray:
    """Return the centre `crop` x `crop` square (smaller if the image is) resized with LANCZOS to `size` x `size` RGB uint8."""
    if crop < 1 or size < 1:
        raise ValueError(f"crop and size must be positive, got crop={crop}, size={size}")
    rgb = image.convert("RGB")
    width, height = rgb.size
    side = min(crop, width, height)  # PIL would pad a too-large crop with black
    left, top = (width - side) // 2, (height - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def _pbc_class_root(root: Path) -> Path:
    """Return the folder holding the class folders: `root` itself or its PBC_dataset_normal_DIB child."""
    if not root.is_dir():
        raise DatasetError(f"PBC folder {root} does not exist")
    for child in root.iterdir():
        if child.is_dir() and child.name.lower() == PBC_SUBFOLDER.lower():
            return child
    return root


def list_pbc_images(root: Path) -> tuple[list[Path], np.ndarray]:
    """Return the sorted image paths of the eight PBC class folders under `root` and their BloodMNIST labels."""
    base = _pbc_class_root(Path(root))
    folders = {child.name.lower(): child for child in base.iterdir() if child.is_dir()}
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


def stratified_split(
    labels: np.ndarray, fractions: Sequence[float] = (0.7, 0.1, 0.2), *, seed: int
) -> dict[str, np.ndarray]:
    """Return shuffled indices per split (train/val/test), stratified by label and deterministic for `seed`."""
    shares = np.asarray(fractions, dtype=float)
    if shares.shape != (len(SPLITS),) or (shares < 0).any() or not np.isclose(shares.sum(), 1.0):
        raise ValueError(f"fractions must be {len(SPLITS)} non-negative numbers summing to 1, got {list(fractions)}")
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        # Rounding the cumulative fractions gives 28/4/8 of 40 and never loses or repeats an index.
        bounds = np.rint(np.cumsum(shares) * len(members)).astype(int)
        for split, chunk in zip(SPLITS, np.split(members, bounds[:-1])):
            parts[split].append(chunk)
    return {split: rng.permutation(np.concatenate(chunks)) if chunks else np.empty(0, np.int64)
            for split, chunks in parts.items()}


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
