"""The poster's ResNet classifiers: their layers, and how they are built, initialised, loaded and run.

Built flat, so that every inner layer stays reachable (Grad-CAM).
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from . import names

ARCHITECTURES = {arch: getattr(keras.applications, spec.keras_class) for arch, spec in names.ARCHITECTURES.items()}
# Caffe-mode ImageNet means in BGR order, as keras.applications.resnet.preprocess_input uses them.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Augmentation:
    """Random shear, zoom and horizontal flip, with the shear unit spelled out."""

    shear: float = 0.2
    shear_unit: str = "radians"
    zoom: tuple[float, float] = (0.8, 1.2)
    horizontal_flip: bool = True

    @property
    def shear_radians(self) -> float:
        """The shear range in radians, whatever unit the config used."""
        if self.shear_unit == "radians":
            return self.shear
        if self.shear_unit == "degrees":
            return math.radians(self.shear)
        raise ValueError(f"augmentation.shear_unit: '{self.shear_unit}' is not 'radians' or 'degrees'")


@keras.saving.register_keras_serializable(package="bloodcells")
class RandomShearZoomFlip(keras.layers.Layer):
    """Shear, zoom and flip composed into one affine map, so each pixel is resampled once."""

    def __init__(
        self,
        shear_radians: float = 0.2,
        zoom: tuple[float, float] = (0.8, 1.2),
        horizontal_flip: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")  # geometry stays in float32 under mixed precision
        super().__init__(**kwargs)
        self.shear_radians = float(shear_radians)
        self.zoom = (float(zoom[0]), float(zoom[1]))
        self.horizontal_flip = bool(horizontal_flip)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        images = ops.cast(images, "float32")
        if not training:
            return images
        batch = ops.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        shear = keras.random.uniform((batch,), -self.shear_radians, self.shear_radians, seed=self.seed_generator)
        zoom_x = keras.random.uniform((batch,), self.zoom[0], self.zoom[1], seed=self.seed_generator)
        zoom_y = keras.random.uniform((batch,), self.zoom[0], self.zoom[1], seed=self.seed_generator)
        if self.horizontal_flip:
            coin = keras.random.uniform((batch,), 0.0, 1.0, seed=self.seed_generator)
            flip = ops.where(coin < 0.5, -1.0, 1.0)
        else:
            flip = ops.ones((batch,))
        transform = affine_transform_rows(shear, zoom_x, zoom_y, flip, height, width)
        return resample_shear_zoom_flip(images, transform)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            shear_radians=self.shear_radians, zoom=list(self.zoom), horizontal_flip=self.horizontal_flip, seed=self.seed
        )
        return config


def affine_transform_rows(shear, zoom_x, zoom_y, flip, height: int, width: int):
    """Rows [a0 a1 a2 b0 b1 b2 0 0] mapping output to input pixels: shear @ zoom @ flip about the centre.

    The shear and zoom matrices are those of Keras' legacy ImageDataGenerator.
    """
    m00 = zoom_x * flip
    m01 = -ops.sin(shear) * zoom_y
    m10 = ops.zeros_like(shear)
    m11 = ops.cos(shear) * zoom_y
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    a2 = cx - (m00 * cx + m01 * cy)
    b2 = cy - (m10 * cx + m11 * cy)
    zeros = ops.zeros_like(shear)
    return ops.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=1)


def resample_shear_zoom_flip(images, transform):
    """Bilinear, nearest-fill resampling of images (B, H, W, C) by rows [a0 a1 a2 b0 b1 b2 0 0] with b0 = 0.

    Shear @ zoom @ flip is upper triangular: an output row reads from one input row position only, so
    exact bilinear sampling splits into a vertical and a horizontal pass of plain gathers. Unlike
    keras.ops.image.affine_transform (TensorFlow's ImageProjectiveTransformV3) these compile with XLA,
    and they are faster on a CPU. Clamped indices reproduce fill_mode="nearest".
    """
    batch = ops.shape(images)[0]
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    a0, a1, a2 = transform[:, 0:1], transform[:, 1:2], transform[:, 2:3]
    b1, b2 = transform[:, 4:5], transform[:, 5:6]
    ys = ops.arange(height, dtype="float32")[None, :]
    xs = ops.arange(width, dtype="float32")[None, None, :]

    # Vertical pass: output row y reads input rows floor(y_in) and floor(y_in) + 1.
    y_in = ops.clip(b1 * ys + b2, 0.0, height - 1.0)  # (B, H)
    y0 = ops.floor(y_in)
    wy = (y_in - y0)[:, :, None, None]
    y0 = ops.cast(y0, "int32")
    y1 = ops.minimum(y0 + 1, height - 1)
    row_base = (ops.arange(batch, dtype="int32") * height)[:, None]
    rows = ops.reshape(images, (-1, width, channels))  # (B * H, W, C)
    top = ops.take(rows, ops.reshape(row_base + y0, (-1,)), axis=0)
    bottom = ops.take(rows, ops.reshape(row_base + y1, (-1,)), axis=0)
    blended = ops.reshape(top, (batch, height, width, channels))
    blended = blended + wy * (ops.reshape(bottom, (batch, height, width, channels)) - blended)

    # Horizontal pass: x_in = a0 * x + a1 * y + a2 along each output row.
    x_in = ops.clip(a0[:, :, None] * xs + (a1 * ys + a2)[:, :, None], 0.0, width - 1.0)  # (B, H, W)
    x0 = ops.floor(x_in)
    wx = (x_in - x0)[..., None]
    x0 = ops.cast(x0, "int32")
    x1 = ops.minimum(x0 + 1, width - 1)
    pixel_base = ops.arange(batch * height, dtype="int32") * width
    pixel_base = ops.reshape(pixel_base, (batch, height, 1))
    pixels = ops.reshape(blended, (-1, channels))  # (B * H * W, C)
    left = ops.take(pixels, ops.reshape(pixel_base + x0, (-1,)), axis=0)
    right = ops.take(pixels, ops.reshape(pixel_base + x1, (-1,)), axis=0)
    out = left + ops.reshape(wx, (-1, 1)) * (right - left)
    return ops.reshape(out, (batch, height, width, channels))


@keras.saving.register_keras_serializable(package="bloodcells")
class CaffePreprocess(keras.layers.Layer):
    """keras.applications.resnet.preprocess_input (caffe mode) as a layer: RGB to BGR, minus ImageNet means."""

    def call(self, images):
        bgr = ops.flip(ops.cast(images, "float32"), axis=-1)
        return ops.cast(bgr - ops.convert_to_tensor(CAFFE_BGR_MEAN, "float32"), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


def add_bottleneck_mlp(layer: keras.layers.Layer, channels: int, ratio: int, names: tuple[str, str]) -> tuple:
    """Weights of the C -> C/ratio -> C channel MLP that SE and CBAM share: (kernel1, bias1, kernel2, bias2)."""
    hidden = max(1, channels // ratio)
    return (
        layer.add_weight(shape=(channels, hidden), initializer="glorot_uniform", name=f"{names[0]}_kernel"),
        layer.add_weight(shape=(hidden,), initializer="zeros", name=f"{names[0]}_bias"),
        layer.add_weight(shape=(hidden, channels), initializer="glorot_uniform", name=f"{names[1]}_kernel"),
        layer.add_weight(shape=(channels,), initializer="zeros", name=f"{names[1]}_bias"),
    )


def bottleneck_mlp(pooled, weights: tuple):
    """relu(pooled W1 + b1) W2 + b2: the channel MLP of SE and CBAM, before its sigmoid."""
    kernel1, bias1, kernel2, bias2 = weights
    return ops.matmul(ops.relu(ops.matmul(pooled, kernel1) + bias1), kernel2) + bias2


@keras.saving.register_keras_serializable(package="bloodcells")
class SqueezeExcitation(keras.layers.Layer):
    """Squeeze-and-excitation (Hu, Shen & Sun, CVPR 2018): channels rescaled by a gate from their global means.

    gate = sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2), output = x * gate, with a bottleneck of C / ratio units.
    """

    def __init__(self, ratio: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.ratio = int(ratio)

    def build(self, input_shape):
        self.mlp = add_bottleneck_mlp(self, int(input_shape[-1]), self.ratio, ("squeeze", "excite"))

    def call(self, x):
        gate = ops.sigmoid(bottleneck_mlp(ops.mean(x, axis=(1, 2)), self.mlp))
        return x * gate[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return super().get_config() | {"ratio": self.ratio}


@keras.saving.register_keras_serializable(package="bloodcells")
class CBAM(keras.layers.Layer):
    """Convolutional Block Attention Module (Woo, Park, Lee & Kweon, ECCV 2018): channel, then spatial attention.

    Channel: gate = sigmoid(MLP(avgpool_hw(x)) + MLP(maxpool_hw(x))), one shared MLP with C / ratio hidden units.
    Spatial: gate = sigmoid(conv_k x k([mean_c(x'), max_c(x')])), k = 7 as in the paper, 'same' padding.
    """

    def __init__(self, ratio: int = 16, kernel_size: int = 7, **kwargs):
        super().__init__(**kwargs)
        self.ratio = int(ratio)
        self.kernel_size = int(kernel_size)

    def build(self, input_shape):
        self.mlp = add_bottleneck_mlp(self, int(input_shape[-1]), self.ratio, ("mlp1", "mlp2"))
        k = self.kernel_size
        self.spatial_kernel = self.add_weight(shape=(k, k, 2, 1), initializer="glorot_uniform", name="spatial_kernel")
        self.spatial_bias = self.add_weight(shape=(1,), initializer="zeros", name="spatial_bias")

    def call(self, x):
        channel_gate = ops.sigmoid(
            bottleneck_mlp(ops.mean(x, axis=(1, 2)), self.mlp) + bottleneck_mlp(ops.max(x, axis=(1, 2)), self.mlp)
        )
        x = x * channel_gate[:, None, None, :]
        pooled = ops.concatenate([ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1)
        spatial_gate = ops.sigmoid(ops.conv(pooled, self.spatial_kernel, padding="same") + self.spatial_bias)
        return x * spatial_gate

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return super().get_config() | {"ratio": self.ratio, "kernel_size": self.kernel_size}


ATTENTION_LAYERS = {"se": SqueezeExcitation, "cbam": CBAM}


def build_model(
    arch: str,
    size: int,
    n_classes: int,
    *,
    weights: str | None = None,
    dropout: float = 0.3,
    augmentation: Augmentation | None = None,
    seed: int = 0,
    attention: str = "none",
) -> keras.Model:
    """ResNet (include_top=False, all layers trainable) + [attention] + GAP + Dropout + Dense softmax, on uint8 images.

    An attention layer (`se` or `cbam`, named "attention") acts on the last block's output conv5_block3_out,
    which stays a layer of the model, so Grad-CAM can still target it.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch: '{arch}' is not one of {sorted(ARCHITECTURES)}")
    if attention != "none" and attention not in ATTENTION_LAYERS:
        raise ValueError(f"attention: '{attention}' is not one of {['none', *sorted(ATTENTION_LAYERS)]}")
    inputs = keras.Input((size, size, 3), dtype="uint8", name="image")
    x = inputs
    if augmentation is not None:
        x = RandomShearZoomFlip(
            augmentation.shear_radians, augmentation.zoom, augmentation.horizontal_flip, seed=seed, name="augment"
        )(x)
    x = CaffePreprocess(name="preprocess")(x)
    # input_tensor= keeps the ResNet's layers in this model's own graph instead of nesting it as one layer.
    base = ARCHITECTURES[arch](include_top=False, weights=weights, input_tensor=x)
    base.trainable = True
    x = base.output
    if attention != "none":
        x = ATTENTION_LAYERS[attention](name="attention")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    # A float32 softmax keeps probabilities and the loss stable under mixed precision.
    outputs = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"{arch}_{size}px")


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> None:
    """Set the moving-average momentum of every BatchNormalization layer.

    Trained from scratch on a few hundred steps, Keras' 0.99 leaves the moving statistics far
    from the batch statistics, so validation accuracy lags training accuracy by epochs.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


def zero_init_residual_branches(model: keras.Model) -> int:
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


def inference_model(model: keras.Model) -> keras.Model:
    """The same layers and weights as a model of their own, without the optimizer: what a run's model.keras holds."""
    return keras.Model(model.inputs, model.outputs, name=model.name)


def predict_probabilities(model: keras.Model, images: np.ndarray, batch_size: int, log=print) -> np.ndarray:
    """The model's class probabilities of uint8 images, batch by batch in inference mode, as float32.

    Eager on purpose: Keras' predict() traces the ResNet into a graph first, which on a CPU costs more than it saves
    for a test split (docs/performance.md).
    """
    as_inputs = (lambda batch: [batch]) if isinstance(model.input, list) else (lambda batch: batch)  # loaded: a list
    batches = []
    for start in range(0, len(images), batch_size):
        outputs = model(as_inputs(images[start : start + batch_size]), training=False)
        batches.append(np.asarray(outputs, dtype=np.float32))
        if len(batches) % 10 == 0:
            log(f"predicted {start + len(batches[-1])} of {len(images)} images")
    log(f"predicted {len(images)} images in batches of {batch_size}")
    return np.concatenate(batches) if batches else np.zeros((0, model.output_shape[-1]), np.float32)


def load_model(path) -> keras.Model:
    """Load a saved run model in Keras' safe mode (no arbitrary code), with this module's layers registered."""
    # Keras reports a truncated .keras file as "File not found"; say what is wrong with it.
    if os.path.isfile(path) and not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a readable .keras model file (not a zip archive: truncated or damaged)")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except (zipfile.BadZipFile, EOFError) as error:  # damage inside the archive, e.g. a bad CRC
        raise ValueError(f"{path}: not a readable .keras model file ({type(error).__name__}: {error})") from error
    except ValueError as error:  # e.g. safe mode refusing a layer that carries code; Keras names no file
        raise ValueError(f"{path}: {error}") from error
