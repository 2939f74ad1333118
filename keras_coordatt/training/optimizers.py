"""The paper's optimizer and schedule as Keras objects (serializable, any backend).

* :class:`CoupledSGD`: SGD with momentum whose weight decay is added to the gradient before the
  momentum, as PyTorch's ``torch.optim.SGD(weight_decay=...)`` the paper trained with. Keras'
  own ``SGD(weight_decay=...)`` decays the weights apart from the gradient ("decoupled"): with
  momentum 0.9 the same number decays about 10x less.
* :func:`warmup_cosine`: linear warm-up, then cosine decay to zero
  (``keras.optimizers.schedules.CosineDecay`` with ``warmup_steps``).
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_coordatt")
class CoupledSGD(keras.optimizers.SGD):
    """``keras.optimizers.SGD`` plus an L2 term ``l2 * w`` added to each gradient.

    Update per variable ``w`` with gradient ``g`` (PyTorch's SGD): ``g' = g + l2 * w``,
    ``v = momentum * v - lr * g'`` (Keras' momentum form, the same trajectory as PyTorch's
    ``v = momentum * v + g'``, ``w -= lr * v`` at a constant rate), ``w += v``. Every
    variable is decayed (BatchNorm and biases included, as the paper's code). All other
    arguments (``use_ema``, ``nesterov``, ...) are ``keras.optimizers.SGD``'s.
    """

    def __init__(self, learning_rate=0.01, momentum: float = 0.0, nesterov: bool = False,
                 l2: float = 0.0, name: str = "coupled_sgd", **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError(
                "CoupledSGD takes its decay as `l2` (added to the gradient); `weight_decay` "
                "(Keras' decoupled decay) would decay the weights twice."
            )
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                         name=name, **kwargs)
        if l2 < 0:
            raise ValueError(f"`l2` must be >= 0, got {l2}.")
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        if self.l2:
            gradient = ops.add(gradient, ops.multiply(ops.cast(self.l2, variable.dtype),
                                                      variable))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        return {**super().get_config(), "l2": self.l2}


def warmup_cosine(
    learning_rate: float, total_steps: int, warmup_steps: int = 0
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Rate ``learning_rate * step / warmup_steps`` during the warm-up, then
    ``learning_rate * (1 + cos(pi * t)) / 2`` with ``t`` going 0 -> 1 over the remaining
    ``total_steps - warmup_steps`` steps (0 at the end)."""
    if total_steps < 1 or not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"Need total_steps >= 1 and 0 <= warmup_steps < total_steps, got "
            f"total_steps={total_steps}, warmup_steps={warmup_steps}: use fewer warm-up epochs."
        )
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
    return keras.optimizers.schedules.CosineDecay(
        0.0, total_steps - warmup_steps, warmup_target=learning_rate, warmup_steps=warmup_steps
    )
