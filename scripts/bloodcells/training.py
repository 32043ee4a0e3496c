"""Resumable training of one run: tf.data input, per-epoch checkpoints, early stopping on validation loss."""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from .atomic import atomic_path, write_text_atomic
from .model import Augmentation


@dataclass(frozen=True)
class RunSpec:
    """Everything that identifies a trained model (one run of a study)."""

    arch: str = "resnet50"
    size: int = 64
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 1e-4
    momentum: float = 0.0
    dropout: float = 0.3
    class_weights: bool = False
    attention: str = "none"
    weights: str | None = None
    seed: int = 0

    @classmethod
    def from_values(cls, values: dict, weights: str | None) -> "RunSpec":
        """The spec of a planned run (its values from plan_runs) with the config's initial weights."""
        names = ("arch", "size", "batch_size", "optimizer", "learning_rate", "momentum", "dropout", "class_weights",
                 "attention", "seed")
        return cls(**{name: values[name] for name in names if name in values}, weights=weights)


@dataclass(frozen=True)
class TrainSettings:
    """How a run is trained: epoch rule, augmentation and hardware switches."""

    max_epochs: int = 30
    patience: int = 5
    augmentation: Augmentation = field(default_factory=Augmentation)
    mixed_precision: bool = False
    xla: bool = False
    deterministic: bool = False
    threads: int = 1
    bn_momentum: float | None = None  # None keeps Keras' 0.99


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Inverse-frequency weights n / (k * count), as scikit-learn's 'balanced' mode computes them."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return {label: float(weight) for label, weight in enumerate(weights)}


def run_epochs(training: dict, epochs: int | None) -> dict:
    """The training config of one run: a fixed epoch count (no early stopping) where the run sets `epochs`."""
    if epochs is None:
        return training
    return training | {"max_epochs": int(epochs), "patience": int(epochs)}


def configure_tensorflow(settings: TrainSettings, seed: int) -> None:
    """Set threads, determinism and precision policy before any TensorFlow op runs."""
    import keras
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(settings.threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, settings.threads))
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError:
        pass  # TensorFlow already started in this process (tests): its thread and memory settings stay.
    keras.utils.set_random_seed(seed)
    if settings.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_float16" if settings.mixed_precision else "float32")


def epoch_dataset(images: np.ndarray, labels: np.ndarray, n_classes: int, batch_size: int, seed: int, first_epoch: int, last_epoch: int):
    """Batches of epochs first_epoch..last_epoch-1, each shuffled by (seed, epoch) so a resumed run sees the same order."""
    import tensorflow as tf

    with tf.device("/CPU:0"):
        # A variable is captured by reference; a constant this large would be copied into the graph.
        image_store = tf.Variable(images, trainable=False)
        label_store = tf.constant(labels, tf.int32)
    n = len(labels)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    def gather(indices):
        return tf.gather(image_store, indices), tf.one_hot(tf.gather(label_store, indices), n_classes)

    epochs = tf.data.Dataset.range(first_epoch, last_epoch)
    return epochs.flat_map(one_epoch).map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def eval_dataset(images: np.ndarray, labels: np.ndarray, n_classes: int, batch_size: int):
    """Unshuffled batches for validation."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, tf.one_hot(labels, n_classes)))
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be resumed from."""


# Files of checkpoints written before state.json named its files (resumable after an upgrade).
LEGACY_FILES = {"model": "last.keras", "best_weights": "best.weights.h5"}


class Checkpoint:
    """The resumable state of a run: the last epoch's model (with optimizer), best weights and early-stopping counters.

    Each epoch writes new files, then replaces state.json, which names them: that one rename commits the epoch,
    so a job killed (or out of disk space) anywhere in between resumes from a consistent earlier epoch.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.state_path = self.directory / "state.json"

    def load_state(self) -> dict | None:
        """The committed state (its files checked), or None when no epoch was committed; removes uncommitted files."""
        if not self.state_path.exists():
            return None
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{self.state_path}: unreadable checkpoint state ({error}); "
                                  f"delete {self.directory} to train this run from the start") from error
        if "files" not in state:
            state["files"] = {key: name for key, name in LEGACY_FILES.items() if (self.directory / name).exists()}
        files = state["files"]
        missing = sorted({"model", *files} - {key for key, name in files.items() if (self.directory / name).is_file()})
        if missing:
            raise CheckpointError(f"{self.state_path}: the checkpoint's {' and '.join(missing)} file is missing "
                                  f"(files {files}); delete {self.directory} to train this run from the start")
        self.remove_unreferenced(state)
        return state

    def model_path(self, state: dict) -> Path:
        """The model file (with optimizer state) of the last committed epoch."""
        return self.directory / state["files"]["model"]

    def best_weights_path(self, state: dict) -> Path | None:
        """The weights of the best epoch so far, or None before any epoch improved."""
        name = state["files"].get("best_weights")
        return self.directory / name if name else None

    def save(self, model, state: dict, improved: bool) -> None:
        """Write this epoch's model (and best weights) under new names, then commit them by replacing state.json."""
        epoch = state["epochs_done"]
        files = dict(state.get("files", {}))
        with atomic_path(self.directory / f"epoch-{epoch}.keras") as tmp:
            model.save(tmp)
        files["model"] = f"epoch-{epoch}.keras"
        if improved:
            with atomic_path(self.directory / f"best-epoch-{epoch}.weights.h5") as tmp:
                model.save_weights(tmp)
            files["best_weights"] = f"best-epoch-{epoch}.weights.h5"
        state["files"] = files
        write_text_atomic(self.state_path, json.dumps(state, indent=1))
        self.remove_unreferenced(state)

    def remove_unreferenced(self, state: dict) -> None:
        """Delete files the committed state does not name: older epochs, and temporaries a killed job left."""
        keep = {self.state_path.name, *state["files"].values()}
        for path in self.directory.iterdir():
            if path.name not in keep and path.is_file():
                path.unlink(missing_ok=True)

    def remove(self) -> None:
        """Delete the checkpoint once the final model is written (state.json first: half-deleted is no checkpoint)."""
        self.state_path.unlink(missing_ok=True)
        shutil.rmtree(self.directory, ignore_errors=True)


# Counter values reserved for one seed generator in one epoch; an epoch draws a few per training step.
SEED_BLOCK = 1 << 20


def seed_generators(model) -> list:
    """The keras.random.SeedGenerator of every layer (augmentation, dropout), in layer order."""
    import keras

    return [value for layer in model.layers for value in vars(layer).values()
            if isinstance(value, keras.random.SeedGenerator)]


def reset_seed_generators(model, seed: int, epoch: int) -> None:
    """Set each seed generator's state from (seed, epoch, its index) alone, as at the start of `epoch` (0-based).

    Keras does not save SeedGenerator states in .keras files, so a reloaded model would restart its augmentation
    and dropout streams from their first draw; derived per epoch, a resumed run draws what an uninterrupted one does.
    """
    from keras import ops

    generators = seed_generators(model)
    for index, generator in enumerate(generators):
        counter = (epoch * len(generators) + index) * SEED_BLOCK  # disjoint blocks: no two streams overlap
        generator.state.assign(ops.convert_to_tensor([seed, counter], dtype=generator.state.dtype))


def make_epoch_callback(checkpoint: Checkpoint, state: dict, patience: int, log: Callable[[str], None],
                        seed: int = 0):
    """A Keras callback that seeds each epoch's random streams, records history, applies early stopping on
    val_loss and checkpoints every epoch."""
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            reset_seed_generators(self.model, seed, epoch)

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, **{key: float(value) for key, value in (logs or {}).items()}}
            state["history"].append(row)
            if state.get("sessions"):  # this session trained the epoch; committed with it below
                state["sessions"][-1]["epochs"].append(epoch + 1)
            val_loss = row["val_loss"]
            improved = bool(val_loss < state["best_val_loss"])  # False for NaN: a diverged epoch never counts as best
            if improved:
                state.update(best_val_loss=val_loss, best_epoch=epoch + 1, wait=0)
            else:
                state["wait"] += 1
            state["epochs_done"] = epoch + 1
            if state["wait"] >= patience:
                state["stopped_early"] = True
                self.model.stop_training = True
                log(f"early stopping after epoch {epoch + 1}: val_loss did not improve for {patience} epochs")
            checkpoint.save(self.model, state, improved)

    return EpochCheckpoint()


def set_batchnorm_momentum(model, momentum: float) -> None:
    """Set the moving-average momentum of every BatchNormalization layer.

    Trained from scratch on a few hundred steps, Keras' 0.99 leaves the moving statistics far
    from the batch statistics, so validation accuracy lags training accuracy by epochs.
    """
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def compile_model(model, spec: RunSpec, xla: bool) -> None:
    """Compile with the run's optimizer, categorical cross-entropy, accuracy and AUC."""
    import keras

    from .model import make_optimizer

    model.compile(
        optimizer=make_optimizer(spec.optimizer, spec.learning_rate, spec.momentum),
        loss="categorical_crossentropy",
        metrics=["accuracy", keras.metrics.AUC(name="auc")],
        jit_compile=xla,
    )


class TrainedRun(NamedTuple):
    """What train_run returns: the model with its best weights, the history rows, the checkpoint and the sessions."""

    model: object
    history: list[dict]
    checkpoint: Checkpoint
    sessions: list[dict]


def start_session(state: dict, session: dict | None) -> None:
    """Append this job's session (where it runs) to the state's list, with the epochs it will train (none yet).

    A checkpoint from before sessions were recorded gets one entry for its epochs, from an unrecorded host.
    """
    sessions = state.setdefault("sessions", [])
    recorded = sum(len(item["epochs"]) for item in sessions)
    if state["epochs_done"] > recorded:
        sessions.append({"hostname": "unrecorded", "epochs": list(range(recorded + 1, state["epochs_done"] + 1))})
    sessions.append(dict(session or {}) | {"epochs": []})


def train_run(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    n_classes: int,
    spec: RunSpec,
    settings: TrainSettings,
    checkpoint_dir: str | os.PathLike,
    log: Callable[[str], None] = print,
    verbose: int = 2,
    session: dict | None = None,
    weights_file: str | os.PathLike | None = None,
) -> TrainedRun:
    """Train (or resume) one run; `session` (where this job runs) is kept in the checkpoint with the epochs it trains.

    A run with ImageNet initialisation (spec.weights) starts from `weights_file`, downloaded beforehand: a
    training job never fetches anything (compute nodes of a cluster may have no internet).
    """
    if spec.weights is not None and weights_file is None:
        raise ValueError(f"run {spec}: initial weights '{spec.weights}' need the downloaded weights file "
                         "(rule download_weights); none was given")
    from .model import build_model, load_model

    configure_tensorflow(settings, spec.seed)
    checkpoint = Checkpoint(checkpoint_dir)
    state = checkpoint.load_state()
    if state is None:
        state = {"epochs_done": 0, "best_val_loss": math.inf, "best_epoch": 0, "wait": 0, "history": [],
                 "stopped_early": False, "spec": asdict(spec), "files": {}}
        model = build_model(spec.arch, spec.size, n_classes, weights=weights_file if spec.weights else None,
                            dropout=spec.dropout, augmentation=settings.augmentation, seed=spec.seed, attention=spec.attention)
        if settings.bn_momentum is not None:
            set_batchnorm_momentum(model, settings.bn_momentum)
        compile_model(model, spec, settings.xla)
    else:
        if state.get("spec") != asdict(spec):
            raise ValueError(f"{checkpoint.state_path}: checkpoint belongs to {state.get('spec')}, not {asdict(spec)}; delete it to start over")
        log(f"resuming from {checkpoint.model_path(state)} after epoch {state['epochs_done']}")
        try:
            model = load_model(checkpoint.model_path(state))
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{checkpoint.model_path(state)}: cannot load the checkpointed model ({error}); "
                                  f"delete {checkpoint.directory} to train this run from the start") from error
    start_session(state, session)
    finished = state["stopped_early"] or state["epochs_done"] >= settings.max_epochs
    if not finished:
        train_images, train_labels = train
        steps = math.ceil(len(train_labels) / spec.batch_size)
        ds = epoch_dataset(train_images, train_labels, n_classes, spec.batch_size, spec.seed,
                           state["epochs_done"], settings.max_epochs)
        class_weight = balanced_class_weights(train_labels, n_classes) if spec.class_weights else None
        callback = make_epoch_callback(checkpoint, state, settings.patience, log, spec.seed)
        model.fit(ds, epochs=settings.max_epochs, initial_epoch=state["epochs_done"], steps_per_epoch=steps,
                  validation_data=eval_dataset(*val, n_classes, spec.batch_size), class_weight=class_weight,
                  callbacks=[callback], verbose=verbose, shuffle=False)
    best_weights = checkpoint.best_weights_path(state)
    if best_weights is not None:
        model.load_weights(best_weights)
    log(f"best epoch {state['best_epoch']} (val_loss {state['best_val_loss']:.4f}) of {state['epochs_done']} run")
    return TrainedRun(model, state["history"], checkpoint, state["sessions"])
