"""How a run's weights are updated: its optimizer (a fused Adam), learning-rate schedule and compile step."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
from keras import ops

if TYPE_CHECKING:
    from .training import RunSpec, TrainSettings


@keras.saving.register_keras_serializable(package="bloodcells")
class FusedAdam(keras.optimizers.Adam):
    """keras.optimizers.Adam whose update of each variable is TensorFlow's one fused ResourceApplyAdam kernel.

    The update is Keras' own: m += (g - m)(1 - beta_1), v += (g^2 - v)(1 - beta_2),
    w -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m / (sqrt(v) + epsilon), t = iterations + 1. Keras writes it as about
    ten graph ops per variable; one kernel per variable makes the first training step's graph faster to build and
    each CPU step read and write the weights once instead of about ten times (docs/performance.md). Other backends,
    and amsgrad, keep Keras' update, as does a distribution strategy (the workflow trains each run on one device).
    """

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        import tensorflow as tf

        if self.amsgrad or keras.backend.backend() != "tensorflow" or tf.distribute.has_strategy():
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        # The step's scalars once for all variables, instead of once per variable as Keras' update_step does.
        local_step = ops.cast(self.iterations + 1, "float32")
        scalars = dict(
            beta1_power=ops.power(ops.cast(self.beta_1, "float32"), local_step),
            beta2_power=ops.power(ops.cast(self.beta_2, "float32"), local_step),
            lr=ops.cast(learning_rate, "float32"),
            beta1=ops.cast(self.beta_1, "float32"),
            beta2=ops.cast(self.beta_2, "float32"),
            epsilon=ops.cast(self.epsilon, "float32"),
        )
        for gradient, variable in zip(grads, trainable_variables, strict=True):
            index = self._get_variable_index(variable)
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle,
                m=self._momentums[index].handle,
                v=self._velocities[index].handle,
                grad=ops.cast(gradient, variable.dtype),
                **{name: ops.cast(value, variable.dtype) for name, value in scalars.items()},
            )


def make_optimizer(name: str, learning_rate, momentum: float = 0.0) -> keras.optimizers.Optimizer:
    """Adam, RMSprop or SGD with momentum, as the poster's optimizer study compares them (rate: float or schedule)."""
    if name == "adam":
        return FusedAdam(learning_rate)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum)
    raise ValueError(f"optimizer: '{name}' is not one of ['adam', 'rmsprop', 'sgd']")


def learning_rate_schedule(learning_rate: float, settings: TrainSettings, steps_per_epoch: int):
    """The run's learning rate as the optimizer takes it: a float (constant) or a Keras schedule over the steps."""
    if settings.lr_schedule == "constant":
        return learning_rate
    if settings.lr_schedule != "cosine":
        raise ValueError(f"training.lr_schedule: '{settings.lr_schedule}' is not 'constant' or 'cosine'")
    total = settings.max_epochs * steps_per_epoch
    warmup = min(round(settings.warmup_epochs * steps_per_epoch), total - 1)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(learning_rate, total)
    return keras.optimizers.schedules.CosineDecay(0.0, total - warmup, warmup_target=learning_rate, warmup_steps=warmup)


def compile_model(model, spec: RunSpec, xla: bool, learning_rate=None) -> None:
    """Compile with the run's optimizer (at `learning_rate`, a float or schedule, else the run's), categorical
    cross-entropy, accuracy and AUC."""
    model.compile(
        optimizer=make_optimizer(
            spec.optimizer, spec.learning_rate if learning_rate is None else learning_rate, spec.momentum
        ),
        loss="categorical_crossentropy",
        metrics=["accuracy", keras.metrics.AUC(name="auc")],
        jit_compile=xla,
    )
    # Built eagerly: built lazily inside the first training step's graph, its slot variables cost far more to make.
    model.optimizer.build(model.trainable_variables)


def loss_scale(model) -> float | None:
    """The dynamic loss scale of a model compiled under mixed precision (its LossScaleOptimizer's), else None."""
    scale = getattr(getattr(model, "optimizer", None), "dynamic_scale", None)
    return None if scale is None else float(scale)
