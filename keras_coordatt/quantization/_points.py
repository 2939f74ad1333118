"""Quantization points: the base of the tf_keras attention layers.

A twin names every intermediate tensor that the int8 TFLite graph materialises (a "quantization
point"). Outside QAT a point is the identity (or the gate's sigmoid); under
``AttentionQuantizeConfig`` (:mod:`keras_coordatt.quantization.configs`) each point becomes a
fake-quant with its own range.
"""

from __future__ import annotations

from keras_coordatt.layers.specs import (
    CONV_INITIALIZER,
    AttentionArguments,
    batch_norm_arguments,
    build_shape,
    conv_arguments,
)
from keras_coordatt.quantization._deps import import_qat_stack

tf, tf_keras, _ = import_qat_stack()

# Kinds of quantization point: what the point is outside QAT, and how it is quantized under QAT.
LINEAR = "linear"  # identity; fake-quant of the tensor (moving-average range)
SIGMOID = "sigmoid"  # sigmoid; fake-quant of its input (moving-average range), as tfmot does
GATE = "gate"  # identity on a sigmoid's output; fixed fake-quant to TFLite's LOGISTIC range


def _hard_swish(x):
    """``x * relu6(x + 3) / 6``: Keras 3's ``ops.hard_silu``; TFLite fuses it to HARD_SWISH."""
    return x * (tf.nn.relu6(x + 3.0) / 6.0)


def _channels(layer_name: str, input_shape) -> int:
    shape = tf.TensorShape(input_shape)
    if shape.rank != 4 or shape[-1] is None:
        raise ValueError(
            f"{layer_name} expects a 4-D input (batch, height, width, channels) with a known "
            f"channel count, got {shape}."
        )
    return int(shape[-1])


class _QuantPointsLayer(AttentionArguments, tf_keras.layers.Layer):
    """Base of the twins: arguments and sub-layers from the layer's ``SPEC``
    (:mod:`keras_coordatt.layers.specs`), named quantization points, and the kernels QAT
    quantizes.

    Subclasses set ``SPEC`` and ``QUANT_POINTS`` (point name -> ``LINEAR`` | ``SIGMOID`` |
    ``GATE``). ``call`` passes every intermediate tensor through ``self.<point>``. Constructor
    arguments are the spec's (the class signature says which), channels_last only.
    """

    QUANT_POINTS: dict[str, str] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "SPEC" in cls.__dict__:
            cls.__signature__ = cls.SPEC.signature()

    def __init__(self, *args, **kwargs):
        values, kwargs = self.SPEC.bind(args, kwargs)
        super().__init__(**kwargs)
        self._set_arguments(values)
        self.reset_quant_points()

    def _check_data_format(self, value) -> str:
        if value not in (None, "channels_last"):
            raise ValueError(
                f"The tf_keras {self.SPEC.class_name} supports data_format='channels_last' only "
                f"(tfmot and TFLite are NHWC), got {value!r}."
            )
        return "channels_last"

    def reset_quant_points(self) -> None:
        """Makes every quantization point its float function again (identity or sigmoid)."""
        for point, kind in self.QUANT_POINTS.items():
            setattr(self, point, self.float_point(kind))

    @staticmethod
    def float_point(kind: str):
        """The float function of a quantization point of ``kind``."""
        return tf_keras.activations.sigmoid if kind == SIGMOID else tf_keras.activations.linear

    def _weight_sublayers(self) -> list:
        """Every sublayer holding weights, in creation order."""
        return [layer for _, layer in self._sublayers()]

    def _quantized_convs(self) -> list:
        """The conv sublayers whose kernels QAT fake-quantizes (all of them)."""
        return [layer for sub, layer in self._sublayers() if sub.kind == "conv"]

    def build(self, input_shape):
        sizes = self._set_widths(_channels(self.SPEC.class_name, input_shape))
        batch = tf.TensorShape(input_shape)[0]
        active = self.SPEC.active_sublayers(sizes)
        for sub in self.SPEC.sublayers:
            layer = None
            if sub in active:
                if sub.kind == "conv":
                    layer = tf_keras.layers.Conv2D(
                        **conv_arguments(sub, sizes), data_format=self.data_format,
                        kernel_initializer=tf_keras.initializers.VarianceScaling(
                            **CONV_INITIALIZER
                        ),
                        dtype=self.dtype,
                    )
                else:
                    layer = tf_keras.layers.BatchNormalization(
                        axis=-1, **batch_norm_arguments(sub), dtype=self.dtype
                    )
                # Under the sublayer's name scope, so its variables are
                # "<layer>/<sublayer>/kernel" (unique, as h5 saving needs), not "<layer>/kernel".
                with tf.name_scope(layer.name):
                    layer.build(build_shape(sub, sizes, batch, -1))
            setattr(self, sub.name, layer)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)


def _plain_python(method):
    """Keeps tf_keras / tf.function from AutoGraph-converting ``method``.

    Its branches are on Python values (tensor ``training`` goes through ``tf.cond``), so
    conversion adds nothing; and AutoGraph's rewrite of the closures in ``gates`` was seen to
    hand ``_joint_transform`` a Python bool instead of a tensor while tfmot rebuilt a model.
    """
    return tf.autograph.experimental.do_not_convert(method)


def _smart_cond(training, true_fn, false_fn):
    """``true_fn()`` when training, for a Python bool, None (-> False) or a boolean tensor."""
    if training is None or isinstance(training, (bool, int)):
        return true_fn() if training else false_fn()
    return tf.cond(tf.cast(training, tf.bool), true_fn, false_fn)
