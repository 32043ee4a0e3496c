"""Grad-CAM focus scores: the share of each heatmap's heat inside the cell region, and its per-class table.

The region is the true cell mask on synthetic data (stored with the dataset as `test_masks`) and a
centred disc elsewhere (BloodMNIST-style crops are centred on the cell). A heatmap spread evenly
over the image scores the region's area share, so the table divides by it: focus_ratio = 1 means
no preference for the region.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .dataset import TEST_MASKS, load_test_masks
from .gradcam import upsample

UPSAMPLE_CHUNK = 256  # heatmaps upsampled at a time for the focus scores (bounds memory at 224 px)


def focus_scores(heatmaps: np.ndarray, region_masks: np.ndarray) -> np.ndarray:
    """Share of each heatmap's heat (N x H x W) inside its region mask (N x H x W or one H x W); NaN where all zero."""
    masks = np.broadcast_to(np.asarray(region_masks, bool), heatmaps.shape)
    heat = np.asarray(heatmaps, np.float64)
    total = heat.sum(axis=(1, 2))
    inside = (heat * masks).sum(axis=(1, 2))
    return np.divide(inside, total, out=np.full(len(heat), np.nan), where=total > 0)


def all_focus_scores(maps: np.ndarray, masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """focus_scores of layer-resolution maps against image-size masks, upsampling UPSAMPLE_CHUNK maps at a time."""
    if not len(maps):
        return np.zeros(0)
    chunks = range(0, len(maps), UPSAMPLE_CHUNK)
    return np.concatenate(
        [focus_scores(upsample(maps[i : i + UPSAMPLE_CHUNK], size), masks[i : i + UPSAMPLE_CHUNK]) for i in chunks]
    )


def central_disc_mask(size: int, radius_fraction: float = 0.35) -> np.ndarray:
    """Bool size x size disc centred on the image, radius = radius_fraction x image side (pixel centres inside)."""
    if not 0 < radius_fraction:
        raise ValueError(f"radius_fraction {radius_fraction} must be positive")
    centre = (size - 1) / 2.0
    y, x = np.mgrid[0:size, 0:size]
    return (x - centre) ** 2 + (y - centre) ** 2 <= (radius_fraction * size) ** 2


def region_masks(
    source: dict, data_path: str | os.PathLike, test_images: np.ndarray, disc_radius: float
) -> tuple[np.ndarray, str]:
    """The cell region of each test image and its description: the stored masks of synthetic data, else a disc."""
    size = test_images.shape[1]
    if source["source"] != "synthetic":
        disc = central_disc_mask(size, disc_radius)
        return np.broadcast_to(disc, (len(test_images), size, size)), f"centred disc r={disc_radius:g} x side"
    masks = load_test_masks(data_path)
    if masks is None or masks.shape != test_images.shape[:3]:
        found = "no" if masks is None else f"{masks.shape}"
        raise ValueError(
            f"{data_path}: synthetic data needs '{TEST_MASKS}' of shape {test_images.shape[:3]} (the cell of each "
            f"test image), found {found}; delete the file so that prepare_dataset makes it again"
        )
    return masks, "cell mask"


def focus_table(
    labels: np.ndarray, focus: np.ndarray, region_masks: np.ndarray, class_names: Sequence[str], region: str
) -> list[dict]:
    """Per true class (and 'all'): images, mean and sd of the focus score, region area share and focus / area."""
    labels = np.asarray(labels).reshape(-1)
    masks = np.broadcast_to(np.asarray(region_masks, bool), (len(labels),) + np.shape(region_masks)[-2:])
    area = masks.mean(axis=(1, 2))
    groups = [(name, labels == c) for c, name in enumerate(class_names)] + [("all", np.ones(len(labels), bool))]
    return [_focus_row(name, focus[members], area[members], region) for name, members in groups]


def _focus_row(name: str, scores: np.ndarray, area: np.ndarray, region: str) -> dict:
    """One row of focus_table: the focus scores and region area shares of one group of images."""
    defined = ~np.isnan(scores)
    mean = float(scores[defined].mean()) if defined.any() else float("nan")
    area_share = float(area.mean()) if len(area) else float("nan")
    return {
        "class": name,
        "n_images": int(defined.sum()),
        "n_empty_maps": int((~defined).sum()),
        "focus_mean": round(mean, 4),
        "focus_sd": round(float(scores[defined].std(ddof=1)), 4) if defined.sum() > 1 else float("nan"),
        "region_area_share": round(area_share, 4),
        "focus_ratio": round(mean / area_share, 3) if area_share > 0 else float("nan"),  # at most 1 / area share
        "region": region,
    }
