"""The Grad-CAM algorithm (Selvaraju et al. 2017) on the saved flat models: target layers, maps, upsampling.

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

import numpy as np

SCORES = ("logit", "probability")
HEAD_LAYER = "predictions"
# Below this many cells per side a Grad-CAM map says little more than "somewhere in the image".
MIN_MAP_SIDE = 4


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
        candidates = candidate_layers(model)
        sizes = ", ".join(f"{name} ({h}x{w})" for name, (h, w) in maps.items() if name in candidates)
        what = "has no layer" if layer not in _layer_names(model) else "has no 4-D (spatial) layer"
        raise ValueError(
            f"model '{model.name}' {what} named '{layer}'; valid Grad-CAM layers are: {sizes} "
            f"(or 'auto': the deepest of these at least {MIN_MAP_SIDE}x{MIN_MAP_SIDE})"
        )
    return layer


def _layer_names(model) -> set[str]:
    """The names of the model's layers."""
    return {layer.name for layer in model.layers}


def _head(model):
    """The classifier's head: the layer named "predictions", else the last layer."""
    return model.get_layer(HEAD_LAYER) if HEAD_LAYER in _layer_names(model) else model.layers[-1]


def make_grad_model(model, layer: str):
    """A model from the classifier's input to (target layer output, input of the "predictions" head, probabilities).

    This works because build_model keeps the ResNet's layers flat in the classifier's own graph.
    """
    import keras

    layer = resolve_layer(model, layer)
    head = _head(model)
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

    head = _head(model)
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
