"""The Keras 3 base of the attention layers: arguments, sub-layers and config from the layer's
:class:`~keras_coordatt.layers.specs.AttentionSpec`."""

from __future__ import annotations

import keras

from keras_coordatt.layers._common import channel_count, resolve_data_format
from keras_coordatt.layers.specs import (
    CONV_INITIALIZER,
    AttentionArguments,
    batch_norm_arguments,
    build_shape,
    conv_arguments,
)


def conv_initializer() -> keras.initializers.Initializer:
    """He normal over fan-out, the initialisation of the original PyTorch code."""
    return keras.initializers.VarianceScaling(**CONV_INITIALIZER)


class AttentionLayer(AttentionArguments, keras.layers.Layer):
    """Base of CoordAttention, SqueezeExcite and CBAM (Keras 3, either data format)."""

    def _check_data_format(self, value):
        return resolve_data_format(value)

    @property
    def _channel_axis(self) -> int:
        return -1 if self.data_format == "channels_last" else 1

    def _build_sublayers(self, input_shape) -> None:
        """Creates and builds the spec's sub-layers (as attributes of their names), in order."""
        channels = channel_count(self.SPEC.class_name, input_shape, self.data_format)
        sizes = self._set_widths(channels)
        for sub in self.SPEC.sublayers:
            if sub not in self.SPEC.active_sublayers(sizes):
                setattr(self, sub.name, None)
                continue
            if sub.kind == "conv":
                layer = keras.layers.Conv2D(
                    **conv_arguments(sub, sizes), data_format=self.data_format,
                    kernel_initializer=conv_initializer(), dtype=self.dtype_policy,
                )
            else:
                layer = keras.layers.BatchNormalization(
                    axis=self._channel_axis, **batch_norm_arguments(sub), dtype=self.dtype_policy
                )
            layer.build(build_shape(sub, sizes, input_shape[0], self._channel_axis))
            setattr(self, sub.name, layer)

    def build(self, input_shape):
        self._build_sublayers(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)
