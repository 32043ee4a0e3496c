"""FusedAdam inside Keras' LossScaleOptimizer under mixed_float16, as a GPU trains every Adam run (issue 22).

FusedAdam overrides Keras' private `_backend_update_step` with TensorFlow's fused ResourceApplyAdam kernel. Under
mixed precision Keras wraps it in a LossScaleOptimizer, which calls it inside a conditional that skips the step
(and halves the loss scale) when a gradient is inf or nan. Here it trains a small float16 model next to Keras' own
Adam, with and without XLA, through steps that overflow float16.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from bloodcells.optimizers import FusedAdam

INITIAL_SCALE = 2.0**15  # Keras' LossScaleOptimizer starts here

OVERFLOW_STEPS = (3, 4, 11, 20)  # an input beyond float16's 65504: inf activations, non-finite gradients


def loss_scaled_training(optimizer_class, jit_compile: bool, steps: int = 30) -> dict:
    """A small mixed_float16 model trained `steps` batches by `optimizer_class` inside a LossScaleOptimizer (growth
    every 5 finite steps); the weights, and the loss scale and applied steps after each batch."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((16,)),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(4, activation="softmax", dtype="float32"),
            ]
        )
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer_class(1e-2), dynamic_growth_steps=5)
        model.compile(optimizer=optimizer, loss="categorical_crossentropy", jit_compile=jit_compile)
        rng = np.random.default_rng(1)
        scales, applied = [], []
        for step in range(steps):
            images = rng.normal(size=(8, 16)).astype("float32")
            if step in OVERFLOW_STEPS:
                images[0, 0] = 1e6
            model.train_on_batch(images, np.eye(4)[rng.integers(0, 4, 8)])
            scales.append(float(optimizer.dynamic_scale))
            applied.append(int(optimizer.iterations))
        return {"weights": [np.asarray(weight) for weight in model.weights], "scales": scales, "applied": applied}
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_fused_adam_under_loss_scaling_follows_keras_adam_including_skipped_steps(jit_compile, monkeypatch):
    fused_kernels = []
    kernel = tf.raw_ops.ResourceApplyAdam
    monkeypatch.setattr(tf.raw_ops, "ResourceApplyAdam", lambda **kw: fused_kernels.append(1) or kernel(**kw))
    ours = loss_scaled_training(FusedAdam, jit_compile)
    # One kernel per variable each time the step is traced: the fused update ran, not Keras' own.
    assert fused_kernels and len(fused_kernels) % 4 == 0
    keras_adam = loss_scaled_training(keras.optimizers.Adam, jit_compile)
    # The same steps skipped (scale halved, no update) and the same scale grown after 5 finite steps.
    assert ours["scales"] == keras_adam["scales"] and ours["applied"] == keras_adam["applied"]
    assert ours["applied"][-1] == 30 - len(OVERFLOW_STEPS) and min(ours["scales"]) < INITIAL_SCALE
    assert max(ours["scales"][5:]) > min(ours["scales"])  # it grew again after falling
    difference = max(np.abs(a - b).max() for a, b in zip(ours["weights"], keras_adam["weights"], strict=True))
    start = loss_scaled_training(FusedAdam, jit_compile, steps=0)["weights"]
    moved = max(np.abs(a - b).max() for a, b in zip(ours["weights"], start, strict=True))
    assert moved > 0.1 and difference < 1e-4
    print(f"{jit_compile=}: FusedAdam vs Adam under loss scaling, largest difference {difference:.2e}")


def test_mixed_precision_wraps_the_runs_fused_adam_in_a_loss_scale_optimizer():
    from bloodcells.optimizers import compile_model, loss_scale
    from bloodcells.training import RunSpec

    def compiled(policy: str):
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax", dtype="float32")])
            compile_model(model, RunSpec(optimizer="adam"), xla=False)
            return model
        finally:
            keras.mixed_precision.set_global_policy("float32")

    mixed = compiled("mixed_float16")
    assert isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer)
    assert type(mixed.optimizer.inner_optimizer) is FusedAdam and loss_scale(mixed) == INITIAL_SCALE
    full = compiled("float32")
    assert type(full.optimizer) is FusedAdam and loss_scale(full) is None
