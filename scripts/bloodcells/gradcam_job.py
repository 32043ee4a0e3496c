"""One run's Grad-CAM job (rule gradcam): maps of every test image, then the panel, heatmaps.npz and focus.csv."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path, rows_csv, write_text_atomic
from .gradcam import MIN_MAP_SIDE, gradcam_maps, resolve_layer, spatial_layers, suggest_layer, upsample
from .gradcam_focus import all_focus_scores, focus_table, region_masks
from .gradcam_panel import plot_panels, select_examples


@dataclass(frozen=True)
class GradcamJob:
    """One run's Grad-CAM job as plain values: its files, dataset config block and the config's gradcam settings."""

    run: str
    model: str
    data: str
    predictions: str
    source: dict  # the dataset's config block: its class names, and whether its npz holds cell masks
    layer: str
    per_class_correct: int
    per_class_mistakes: int
    batch_size: int
    disc_radius: float


def explain_run(job: GradcamJob, panel: str, pdf: str, heatmaps: str, focus_csv: str) -> list[dict]:
    """Grad-CAM of every test image for its predicted class: panel PNG and PDF, heatmaps npz, focus table (returned)."""
    from .dataset import load_split
    from .model import load_model  # imports TensorFlow: only in a job whose log is redirected
    from .names import class_names_of

    class_names = class_names_of(job.source)
    test = load_split(job.data, "test", len(class_names))
    probabilities, labels = checked_predictions(job.predictions, job.data, test.labels)
    model = load_model(job.model)  # safe mode, with the custom layers registered
    layer, h, w = target_layer(model, job.layer, job.model)
    _announce(job.run, model, layer, (h, w), test.images.shape[1], len(labels))
    predicted = probabilities.argmax(axis=1)
    maps = gradcam_maps(model, test.images, layer, predicted, job.batch_size)
    masks, region = region_masks(job.source, job.data, test.images, job.disc_radius)
    size = test.images.shape[1:3]
    focus = all_focus_scores(maps, masks, size)
    selection = select_examples(labels, probabilities, job.per_class_correct, job.per_class_mistakes)
    chosen = selection.indices
    shown = upsample(maps[chosen], size)
    title = f"{job.run}: Grad-CAM at {layer} ({h}x{w}), predicted class"
    plot_panels(test.images, shown, labels, probabilities, selection, class_names, panel, pdf, title=title)
    save_heatmaps(
        heatmaps,
        heatmaps=shown,  # panel images, N x H x W in [0, 1]
        indices=chosen,  # their test-split indices
        is_mistake=predicted[chosen] != labels[chosen],
        maps=maps,  # every test image, at the layer's resolution, not normalised
        labels=labels,
        predicted=predicted,
        probability=probabilities[np.arange(len(labels)), predicted],
        focus=focus,
        layer=np.array(layer),
        score=np.array("logit"),
        region=np.array(region),
        class_names=np.array(class_names),
    )
    rows = focus_table(labels, focus, masks, class_names, region)
    write_text_atomic(focus_csv, rows_csv(rows))
    overall = rows[-1]
    print(
        f"focus (share of heat in {region}): {overall['focus_mean']:.3f} over {overall['n_images']} images, "
        f"region area share {overall['region_area_share']:.3f}, ratio {overall['focus_ratio']:.2f}"
    )
    return rows


def checked_predictions(
    predictions_path: str | os.PathLike, data_path: str, test_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The saved probabilities and labels of a run, refused when the labels are not those of its test split."""
    from .predictions import read_predictions

    probabilities, labels = read_predictions(predictions_path)
    if len(labels) != len(test_labels) or not np.array_equal(labels, test_labels):
        raise ValueError(f"{predictions_path}: labels differ from the test split of {data_path}; re-run evaluate")
    return probabilities, labels


def target_layer(model, layer: str, model_path: str | os.PathLike) -> tuple[str, int, int]:
    """The Grad-CAM layer the config names (or 'auto') and its map size; an error names the config key and file."""
    try:
        layer = resolve_layer(model, layer)
    except ValueError as error:  # name the config key and the model file, beside the valid layers
        raise ValueError(f"config key 'gradcam.layer' for {model_path}: {error}") from error
    h, w = spatial_layers(model)[layer]
    return layer, h, w


def _announce(run: str, model, layer: str, shape: tuple[int, int], image_size: int, n_images: int) -> None:
    """Say in the log what is explained, and suggest a finer layer when the map is coarse."""
    h, w = shape
    print(
        f"run {run}: Grad-CAM at '{layer}' ({h}x{w} map for {image_size} px images), "
        f"class score = logit of the predicted class, {n_images} test images",
        flush=True,
    )
    if min(h, w) < MIN_MAP_SIDE:
        print(
            f"note: a {h}x{w} map is coarse; '{suggest_layer(model)}' is the deepest block with at least "
            f"{MIN_MAP_SIDE}x{MIN_MAP_SIDE} cells (set gradcam.layer in the config)",
            flush=True,
        )


def save_heatmaps(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write heatmaps and their metadata to an npz, atomically."""
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
