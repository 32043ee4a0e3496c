"""Tests of the medmnist download (against a real loopback HTTP server) and the PBC import."""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import PBC_SAMPLE
from PIL import Image

from bloodcells import download, sources
from bloodcells.dataset import SPLITS, DatasetError, check_arrays
from bloodcells.names import BLOODMNIST_CLASSES

# --- medmnist: a loopback server --------------------------------------------------------------------


def _npz_bytes(n: int = 400, size: int = 32, seed: int = 0) -> bytes:
    """An npz in the BloodMNIST schema, large enough (~3.7 MB) to stream in several chunks."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in SPLITS:
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 8, (n, 1), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


class _Server:
    """A threaded HTTP server on 127.0.0.1 whose behaviour (`mode`) the test can switch."""

    def __init__(self, body: bytes) -> None:
        self.body, self.mode, self.hits = body, "good", 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                body = server.body
                if server.mode == "corrupt":
                    body = body[:1000] + bytes(b ^ 0xFF for b in body[1000:1100]) + body[1100:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                if server.mode == "drop":
                    # Promise the whole body, send half, then hang up.
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/bloodmnist_32.npz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def body() -> bytes:
    return _npz_bytes()


@pytest.fixture
def server(body):
    server = _Server(body)
    yield server
    server.close()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_medmnist_url_and_md5_reads_info():
    url, md5 = download.medmnist_url_and_md5("bloodmnist", 28)
    assert url.startswith("https://") and "bloodmnist.npz" in url and len(md5) == 32
    url64, md5_64 = download.medmnist_url_and_md5("bloodmnist", 64)
    assert "bloodmnist_64.npz" in url64 and md5_64 != md5


def test_medmnist_url_and_md5_rejects_unknown_size_and_flag():
    with pytest.raises(ValueError, match=r"bloodmnist.*100.*\[28, 64, 128, 224\]"):
        download.medmnist_url_and_md5("bloodmnist", 100)
    with pytest.raises(ValueError, match="nosuchmnist"):
        download.medmnist_url_and_md5("nosuchmnist", 28)


def test_download_good(server, body, tmp_path):
    dest = tmp_path / "data" / "bloodmnist_32.npz"
    messages: list[str] = []
    assert download.download_verified(server.url, _md5(body), dest, log=messages.append) == dest
    assert dest.read_bytes() == body
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]
    assert any("%" in m and "MB" in m for m in messages), messages  # progress was reported
    assert sources.load_medmnist_npz(dest)["train_images"].shape == (400, 32, 32, 3)


def test_download_md5_mismatch_leaves_nothing(server, body, tmp_path):
    server.mode = "corrupt"
    dest = tmp_path / "data" / "bloodmnist_32.npz"
    with pytest.raises(download.DownloadError) as error:
        download.download_verified(server.url, _md5(body), dest, log=lambda m: None)
    message = str(error.value)
    assert server.url in message and _md5(body) in message
    corrupt = body[:1000] + bytes(b ^ 0xFF for b in body[1000:1100]) + body[1100:]
    assert _md5(corrupt) in message
    assert list(dest.parent.iterdir()) == []


def test_download_dropped_connection_leaves_nothing_then_rerun_succeeds(server, body, tmp_path):
    server.mode = "drop"
    dest = tmp_path / "data" / "bloodmnist_32.npz"
    with pytest.raises(download.DownloadError, match="connection"):
        download.download_verified(server.url, _md5(body), dest, log=lambda m: None)
    assert list(dest.parent.iterdir()) == []
    server.mode = "good"
    download.download_verified(server.url, _md5(body), dest, log=lambda m: None)
    assert dest.read_bytes() == body


def test_download_refused_connection_is_a_download_error(tmp_path):
    probe = _Server(b"")
    url = probe.url
    probe.close()  # nothing listens on that port any more
    with pytest.raises(download.DownloadError, match="could not download"):
        download.download_verified(url, "0" * 32, tmp_path / "x.npz", timeout=5, log=lambda m: None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://zenodo.org/records/10519652/files/bloodmnist.npz",
        "http://127.0.0.1.example.com/x.npz",
        "ftp://127.0.0.1/x.npz",
        "file:///etc/passwd",
    ],
)
def test_download_refuses_non_https(url, tmp_path):
    with pytest.raises(ValueError, match="refusing"):
        download.download_verified(url, "0" * 32, tmp_path / "x.npz", log=lambda m: None)
    assert list(tmp_path.iterdir()) == []


def test_download_skips_existing_good_file(server, body, tmp_path):
    dest = tmp_path / "bloodmnist_32.npz"
    dest.write_bytes(body)
    download.download_verified(server.url, _md5(body), dest, log=lambda m: None)
    assert server.hits == 0


def test_download_replaces_existing_bad_file(server, body, tmp_path):
    dest = tmp_path / "bloodmnist_32.npz"
    dest.write_bytes(b"stale")
    download.download_verified(server.url, _md5(body).upper(), dest, log=lambda m: None)
    assert server.hits == 1 and dest.read_bytes() == body


def test_load_medmnist_npz_rejects_broken_files(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(DatasetError, match="bad.npz"):
        sources.load_medmnist_npz(bad)
    partial = tmp_path / "partial.npz"
    np.savez(partial, train_images=np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(DatasetError, match="train_labels"):
        sources.load_medmnist_npz(partial)


# --- pbc: small files written by the test ----------------------------------------------------------


def test_pbc_folders_follow_bloodmnist_order():
    names = {label: name for name, label in sources.PBC_FOLDERS.items()}
    assert [names[i] for i in range(8)] == ["ig" if c == "immature granulocyte" else c for c in BLOODMNIST_CLASSES]


@pytest.mark.parametrize("crop,size", [(200, 37), (201, 33), (199, 64), (200, 224)])
def test_center_crop_resize_shape(crop, size):
    image = Image.new("RGB", (363, 360), (10, 20, 30))
    out = sources.center_crop_resize(image, crop, size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8


def test_center_crop_is_centred():
    # 363 x 360 with a white 200 x 200 centre: the crop must see white only.
    image = Image.new("RGB", (363, 360), (0, 0, 0))
    image.paste((255, 255, 255), (81, 80, 281, 280))
    assert (sources.center_crop_resize(image, 200, 28) == 255).all()


def test_center_crop_smaller_image_is_not_padded():
    out = sources.center_crop_resize(Image.new("RGB", (120, 150), (200, 100, 50)), 200, 32)
    assert (out == (200, 100, 50)).all()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK"])
def test_center_crop_resize_converts_modes(mode):
    out = sources.center_crop_resize(Image.new(mode, (60, 61)), 50, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def _jpeg(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (61, 60, 3), dtype=np.uint8)).save(path, quality=90)


def _fake_pbc(root: Path, per_class: int = 5) -> Path:
    """A PBC-like tree with odd folder-name cases, inside PBC_dataset_normal_DIB."""
    base = root / "PBC_dataset_normal_DIB"
    for i, name in enumerate(sources.PBC_FOLDERS):
        folder = base / (name.upper() if name == "ig" else name.capitalize())
        folder.mkdir(parents=True)
        for j in range(per_class):
            _jpeg(folder / f"{name}_{j}.jpg", 100 * i + j)
    (base / "Basophil" / ".DS_Store").write_bytes(b"junk")
    (base / "Basophil" / "notes.txt").write_text("not an image")
    return base


def test_list_pbc_images_case_insensitive_and_parent(tmp_path):
    base = _fake_pbc(tmp_path)
    for root in (tmp_path, base):
        paths, labels = sources.list_pbc_images(root)
        assert len(paths) == 40 and np.bincount(labels).tolist() == [5] * 8
        assert all(p.suffix == ".jpg" for p in paths)


def test_list_pbc_images_refuses_class_folders_that_differ_only_in_case(tmp_path):
    base = _fake_pbc(tmp_path)
    (base / "platelet").mkdir()
    _jpeg(base / "platelet" / "extra.jpg", 1)
    with pytest.raises(DatasetError, match=r"folders 'Platelet' and 'platelet' of .* differ only in case"):
        sources.list_pbc_images(tmp_path)
    (base / "platelet" / "extra.jpg").unlink()
    (base / "platelet").rmdir()
    (tmp_path / "pbc_dataset_normal_dib").mkdir()
    with pytest.raises(DatasetError, match="'PBC_dataset_normal_DIB' and 'pbc_dataset_normal_dib'"):
        sources.list_pbc_images(tmp_path)


def test_list_pbc_images_missing_or_empty_folder(tmp_path):
    base = _fake_pbc(tmp_path)
    for path in (base / "Platelet").iterdir():
        path.unlink()
    with pytest.raises(DatasetError, match="Platelet.*no images"):
        sources.list_pbc_images(tmp_path)
    (base / "Platelet").rmdir()
    with pytest.raises(DatasetError, match="'platelet' is missing"):
        sources.list_pbc_images(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        sources.list_pbc_images(tmp_path / "nowhere")


def test_import_pbc_skips_corrupt_images(tmp_path):
    base = _fake_pbc(tmp_path)
    (base / "Eosinophil" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    whole = (base / "Monocyte" / "monocyte_0.jpg").read_bytes()
    (base / "Monocyte" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    messages: list[str] = []
    arrays = sources.import_pbc(tmp_path, size=32, seed=0, crop=50, log=messages.append)
    check_arrays(arrays, 8)
    assert sum(len(arrays[f"{s}_labels"]) for s in SPLITS) == 40
    text = "\n".join(messages)
    assert "garbage.jpg" in text and "truncated.jpg" in text
    assert "skipped 2 unreadable image(s) of 42" in text


def test_import_pbc_rejects_tiny_size(tmp_path):
    with pytest.raises(ValueError, match="16 px"):
        sources.import_pbc(_fake_pbc(tmp_path), size=16, seed=0)


def test_stratified_split_properties():
    labels = np.repeat(np.arange(5), [1, 7, 10, 33, 100])
    split = sources.stratified_split(labels, seed=3)
    joined = np.concatenate([split[s] for s in SPLITS])
    assert sorted(joined.tolist()) == list(range(len(labels)))  # disjoint and complete
    assert np.bincount(labels[split["train"]]).tolist() == [1, 5, 7, 23, 70]
    assert np.bincount(labels[split["test"]], minlength=5).tolist() == [0, 1, 2, 7, 20]
    again = sources.stratified_split(labels, seed=3)
    assert all(np.array_equal(split[s], again[s]) for s in SPLITS)
    with pytest.raises(ValueError, match="summing to 1"):
        sources.stratified_split(labels, (0.5, 0.1, 0.1), seed=0)


# --- pbc: the real sample --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> Path:
    if not (PBC_SAMPLE / "PBC_dataset_normal_DIB").is_dir():
        if os.environ.get("CI") == "true":  # CI has ../shared beside its clone: a missing sample is a failure there
            pytest.fail(f"PBC sample not found at {PBC_SAMPLE} (CI=true: the real-PBC tests must run)")
        pytest.skip(f"PBC sample not found at {PBC_SAMPLE}")
    return PBC_SAMPLE


@pytest.fixture(scope="module")
def sample_64(sample) -> dict[str, np.ndarray]:
    return sources.import_pbc(sample, size=64, seed=0, log=lambda m: None)


def test_sample_listing(sample):
    paths, labels = sources.list_pbc_images(sample)
    assert len(paths) == 320 and np.bincount(labels).tolist() == [40] * 8
    assert len(sources.list_pbc_images(sample / "PBC_dataset_normal_DIB")[0]) == 320


def test_sample_import_schema_and_stratification(sample_64):
    check_arrays(sample_64, 8)
    assert sample_64["train_images"].shape == (224, 64, 64, 3)
    for split, count in zip(SPLITS, (28, 4, 8), strict=True):
        assert np.bincount(sample_64[f"{split}_labels"].reshape(-1)).tolist() == [count] * 8
    # Real cells, not blank crops: the stained cell makes the image vary.
    assert sample_64["test_images"].std() > 10


def test_sample_import_deterministic_by_seed(sample, sample_64):
    again = sources.import_pbc(sample, size=64, seed=0, log=lambda m: None)
    assert all(np.array_equal(sample_64[k], again[k]) for k in sample_64)
    labels = sources.list_pbc_images(sample)[1]
    split0 = sources.stratified_split(labels, seed=0)
    split1 = sources.stratified_split(labels, seed=1)
    assert not np.array_equal(np.sort(split0["test"]), np.sort(split1["test"]))


def test_splits_are_pinned_for_a_seed():
    """The PBC split and the folder source's held-out split are unchanged for a seed (pinned before a refactor)."""
    labels = np.repeat(np.arange(4), [1, 3, 6, 10])
    split = sources.stratified_split(labels, seed=3)
    assert {name: indices.tolist() for name, indices in split.items()} == {
        "train": [6, 2, 7, 10, 5, 4, 19, 15, 13, 3, 11, 0, 14, 16],
        "val": [8, 18],
        "test": [17, 12, 9, 1],
    }
    kept, held = sources.hold_out(labels, 0.2, seed=5)
    assert kept.tolist() == [6, 11, 1, 9, 15, 18, 19, 4, 16, 3, 8, 0, 10, 14, 12, 7]
    assert held.tolist() == [13, 17, 5, 2]  # one of each class of 3 or more; none of the single class-0 member


def test_hold_out_keeps_one_of_each_class_and_holds_out_one():
    labels = np.repeat(np.arange(3), [1, 2, 50])
    kept, held = sources.hold_out(labels, 0.2, seed=0)
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[held], minlength=3).tolist() == [0, 1, 10]
