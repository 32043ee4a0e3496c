"""The tf.data input of training: epochs shuffled by (seed, epoch), unshuffled validation batches, class weights."""

from __future__ import annotations

import numpy as np


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Inverse-frequency weights n / (k * count), as scikit-learn's 'balanced' mode computes them."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return {label: float(weight) for label, weight in enumerate(weights)}


def epoch_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    batch_size: int,
    seed: int,
    first_epoch: int,
    last_epoch: int,
):
    """Batches of epochs first_epoch..last_epoch-1, shuffled by (seed, epoch) so a resumed run sees the same order."""
    import tensorflow as tf

    with tf.device("/CPU:0"):
        # A variable is captured by reference; a constant this large would be copied into the graph.
        image_store = tf.Variable(images, trainable=False)
        label_store = tf.constant(labels, tf.int32)
    n = len(labels)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    def gather(indices):
        return tf.gather(image_store, indices), tf.one_hot(tf.gather(label_store, indices), n_classes)

    epochs = tf.data.Dataset.range(first_epoch, last_epoch)
    return without_autotune(epochs.flat_map(one_epoch).map(gather, num_parallel_calls=2).prefetch(2))


def without_autotune(dataset):
    """The dataset with tf.data's autotuning off: a gather from memory needs no tuning, and deleting the iterator
    waits for the tuning thread, which idles the CPU after the last epoch (docs/performance.md)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def eval_dataset(images: np.ndarray, labels: np.ndarray, n_classes: int, batch_size: int):
    """Unshuffled batches for validation."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, tf.one_hot(labels, n_classes)))
    return without_autotune(ds.batch(batch_size).prefetch(2))
