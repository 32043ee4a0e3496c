"""The quick study (config.quick.yaml): BloodMNIST's 64 px file resized to 32 px, and its whole path on real cells."""

import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import PBC_SAMPLE, REPO, SCHEMA, run_snakemake
from PIL import Image

from bloodcells import files
from bloodcells.config import ConfigError, validate_config
from bloodcells.dataset import DatasetError
from bloodcells.download import _medmnist_info
from bloodcells.plan import report_config
from bloodcells.report import small_scale_note
from bloodcells.sources import center_crop_resize, list_pbc_images, load_medmnist_npz, resize_images
from bloodcells.texts import load_paper_yaml

QUICK = REPO / "config.quick.yaml"


def test_official_sizes_are_the_ones_medmnist_records():
    info = _medmnist_info()["bloodmnist"]
    recorded = sorted([28] + [int(key[4:]) for key in info if key.startswith("url_") and key[4:].isdigit()])
    assert list(files.MEDMNIST_SIZES) == recorded


@pytest.mark.parametrize(("size", "official"), [(32, 64), (28, 28), (64, 64), (65, 128), (224, 224)])
def test_a_size_is_prepared_from_the_smallest_official_file_at_least_as_large(size, official):
    assert files.medmnist_download_size(size) == official


def test_no_official_file_is_large_enough():
    with pytest.raises(ValueError, match="no file of at least 256 px; official sizes: \\[28, 64, 128, 224\\]"):
        files.medmnist_download_size(256)


def test_a_mirror_replaces_the_official_url_of_its_flag_only():
    mirror = {"source": "medmnist", "url": "http://127.0.0.1:1/b.npz", "md5": "A" * 32}
    datasets = {"quick": mirror, "other": {"source": "medmnist", "flag": "pathmnist"}, "s": {"source": "synthetic"}}
    assert files.medmnist_mirror(datasets, "bloodmnist") == {"url": mirror["url"], "md5": "a" * 32}
    assert files.medmnist_mirror(datasets, "pathmnist") == {}
    clash = datasets | {"again": mirror | {"md5": "b" * 32}}
    with pytest.raises(ValueError, match=r"\['again', 'quick'\] set different url/md5 for one file \(bloodmnist\)"):
        files.medmnist_mirror(clash, "bloodmnist")


def test_the_quick_config_is_valid_and_a_mirror_needs_its_md5():
    config = yaml.safe_load(QUICK.read_text())
    assert validate_config(config, SCHEMA)["datasets"]["bloodmnist"] == {"source": "medmnist"}
    config["datasets"]["bloodmnist"]["url"] = "https://example.org/bloodmnist_64.npz"
    with pytest.raises(ConfigError, match="datasets.bloodmnist.*'md5' is a dependency of 'url'"):
        validate_config(config, SCHEMA)


def medmnist_arrays(size: int, n: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Random images and labels of every class in BloodMNIST's npz schema."""
    rng = np.random.default_rng(seed)
    return {
        key: rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        if key.endswith("images")
        else (np.arange(n, dtype=np.uint8) % 8).reshape(n, 1)
        for split in ("train", "val", "test")
        for key in (f"{split}_images", f"{split}_labels")
    }


def test_a_64_px_file_is_resized_to_32_px_with_lanczos(tmp_path):
    arrays = medmnist_arrays(64)
    np.savez(tmp_path / "b.npz", **arrays)
    loaded = load_medmnist_npz(tmp_path / "b.npz", size=32)
    assert loaded["test_images"].shape == (8, 32, 32, 3) and loaded["test_images"].dtype == np.uint8
    lanczos = np.asarray(Image.fromarray(arrays["val_images"][3]).resize((32, 32), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(loaded["val_images"][3], lanczos)
    np.testing.assert_array_equal(loaded["train_labels"], arrays["train_labels"])
    unchanged = load_medmnist_npz(tmp_path / "b.npz", size=64)
    np.testing.assert_array_equal(unchanged["train_images"], arrays["train_images"])


def test_a_file_smaller_than_the_size_asked_is_refused(tmp_path):
    np.savez(tmp_path / "small.npz", **medmnist_arrays(32))
    with pytest.raises(DatasetError, match="small.npz: images are 32 px, smaller than the 64 px asked"):
        load_medmnist_npz(tmp_path / "small.npz", size=64)


def test_resize_keeps_a_flat_colour():
    flat = np.full((2, 64, 64, 3), (200, 120, 90), dtype=np.uint8)
    assert (resize_images(flat, 32) == (200, 120, 90)).all()


def bloodmnist_from_pbc(root: Path, size: int, per_class: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """A BloodMNIST-schema dataset of real PBC cells made as BloodMNIST was (200 px centre crop, resize), with
    `per_class` train/val/test images of each class."""
    paths, labels = list_pbc_images(root)
    parts: dict[str, list] = {split: [] for split in ("train", "val", "test")}
    for label in range(8):
        chosen = [path for path, value in zip(paths, labels, strict=True) if value == label]
        starts = np.cumsum((0, *per_class))
        for split, start, stop in zip(parts, starts, starts[1:], strict=False):
            parts[split] += [(path, label) for path in chosen[start:stop]]
    arrays = {}
    for split, items in parts.items():
        images = []
        for path, _ in items:
            with Image.open(path) as image:
                images.append(center_crop_resize(image, 200, size))
        arrays[f"{split}_images"] = np.stack(images)
        arrays[f"{split}_labels"] = np.array([[label] for _, label in items], dtype=np.uint8)
    return arrays


@pytest.fixture
def served(tmp_path):
    """A loopback HTTP server of the folder it returns, and its base URL."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.skipif(not PBC_SAMPLE.is_dir(), reason=f"no real PBC cells at {PBC_SAMPLE}")
def test_quick_study_downloads_prepares_trains_and_reports_real_cells(tmp_path, served):
    # 56 s on a shared 2-core AMD EPYC (136 s under heavier load): config.quick.yaml but for its URL and 1 epoch.
    folder, base = served
    np.savez(folder / "bloodmnist_64.npz", **bloodmnist_from_pbc(PBC_SAMPLE, 64, (12, 4, 8)))
    md5 = hashlib.md5((folder / "bloodmnist_64.npz").read_bytes()).hexdigest()
    config = yaml.safe_load(QUICK.read_text())
    config["datasets"]["bloodmnist"] |= {"url": f"{base}/bloodmnist_64.npz", "md5": md5}
    config["training"]["max_epochs"] = 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(tmp_path, "--cores", "2", "--configfile", str(tmp_path / "config.yaml"), timeout=600)

    assert f"MD5 {md5} verified" in (tmp_path / "logs/download/bloodmnist_64.log").read_text()
    with np.load(tmp_path / "results/data/bloodmnist/32.npz") as prepared:
        assert prepared["train_images"].shape == (96, 32, 32, 3) and prepared["test_images"].shape == (64, 32, 32, 3)
    run = "bloodmnist-32-resnet50-bs32-s0"
    metrics = json.loads((tmp_path / f"results/runs/{run}/metrics.json").read_text())
    assert np.array(metrics["confusion_matrix"]).sum() == 64
    assert (tmp_path / f"results/gradcam/{run}/panel.png").stat().st_size > 0
    report = (tmp_path / "results/report/report.html").read_text()
    assert run in report or "bloodmnist" in report


def scope_of(name: str) -> str | None:
    """The report's opening scope note for a shipped config."""
    config = validate_config(yaml.safe_load((REPO / name).read_text()), SCHEMA)
    return small_scale_note(load_paper_yaml(REPO / "paper/report.yaml"), report_config(config), config["dataset"])


def test_the_quick_report_says_what_it_is_and_names_the_medmnist_reference():
    note = scope_of("config.quick.yaml")
    assert "real blood cells ('bloodmnist') at 32 px, from random weights, at most 3 epochs" in note
    assert "not the poster's numbers" in note and "not testable with the runs made" in note
    assert "ResNet-50 at 28 px" in note and "ACC 0.956, AUC 0.997" in note


@pytest.mark.parametrize("name", ["config.yaml", "config.demo.yaml"])
def test_no_scope_note_at_the_posters_sizes_or_on_synthetic_cells(name):
    assert scope_of(name) is None
