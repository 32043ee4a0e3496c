"""Reliability (issue #8): corrupt and bad input, a full disk, determinism and shell safety.

Killed training jobs are in test_reliability_kill.py; killed downloads and MD5 checks in test_sources.py; bad
config values in test_plan.py.
"""

from __future__ import annotations

import errno
import os
import random
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from conftest import LAYOUT, REPO, SCHEMA, TINY, gradcam_job, load_rule_script, rule_blocks, run_snakemake
from keras.src.saving import saving_lib
from PIL import Image

from bloodcells.atomic import atomic_directory, remove_stale_parts, write_text_atomic
from bloodcells.checkpoint import SEED_BLOCK, Checkpoint, load_model_weights, reset_seed_generators
from bloodcells.config import ConfigError, validate_config
from bloodcells.dataset import DatasetError, load_split, save_dataset
from bloodcells.model import Augmentation, RandomShearZoomFlip, load_model
from bloodcells.names import BLOODMNIST_CLASSES
from bloodcells.predictions import predict_saved_model
from bloodcells.sources import import_folder
from bloodcells.synthetic import make_synthetic_dataset, write_synthetic_folder
from bloodcells.training import RunSpec, TrainSettings, configure_tensorflow, train_run

CLASSES = {"Basophil": "basophil", "Eosinophil": "eosinophil", "Lymphocyte": "lymphocyte"}


def enospc(*args, **kwargs):
    """A writer that starts writing its file, then finds the disk full."""
    target = next((arg for arg in args if isinstance(arg, (str, Path))), None)
    if target is not None:
        Path(target).write_bytes(b"half a file")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def no_parts(folder: Path) -> list[Path]:
    """Temporary files of atomic writes under `folder` (there should be none)."""
    return sorted(folder.rglob(".part-*"))


# --- corrupt and malformed npz --------------------------------------------------------------------


def good_arrays() -> dict[str, np.ndarray]:
    """A valid dataset in the npz schema: 8 images per split at 32 px."""
    return make_synthetic_dataset(32, 8, 8, 8, seed=0)


NPZ_FAULTS = [
    ("missing key", lambda a: a.pop("val_labels"), "missing key 'val_labels'"),
    (
        "float images",
        lambda a: a.update(train_images=a["train_images"].astype(np.float32)),
        "'train_images' has dtype float32, expected uint8",
    ),
    (
        "grey images",
        lambda a: a.update(test_images=a["test_images"][..., 0]),
        "'test_images' has shape (8, 32, 32), expected N x H x H x 3",
    ),
    (
        "float labels",
        lambda a: a.update(val_labels=a["val_labels"].astype(np.float64)),
        "'val_labels' has dtype float64, expected integers",
    ),
    (
        "label 8 of 8 classes",
        lambda a: a["train_labels"].__setitem__(0, 8),
        "'train_labels' range 0..8 is outside 0..7",
    ),
    ("negative label", lambda a: a.update(test_labels=a["test_labels"].astype(np.int64) - 1), "is outside 0..7"),
    (
        "one label short",
        lambda a: a.update(test_labels=a["test_labels"][:-1]),
        "8 'test_images' but 7 'test_labels'; counts must match",
    ),
]


@pytest.mark.parametrize("name, mutate, message", NPZ_FAULTS, ids=[fault[0] for fault in NPZ_FAULTS])
def test_malformed_npz_is_refused_naming_file_key_and_value(tmp_path, name, mutate, message):
    arrays = good_arrays()
    mutate(arrays)
    path = tmp_path / "32.npz"
    np.savez(path, **arrays)
    with pytest.raises(DatasetError) as error:
        load_split(path, "train", 8)
    print(f"{name}: {error.value}")
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_truncated_or_corrupted_npz_is_a_dataset_error_naming_the_file(tmp_path, damage):
    path = tmp_path / "32.npz"
    save_dataset(path, good_arrays(), 8)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]  # a copy or download cut short
    else:
        data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # flipped bytes inside an array
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError) as error:
        load_split(path, "train", 8)
    print(error.value)
    assert f"{path}: not a readable npz file" in str(error.value) and "delete it" in str(error.value)


# --- broken files in a folder source -------------------------------------------------------------


def test_truncated_corrupt_and_non_image_files_are_skipped_counted_and_named(tmp_path):
    write_synthetic_folder(tmp_path, CLASSES, 12, 6, size=40, seed=0, odd_files=False, train="Train", test="TestA")
    train = tmp_path / "Train"
    jpeg = next((train / "Basophil").glob("*.jpg")).read_bytes()
    png = tmp_path / "whole.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(png)
    png_bytes = png.read_bytes()
    png.unlink()
    (train / "Basophil" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (train / "Eosinophil" / "cut.png").write_bytes(png_bytes[: len(png_bytes) // 2])
    flipped = bytearray(png_bytes)
    flipped[100:140] = bytes(b ^ 0x5A for b in flipped[100:140])  # inside the compressed pixel data
    (train / "Eosinophil" / "flipped.png").write_bytes(bytes(flipped))
    (train / "Lymphocyte" / "notes.txt").write_text("counts were done by hand\n")
    (train / "Lymphocyte" / "empty.jpg").write_bytes(b"")
    messages: list[str] = []
    arrays = import_folder(tmp_path, 32, CLASSES, **LAYOUT, log=messages.append)
    log = "\n".join(messages)
    print(log)
    broken = [
        "Basophil/cut.jpg",
        "Eosinophil/cut.png",
        "Eosinophil/flipped.png",
        "Lymphocyte/empty.jpg",
        "Lymphocyte/notes.txt",
    ]
    for name in broken:
        assert f"skipping unreadable file {name}: " in log
    assert f"Train: skipped {len(broken)} unreadable file(s): {', '.join(sorted(broken))}" in log
    assert len(arrays["train_labels"]) + len(arrays["val_labels"]) == 12  # every readable image, none of the broken


# --- a full disk ---------------------------------------------------------------------------------


def test_disk_full_while_writing_a_table_names_it_and_keeps_the_previous_table(tmp_path, monkeypatch):
    table = tmp_path / "tables" / "table3.csv"
    write_text_atomic(table, "run,accuracy\na,0.9\n")
    monkeypatch.setattr(Path, "write_text", enospc)
    with pytest.raises(OSError) as error:
        write_text_atomic(table, "run,accuracy\na,0.9\nb,0.8\n")
    print(error.value)
    assert error.value.errno == errno.ENOSPC and f"no space left on device while writing {table}" in str(error.value)
    monkeypatch.undo()
    assert table.read_text() == "run,accuracy\na,0.9\n" and no_parts(tmp_path) == []


def small_trained_model(seed: int) -> keras.Model:
    """A compiled two-layer model after one Adam step (so the optimizer has state to checkpoint)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    model.fit(np.ones((2, 4), "float32"), np.eye(3)[[0, 1]], epochs=1, verbose=0)
    return model


def small_resnet_stand_in(
    arch, size, n_classes, *, weights=None, dropout=0.3, augmentation=None, seed=0, attention="none"
):
    """build_model's layout (augmentation, preprocessing, conv + batch norm, pooling, dropout, softmax), small."""
    from bloodcells.model import CaffePreprocess

    inputs = keras.Input((size, size, 3), dtype="uint8", name="image")
    x = RandomShearZoomFlip(
        augmentation.shear_radians, augmentation.zoom, augmentation.horizontal_flip, seed=seed, name="augment"
    )(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv")(CaffePreprocess(name="preprocess")(x))
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn")(x))
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(keras.layers.GlobalAveragePooling2D()(x))
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("failing_write", ["weights", "state"])
def test_disk_full_while_checkpointing_keeps_the_previous_epoch_usable(tmp_path, monkeypatch, failing_write):
    checkpoint = Checkpoint(tmp_path)
    model = small_trained_model(0)
    state = {"epochs_done": 1, "history": [{"epoch": 1}], "files": {}}
    checkpoint.save(model, state, improved=True)
    epoch1_weights = [w.copy() for w in model.get_weights()]
    model.fit(np.ones((2, 4), "float32"), np.eye(3)[[2, 1]], epochs=1, verbose=0)  # epoch 2 changes the weights
    state = state | {"epochs_done": 2, "history": [{"epoch": 1}, {"epoch": 2}]}
    target = {
        "weights": (saving_lib, "save_weights_only", "epoch-2.weights.h5"),
        "state": (Path, "write_text", "state.json"),
    }[failing_write]
    with monkeypatch.context() as patch:
        patch.setattr(target[0], target[1], enospc)
        with pytest.raises(OSError) as error:
            checkpoint.save(model, state, improved=True)
    print(error.value)
    assert f"no space left on device while writing {tmp_path / target[2]}" in str(error.value)

    resumed = Checkpoint(tmp_path).load_state()
    assert resumed["epochs_done"] == 1
    # epoch 1 improved: its one file is both the epoch to resume from and the best weights
    assert resumed["files"] == {"model": "epoch-1.weights.h5", "best_weights": "epoch-1.weights.h5"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-1.weights.h5", "state.json"]
    loaded = small_trained_model(1)  # the same model, other weights, its optimizer built as train_run's is
    loaded.load_weights(tmp_path / "epoch-1.weights.h5")
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), epoch1_weights, strict=True))
    assert int(loaded.optimizer.iterations) == 1  # the optimizer state of epoch 1, ready to continue
    best = small_trained_model(1)
    load_model_weights(best, tmp_path / "epoch-1.weights.h5")  # the best weights alone, optimizer untouched
    assert all(np.array_equal(a, b) for a, b in zip(best.get_weights(), epoch1_weights, strict=True))


def test_files_left_by_a_killed_writer_are_removed_and_others_kept(tmp_path):
    for name in (".part-abc123-model.keras", ".part-x-model.keras", ".part-abc123-history.csv", "model.keras"):
        (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_parts(tmp_path / "model.keras")
    assert [p.name for p in removed] == [".part-abc123-model.keras", ".part-x-model.keras"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".part-abc123-history.csv", "model.keras"]
    checkpoint = Checkpoint(tmp_path / "ckpt")
    checkpoint.save(small_trained_model(0), {"epochs_done": 1, "files": {}}, improved=False)
    for name in (".part-q1-epoch-2.weights.h5", "epoch-2.weights.h5", ".part-q2-state.json"):  # never committed
        (checkpoint.directory / name).write_bytes(b"x")
    assert checkpoint.load_state()["files"] == {"model": "epoch-1.weights.h5"}
    assert sorted(p.name for p in checkpoint.directory.iterdir()) == ["epoch-1.weights.h5", "state.json"]


def test_folder_output_appears_only_when_complete(tmp_path):
    final = tmp_path / "folders" / "raabin"
    with pytest.raises(OSError):
        with atomic_directory(final) as folder:
            (folder / "Train").mkdir()
            enospc(folder / "Train" / "00001.jpg")  # the disk fills halfway through the folder
    assert list((tmp_path / "folders").iterdir()) == []  # neither the folder nor its temporary sibling
    with atomic_directory(final) as folder:
        (folder / "Train").mkdir()
        (folder / "Train" / "00001.jpg").write_bytes(b"jpeg")
    assert [p.relative_to(final).as_posix() for p in sorted(final.rglob("*"))] == ["Train", "Train/00001.jpg"]
    assert no_parts(tmp_path) == []


def test_checkpoint_missing_its_model_is_refused_naming_the_file(tmp_path):
    checkpoint = Checkpoint(tmp_path)
    checkpoint.save(small_trained_model(0), {"epochs_done": 1, "files": {}}, improved=False)
    (tmp_path / "epoch-1.weights.h5").unlink()
    missing = r"state.json: the checkpoint's model file is missing .*epoch-1.weights.h5.*delete"
    with pytest.raises(RuntimeError, match=missing):
        checkpoint.load_state()


# --- models: class count, safe mode, damaged files ------------------------------------------------


def test_model_of_another_class_count_is_refused_by_evaluate(tmp_path):
    path = tmp_path / "model.keras"
    small_trained_model(0).save(path)  # 3 classes
    with pytest.raises(ValueError) as error:
        predict_saved_model(str(path), np.zeros((2, 4), "float32"), batch_size=2, n_classes=8)
    print(error.value)
    assert f"{path}: model predicts 3 classes but the evaluation data has 8" in str(error.value)


def test_safe_mode_refuses_a_model_that_carries_code(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)  # a Lambda's bytecode would run on loading
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match="safe_mode") as error:
        load_model(path)
    print(error.value)
    assert str(error.value).startswith(f"{path}: Requested the deserialization of a `Lambda` layer")


def test_truncated_model_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "model.keras"
    small_trained_model(0).save(path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ValueError, match=f"{path}: not a readable .keras model file"):
        load_model(path)


def test_gradcam_layer_that_does_not_exist_names_the_config_key_the_model_and_the_valid_layers(tmp_path):
    model = small_resnet_stand_in("resnet50", 32, 8, augmentation=Augmentation())
    model.save(tmp_path / "model.keras")
    arrays = make_synthetic_dataset(32, 8, 8, 8, seed=0)
    save_dataset(tmp_path / "data.npz", arrays, 8)
    labels = arrays["test_labels"].reshape(-1).astype(np.int64)
    np.savez(
        tmp_path / "predictions.npz",
        probabilities=np.full((8, 8), 0.125, np.float32),
        labels=labels,
        class_names=np.array(BLOODMNIST_CLASSES),
    )
    dataset = {"source": "synthetic", "n_train": 8, "n_val": 8, "n_test": 8, "seed": 0}
    smk = gradcam_job(tmp_path, dataset, layer="conv5_block3_out", batch_size=8, threads=1)
    with pytest.raises(ValueError) as error:
        load_rule_script("gradcam").main(smk)
    print(error.value)
    assert str(error.value).startswith(f"config key 'gradcam.layer' for {tmp_path / 'model.keras'}: model ")
    valid = "has no layer named 'conv5_block3_out'; valid Grad-CAM layers are: conv (15x15), bn (15x15)"
    assert valid in str(error.value)


# --- determinism ---------------------------------------------------------------------------------


@pytest.fixture
def op_determinism_reset():
    """TensorFlow op determinism off before and after the test: an earlier test of the same worker (train_run with
    training.deterministic) may have left it on, and this one must not leave it on for later tests."""
    from tensorflow.python.framework import config as tf_config

    tf_config.disable_op_determinism()
    yield tf_config
    tf_config.disable_op_determinism()


def test_deterministic_setting_seeds_every_generator_and_turns_on_op_determinism(op_determinism_reset):
    configure_tensorflow(TrainSettings(deterministic=False), seed=3)
    assert not op_determinism_reset.is_op_determinism_enabled()
    draws = []
    for _ in range(2):
        configure_tensorflow(TrainSettings(deterministic=True), seed=3)
        draws.append((random.random(), np.random.random(), float(keras.random.uniform(()))))
    assert draws[0] == draws[1]
    assert op_determinism_reset.is_op_determinism_enabled()


def test_seed_generators_restart_each_epoch_from_seed_and_epoch_alone(tmp_path):
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = RandomShearZoomFlip(0.2, (0.8, 1.2), True, seed=7, name="augment")(inputs)
    outputs = keras.layers.Dropout(0.5, seed=7, name="dropout")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")

    reset_seed_generators(model, 7, epoch=3)
    states = [np.asarray(model.get_layer(name).seed_generator.state).tolist() for name in ("augment", "dropout")]
    assert states == [[7, 6 * SEED_BLOCK], [7, 7 * SEED_BLOCK]]  # epoch 3, generators 0 and 1: disjoint blocks
    first = np.asarray(model(images, training=True))
    model(images, training=True)  # draws advance the streams
    # Keras does not save the states: a reloaded model (as a resumed job has) starts from the first draw again.
    model.save(tmp_path / "m.keras")
    reloaded = load_model(tmp_path / "m.keras")
    assert np.asarray(reloaded.get_layer("augment").seed_generator.state).tolist() == [7, 0]
    reset_seed_generators(reloaded, 7, epoch=3)
    assert np.array_equal(np.asarray(reloaded(images, training=True)), first)


def test_the_same_tiny_run_trained_twice_gives_identical_weights_and_metrics(
    tmp_path, monkeypatch, op_determinism_reset
):
    # train_run's whole pipeline (shuffle, augmentation, dropout, optimizer, checkpoints) on a small network;
    # test_reliability_kill.py shows the same for ResNet-50 across processes, killed and resumed.
    monkeypatch.setattr("bloodcells.model.build_model", small_resnet_stand_in)
    arrays = make_synthetic_dataset(32, 64, 16, 8, seed=0)
    train = (arrays["train_images"], arrays["train_labels"].ravel())
    val = (arrays["val_images"], arrays["val_labels"].ravel())
    spec = RunSpec(arch="resnet50", size=32, batch_size=16, learning_rate=1e-2, seed=0)
    settings = TrainSettings(max_epochs=3, patience=5, augmentation=Augmentation(), threads=2, deterministic=True)
    messages: list[str] = []
    runs = [
        train_run(train, val, 8, spec, settings, tmp_path / f"run{k}", log=messages.append, verbose=0) for k in range(2)
    ]
    (model_a, history_a, *_), (model_b, history_b, *_) = runs
    print(history_a)
    assert not any("resuming" in message for message in messages)  # two separate runs, not one resumed
    assert [row["epoch"] for row in history_a] == [1, 2, 3] and history_a[0]["loss"] != history_a[1]["loss"]
    assert history_a == history_b  # every loss, accuracy and AUC of every epoch, to the last bit
    assert all(np.array_equal(a, b) for a, b in zip(model_a.get_weights(), model_b.get_weights(), strict=True))


# --- shell safety --------------------------------------------------------------------------------

PAYLOAD = "$(touch PWNED1) `touch PWNED2`; touch PWNED3 && touch 'PWNED4' \"x\" | touch PWNED5"


def pwned(*folders: Path) -> list[Path]:
    """Marker files a shell-injected command would have created."""
    return [path for folder in folders for path in folder.rglob("PWNED*")] + list(Path.cwd().glob("PWNED*"))


def test_no_rule_runs_a_shell_command():
    # script: hands config values to Python as objects; shell:/run: would put them into a command line.
    # The one exception, rule restored (a script would count as code newer than the files it stands for), quotes
    # every value it hands to the shell.
    rules = [*REPO.glob("rules/*.smk"), REPO / "Snakefile"]
    offenders = [
        f"{path.name}: {line.strip()}"
        for path in rules
        for block in re.split(r"^(?=rule \w+:)", path.read_text(), flags=re.MULTILINE)
        if not block.startswith("rule restored:")
        for line in block.splitlines()
        if line.strip().startswith(("shell:", "run:"))
    ]
    assert offenders == []
    restored = rule_blocks()["restored"]
    command = restored.split("shell:")[1]
    assert re.findall(r"\{[^}]*\}", command) == ["{output:q}", "{params.marker:q}", "{log:q}"]


def test_dataset_name_with_shell_metacharacters_is_refused_before_anything_runs(tmp_path):
    config = yaml.safe_load(TINY.read_text())
    config["datasets"][f"x;{PAYLOAD}"] = config["datasets"].pop("synthetic")
    config["dataset"] = f"x;{PAYLOAD}"
    with pytest.raises(ConfigError) as error:
        validate_config(yaml.safe_load(yaml.safe_dump(config)), SCHEMA)
    assert "config key 'dataset'" in str(error.value) and "does not match '^[a-z0-9_]+$'" in str(error.value)
    # Snakemake runs this check before any job (test_plan.py). Asked for as a target, the same name matches no
    # rule: the dataset wildcard only takes [a-z0-9_]+.
    target = f"results/data/{PAYLOAD}/32.npz"
    result = run_snakemake(tmp_path, "--cores", "1", target, "--configfile", str(TINY), check=False)
    assert result.returncode != 0 and "MissingRuleException" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists() and pwned(tmp_path, REPO) == []


def test_folder_path_with_shell_metacharacters_is_read_as_a_path(tmp_path):
    folder = tmp_path / f"cells {PAYLOAD}"
    write_synthetic_folder(folder, CLASSES, 12, 6, size=40, seed=0, odd_files=False, train="Train", test="TestA")
    config = yaml.safe_load(TINY.read_text())
    config["datasets"]["raabin"] = {"source": "folder", "path": str(folder), "classes": CLASSES}
    path = tmp_path / "weird.yaml"
    path.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "work"
    run_snakemake(workdir, "--cores", "1", "results/data/raabin/32.npz", "--configfile", str(path))
    split = load_split(workdir / "results/data/raabin/32.npz", "test", 3)
    assert len(split.labels) == 6
    assert str(folder) in (workdir / "logs/prepare/raabin_32.log").read_text()
    assert pwned(tmp_path, REPO) == []


def test_sigterm_handler_ignores_a_second_sigterm():
    # SLURM can deliver SIGTERM twice at a time limit; the second must not interrupt the first one's cleanup
    import signal

    from conftest import load_rule_script

    train = load_rule_script("train")
    previous = signal.signal(signal.SIGTERM, train.stop_on_sigterm)
    try:
        with pytest.raises(SystemExit) as stopped:
            train.stop_on_sigterm(signal.SIGTERM, None)
        assert stopped.value.code == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
