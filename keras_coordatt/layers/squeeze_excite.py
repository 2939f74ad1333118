"""Squeeze-and-Excitation (Hu, Shen, Sun, CVPR 2018): the channel-attention baseline."""

from __future__ import annotations

import keras
from keras import ops

from keras_coordatt.layers._base import AttentionLayer
from keras_coordatt.layers.specs import SQUEEZE_EXCITE


@keras.saving.register_keras_serializable(package="keras_coordatt")
class SqueezeExcite(AttentionLayer):
    """Squeeze-and-Excitation block.

    ``s = sigmoid(conv_expand(relu(conv_reduce(mean_HW(x)))))`` with shape ``(N, 1, 1, C)``
    (channels_last), output ``x * s`` with the shape of ``x``. The two 1x1 convs (with bias) are
    the FC layers of the SE paper; the hidden width is ``max(min_channels, C // reduction)``.

    Args:
        reduction: channel reduction ratio (SE paper: 16).
        min_channels: lower bound of the hidden width.
        data_format: ``"channels_last"`` or ``"channels_first"``; defaults to
            ``keras.config.image_data_format()``.
    """

    SPEC = SQUEEZE_EXCITE

    def __init__(
        self,
        reduction: int = 16,
        min_channels: int = 8,
        data_format: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._set_arguments(
            {"reduction": reduction, "min_channels": min_channels, "data_format": data_format}
        )
        self._spatial_axes = (1, 2) if self.data_format == "channels_last" else (2, 3)

    def gates(self, inputs):
        """Returns the channel gate ``s``, shape ``(N, 1, 1, C)`` (channels_last)."""
        squeezed = ops.mean(inputs, axis=self._spatial_axes, keepdims=True)
        return ops.sigmoid(self.conv_expand(ops.relu(self.conv_reduce(squeezed))))

    def call(self, inputs):
        return inputs * self.gates(inputs)
