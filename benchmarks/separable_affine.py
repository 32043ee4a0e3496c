"""Prototype: RandomShearZoomFlip resampled by two 1-D linear passes built from gathers.

Why: the layer in bloodcells.model resamples with keras.ops.image.affine_transform, which on
the TensorFlow backend is the op ImageProjectiveTransformV3. That op (1) has no XLA kernel, so
a model that holds the layer fails to train with jit_compile=True ("Detected unsupported
operations ... ImageProjectiveTransformV3"), and (2) is slow on a CPU (about 110 images/s at
224 px on the 2-core development machine, below the legacy ImageDataGenerator).

The map shear @ zoom @ flip is upper triangular: the input row y_in = m11 * y + b2 depends on
the output row y alone. Bilinear sampling is separable, so the exact bilinear result is a
vertical pass (blend two whole input rows per output row) followed by a horizontal pass
(blend two pixels of that row, x_in = m00 * x + m01 * y + a2). Both passes are gathers plus
multiply-adds, which XLA compiles and fuses on any device. Clamping the indices reproduces
fill_mode="nearest" exactly. Results equal ImageProjectiveTransformV3's to float rounding.

The class below overrides only `call`; moving `resample_shear_zoom_flip` into model.py and
calling it from RandomShearZoomFlip.call is the proposed change.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import keras  # noqa: E402
from keras import ops  # noqa: E402

from bloodcells.model import RandomShearZoomFlip, affine_transform_rows  # noqa: E402


def resample_shear_zoom_flip(images, transform):
    """Bilinear, nearest-fill resampling of images (B, H, W, C) by rows [a0 a1 a2 b0 b1 b2 0 0] with b0 = 0."""
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
    pixel_base = (ops.arange(batch * height, dtype="int32") * width)
    pixel_base = ops.reshape(pixel_base, (batch, height, 1))
    pixels = ops.reshape(blended, (-1, channels))  # (B * H * W, C)
    left = ops.take(pixels, ops.reshape(pixel_base + x0, (-1,)), axis=0)
    right = ops.take(pixels, ops.reshape(pixel_base + x1, (-1,)), axis=0)
    out = left + ops.reshape(wx, (-1, 1)) * (right - left)
    return ops.reshape(out, (batch, height, width, channels))


@keras.saving.register_keras_serializable(package="bloodcells_prototype")
class SeparableShearZoomFlip(RandomShearZoomFlip):
    """RandomShearZoomFlip with the same random draws, resampled by resample_shear_zoom_flip (XLA-compatible)."""

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
