"""Training one run: its settings, the epoch loop with early stopping, and resuming it from its checkpoint."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .checkpoint import Checkpoint, CheckpointError, reset_seed_generators, restore_best_weights
from .inputs import balanced_class_weights, epoch_dataset, eval_dataset
from .model import Augmentation, set_batchnorm_momentum, zero_init_residual_branches
from .optimizers import compile_model, learning_rate_schedule, loss_scale


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
            checkpoint_interval_s=training.get("checkpoint_interval_s", 0),  # no schema default: absent is 0
        )


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
    # On a CPU, Grappler's rewrites of a ResNet training graph cost more to make than they save (docs/performance.md).
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not settings.grappler})
    keras.utils.set_random_seed(seed)
    if settings.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_float16" if settings.mixed_precision else "float32")


def compiled_model(spec: RunSpec, settings: TrainSettings, n_classes: int, steps: int, weights_file=None):
    """The run's model as its first epoch starts: built (from `weights_file` or at random), set up and compiled."""
    from .model import build_model  # looked up per call, so that a test's stand-in for it takes effect

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
    import h5py

    if not h5py.is_hdf5(path):  # Keras reports a damaged file as a bare OSError from h5py, naming no file
        raise ValueError(f"{path}: not a readable weights file (not HDF5: truncated or damaged)")
    model = compiled_model(spec, settings, n_classes, steps)  # no ImageNet file: every weight is loaded below
    model.load_weights(path)
    return model


def start_session(state: dict, session: dict | None) -> None:
    """Append this job's session (where it runs) to the state's list, with the epochs it will train (none yet)."""
    state.setdefault("sessions", []).append(dict(session or {}) | {"epochs": []})


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


class TrainedRun(NamedTuple):
    """What train_run returns: the model with its best weights, the history rows, the checkpoint and the sessions."""

    model: object
    history: list[dict]
    checkpoint: Checkpoint
    sessions: list[dict]


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
        # optimizer state: a fresh one would skip steps again from 2^15 down
        if (scale := loss_scale(model)) is not None:
            log(f"loss scale {scale:g} from the checkpoint (mixed precision)")
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
    if (scale := loss_scale(model)) is not None:
        log(f"loss scale {scale:g} after the last step, {int(model.optimizer.iterations)} steps applied")
    return TrainedRun(model, state["history"], checkpoint, state["sessions"])
