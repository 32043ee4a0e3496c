"""Reading a run's per-epoch history (numpy only, so the report environment needs no TensorFlow)."""

from __future__ import annotations

import numpy as np


def best_epoch_row(history: list[dict]) -> dict:
    """The history row of the epoch whose weights a run keeps: the first one with the lowest val_loss."""
    losses = np.array([row.get("val_loss", np.nan) for row in history], dtype=float)
    if not len(losses) or np.isnan(losses).all():
        raise ValueError("history has no finite val_loss, so no epoch was kept")
    return history[int(np.nanargmin(losses))]


SPIKE_RISE = 0.2  # an epoch is a validation-loss spike when its loss is over 20 % above the previous epoch's


def loss_behaviour(val_loss: list[float]) -> dict[str, float]:
    """How a run's validation loss moved: spikes (rises > 20 % over the previous epoch), mean absolute relative
    change per epoch (lower = steadier; NaN with one epoch), and the epoch of the lowest loss (later = more
    gradual convergence)."""
    losses = np.asarray(val_loss, dtype=float)
    if not len(losses) or not np.isfinite(losses).all() or (losses <= 0).any():
        raise ValueError(f"validation loss {[float(x) for x in losses]} is not a list of finite positive values")
    ratios = losses[1:] / losses[:-1]
    return {
        "spikes": int(np.sum(ratios > 1 + SPIKE_RISE)),
        "mean_relative_change": float(np.mean(np.abs(ratios - 1))) if len(ratios) else float("nan"),
        "best_epoch": int(np.argmin(losses)) + 1,
        "epochs": len(losses),
    }
