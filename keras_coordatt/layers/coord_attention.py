"""Coordinate Attention (Hou, Zhou, Feng, CVPR 2021), exactly as the paper's code computes it."""

from __future__ import annotations

import keras
from keras import ops

from keras_coordatt.layers._common import (
    channel_count,
    check_directions,
    check_positive_int,
    hidden_width,
    resolve_data_format,
)


def conv_initializer() -> keras.initializers.Initializer:
    """He normal over fan-out, the initialisation of the original PyTorch code."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


@keras.saving.register_keras_serializable(package="keras_coordatt")
class CoordAttention(keras.layers.Layer):
    """Coordinate Attention block.

    For an input ``x`` of shape ``(N, H, W, C)`` (or ``(N, C, H, W)`` with
    ``data_format="channels_first"``) it computes, as ``houqb/CoordAttention``'s ``CoordAtt``:

    1. ``x_h = mean_W(x)`` with shape ``(N, H, 1, C)`` and ``x_w = mean_H(x)``, ``(N, 1, W, C)``;
    2. a shared 1x1 conv ``conv1`` (C -> mip, with bias), ``bn1`` (BatchNorm, eps 1e-5,
       momentum 0.9) and hard-swish, applied to the H and W descriptors together (in training,
       BatchNorm statistics are taken over the ``N x (H + W)`` concatenated positions);
    3. gates ``a_h = sigmoid(conv_h(.))`` of shape ``(N, H, 1, C)`` and
       ``a_w = sigmoid(conv_w(.))`` of shape ``(N, 1, W, C)``;
    4. output ``x * a_w * a_h``, same shape as ``x``.

    ``mip = max(min_channels, C // reduction)``.

    Args:
        reduction: channel reduction ratio r (paper: 32).
        min_channels: lower bound of the bottleneck width (paper: 8).
        directions: ``"hw"`` (the paper's block), or ``"h"`` / ``"w"`` for the ablation that
            keeps one direction only.
        data_format: ``"channels_last"`` or ``"channels_first"``; defaults to
            ``keras.config.image_data_format()``.
    """

    def __init__(
        self,
        reduction: int = 32,
        min_channels: int = 8,
        directions: str = "hw",
        data_format: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.reduction = check_positive_int("reduction", reduction)
        self.min_channels = check_positive_int("min_channels", min_channels)
        self.directions = check_directions(directions)
        self.data_format = resolve_data_format(data_format)
        if self.data_format == "channels_last":
            self._h_axis, self._w_axis = 1, 2
        else:
            self._h_axis, self._w_axis = 2, 3
        self.supports_masking = False

    def _conv(self, filters: int, name: str) -> keras.layers.Conv2D:
        return keras.layers.Conv2D(
            filters,
            1,
            use_bias=True,
            data_format=self.data_format,
            kernel_initializer=conv_initializer(),
            name=name,
            dtype=self.dtype_policy,
        )

    def build(self, input_shape):
        channels = channel_count("CoordAttention", input_shape, self.data_format)
        self.channels = channels
        self.mip = hidden_width(channels, self.reduction, self.min_channels)
        pooled = list(input_shape)
        pooled[self._w_axis] = 1
        self.conv1 = self._conv(self.mip, "conv1")
        self.conv1.build(tuple(pooled))
        bn_axis = -1 if self.data_format == "channels_last" else 1
        self.bn1 = keras.layers.BatchNormalization(
            axis=bn_axis, epsilon=1e-5, momentum=0.9, name="bn1", dtype=self.dtype_policy
        )
        reduced = list(pooled)
        reduced[bn_axis] = self.mip
        self.bn1.build(tuple(reduced))
        if "h" in self.directions:
            self.conv_h = self._conv(channels, "conv_h")
            self.conv_h.build(tuple(reduced))
        if "w" in self.directions:
            self.conv_w = self._conv(channels, "conv_w")
            self.conv_w.build(tuple(reduced))
        self.built = True

    def _swap_hw(self, tensor):
        perm = [0, 1, 2, 3]
        perm[self._h_axis], perm[self._w_axis] = self._w_axis, self._h_axis
        return ops.transpose(tensor, perm)

    def _slice_h(self, tensor, start, stop):
        index = [slice(None)] * 4
        index[self._h_axis] = slice(start, stop)
        return tensor[tuple(index)]

    def _shared_transform(self, pooled_h, pooled_w, training):
        """conv1 -> bn1 -> hard-swish on the pooled descriptors.

        ``pooled_h``: ``(N, H, 1, C)``, ``pooled_w``: ``(N, 1, W, C)`` (channels_last; either may
        be None for the one-direction ablations). Returns the transformed pair.
        """
        y_h = None if pooled_h is None else self.conv1(pooled_h)
        y_w = None if pooled_w is None else self.conv1(pooled_w)
        if training and y_h is not None and y_w is not None:
            # Batch statistics over the N x (H + W) positions together, as the original does by
            # concatenating the two descriptors along the height axis.
            height = ops.shape(y_h)[self._h_axis]
            joint = ops.concatenate([y_h, self._swap_hw(y_w)], axis=self._h_axis)
            joint = ops.hard_silu(self.bn1(joint, training=True))
            y_h = self._slice_h(joint, 0, height)
            return y_h, self._swap_hw(self._slice_h(joint, height, None))
        # At inference BatchNorm is a per-channel affine map, so the two descriptors can go
        # through it separately: same result, with no concat / split / transpose in the graph.
        if y_h is not None:
            y_h = ops.hard_silu(self.bn1(y_h, training=training))
        if y_w is not None:
            y_w = ops.hard_silu(self.bn1(y_w, training=training))
        return y_h, y_w

    def gates(self, inputs, training=None):
        """Returns ``(a_h, a_w)``: ``(N, H, 1, C)`` and ``(N, 1, W, C)`` (channels_last).

        A gate of a direction that is switched off by ``directions`` is None.
        """
        pooled_h = ops.mean(inputs, axis=self._w_axis, keepdims=True) if (
            "h" in self.directions
        ) else None
        pooled_w = ops.mean(inputs, axis=self._h_axis, keepdims=True) if (
            "w" in self.directions
        ) else None
        y_h, y_w = self._shared_transform(pooled_h, pooled_w, training)
        a_h = None if y_h is None else ops.sigmoid(self.conv_h(y_h))
        a_w = None if y_w is None else ops.sigmoid(self.conv_w(y_w))
        return a_h, a_w

    def call(self, inputs, training=None):
        a_h, a_w = self.gates(inputs, training=training)
        outputs = inputs
        if a_w is not None:
            outputs = outputs * a_w
        if a_h is not None:
            outputs = outputs * a_h
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "reduction": self.reduction,
                "min_channels": self.min_channels,
                "directions": self.directions,
                "data_format": self.data_format,
            }
        )
        return config
