"""Images stay paired with their labels through the training input, the augmentation and the prediction.

The images here carry their own index and label in their pixels, so any mix-up (labels shuffled apart from images,
a batch dropped or reordered, a partial last batch lost) shows as a pixel that disagrees with its label or place.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from bloodcells.inputs import epoch_dataset, eval_dataset
from bloodcells.model import RandomShearZoomFlip, predict_probabilities

N, CLASSES, BATCH = 23, 5, 4  # 23 images in batches of 4: five full batches and a partial one of 3


def labelled_images(n: int = N, n_classes: int = CLASSES, size: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Images whose red channel is their index and green channel their label (labels not sorted), each constant;
    the blue channel a left-to-right ramp, the same in every image, for the augmentation to move."""
    index = np.arange(n)
    labels = (index * 7 + 3) % n_classes
    images = np.zeros((n, size, size, 3), np.uint8)
    images[..., 0] = index[:, None, None]
    images[..., 1] = labels[:, None, None]
    images[..., 2] = np.linspace(0, 255, size).astype(np.uint8)[None, None, :]
    return images, labels


def batches_of(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image indices, label ids) of every batch."""
    return [(images.numpy()[:, 0, 0, 0], labels.numpy()) for images, labels in dataset]


def test_every_epoch_batch_keeps_each_image_with_its_label():
    images, labels = labelled_images()
    batches = batches_of(epoch_dataset(images, labels, CLASSES, BATCH, seed=3, first_epoch=0, last_epoch=3))
    assert [len(index) for index, _ in batches] == [4, 4, 4, 4, 4, 3] * 3
    for index, one_hot in batches:
        np.testing.assert_array_equal(one_hot.sum(axis=1), 1)
        np.testing.assert_array_equal(one_hot.argmax(axis=1), labels[index])  # each label travels with its image
    order = np.concatenate([index for index, _ in batches]).reshape(3, N)
    for epoch in order:
        assert sorted(epoch) == list(range(N))  # every image once per epoch
    assert len({tuple(epoch) for epoch in order}) == 3  # reshuffled every epoch
    assert list(order[0]) != list(range(N))
    # resumed after epoch 1: the batches of epochs 2 and 3 of the uninterrupted run, in the same order
    resumed = batches_of(epoch_dataset(images, labels, CLASSES, BATCH, seed=3, first_epoch=1, last_epoch=3))
    np.testing.assert_array_equal(np.concatenate([index for index, _ in resumed]), order[1:].ravel())
    other_seed = batches_of(epoch_dataset(images, labels, CLASSES, BATCH, seed=4, first_epoch=0, last_epoch=1))
    assert list(np.concatenate([index for index, _ in other_seed])) != list(order[0])


def test_validation_batches_keep_order_and_pairs():
    images, labels = labelled_images()
    batches = batches_of(eval_dataset(images, labels, CLASSES, BATCH))
    np.testing.assert_array_equal(np.concatenate([index for index, _ in batches]), np.arange(N))
    np.testing.assert_array_equal(np.concatenate([one_hot.argmax(1) for _, one_hot in batches]), labels)


def test_augmentation_transforms_each_image_by_itself():
    images, _ = labelled_images(size=32)
    layer = RandomShearZoomFlip(0.2, (0.8, 1.2), True, seed=5)
    augmented = np.asarray(layer(images, training=True))
    assert not np.allclose(augmented[..., 2], images[..., 2])  # the ramps were sheared, zoomed or flipped
    # a constant channel stays constant under shear, zoom and flip: every pixel keeps its own image's index and label
    np.testing.assert_allclose(augmented[..., :2], images[..., :2].astype(np.float32), atol=0.5)


def mean_colour_model() -> keras.Model:
    """A model whose "probabilities" are each image's mean colour: its output says which image it saw."""
    inputs = keras.Input((4, 4, 3))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))


def test_prediction_keeps_order_and_the_partial_last_batch():
    images, _ = labelled_images()
    model = mean_colour_model()
    messages = []
    outputs = predict_probabilities(model, images, BATCH, log=messages.append)
    assert outputs.shape == (N, 3) and outputs.dtype == np.float32
    np.testing.assert_array_equal(outputs[:, 0], np.arange(N))  # every image, the last partial batch too, in order
    np.testing.assert_array_equal(outputs, images.mean(axis=(1, 2)))
    assert messages[-1] == f"predicted {N} images in batches of {BATCH}"


@pytest.mark.parametrize("batch_size", [1, N, N + 9])
def test_prediction_in_one_batch_or_one_image_at_a_time_is_the_same(batch_size):
    images, _ = labelled_images()
    model = mean_colour_model()
    outputs = predict_probabilities(model, images, batch_size, log=lambda message: None)
    np.testing.assert_array_equal(outputs, images.mean(axis=(1, 2)))
