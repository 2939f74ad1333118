"""Squeeze-and-Excitation (Hu, Shen, Sun, CVPR 2018): the channel-attention baseline."""

from __future__ import annotations

import keras
from keras import ops

from keras_coordatt.layers._common import (
    channel_count,
    check_positive_int,
    hidden_width,
    resolve_data_format,
)
from keras_coordatt.layers.coord_attention import conv_initializer


@keras.saving.register_keras_serializable(package="keras_coordatt")
class SqueezeExcite(keras.layers.Layer):
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

    def __init__(
        self,
        reduction: int = 16,
        min_channels: int = 8,
        data_format: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.reduction = check_positive_int("reduction", reduction)
        self.min_channels = check_positive_int("min_channels", min_channels)
        self.data_format = resolve_data_format(data_format)
        self._spatial_axes = (1, 2) if self.data_format == "channels_last" else (2, 3)

    def build(self, input_shape):
        channels = channel_count("SqueezeExcite", input_shape, self.data_format)
        self.channels = channels
        self.hidden = hidden_width(channels, self.reduction, self.min_channels)
        pooled = list(input_shape)
        for axis in self._spatial_axes:
            pooled[axis] = 1
        self.conv_reduce = keras.layers.Conv2D(
            self.hidden, 1, data_format=self.data_format, kernel_initializer=conv_initializer(),
            name="conv_reduce", dtype=self.dtype_policy,
        )
        self.conv_reduce.build(tuple(pooled))
        reduced = list(pooled)
        reduced[-1 if self.data_format == "channels_last" else 1] = self.hidden
        self.conv_expand = keras.layers.Conv2D(
            channels, 1, data_format=self.data_format, kernel_initializer=conv_initializer(),
            name="conv_expand", dtype=self.dtype_policy,
        )
        self.conv_expand.build(tuple(reduced))
        self.built = True

    def gates(self, inputs):
        """Returns the channel gate ``s``, shape ``(N, 1, 1, C)`` (channels_last)."""
        squeezed = ops.mean(inputs, axis=self._spatial_axes, keepdims=True)
        return ops.sigmoid(self.conv_expand(ops.relu(self.conv_reduce(squeezed))))

    def call(self, inputs):
        return inputs * self.gates(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "reduction": self.reduction,
                "min_channels": self.min_channels,
                "data_format": self.data_format,
            }
        )
        return config
