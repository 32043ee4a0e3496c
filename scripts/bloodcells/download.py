"""Verified downloads with the standard library only (the login node of a cluster may have nothing else)."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .atomic import atomic_path

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
CHUNK_BYTES = 1 << 20
PROGRESS_BYTES = 10 * 1000 * 1000


class DownloadError(RuntimeError):
    """A download that failed or whose content does not match its MD5."""


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


def stream_to(
    url: str, tmp: Path, timeout: float = 60, log: Callable[[str], None] = print, algorithm: str = "md5"
) -> str:
    """Copy `url` into `tmp`, logging progress; return the hex digest (`algorithm`: md5, sha256) of what arrived."""
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
        digest, done, next_report = hashlib.new(algorithm), 0, step
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


def download_verified(url: str, md5: str, dest: Path, timeout: float = 60, log: Callable[[str], None] = print) -> Path:
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
        actual = stream_to(url, tmp, timeout, log)
        if actual != md5:
            raise DownloadError(f"{url}: MD5 mismatch, expected {md5} but got {actual}; the file was not kept")
    log(f"{dest}: MD5 {md5} verified")
    return dest


# --- MedMNIST's official files ---------------------------------------------------------------------


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


# --- Keras' ImageNet weights -----------------------------------------------------------------------

# Where keras.applications.ResNet50/101(weights="imagenet", include_top=False) fetch their weights, and the MD5
# Keras checks them against (keras/src/applications/resnet.py, BASE_WEIGHTS_PATH and WEIGHTS_HASHES[arch][1]).
# Copied here so the download runs without Keras (on a login node); tests/test_download.py compares them with Keras.
KERAS_RESNET_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
IMAGENET_NOTOP_NAME = "{arch}_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_NOTOP_MD5 = {
    "resnet50": "4d473c1dd8becc155b73f8504c6f6626",
    "resnet101": "88cf7a10940856eca736dc7b7e228a21",
}


def imagenet_weights_name(arch: str) -> str:
    """Keras' file name of the ImageNet weights of `arch` without the classifier top."""
    if arch not in IMAGENET_NOTOP_MD5:
        raise ValueError(f"arch: no ImageNet weights known for '{arch}'; known: {sorted(IMAGENET_NOTOP_MD5)}")
    return IMAGENET_NOTOP_NAME.format(arch=arch)


def imagenet_weights_url_and_md5(arch: str) -> tuple[str, str]:
    """The URL and MD5 of the ImageNet no-top weights of `arch`, as Keras records them."""
    return KERAS_RESNET_WEIGHTS_URL + imagenet_weights_name(arch), IMAGENET_NOTOP_MD5[arch]


def check_file_md5(path: str | Path, md5: str, what: str) -> None:
    """Raise DownloadError naming `path` unless its MD5 is `md5` (a hand-placed or damaged file)."""
    actual = file_md5(Path(path))
    if actual != md5.lower():
        raise DownloadError(
            f"{path}: MD5 {actual} is not the {md5} of {what}; delete the file (the workflow fetches "
            "it again) or replace it with the right one"
        )


def verified_weights(path: str | None, arch: str, md5: str | None = None) -> str | None:
    """The ImageNet weights file a run starts from, its MD5 checked against `md5` (training.weights_md5), else
    Keras' (None: random initialisation)."""
    if path is not None:
        if md5 is None:
            check_file_md5(path, IMAGENET_NOTOP_MD5[arch], f"Keras' ImageNet no-top weights of {arch}")
        else:
            check_file_md5(path, md5, f"the {arch} weights file that config key training.weights_md5.{arch} names")
    return path
