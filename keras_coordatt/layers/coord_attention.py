"""Coordinate Attention (Hou, Zhou, Feng, CVPR 2021), exactly as the paper's code computes it."""

from __future__ import annotations

import keras
from keras import ops

from keras_coordatt.layers._base import AttentionLayer, conv_initializer
from keras_coordatt.layers.specs import COORD_ATTENTION

__all__ = ["CoordAttention", "conv_initializer"]


@keras.saving.register_keras_serializable(package="keras_coordatt")
class CoordAttention(AttentionLayer):
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

    SPEC = COORD_ATTENTION

    def __init__(
        self,
        reduction: int = 32,
        min_channels: int = 8,
        directions: str = "hw",
        data_format: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._set_arguments(
            {"reduction": reduction, "min_channels": min_channels, "directions": directions,
             "data_format": data_format}
        )
        if self.data_format == "channels_last":
            self._h_axis, self._w_axis = 1, 2
        else:
            self._h_axis, self._w_axis = 2, 3
        self.supports_masking = False

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
