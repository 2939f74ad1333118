"""CBAM (Woo, Park, Lee, Kweon, ECCV 2018): the channel + spatial attention baseline."""

from __future__ import annotations

import keras
from keras import ops

from keras_coordatt.layers._base import AttentionLayer
from keras_coordatt.layers.specs import CBAM as CBAM_SPEC


@keras.saving.register_keras_serializable(package="keras_coordatt")
class CBAM(AttentionLayer):
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

    SPEC = CBAM_SPEC

    def __init__(
        self,
        reduction: int = 16,
        min_channels: int = 8,
        spatial_kernel_size: int = 7,
        data_format: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._set_arguments(
            {"reduction": reduction, "min_channels": min_channels,
             "spatial_kernel_size": spatial_kernel_size, "data_format": data_format}
        )
        self._spatial_axes = (1, 2) if self.data_format == "channels_last" else (2, 3)

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
