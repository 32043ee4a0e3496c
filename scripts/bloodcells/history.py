"""Reading a run's per-epoch history (numpy only, so the report environment needs no TensorFlow)."""

from __future__ import annotations

import numpy as np


def best_epoch_row(history: list[dict]) -> dict:
    """The history row of the epoch whose weights a run keeps: the first one with the lowest val_loss."""
    losses = np.array([row.get("val_loss", np.nan) for row in history], dtype=float)
    if not len(losses) or np.isnan(losses).all():
        raise ValueError("history has no finite val_loss, so no epoch was kept")
    return history[int(np.nanargmin(losses))]
