"""Dilated convolutions traced as single ops, so they convert to one TFLite op each.

``tf.nn.convolution`` and ``tf.nn.depthwise_conv2d`` (which Keras 3 and tf_keras call) lower a
dilated convolution to ``SpaceToBatchND -> Conv2D -> BatchToSpaceND``. TensorFlow 2.21's TFLite
converter keeps the three ops, and for a QAT model it leaves the convolution and the
BatchNormalization after it in float (measured: the int8 file is not all int8). Inside
:func:`direct_dilated_convolutions`, a stride-1 dilated NHWC convolution traces as one
``Conv2D`` / ``DepthwiseConv2dNative`` op with its ``dilations`` attribute (the same function),
which converts to one ``CONV_2D`` / ``DEPTHWISE_CONV_2D`` with dilation factors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


def _pair(value) -> list[int] | None:
    if value is None:
        return [1, 1]
    values = [int(v) for v in ([value] if isinstance(value, int) else list(value))]
    if len(values) == 1:
        return values * 2
    if len(values) == 2:
        return values
    if len(values) == 4 and values[0] == values[3] == 1:
        return values[1:3]
    return None


def _direct(strides, padding, data_format, dilations) -> list[int] | None:
    """``[1, r_h, r_w, 1]`` when the call is a stride-1, dilated, NHWC 2-D convolution."""
    rates, steps = _pair(dilations), _pair(strides)
    if rates is None or steps != [1, 1] or rates == [1, 1]:
        return None
    if data_format not in (None, "NHWC") or str(padding).upper() not in ("SAME", "VALID"):
        return None
    return [1, *rates, 1]


@contextlib.contextmanager
def direct_dilated_convolutions(tf) -> Iterator[None]:
    """Within the block, dilated 2-D convolutions trace as one op (see the module docstring)."""
    modules = list({id(module): module for module in (tf.nn, tf.compat.v2.nn)}.values())
    saved = [(module, module.convolution, module.depthwise_conv2d) for module in modules]
    convolution, depthwise = tf.nn.convolution, tf.nn.depthwise_conv2d

    def direct_convolution(input, filters, strides=None, padding="VALID", data_format=None,
                           dilations=None, name=None):
        rates = _direct(strides, padding, data_format, dilations)
        if rates is None or len(filters.shape) != 4:
            return convolution(input, filters, strides=strides, padding=padding,
                               data_format=data_format, dilations=dilations, name=name)
        return tf.raw_ops.Conv2D(input=input, filter=filters, strides=[1, 1, 1, 1],
                                 padding=str(padding).upper(), dilations=rates, name=name)

    def direct_depthwise(input, filter, strides, padding, data_format=None, dilations=None,
                         name=None):
        rates = _direct(strides, padding, data_format, dilations)
        if rates is None:
            return depthwise(input, filter, strides, padding, data_format=data_format,
                             dilations=dilations, name=name)
        return tf.raw_ops.DepthwiseConv2dNative(
            input=input, filter=filter, strides=[1, 1, 1, 1], padding=str(padding).upper(),
            dilations=rates, name=name,
        )

    try:
        for module, _, _ in saved:
            module.convolution = direct_convolution
            module.depthwise_conv2d = direct_depthwise
        yield
    finally:
        for module, original_convolution, original_depthwise in saved:
            module.convolution = original_convolution
            module.depthwise_conv2d = original_depthwise
