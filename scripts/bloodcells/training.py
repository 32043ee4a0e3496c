"""Resumable training of one run: tf.data input, per-epoch checkpoints, early stopping on validation loss."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

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
    def from_values(cls, values: dict, weights: str | None) -> RunSpec:
        """The spec of a planned run (its values from plan_runs) with the config's initial weights."""
        names = {spec_field.name for spec_field in fields(cls)} - {"weights"}  # epochs, dataset: not the model's
        return cls(**{name: values[name] for name in names if name in values}, weights=weights)


@dataclass(frozen=True)
class TrainSettings:
    """How a run is trained: epoch rule, augmentation and hardware switches."""

    max_epochs: int = 30
    patience: int = 5
    augmentation: Augmentation = field(default_factory=Augmentation)
    mixed_precision: bool = False
    xla: bool = False
    grappler: bool = True  # TensorFlow's graph optimizer (off: the graph runs as traced)
    deterministic: bool = False
    threads: int = 1
    bn_momentum: float | None = None  # None keeps Keras' 0.99
    lr_schedule: str = "constant"  # or "cosine": decayed to 0 over max_epochs
    zero_init_residual: bool = False  # random initialisation only: each residual branch's last BN starts at 0
    warmup_epochs: float = 0.0  # cosine only: linear warm-up from 0 over these epochs first
    checkpoint_interval_s: float = 0.0  # an epoch is committed only this long after the last commit (0: every epoch)

    @classmethod
    def from_config(cls, training: dict, threads: int, gpu: bool) -> TrainSettings:
        """The settings of the config's `training` section on this host ('auto' switches resolved by `gpu`)."""
        from .hardware import resolve_switch

        augment = training["augmentation"]
        return cls(
            max_epochs=training["max_epochs"],
            patience=training["patience"],
            augmentation=Augmentation(
                augment["shear"], augment["shear_unit"], tuple(augment["zoom"]), augment["horizontal_flip"]
            ),
            mixed_precision=resolve_switch(training["mixed_precision"], gpu),
            xla=resolve_switch(training["xla"], gpu),
            grappler=resolve_switch(training["grappler"], gpu),
            deterministic=training["deterministic"],
            threads=threads,
            bn_momentum=training["bn_momentum"],
            lr_schedule=training["lr_schedule"],
            warmup_epochs=training["warmup_epochs"],
            zero_init_residual=training["zero_init_residual"],
            checkpoint_interval_s=training.get("checkpoint_interval_s", 0),  # absent in configs older than the key
        )


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

    from .hardware import set_threads_and_memory

    set_threads_and_memory(settings.threads, min(2, settings.threads))  # kept as they are once TensorFlow has started
    # On a CPU, Grappler's rewrites of a ResNet training graph cost more to make than they save (2-core AMD EPYC,
    # ResNet-101 at 32 px: first step 15.6 s -> 13.2 s, steady step 385 -> 358 ms with it off).
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not settings.grappler})
    keras.utils.set_random_seed(seed)
    if settings.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_float16" if settings.mixed_precision else "float32")


def epoch_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    batch_size: int,
    seed: int,
    first_epoch: int,
    last_epoch: int,
):
    """Batches of epochs first_epoch..last_epoch-1, shuffled by (seed, epoch) so a resumed run sees the same order."""
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
    return without_autotune(epochs.flat_map(one_epoch).map(gather, num_parallel_calls=2).prefetch(2))


def without_autotune(dataset):
    """The dataset with tf.data's autotuning off: a gather from memory needs no tuning, and on a CPU the tuning
    thread held up the end of training. Its wait grows with the iterator's age (to about a minute), and deleting
    the iterator waits for it: 25-40 s of idling after the last epoch in about half of the demo's training jobs."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def eval_dataset(images: np.ndarray, labels: np.ndarray, n_classes: int, batch_size: int):
    """Unshuffled batches for validation."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, tf.one_hot(labels, n_classes)))
    return without_autotune(ds.batch(batch_size).prefetch(2))


def optimizer_of(model) -> list:
    """The model's optimizer as a list of objects to skip when its weights are saved or loaded (none if uncompiled)."""
    optimizer = getattr(model, "optimizer", None)
    return [optimizer] if optimizer is not None else []


def load_model_weights(model, path: str | os.PathLike) -> None:
    """Read a checkpoint's weights into the model, leaving its optimizer's state as it is."""
    model.load_weights(path, objects_to_skip=optimizer_of(model))


def inference_model(model):
    """The same layers and weights as a model of their own, without the optimizer: what a run's model.keras holds."""
    import keras

    return keras.Model(model.inputs, model.outputs, name=model.name)


@contextlib.contextmanager
def weights_set(model, weights: list) -> Iterator[None]:
    """The model holds `weights` inside the block, its own weights again after it."""
    own = model.get_weights()
    model.set_weights(weights)
    try:
        yield
    finally:
        model.set_weights(own)


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be resumed from."""


# Files of checkpoints written before state.json named its files (resumable after an upgrade).
LEGACY_FILES = {"model": "last.keras", "best_weights": "best.weights.h5"}


class Checkpoint:
    """The resumable state of a run: the last epoch's weights (with optimizer), best weights, early-stopping counters.

    Each epoch writes one new weights file, then replaces state.json, which names it: that one rename commits the
    epoch, so a job killed (or out of disk space) anywhere in between resumes from a consistent earlier epoch. An
    epoch that improves is also the best one so far: state.json names its file for both, so no second file is written
    (the best epoch's file stays until a later epoch improves). Weights, not a .keras model: the model is rebuilt
    from the run's spec, and a .keras file would copy the same bytes once more through memory into its zip.
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
            raise CheckpointError(
                f"{self.state_path}: unreadable checkpoint state ({error}); "
                f"delete {self.directory} to train this run from the start"
            ) from error
        if "files" not in state:
            state["files"] = {key: name for key, name in LEGACY_FILES.items() if (self.directory / name).exists()}
        files = state["files"]
        missing = sorted({"model", *files} - {key for key, name in files.items() if (self.directory / name).is_file()})
        if missing:
            raise CheckpointError(
                f"{self.state_path}: the checkpoint's {' and '.join(missing)} file is missing "
                f"(files {files}); delete {self.directory} to train this run from the start"
            )
        self.remove_unreferenced(state)
        return state

    def model_path(self, state: dict) -> Path:
        """The weights file (with optimizer state) of the last committed epoch; a .keras model in older checkpoints."""
        return self.directory / state["files"]["model"]

    def best_weights_path(self, state: dict) -> Path | None:
        """The weights of the best epoch so far, or None before any epoch improved."""
        name = state["files"].get("best_weights")
        return self.directory / name if name else None

    def save(self, model, state: dict, improved: bool, best_weights: list | None = None) -> None:
        """Write this epoch's weights and optimizer state under a new name, then commit it by replacing state.json.

        `best_weights`: the weights of the best epoch (state["best_epoch"]) where no earlier commit wrote them.
        """
        from keras.src.saving import saving_lib

        files = dict(state.get("files", {}))
        if best_weights is not None and not improved:
            best = f"best-epoch-{state['best_epoch']}.weights.h5"
            with atomic_path(self.directory / best) as tmp, weights_set(model, best_weights):
                saving_lib.save_weights_only(model, tmp, objects_to_skip=optimizer_of(model))
            files["best_weights"] = best
        name = f"epoch-{state['epochs_done']}.weights.h5"
        with atomic_path(self.directory / name) as tmp:
            saving_lib.save_weights_only(model, tmp)  # the optimizer's state too: a resumed run continues it
        state["files"] = {**files, "model": name, **({"best_weights": name} if improved else {})}
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

    return [
        value
        for layer in model.layers
        for value in vars(layer).values()
        if isinstance(value, keras.random.SeedGenerator)
    ]


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


def make_epoch_callback(
    checkpoint: Checkpoint,
    state: dict,
    patience: int,
    log: Callable[[str], None],
    seed: int = 0,
    max_epochs: int | None = None,
    interval_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
):
    """A Keras callback that seeds each epoch's random streams, records history, applies early stopping on
    val_loss and checkpoints every epoch but the last (max_epochs, or stopped early), at most one per `interval_s`.

    The last epoch's model is the run's output, written right after it: a checkpoint of it would only serve a job
    killed in those seconds, which then trains that epoch again from the previous one, to the same result.
    The weights of a best epoch not committed yet are kept in memory (`best_in_memory`) until a commit writes
    them or training ends."""
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        last_commit = clock()
        best_in_memory: list | None = None  # the best epoch's weights, where no commit has written them

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
            if state["stopped_early"] or epoch + 1 == max_epochs:
                return
            if clock() - self.last_commit >= interval_s:
                checkpoint.save(self.model, state, improved, None if improved else self.best_in_memory)
                self.best_in_memory, self.last_commit = None, clock()
            elif improved:
                self.best_in_memory = self.model.get_weights()

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


def learning_rate_schedule(learning_rate: float, settings: TrainSettings, steps_per_epoch: int):
    """The run's learning rate as the optimizer takes it: a float (constant) or a Keras schedule over the steps."""
    import keras

    if settings.lr_schedule == "constant":
        return learning_rate
    if settings.lr_schedule != "cosine":
        raise ValueError(f"training.lr_schedule: '{settings.lr_schedule}' is not 'constant' or 'cosine'")
    total = settings.max_epochs * steps_per_epoch
    warmup = min(round(settings.warmup_epochs * steps_per_epoch), total - 1)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(learning_rate, total)
    return keras.optimizers.schedules.CosineDecay(0.0, total - warmup, warmup_target=learning_rate, warmup_steps=warmup)


def zero_init_residual_branches(model) -> int:
    """Set the scale (gamma) of the last batch norm of every residual branch to 0; returns how many were set.

    Each block then starts as the identity, so a ResNet trained from random weights starts stable (Goyal et al. 2017,
    "Accurate, large minibatch SGD", section 5.1). Keras names these layers conv{stage}_block{n}_3_bn.
    """
    count = 0
    for layer in model.layers:
        if re.fullmatch(r"conv\d_block\d+_3_bn", layer.name):
            layer.gamma.assign(np.zeros(layer.gamma.shape, layer.gamma.dtype))
            count += 1
    return count


def compile_model(model, spec: RunSpec, xla: bool, learning_rate=None) -> None:
    """Compile with the run's optimizer (at `learning_rate`, a float or schedule, else the run's), categorical
    cross-entropy, accuracy and AUC."""
    import keras

    from .model import make_optimizer

    model.compile(
        optimizer=make_optimizer(
            spec.optimizer, spec.learning_rate if learning_rate is None else learning_rate, spec.momentum
        ),
        loss="categorical_crossentropy",
        metrics=["accuracy", keras.metrics.AUC(name="auc")],
        jit_compile=xla,
    )
    # Built eagerly now: built lazily inside the first training step's graph, its slot variables take ~10x longer.
    model.optimizer.build(model.trainable_variables)


def compiled_model(spec: RunSpec, settings: TrainSettings, n_classes: int, steps: int, weights_file=None):
    """The run's model as its first epoch starts: built (from `weights_file` or at random), set up and compiled."""
    from .model import build_model

    model = build_model(
        spec.arch,
        spec.size,
        n_classes,
        weights=weights_file,
        dropout=spec.dropout,
        augmentation=settings.augmentation,
        seed=spec.seed,
        attention=spec.attention,
    )
    if settings.bn_momentum is not None:
        set_batchnorm_momentum(model, settings.bn_momentum)
    if settings.zero_init_residual and spec.weights is None:
        zero_init_residual_branches(model)
    compile_model(model, spec, settings.xla, learning_rate_schedule(spec.learning_rate, settings, steps))
    return model


def resumed_model(path: Path, spec: RunSpec, settings: TrainSettings, n_classes: int, steps: int):
    """The checkpointed model: rebuilt and compiled as at the start, then its weights and optimizer state loaded."""
    if path.suffix == ".keras":  # a checkpoint written before checkpoints held weights only
        from .model import load_model

        return load_model(path)
    import h5py

    if not h5py.is_hdf5(path):  # Keras reports a damaged file as a bare OSError from h5py, naming no file
        raise ValueError(f"{path}: not a readable weights file (not HDF5: truncated or damaged)")
    model = compiled_model(spec, settings, n_classes, steps)  # no ImageNet file: every weight is loaded below
    model.load_weights(path)
    return model


def loss_scale(model) -> float | None:
    """The dynamic loss scale of a model compiled under mixed precision (its LossScaleOptimizer's), else None."""
    scale = getattr(getattr(model, "optimizer", None), "dynamic_scale", None)
    return None if scale is None else float(scale)


def restore_best_weights(model, state: dict, checkpoint: Checkpoint, in_memory: list | None) -> None:
    """Give the model the best epoch's weights: from memory, else the checkpoint; kept if its last epoch was best."""
    if state["best_epoch"] == state["epochs_done"]:
        return
    if in_memory is not None:
        model.set_weights(in_memory)
    elif checkpoint.best_weights_path(state) is not None:  # None: no epoch ever improved (all NaN)
        load_model_weights(model, checkpoint.best_weights_path(state))


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
    extra_callbacks: tuple = (),
) -> TrainedRun:
    """Train (or resume) one run; `session` (where this job runs) is kept in the checkpoint with the epochs it trains.

    A run with ImageNet initialisation (spec.weights) starts from `weights_file`, downloaded beforehand: a
    training job never fetches anything (compute nodes of a cluster may have no internet). `extra_callbacks`
    (benchmarks/profile_training.py's timer) run after the epoch's checkpoint.
    """
    if spec.weights is not None and weights_file is None:
        raise ValueError(
            f"run {spec}: initial weights '{spec.weights}' need the downloaded weights file "
            "(rule download_weights); none was given"
        )
    configure_tensorflow(settings, spec.seed)
    checkpoint = Checkpoint(checkpoint_dir)
    state = checkpoint.load_state()
    steps = math.ceil(len(train[1]) / spec.batch_size)  # per epoch
    if state is None:
        state = {
            "epochs_done": 0,
            "best_val_loss": math.inf,
            "best_epoch": 0,
            "wait": 0,
            "history": [],
            "stopped_early": False,
            "spec": asdict(spec),
            "files": {},
        }
        model = compiled_model(spec, settings, n_classes, steps, weights_file if spec.weights else None)
    else:
        if state.get("spec") != asdict(spec):
            raise ValueError(
                f"{checkpoint.state_path}: checkpoint belongs to {state.get('spec')}, not {asdict(spec)}; "
                "delete it to start over"
            )
        log(f"resuming from {checkpoint.model_path(state)} after epoch {state['epochs_done']}")
        try:
            model = resumed_model(checkpoint.model_path(state), spec, settings, n_classes, steps)
        except (OSError, ValueError) as error:
            raise CheckpointError(
                f"{checkpoint.model_path(state)}: cannot load the checkpointed model ({error}); "
                f"delete {checkpoint.directory} to train this run from the start"
            ) from error
        if loss_scale(model) is not None:  # optimizer state: a fresh one would skip steps again from 2^15 down
            log(f"loss scale {loss_scale(model):g} from the checkpoint (mixed precision)")
    start_session(state, session)
    finished = state["stopped_early"] or state["epochs_done"] >= settings.max_epochs
    if not finished:
        train_images, train_labels = train
        ds = epoch_dataset(
            train_images, train_labels, n_classes, spec.batch_size, spec.seed, state["epochs_done"], settings.max_epochs
        )
        class_weight = balanced_class_weights(train_labels, n_classes) if spec.class_weights else None
        callback = make_epoch_callback(
            checkpoint, state, settings.patience, log, spec.seed, settings.max_epochs, settings.checkpoint_interval_s
        )
        model.fit(
            ds,
            epochs=settings.max_epochs,
            initial_epoch=state["epochs_done"],
            steps_per_epoch=steps,
            validation_data=eval_dataset(*val, n_classes, spec.batch_size),
            class_weight=class_weight,
            callbacks=[callback, *extra_callbacks],
            verbose=verbose,
            shuffle=False,
        )
    restore_best_weights(model, state, checkpoint, None if finished else callback.best_in_memory)
    log(f"best epoch {state['best_epoch']} (val_loss {state['best_val_loss']:.4f}) of {state['epochs_done']} run")
    if loss_scale(model) is not None:
        log(f"loss scale {loss_scale(model):g} after the last step, {int(model.optimizer.iterations)} steps applied")
    return TrainedRun(model, state["history"], checkpoint, state["sessions"])
