"""Resuming a run exactly: the committed epoch on disk, and random streams derived from (seed, epoch) alone."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .atomic import atomic_path, write_text_atomic

# Counter values reserved for one seed generator in one epoch; an epoch draws a few per training step.
SEED_BLOCK = 1 << 20


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be resumed from."""


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
        files = state.setdefault("files", {})
        missing = sorted({"model", *files} - {key for key, name in files.items() if (self.directory / name).is_file()})
        if missing:
            raise CheckpointError(
                f"{self.state_path}: the checkpoint's {' and '.join(missing)} file is missing "
                f"(files {files}); delete {self.directory} to train this run from the start"
            )
        self.remove_unreferenced(state)
        return state

    def model_path(self, state: dict) -> Path:
        """The weights file (with optimizer state) of the last committed epoch."""
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


def optimizer_of(model) -> list:
    """The model's optimizer as a list of objects to skip when its weights are saved or loaded (none if uncompiled)."""
    optimizer = getattr(model, "optimizer", None)
    return [optimizer] if optimizer is not None else []


def load_model_weights(model, path: str | os.PathLike) -> None:
    """Read a checkpoint's weights into the model, leaving its optimizer's state as it is."""
    model.load_weights(path, objects_to_skip=optimizer_of(model))


@contextlib.contextmanager
def weights_set(model, weights: list) -> Iterator[None]:
    """The model holds `weights` inside the block, its own weights again after it."""
    own = model.get_weights()
    model.set_weights(weights)
    try:
        yield
    finally:
        model.set_weights(own)


def restore_best_weights(model, state: dict, checkpoint: Checkpoint, in_memory: list | None) -> None:
    """Give the model the best epoch's weights: from memory, else the checkpoint; kept if its last epoch was best."""
    if state["best_epoch"] == state["epochs_done"]:
        return
    if in_memory is not None:
        model.set_weights(in_memory)
    elif checkpoint.best_weights_path(state) is not None:  # None: no epoch ever improved (all NaN)
        load_model_weights(model, checkpoint.best_weights_path(state))


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
