"""The ResNet model, its augmentation layer and resumable training."""

import io
import json
import math
import zipfile
from dataclasses import asdict

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import RUN_VALUES
from sklearn.utils.class_weight import compute_class_weight

from bloodcells.checkpoint import Checkpoint, restore_best_weights
from bloodcells.inputs import balanced_class_weights, epoch_dataset, eval_dataset
from bloodcells.model import (
    Augmentation,
    CaffePreprocess,
    RandomShearZoomFlip,
    build_model,
    inference_model,
    load_model,
)
from bloodcells.optimizers import FusedAdam, learning_rate_schedule, make_optimizer
from bloodcells.synthetic import make_synthetic_dataset
from bloodcells.training import RunSpec, TrainSettings, make_epoch_callback, train_run


def test_balanced_class_weights_match_scikit_learn():
    labels = np.array([0] * 10 + [1] * 30 + [2] * 5 + [3] * 55)
    ours = balanced_class_weights(labels, 4)
    expected = compute_class_weight("balanced", classes=np.arange(4), y=labels)
    assert [ours[k] for k in range(4)] == pytest.approx(list(expected))


def test_caffe_preprocess_equals_keras_preprocess_input():
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype("uint8")
    expected = keras.applications.resnet.preprocess_input(images.astype("float32"))
    assert np.allclose(CaffePreprocess()(images), expected, atol=1e-4)


def test_augmentation_is_identity_at_inference_and_random_in_training():
    images = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    layer = RandomShearZoomFlip(0.2, (0.8, 1.2), True, seed=3)
    assert np.array_equal(np.asarray(layer(images, training=False)), images.astype("float32"))
    assert not np.allclose(np.asarray(layer(images, training=True)), images)


def test_augmentation_without_shear_or_zoom_only_flips():
    image = np.random.default_rng(2).integers(0, 256, (1, 16, 16, 3)).astype("uint8")
    layer = RandomShearZoomFlip(0.0, (1.0, 1.0), True, seed=0)
    outputs = {np.asarray(layer(image, training=True)).tobytes() for _ in range(12)}
    flipped = image[:, :, ::-1].astype("float32").tobytes()
    assert outputs == {image.astype("float32").tobytes(), flipped}


def test_shear_unit_is_explicit():
    assert Augmentation(shear=0.2, shear_unit="radians").shear_radians == 0.2
    assert Augmentation(shear=0.2, shear_unit="degrees").shear_radians == pytest.approx(0.0034907, rel=1e-4)
    with pytest.raises(ValueError, match="shear_unit"):
        _ = Augmentation(shear_unit="gradians").shear_radians


def test_model_is_flat_with_the_poster_head():
    model = build_model("resnet50", 64, 8, dropout=0.3)
    assert model.get_layer("conv5_block3_out").output.shape[1:3] == (2, 2)
    assert model.get_layer("dropout").rate == 0.3
    assert model.get_layer("predictions").units == 8 and model.output.dtype == "float32"
    assert all(layer.trainable for layer in model.layers)
    with pytest.raises(ValueError, match="resnet18"):
        build_model("resnet18", 64, 8)


def test_saved_model_loads_in_safe_mode(tmp_path):
    model = build_model("resnet50", 32, 3, augmentation=Augmentation())
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert np.allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


@pytest.fixture(scope="module")
def tiny_data():
    """48 training and 16 validation synthetic cells at 32 px."""
    arrays = make_synthetic_dataset(32, 48, 16, 8, seed=0)
    return (arrays["train_images"], arrays["train_labels"].ravel()), (
        arrays["val_images"],
        arrays["val_labels"].ravel(),
    )


class StopAfterEpochs(keras.callbacks.Callback):
    """Ends the job (as a SIGTERM does, by SystemExit) once `epochs` epochs are finished and committed."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epochs:
            raise SystemExit(143)


def test_training_resumes_after_the_last_finished_epoch_and_keeps_optimizer_state_only_to_resume(tmp_path, tiny_data):
    train, val = tiny_data
    spec = RunSpec(arch="resnet50", size=32, batch_size=16, learning_rate=1e-3, seed=0)
    settings = TrainSettings(max_epochs=2, patience=5, threads=2)
    messages = []
    with pytest.raises(SystemExit):
        train_run(
            train,
            val,
            8,
            spec,
            settings,
            tmp_path / "ck",
            messages.append,
            verbose=0,
            session={"hostname": "node-a"},
            extra_callbacks=(StopAfterEpochs(1),),
        )
    checkpoint = Checkpoint(tmp_path / "ck")
    state = checkpoint.load_state()
    assert state["epochs_done"] == 1 and state["sessions"] == [{"hostname": "node-a", "epochs": [1]}]
    # epoch 1 improved on nothing: one file is the epoch to resume from and the best weights
    assert checkpoint.model_path(state) == checkpoint.best_weights_path(state) == tmp_path / "ck/epoch-1.weights.h5"
    with h5py.File(checkpoint.model_path(state), "r") as epoch:  # with the optimizer's state, to resume exactly
        assert {"layers", "optimizer"} <= weight_groups(epoch)
    # resumed on another node: that session adds its own entry with the epochs it trained
    model, history, checkpoint, sessions = train_run(
        train, val, 8, spec, settings, tmp_path / "ck", messages.append, verbose=0, session={"hostname": "node-b"}
    )
    assert any("resuming" in m and "after epoch 1" in m for m in messages)
    assert [row["epoch"] for row in history] == [1, 2]
    assert sessions == [{"hostname": "node-a", "epochs": [1]}, {"hostname": "node-b", "epochs": [2]}]
    assert {"loss", "val_loss", "accuracy", "val_accuracy", "auc"} <= set(history[0])
    # the last epoch is the run's output, not a checkpoint: the committed state is still epoch 1's
    assert checkpoint.load_state()["epochs_done"] == 1
    inference_model(model).save(tmp_path / "model.keras")  # as train.py writes model.keras: no optimizer state
    with zipfile.ZipFile(tmp_path / "model.keras") as archive:
        assert weight_groups(h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")) == {"layers"}
    images = val[0][:4]
    assert np.allclose(
        load_model(tmp_path / "model.keras").predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5
    )


def test_checkpoint_of_another_run_is_refused(tmp_path, tiny_data):
    train, val = tiny_data
    (tmp_path / "epoch-1.keras").write_bytes(b"")  # refused on its spec, before the model is read
    other = RunSpec(size=32, batch_size=16, seed=0)
    (tmp_path / "state.json").write_text(
        json.dumps({"epochs_done": 1, "spec": asdict(other), "files": {"model": "epoch-1.keras"}})
    )
    with pytest.raises(ValueError, match="checkpoint belongs to"):
        train_run(
            train,
            val,
            8,
            RunSpec(size=32, batch_size=32, seed=0),
            TrainSettings(max_epochs=2, threads=2),
            tmp_path,
            verbose=0,
        )


def test_early_stopping_counts_epochs_without_improvement(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    state = {
        "epochs_done": 0,
        "best_val_loss": float("inf"),
        "best_epoch": 0,
        "wait": 0,
        "history": [],
        "stopped_early": False,
    }
    callback = make_epoch_callback(Checkpoint(tmp_path), state, patience=2, log=print)
    callback.set_model(model)
    for epoch, val_loss in enumerate([1.0, 0.5, 0.7, float("nan")]):
        callback.on_epoch_end(epoch, {"loss": 1.0, "val_loss": val_loss})
    assert state["best_epoch"] == 2 and state["best_val_loss"] == 0.5
    assert state["stopped_early"] and model.stop_training and state["epochs_done"] == 4
    # epochs 1-3 were committed; the stopping epoch is the run's output, not a checkpoint
    saved = Checkpoint(tmp_path).load_state()
    assert [row["epoch"] for row in saved["history"]] == [1, 2, 3]
    assert saved["epochs_done"] == 3 and saved["wait"] == 1 and not saved["stopped_early"]
    assert saved["files"] == {"model": "epoch-3.weights.h5", "best_weights": "epoch-2.weights.h5"}
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "epoch-2.weights.h5",
        "epoch-3.weights.h5",
        "state.json",
    ]


def test_checkpoint_interval_keeps_the_best_epoch_in_memory_until_a_commit_writes_it(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    state = {"epochs_done": 0, "best_val_loss": math.inf, "best_epoch": 0, "wait": 0, "history": []}
    state |= {"stopped_early": False}
    now = [0.0]  # a clock the test moves: epochs 1-3 within the interval, epoch 4 after it
    callback = make_epoch_callback(
        Checkpoint(tmp_path), state, 9, print, max_epochs=6, interval_s=60, clock=lambda: now[0]
    )
    callback.set_model(model)
    weights_of_epoch = {}
    for epoch, (val_loss, seconds) in enumerate([(1.0, 10), (0.5, 20), (0.7, 30), (0.8, 61), (0.9, 70)]):
        model.set_weights([np.full_like(w, epoch + 1) for w in model.get_weights()])  # what this epoch trained
        weights_of_epoch[epoch + 1] = model.get_weights()
        now[0] = seconds
        callback.on_epoch_end(epoch, {"val_loss": val_loss})
        if epoch + 1 < 4:  # nothing written yet; the best epoch so far is held in memory
            assert not Checkpoint(tmp_path).state_path.exists()
            assert all(
                np.array_equal(a, b)
                for a, b in zip(callback.best_in_memory, weights_of_epoch[state["best_epoch"]], strict=True)
            )
    # epoch 4, 61 s after the start: committed, with epoch 2's weights (the best) written beside it, without optimizer
    saved = Checkpoint(tmp_path).load_state()
    assert saved["epochs_done"] == 4 and saved["best_epoch"] == 2 and callback.best_in_memory is None
    assert saved["files"] == {"model": "epoch-4.weights.h5", "best_weights": "best-epoch-2.weights.h5"}
    best = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    best.load_weights(tmp_path / "best-epoch-2.weights.h5")
    assert all(np.array_equal(a, b) for a, b in zip(best.get_weights(), weights_of_epoch[2], strict=True))
    assert all(
        np.array_equal(a, b) for a, b in zip(model.get_weights(), weights_of_epoch[5], strict=True)
    )  # put back after it
    # epoch 5, 9 s after that commit: not committed
    assert Checkpoint(tmp_path).load_state()["epochs_done"] == 4


def test_the_best_weights_come_from_memory_else_from_the_checkpoint(tmp_path):
    def dense(value: float):
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.set_weights([np.full_like(w, value) for w in model.get_weights()])
        return model

    checkpoint = Checkpoint(tmp_path)
    dense(2.0).save_weights(tmp_path / "best-epoch-2.weights.h5")
    state = {"best_epoch": 2, "epochs_done": 3, "files": {"model": "x", "best_weights": "best-epoch-2.weights.h5"}}
    for in_memory, expected in ((dense(5.0).get_weights(), 5.0), (None, 2.0)):
        model = dense(3.0)
        restore_best_weights(model, state, checkpoint, in_memory)
        assert all(np.all(w == expected) for w in model.get_weights())
    model = dense(3.0)  # the last epoch was the best: kept as it is
    restore_best_weights(model, state | {"best_epoch": 3}, checkpoint, dense(5.0).get_weights())
    assert all(np.all(w == 3.0) for w in model.get_weights())


def test_training_and_validation_data_run_without_autotuning(tiny_data):
    (images, labels), _ = tiny_data
    for dataset in (epoch_dataset(images, labels, 8, 16, 0, 0, 2), eval_dataset(images, labels, 8, 16)):
        assert dataset.options().autotune.enabled is False  # its thread held up the end of training for up to 40 s
    batches = [batch_labels.numpy().argmax(1) for _, batch_labels in epoch_dataset(images, labels, 8, 16, 0, 0, 2)]
    assert len(batches) == 2 * 3 and all(sorted(np.concatenate(batches[i : i + 3])) == sorted(labels) for i in (0, 3))


def test_resampling_equals_keras_affine_transform():
    images = np.random.default_rng(4).integers(0, 256, (3, 40, 40, 3)).astype("float32")
    from bloodcells.model import affine_transform_rows, resample_shear_zoom_flip

    transform = affine_transform_rows(
        np.array([0.2, -0.15, 0.0], "float32"),
        np.array([0.8, 1.2, 1.0], "float32"),
        np.array([1.1, 0.9, 1.0], "float32"),
        np.array([1.0, -1.0, -1.0], "float32"),
        40,
        40,
    )
    ours = np.asarray(resample_shear_zoom_flip(images, transform))
    reference = np.asarray(
        keras.ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode="nearest")
    )
    assert np.abs(ours - reference).max() < 0.05  # on the 0-255 scale: float rounding only


def test_augmented_model_trains_under_xla():
    # A small head on the augmentation layer: XLA-compiling a whole ResNet on a CPU takes a minute.
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = RandomShearZoomFlip(0.2, (0.8, 1.2), True, seed=0)(inputs)
    x = keras.layers.Conv2D(4, 3)(CaffePreprocess()(x))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "categorical_crossentropy", jit_compile=True)
    images = np.random.default_rng(5).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    history = model.fit(images, np.eye(3)[[0, 1, 2, 0]], epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("attention", ["se", "cbam"])
def test_attention_layer_sits_before_pooling_and_loads_in_safe_mode(tmp_path, attention):
    from bloodcells.model import load_model

    model = build_model("resnet50", 64, 5, attention=attention)
    layer = model.get_layer("attention")
    assert layer.input is model.get_layer("conv5_block3_out").output  # Grad-CAM's layer is still reachable
    assert model.get_layer("avg_pool").input is layer.output
    assert layer.count_params() > 0
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype("uint8")
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    assert type(loaded.get_layer("attention")) is type(layer)
    assert np.allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_attention_gates_rescale_the_feature_map():
    from bloodcells.model import CBAM, SqueezeExcitation

    x = np.random.default_rng(1).random((2, 4, 4, 32)).astype("float32")
    for layer in (SqueezeExcitation(ratio=8), CBAM(ratio=8, kernel_size=3)):
        out = np.asarray(layer(x))
        assert out.shape == x.shape
        assert np.all(out <= x + 1e-6) and np.all(out >= 0)  # sigmoid gates in (0, 1) on a non-negative map
    with pytest.raises(ValueError, match="attention"):
        build_model("resnet50", 32, 3, attention="transformer")


def test_run_spec_carries_attention_and_class_weights_from_plan_values():
    values = RUN_VALUES | {"class_weights": True, "attention": "cbam", "epochs": 10, "dataset": "raabin", "seed": 1}
    spec = RunSpec.from_values(values, None)
    assert spec.attention == "cbam" and spec.class_weights and spec.seed == 1


def test_fixed_epoch_runs_do_not_stop_early_and_best_epoch_is_the_lowest_val_loss():
    from bloodcells.history import best_epoch_row
    from bloodcells.training import run_epochs

    training = {"max_epochs": 30, "patience": 5, "weights": None}
    assert run_epochs(training, None) is training
    assert run_epochs(training, 10) | {} == {"max_epochs": 10, "patience": 10, "weights": None}
    history = [
        {"epoch": 1, "val_loss": 0.9, "loss": 1.0},
        {"epoch": 2, "val_loss": 0.5, "loss": 0.6},
        {"epoch": 3, "val_loss": float("nan"), "loss": 0.4},
        {"epoch": 4, "val_loss": 0.5, "loss": 0.3},
    ]
    assert best_epoch_row(history)["epoch"] == 2


def test_gradcam_reaches_the_last_block_through_the_attention_layer():
    from bloodcells.gradcam import gradcam_maps, spatial_layers

    model = build_model("resnet50", 64, 5, attention="cbam")
    assert "attention" in spatial_layers(model)
    images = np.random.default_rng(3).integers(0, 256, (2, 64, 64, 3)).astype("uint8")
    maps = gradcam_maps(model, images, "conv5_block3_out", np.array([0, 4]))
    assert maps.shape == (2, 2, 2) and np.isfinite(maps).all()


def adam_trajectory(optimizer_class, steps: int = 20) -> np.ndarray:
    """The weights of a 50 x 30 variable after `steps` Adam steps on fixed random gradients, inside a tf.function."""
    variable = keras.Variable(np.random.default_rng(0).normal(size=(50, 30)).astype("float32"))
    optimizer = optimizer_class(1e-2)

    @tf.function
    def step(gradient):
        optimizer.apply_gradients([(gradient, variable)])

    for index in range(steps):
        step(tf.constant(np.random.default_rng(index + 1).normal(size=(50, 30)).astype("float32")))
    return np.asarray(variable)


def test_fused_adam_updates_as_keras_adam():
    start = np.random.default_rng(0).normal(size=(50, 30)).astype("float32")
    ours, keras_adam = adam_trajectory(FusedAdam), adam_trajectory(keras.optimizers.Adam)
    assert np.abs(keras_adam - start).max() > 0.1  # the steps moved the weights
    assert np.allclose(ours, keras_adam, atol=1e-5)


def test_adam_runs_use_the_fused_adam_which_loads_in_safe_mode(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=make_optimizer("adam", 1e-3), loss="categorical_crossentropy")
    model.fit(np.ones((2, 4), "float32"), np.eye(3)[[0, 1]], epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is FusedAdam and int(loaded.optimizer.iterations) == 1


def test_cosine_schedule_warms_up_then_decays_to_zero_over_max_epochs():
    assert learning_rate_schedule(1e-3, TrainSettings(max_epochs=4), steps_per_epoch=10) == 1e-3
    schedule = learning_rate_schedule(1e-3, TrainSettings(max_epochs=4, lr_schedule="cosine", warmup_epochs=1), 10)
    rates = [float(schedule(step)) for step in range(41)]
    assert rates[0] == 0.0 and rates[10] == pytest.approx(1e-3)
    assert rates[5] == pytest.approx(5e-4)  # linear warm-up
    assert all(later < earlier for earlier, later in zip(rates[10:], rates[11:], strict=False))
    assert rates[25] == pytest.approx(5e-4, rel=1e-3) and rates[40] == pytest.approx(0.0, abs=1e-9)
    no_warmup = learning_rate_schedule(1e-3, TrainSettings(max_epochs=2, lr_schedule="cosine"), 10)
    assert float(no_warmup(0)) == pytest.approx(1e-3) and float(no_warmup(10)) == pytest.approx(5e-4, rel=1e-3)


def weight_groups(h5: h5py.File) -> set[str]:
    """The top-level groups of a Keras weights file that hold any array."""
    groups = set()
    h5.visititems(lambda name, item: groups.add(name.split("/")[0]) if isinstance(item, h5py.Dataset) else None)
    return groups


@pytest.mark.parametrize("arch, blocks", [("resnet50", 3 + 4 + 6 + 3), ("resnet101", 3 + 4 + 23 + 3)])
def test_zero_init_residual_sets_the_last_batch_norm_of_every_block_to_zero(arch, blocks):
    from bloodcells.model import zero_init_residual_branches

    model = build_model(arch, 32, 8)
    assert zero_init_residual_branches(model) == blocks
    last = [layer for layer in model.layers if layer.name.endswith("_3_bn")]
    assert len(last) == blocks and all(not np.asarray(layer.gamma).any() for layer in last)
    others = [
        layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization) and layer not in last
    ]
    assert others and all(np.asarray(layer.gamma).all() for layer in others)  # every other scale stays at 1
