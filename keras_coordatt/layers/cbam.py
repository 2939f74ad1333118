"""CBAM (Woo, Park, Lee, Kweon, ECCV 2018): the channel + spatial attention baseline."""

from __future__ import annotations

import keras
from keras import ops

from keras_coordatt.layers._common import (
    channel_count,
    check_odd_kernel_size,
    check_positive_int,
    hidden_width,
    resolve_data_format,
)
from keras_coordatt.layers.coord_attention import conv_initializer


@keras.saving.register_keras_serializable(package="keras_coordatt")
class CBAM(keras.layers.Layer):
    """Convolutional Block Attention Module.

    Channel attention: ``m_c = sigmoid(mlp(mean_HW(x)) + mlp(max_HW(x)))``, ``(N, 1, 1, C)``,
    where ``mlp`` is a shared 1x1 conv C -> hidden (bias), ReLU, 1x1 conv hidden -> C (bias);
    ``x' = x * m_c``. Spatial attention, as the CBAM authors' code: the channel-wise max and
    mean of ``x'`` stacked in that order, ``(N, H, W, 2)``, a ``k x k`` conv to one channel
    (no bias, 'same' padding) and BatchNorm (eps 1e-5), then ``m_s = sigmoid(.)``,
    ``(N, H, W, 1)``. Output ``x' * m_s``, with the shape of ``x``.

    Args:
        reduction: channel reduction ratio of the shared MLP (CBAM paper: 16).
        min_channels: lower bound of the MLP's hidden width.
        spatial_kernel_size: kernel size of the spatial-attention conv (CBAM paper: 7).
        data_format: ``"channels_last"`` or ``"channels_first"``; defaults to
            ``keras.config.image_data_format()``.
    """

    def __init__(
        self,
        reduction: int = 16,
        min_channels: int = 8,
        spatial_kernel_size: int = 7,
        data_format: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.reduction = check_positive_int("reduction", reduction)
        self.min_channels = check_positive_int("min_channels", min_channels)
        self.spatial_kernel_size = check_odd_kernel_size("spatial_kernel_size", spatial_kernel_size)
        self.data_format = resolve_data_format(data_format)
        if self.data_format == "channels_last":
            self._spatial_axes, self._channel_axis = (1, 2), 3
        else:
            self._spatial_axes, self._channel_axis = (2, 3), 1

    def build(self, input_shape):
        channels = channel_count("CBAM", input_shape, self.data_format)
        self.channels = channels
        self.hidden = hidden_width(channels, self.reduction, self.min_channels)
        pooled = list(input_shape)
        for axis in self._spatial_axes:
            pooled[axis] = 1
        reduced = list(pooled)
        reduced[self._channel_axis] = self.hidden
        self.mlp_reduce = keras.layers.Conv2D(
            self.hidden, 1, data_format=self.data_format, kernel_initializer=conv_initializer(),
            name="mlp_reduce", dtype=self.dtype_policy,
        )
        self.mlp_reduce.build(tuple(pooled))
        self.mlp_expand = keras.layers.Conv2D(
            channels, 1, data_format=self.data_format, kernel_initializer=conv_initializer(),
            name="mlp_expand", dtype=self.dtype_policy,
        )
        self.mlp_expand.build(tuple(reduced))
        stacked = list(input_shape)
        stacked[self._channel_axis] = 2
        self.spatial_conv = keras.layers.Conv2D(
            1, self.spatial_kernel_size, padding="same", use_bias=False,
            data_format=self.data_format, kernel_initializer=conv_initializer(),
            name="spatial_conv", dtype=self.dtype_policy,
        )
        self.spatial_conv.build(tuple(stacked))
        single = list(input_shape)
        single[self._channel_axis] = 1
        self.spatial_bn = keras.layers.BatchNormalization(
            axis=self._channel_axis, epsilon=1e-5, momentum=0.99, name="spatial_bn",
            dtype=self.dtype_policy,
        )
        self.spatial_bn.build(tuple(single))
        self.built = True

    def _mlp(self, pooled):
        return self.mlp_expand(ops.relu(self.mlp_reduce(pooled)))

    def gates(self, inputs, training=None):
        """Returns ``(m_c, m_s)``: ``(N, 1, 1, C)`` and ``(N, H, W, 1)`` (channels_last)."""
        avg = ops.mean(inputs, axis=self._spatial_axes, keepdims=True)
        peak = ops.max(inputs, axis=self._spatial_axes, keepdims=True)
        channel_gate = ops.sigmoid(self._mlp(avg) + self._mlp(peak))
        refined = inputs * channel_gate
        stacked = ops.concatenate(
            [
                ops.max(refined, axis=self._channel_axis, keepdims=True),
                ops.mean(refined, axis=self._channel_axis, keepdims=True),
            ],
            axis=self._channel_axis,
        )
        spatial = self.spatial_bn(self.spatial_conv(stacked), training=training)
        return channel_gate, ops.sigmoid(spatial)

    def call(self, inputs, training=None):
        channel_gate, spatial_gate = self.gates(inputs, training=training)
        return inputs * channel_gate * spatial_gate

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "reduction": self.reduction,
                "min_channels": self.min_channels,
                "spatial_kernel_size": self.spatial_kernel_size,
                "data_format": self.data_format,
            }
        )
        return config
