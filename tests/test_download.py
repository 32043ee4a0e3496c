"""ImageNet weights as data: Keras' URL and MD5, fetched once by a rule, read (never downloaded) by training."""

import re
import socket

import numpy as np
import pytest
from conftest import REPO, TINY, load_rule_script, run_snakemake

from bloodcells import download


@pytest.mark.parametrize("arch", ["resnet50", "resnet101"])
def test_weights_url_and_md5_are_the_ones_keras_records(arch):
    from keras.src.applications import resnet

    url, md5 = download.imagenet_weights_url_and_md5(arch)
    assert url == resnet.BASE_WEIGHTS_PATH + f"{arch}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert md5 == resnet.WEIGHTS_HASHES[arch][1]  # [1]: include_top=False
    assert url.startswith("https://")


def test_download_module_needs_only_the_standard_library():
    # the download rules run on a cluster's login node, whose environment may hold only Snakemake
    import ast
    import sys

    tree = ast.parse((REPO / "scripts/bloodcells/download.py").read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and not node.level
    }
    assert imported - sys.stdlib_module_names <= {"medmnist"}, imported


def test_hand_placed_file_with_wrong_md5_is_refused_by_name(tmp_path):
    train = load_rule_script("train")
    placed = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    placed.write_bytes(b"not the weights")
    with pytest.raises(download.DownloadError) as error:
        train.verified_weights(str(placed), "resnet50")
    assert str(placed) in str(error.value) and download.IMAGENET_NOTOP_MD5["resnet50"] in str(error.value)
    assert train.verified_weights(None, "resnet50") is None


def legacy_weights_file(path, seed: int) -> np.ndarray:
    """A no-top ResNet-50 weights file in the legacy HDF5 layout of Keras' ImageNet files; returns conv1's kernel."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(seed)
    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, base)
    return base.get_layer("conv1_conv").get_weights()[0]


def test_training_starts_from_the_weights_file_without_the_network(tmp_path, monkeypatch):
    from bloodcells.model import build_model
    from bloodcells.training import RunSpec, TrainSettings, train_run

    weights = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    kernel = legacy_weights_file(weights, seed=7)

    def no_network(*args, **kwargs):
        raise AssertionError("a training job opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    images = np.zeros((8, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(8) % 4
    spec = RunSpec(arch="resnet50", size=32, batch_size=8, weights="imagenet")
    # an ImageNet run given no file stops before building anything (Keras would download into ~/.keras)
    with pytest.raises(ValueError, match="download_weights"):
        train_run(
            (images, labels),
            (images, labels),
            4,
            spec,
            TrainSettings(max_epochs=1),
            tmp_path / "ckpt",
            log=lambda message: None,
            verbose=0,
        )
    assert not (tmp_path / "ckpt").exists()
    # the file is what train_run hands to build_model: the ResNet starts from exactly its weights
    model = build_model("resnet50", 32, 4, weights=str(weights))
    np.testing.assert_array_equal(model.get_layer("conv1_conv").get_weights()[0], kernel)


def test_dry_run_fetches_each_weights_file_once_and_a_placed_file_is_used(tmp_path):
    import yaml

    config = yaml.safe_load(TINY.read_text())
    config["training"]["weights"] = "imagenet"
    config["training"]["weights_dir"] = str(tmp_path / "cache")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    listing = run_snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(path)).stdout
    fetched = sorted(
        set(
            line.split("/")[-1]
            for line in listing.split()
            if line.endswith("_weights_tf_dim_ordering_tf_kernels_notop.h5")
        )
    )
    assert fetched == [
        "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ]
    assert len(re.findall(r"^(local)?rule download_weights:", listing, flags=re.MULTILINE)) == 2
    # files placed by hand (e.g. copied from ~/.keras/models) are used as they are: nothing to download
    (tmp_path / "cache").mkdir()
    for name in fetched:
        (tmp_path / "cache" / name).write_bytes(b"placed")
    listing = run_snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(path)).stdout
    assert not re.search(r"^(local)?rule download_weights:", listing, flags=re.MULTILINE)
    assert re.search(r"^rule train:", listing, flags=re.MULTILINE)
