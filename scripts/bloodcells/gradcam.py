"""Grad-CAM (Selvaraju et al. 2017) on the saved flat models, example selection, focus scores and panels, and
one run's whole Grad-CAM job (explain_run, which rule gradcam's adapter calls).

Class score. The paper differentiates the pre-softmax score y^c. Our models end in a float32
Dense layer named "predictions" with a softmax, so the default score ("logit") is recomputed
from that layer's input as x @ kernel + bias, in float32; the softmax probability is available
as score="probability". The logit is preferred: the probability's gradient shrinks towards zero
as the model grows confident (p(1 - p)), and mixes in the other classes' evidence.

Heatmap of an image = ReLU(sum_k alpha_k A^k) with alpha_k = spatial mean of d y^c / d A^k over
the target layer's map A (h x w x K), bilinearly upsampled to the image size and divided by its
maximum (a map with no positive evidence stays all zero).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path, rows_csv, write_text_atomic

DEFAULT_LAYER = "conv5_block3_out"
SCORES = ("logit", "probability")
HEAD_LAYER = "predictions"
# Below this many cells per side a Grad-CAM map says little more than "somewhere in the image".
MIN_MAP_SIDE = 4
# Perceptually uniform and readable with deuteranopia, protanopia and tritanopia (Nunez et al. 2018).
COLORMAP = "cividis"
OVERLAY_ALPHA = 0.55
UPSAMPLE_CHUNK = 256  # heatmaps upsampled at a time for the focus scores (bounds memory at 224 px)


def spatial_layers(model) -> dict[str, tuple[int, int]]:
    """Names of the layers with a 4-D (N x h x w x C) output, in model order, with their map sizes."""
    maps = {}
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is not None and len(shape) == 4 and layer.name not in ("image", "augment", "preprocess"):
            maps[layer.name] = (shape[1], shape[2])
    return maps


def candidate_layers(model) -> list[str]:
    """The layer names worth offering as Grad-CAM targets: ResNet block outputs (and conv1), else every 4-D layer."""
    names = list(spatial_layers(model))
    blocks = [name for name in names if name.endswith("_out") or name == "conv1_relu"]
    return blocks or names


def suggest_layer(model, min_side: int = MIN_MAP_SIDE) -> str:
    """The deepest candidate layer whose map is at least `min_side` cells on each side (else the largest map)."""
    maps = spatial_layers(model)
    candidates = candidate_layers(model)
    fitting = [name for name in candidates if min(maps[name]) >= min_side]
    if fitting:
        return fitting[-1]
    return max(candidates, key=lambda name: (min(maps[name]), -candidates.index(name)))


def resolve_layer(model, layer: str) -> str:
    """`layer` if the model has it as a 4-D layer, the suggestion if 'auto'; else a ValueError listing valid names."""
    if layer == "auto":
        return suggest_layer(model)
    maps = spatial_layers(model)
    if layer not in maps:
        sizes = ", ".join(
            f"{name} ({h}x{w})" for name, (h, w) in spatial_layers(model).items() if name in candidate_layers(model)
        )
        what = (
            "has no layer"
            if layer not in {candidate.name for candidate in model.layers}
            else "has no 4-D (spatial) layer"
        )
        raise ValueError(
            f"model '{model.name}' {what} named '{layer}'; valid Grad-CAM layers are: {sizes} "
            f"(or 'auto': the deepest of these at least {MIN_MAP_SIDE}x{MIN_MAP_SIDE})"
        )
    return layer


def make_grad_model(model, layer: str):
    """A model from the classifier's input to (target layer output, input of the "predictions" head, probabilities).

    This works because build_model keeps the ResNet's layers flat in the classifier's own graph.
    """
    import keras

    layer = resolve_layer(model, layer)
    head = (
        model.get_layer(HEAD_LAYER)
        if HEAD_LAYER in {candidate.name for candidate in model.layers}
        else model.layers[-1]
    )
    if not isinstance(head, keras.layers.Dense):
        raise ValueError(
            f"model '{model.name}': last layer '{head.name}' is not a Dense layer, so its logits are unknown"
        )
    return keras.Model(
        model.inputs, [model.get_layer(layer).output, head.input, model.outputs[0]], name=f"gradcam_{layer}"
    )


def _head_logits(model, features):
    """Pre-activation scores x @ kernel + bias of the Dense head, in float32 whatever the precision policy."""
    from keras import ops

    head = (
        model.get_layer(HEAD_LAYER)
        if HEAD_LAYER in {candidate.name for candidate in model.layers}
        else model.layers[-1]
    )
    logits = ops.matmul(ops.cast(features, "float32"), ops.cast(head.kernel, "float32"))
    if head.use_bias:
        logits = logits + ops.cast(head.bias, "float32")
    return logits


def gradcam_maps(
    model, images: np.ndarray, layer: str, class_indices: np.ndarray, batch_size: int = 32, score: str = "logit"
) -> np.ndarray:
    """Grad-CAM maps (N x h x w float32, >= 0, not normalised) at the target layer's resolution, in batches."""
    import tensorflow as tf

    if score not in SCORES:
        raise ValueError(f"score: '{score}' is not one of {list(SCORES)}")
    class_indices = np.asarray(class_indices, np.int64).reshape(-1)
    if len(class_indices) != len(images):
        raise ValueError(f"{len(images)} images but {len(class_indices)} class indices")
    n_classes = model.output_shape[-1]
    if len(class_indices) and (class_indices.min() < 0 or class_indices.max() >= n_classes):
        raise ValueError(f"class indices must lie in 0..{n_classes - 1}")
    grad_model = make_grad_model(model, layer)

    # Eager on purpose: tracing a ResNet into a tf.function costs more than it saves for a few thousand images.
    def step(batch, classes):
        with tf.GradientTape() as tape:
            activations, features, probabilities = grad_model([batch], training=False)
            scores = _head_logits(model, features) if score == "logit" else tf.cast(probabilities, tf.float32)
            # Images are independent in inference mode, so the gradient of the sum is each image's own gradient.
            chosen = tf.reduce_sum(tf.gather(scores, classes, axis=1, batch_dims=1))
        gradients = tf.cast(tape.gradient(chosen, activations), tf.float32)
        activations = tf.cast(activations, tf.float32)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)  # alpha_k^c
        return tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1))

    out = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start : start + batch_size])
        out.append(step(batch, tf.convert_to_tensor(class_indices[start : start + batch_size])).numpy())
    if not out:
        h, w = spatial_layers(model)[resolve_layer(model, layer)]
        return np.zeros((0, h, w), np.float32)
    return np.concatenate(out).astype(np.float32)


def upsample(maps: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling (half-pixel centres) to the image size, each map over its maximum: N x H x W in [0, 1]."""
    import tensorflow as tf

    size = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    resized = tf.image.resize(np.asarray(maps, np.float32)[..., None], size, method="bilinear").numpy()[..., 0]
    resized = np.maximum(resized, 0.0)
    peak = resized.max(axis=(1, 2), keepdims=True)
    return np.divide(resized, peak, out=np.zeros_like(resized), where=peak > 0).astype(np.float32)


def gradcam(
    model, images: np.ndarray, layer: str, class_indices: np.ndarray, batch_size: int = 32, score: str = "logit"
) -> np.ndarray:
    """Grad-CAM heatmaps of `images` for `class_indices`: N x H x W float32 in [0, 1] at the image size."""
    maps = gradcam_maps(model, images, layer, class_indices, batch_size, score)
    return upsample(maps, images.shape[1:3])


def focus_score(heatmap: np.ndarray, region_mask: np.ndarray) -> float:
    """Share of the heat that falls inside `region_mask` (NaN for an all-zero heatmap)."""
    heatmap = np.asarray(heatmap, np.float64)
    if heatmap.shape != region_mask.shape:
        raise ValueError(f"heatmap shape {heatmap.shape} differs from region mask shape {region_mask.shape}")
    total = heatmap.sum()
    return float(heatmap[region_mask.astype(bool)].sum() / total) if total > 0 else float("nan")


def focus_scores(heatmaps: np.ndarray, region_masks: np.ndarray) -> np.ndarray:
    """focus_score of each heatmap (N x H x W) with its own region mask (N x H x W or one H x W mask)."""
    masks = np.broadcast_to(np.asarray(region_masks, bool), heatmaps.shape)
    heat = np.asarray(heatmaps, np.float64)
    total = heat.sum(axis=(1, 2))
    inside = (heat * masks).sum(axis=(1, 2))
    return np.divide(inside, total, out=np.full(len(heat), np.nan), where=total > 0)


def central_disc_mask(size: int, radius_fraction: float = 0.35) -> np.ndarray:
    """Bool size x size disc centred on the image, radius = radius_fraction x image side (pixel centres inside)."""
    if not 0 < radius_fraction:
        raise ValueError(f"radius_fraction {radius_fraction} must be positive")
    centre = (size - 1) / 2.0
    y, x = np.mgrid[0:size, 0:size]
    return (x - centre) ** 2 + (y - centre) ** 2 <= (radius_fraction * size) ** 2


@dataclass(frozen=True)
class Selection:
    """Test-image indices chosen for the panel: per class, the correct ones and the mistakes."""

    correct: list[np.ndarray]
    mistakes: list[np.ndarray]

    @property
    def indices(self) -> np.ndarray:
        """All chosen indices, class by class, correct ones first."""
        parts = [np.concatenate([c, m]) for c, m in zip(self.correct, self.mistakes, strict=True)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def select_examples(
    labels: np.ndarray, probabilities: np.ndarray, per_class_correct: int, per_class_mistakes: int
) -> Selection:
    """Per true class: the most confident correct predictions and the most confidently wrong ones (ties by index)."""
    labels = np.asarray(labels).reshape(-1)
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(labels)), predicted]
    correct, mistakes = [], []
    for c in range(probabilities.shape[1]):
        for keep, n, out in (
            (predicted == c, per_class_correct, correct),
            (predicted != c, per_class_mistakes, mistakes),
        ):
            where = np.flatnonzero((labels == c) & keep)
            order = np.lexsort((where, -confidence[where]))  # confidence descending, then index
            out.append(where[order[:n]].astype(np.int64))
    return Selection(correct, mistakes)


def _grey(image: np.ndarray) -> np.ndarray:
    """Luma (ITU-R BT.601) of an RGB uint8 image, in [0, 1]."""
    return (image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)) / 255.0


def plot_panels(
    images: np.ndarray,
    heatmaps: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    selection: Selection,
    class_names: Sequence[str],
    png_path: str | os.PathLike,
    pdf_path: str | os.PathLike | None = None,
    title: str = "",
    dpi: int = 300,
) -> None:
    """One row per class: each chosen image beside its heatmap over the greyscale image; PNG (dpi) and PDF, atomically.

    `images`, `labels` and `probabilities` cover the whole test split; `heatmaps` holds one map per
    selected index, in the order of `selection.indices`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    labels = np.asarray(labels).reshape(-1)
    heat_of = dict(zip(selection.indices.tolist(), heatmaps, strict=True))
    n_correct = max([len(c) for c in selection.correct] + [1])
    n_mistakes = max([len(m) for m in selection.mistakes] + [0])
    n_slots = n_correct + n_mistakes
    n_rows = len(class_names)
    height = 1.45 * n_rows + 0.9
    fig, axes = plt.subplots(
        n_rows,
        2 * n_slots,
        figsize=(1.25 * 2 * n_slots + 1.6, height),
        squeeze=False,
        gridspec_kw={"wspace": 0.05, "hspace": 0.55},
    )
    fig.subplots_adjust(top=1 - 0.85 / height, bottom=0.1 / height)  # room for the title and the first labels
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for c, name in enumerate(class_names):
        slots = list(selection.correct[c]) + [None] * (n_correct - len(selection.correct[c]))
        slots += list(selection.mistakes[c]) + [None] * (n_mistakes - len(selection.mistakes[c]))
        axes[c, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8, fontweight="bold")
        for s, index in enumerate(slots):
            ax_img, ax_heat = axes[c, 2 * s], axes[c, 2 * s + 1]
            if index is None:
                empty = {0: "no correct predictions", n_correct: "no mistakes"}.get(s)
                if empty and not (len(selection.correct[c]) if s == 0 else len(selection.mistakes[c])):
                    ax_img.text(
                        0.5, 0.5, empty, ha="center", va="center", fontsize=6, color="0.4", transform=ax_img.transAxes
                    )
                continue
            pred = int(probabilities[index].argmax())
            mistake = pred != labels[index]
            ax_img.imshow(images[index], interpolation="nearest")
            ax_heat.imshow(_grey(images[index]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax_heat.imshow(heat_of[index], cmap=COLORMAP, vmin=0, vmax=1, alpha=OVERLAY_ALPHA, interpolation="bilinear")
            text = (
                f"true: {class_names[labels[index]]}\npred: {class_names[pred]}\n"
                f"p = {probabilities[index, pred]:.2f}" + ("  MISTAKE" if mistake else "")
            )
            ax_img.set_title(text, fontsize=5, loc="left", fontweight="bold" if mistake else "normal")
            if mistake:  # a dashed frame marks mistakes without relying on colour
                for ax in (ax_img, ax_heat):
                    ax.set_frame_on(True)
                    for spine in ax.spines.values():
                        spine.set_linestyle("--")
                        spine.set_linewidth(1.0)
    bar = fig.colorbar(cm.ScalarMappable(colors.Normalize(0, 1), COLORMAP), ax=axes, fraction=0.02, pad=0.01)
    bar.set_label("Grad-CAM heat (each map divided by its maximum)", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    fig.suptitle(title or "Grad-CAM: image | heatmap over greyscale image", fontsize=9, y=1 - 0.1 / height)
    try:
        with atomic_path(png_path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
        if pdf_path is not None:
            with atomic_path(pdf_path) as tmp:
                fig.savefig(tmp, format="pdf", bbox_inches="tight")
    finally:
        plt.close(fig)


def save_heatmaps(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write heatmaps and their metadata to an npz, atomically."""
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)


def focus_table(
    labels: np.ndarray, focus: np.ndarray, region_masks: np.ndarray, class_names: Sequence[str], region: str
) -> list[dict]:
    """Per true class (and 'all'): images, mean and sd of the focus score, region area share and focus / area.

    A heatmap spread evenly over the image scores its region's area share, so focus_ratio = 1 means
    no preference for the region and 1 / area share is the most a map can reach.
    """
    labels = np.asarray(labels).reshape(-1)
    masks = np.broadcast_to(np.asarray(region_masks, bool), (len(labels),) + np.shape(region_masks)[-2:])
    area = masks.mean(axis=(1, 2))
    rows = []
    groups = [(name, labels == c) for c, name in enumerate(class_names)] + [("all", np.ones(len(labels), bool))]
    for name, members in groups:
        scores = focus[members]
        defined = ~np.isnan(scores)
        mean = float(scores[defined].mean()) if defined.any() else float("nan")
        area_share = float(area[members].mean()) if members.any() else float("nan")
        rows.append(
            {
                "class": name,
                "n_images": int(defined.sum()),
                "n_empty_maps": int((~defined).sum()),
                "focus_mean": round(mean, 4),
                "focus_sd": round(float(scores[defined].std(ddof=1)), 4) if defined.sum() > 1 else float("nan"),
                "region_area_share": round(area_share, 4),
                "focus_ratio": round(mean / area_share, 3) if area_share > 0 else float("nan"),
                "region": region,
            }
        )
    return rows


def region_masks(source: dict, test_images: np.ndarray, disc_radius: float) -> tuple[np.ndarray, str]:
    """The cell region of each test image and its description: true masks on synthetic data, else a centred disc."""
    size = test_images.shape[1]
    if source["source"] == "synthetic":
        from .synthetic import make_synthetic_dataset

        arrays = make_synthetic_dataset(
            size, source["n_train"], source["n_val"], source["n_test"], source.get("seed", 0), with_masks=True
        )
        regenerated = arrays["test_images"]
        if regenerated.shape != test_images.shape or not np.array_equal(regenerated, test_images):
            raise ValueError(
                "the synthetic test images regenerated from the dataset config (seed, n_train, n_val, n_test) differ "
                "from the prepared dataset file, so their cell masks cannot be trusted; re-run prepare_dataset "
                "(the config or scripts/bloodcells/synthetic.py changed since the file was made)"
            )
        return arrays["test_masks"], "cell mask"
    disc = central_disc_mask(size, disc_radius)
    return np.broadcast_to(disc, (len(test_images), size, size)), f"centred disc r={disc_radius:g} x side"


def all_focus_scores(maps: np.ndarray, masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """focus_scores of layer-resolution maps against image-size masks, upsampling UPSAMPLE_CHUNK maps at a time."""
    if not len(maps):
        return np.zeros(0)
    chunks = range(0, len(maps), UPSAMPLE_CHUNK)
    return np.concatenate(
        [focus_scores(upsample(maps[i : i + UPSAMPLE_CHUNK], size), masks[i : i + UPSAMPLE_CHUNK]) for i in chunks]
    )


def target_layer(model, layer: str, model_path: str | os.PathLike) -> tuple[str, int, int]:
    """The Grad-CAM layer the config names (or 'auto') and its map size; an error names the config key and file."""
    try:
        layer = resolve_layer(model, layer)
    except ValueError as error:  # name the config key and the model file, beside the valid layers
        raise ValueError(f"config key 'gradcam.layer' for {model_path}: {error}") from error
    h, w = spatial_layers(model)[layer]
    return layer, h, w


def checked_predictions(
    predictions_path: str | os.PathLike, data_path: str, test_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The saved probabilities and labels of a run, refused when the labels are not those of its test split."""
    from .predictions import read_predictions

    probabilities, labels = read_predictions(predictions_path)
    if len(labels) != len(test_labels) or not np.array_equal(labels, test_labels):
        raise ValueError(f"{predictions_path}: labels differ from the test split of {data_path}; re-run evaluate")
    return probabilities, labels


@dataclass(frozen=True)
class GradcamJob:
    """One run's Grad-CAM job as plain values: its files, dataset config block and the config's gradcam settings."""

    run: str
    model: str
    data: str
    predictions: str
    source: dict  # the dataset's config block: class names, and the cell masks of synthetic data
    layer: str = DEFAULT_LAYER
    per_class_correct: int = 2
    per_class_mistakes: int = 1
    batch_size: int = 32
    disc_radius: float = 0.35


def explain_run(job: GradcamJob, panel: str, pdf: str, heatmaps: str, focus_csv: str) -> list[dict]:
    """Grad-CAM of every test image for its predicted class: panel PNG and PDF, heatmaps npz, focus table (returned)."""
    from .dataset import class_names_of, load_split
    from .model import load_model  # imports TensorFlow: only in a job whose log is redirected

    class_names = class_names_of(job.source)
    test = load_split(job.data, "test", len(class_names))
    probabilities, labels = checked_predictions(job.predictions, job.data, test.labels)
    model = load_model(job.model)  # safe mode, with the custom layers registered
    layer, h, w = target_layer(model, job.layer, job.model)
    print(
        f"run {job.run}: Grad-CAM at '{layer}' ({h}x{w} map for {test.images.shape[1]} px images), "
        f"class score = logit of the predicted class, {len(labels)} test images",
        flush=True,
    )
    if min(h, w) < MIN_MAP_SIDE:
        print(
            f"note: a {h}x{w} map is coarse; '{suggest_layer(model)}' is the deepest block with at least "
            f"{MIN_MAP_SIDE}x{MIN_MAP_SIDE} cells (set gradcam.layer in the config)",
            flush=True,
        )
    predicted = probabilities.argmax(axis=1)
    maps = gradcam_maps(model, test.images, layer, predicted, job.batch_size)
    masks, region = region_masks(job.source, test.images, job.disc_radius)
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
