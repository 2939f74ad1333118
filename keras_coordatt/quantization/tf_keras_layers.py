"""tf_keras (Keras 2) twins of the attention layers, with tfmot QuantizeConfigs.

tfmot only quantizes tf_keras functional models, so the QAT bridge rebuilds a Keras 3 network
with these layers. Each twin computes exactly what its Keras 3 layer computes (channels_last) and
names every intermediate tensor that the int8 TFLite graph materialises: a "quantization point".
Outside QAT a point is the identity (or the gate's sigmoid); under :class:`AttentionQuantizeConfig`
each point becomes a fake-quant with its own moving-average range, so the converter finds a range
for every tensor and emits an all-int8 block. Convolution kernels are fake-quantized per output
channel and symmetrically, like tfmot's default scheme for Conv2D.

BatchNormalization inside a block (CA's ``bn1`` after ``conv1``, CBAM's ``spatial_bn``) is kept as
a real BN layer, treated the way tfmot's default 8-bit scheme treats a Conv2D + BN pair in the
backbone: the conv kernel is fake-quantized per output channel *before* BN, there is no fake-quant
between conv and BN, and the BN output is fake-quantized. Per-channel symmetric quantization
commutes with the per-channel BN scale ``gamma / sqrt(var + eps)``, so the TFLite converter, which
folds BN into the conv, gets the same int8 kernel the QAT model trained with. During QAT
``fit`` BN keeps learning (batch statistics, CA's joint statistics over the ``H + W`` positions);
at inference it is the moving-statistics affine map.
"""

from __future__ import annotations

from keras_coordatt.layers._common import (
    check_directions,
    check_odd_kernel_size,
    check_positive_int,
    hidden_width,
)
from keras_coordatt.quantization._deps import import_qat_stack

tf, tf_keras, tfmot = import_qat_stack()

_quantizers = tfmot.quantization.keras.quantizers
_QuantizeConfig = tfmot.quantization.keras.QuantizeConfig

# TFLite's int8 LOGISTIC output: scale 1/256, zero point -128, i.e. the range [0, 255/256].
SIGMOID_OUTPUT_RANGE = (0.0, 255.0 / 256.0)

# Kinds of quantization point: what the point is outside QAT, and how it is quantized under QAT.
LINEAR = "linear"  # identity; fake-quant of the tensor (moving-average range)
SIGMOID = "sigmoid"  # sigmoid; fake-quant of its input (moving-average range), as tfmot does
GATE = "gate"  # identity on a sigmoid's output; fixed fake-quant to TFLite's LOGISTIC range


def _conv_initializer():
    return tf_keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal"
    )


def _check_channels_last(layer_name: str, data_format: str | None) -> str:
    if data_format not in (None, "channels_last"):
        raise ValueError(
            f"The tf_keras {layer_name} supports data_format='channels_last' only (tfmot and "
            f"TFLite are NHWC), got {data_format!r}."
        )
    return "channels_last"


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


class _QuantPointsLayer(tf_keras.layers.Layer):
    """Base of the twins: named quantization points and the kernels QAT quantizes.

    Subclasses set ``QUANT_POINTS`` (point name -> ``LINEAR`` | ``SIGMOID`` | ``GATE``) and list
    their quantized conv sublayers in ``_quantized_convs()``. ``call`` passes every intermediate
    tensor through ``self.<point>``.
    """

    QUANT_POINTS: dict[str, str] = {}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.reset_quant_points()

    def reset_quant_points(self) -> None:
        """Makes every quantization point its float function again (identity or sigmoid)."""
        for point, kind in self.QUANT_POINTS.items():
            setattr(self, point, self.float_point(kind))

    @staticmethod
    def float_point(kind: str):
        """The float function of a quantization point of ``kind``."""
        return tf_keras.activations.sigmoid if kind == SIGMOID else tf_keras.activations.linear

    def _quantized_convs(self) -> list:
        """The conv sublayers whose kernels QAT fake-quantizes."""
        raise NotImplementedError

    def _weight_sublayers(self) -> list:
        """Every sublayer holding weights, in creation order."""
        raise NotImplementedError

    def _conv(self, filters: int, kernel_size: int, name: str, use_bias: bool = True, **kwargs):
        return tf_keras.layers.Conv2D(
            filters, kernel_size, use_bias=use_bias, kernel_initializer=_conv_initializer(),
            name=name, dtype=self.dtype, **kwargs,
        )

    @staticmethod
    def _build_sublayer(layer, input_shape) -> None:
        # Under the sublayer's name scope, so its variables are "<layer>/<sublayer>/kernel"
        # (unique, as h5 saving needs) rather than three "<layer>/kernel".
        with tf.name_scope(layer.name):
            layer.build(input_shape)

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


@tf_keras.saving.register_keras_serializable(package="keras_coordatt")
class CoordAttention(_QuantPointsLayer):
    """tf_keras Coordinate Attention, the twin of ``keras_coordatt.CoordAttention`` (NHWC).

    Same arguments, weights (``conv1``, ``bn1``, ``conv_h``, ``conv_w``) and outputs. Inference
    runs the two pooled descriptors through ``conv1 -> bn1 -> hard-swish`` separately (BN is an
    affine map there); training concatenates them so BN takes its statistics over the
    ``N x (H + W)`` positions together, like the paper's code.
    """

    QUANT_POINTS = {
        "pool_h_q": LINEAR,  # mean over W, (N, H, 1, C)
        "pool_w_q": LINEAR,  # mean over H, (N, 1, W, C)
        "bn_q": LINEAR,  # conv1 -> bn1 (one CONV_2D in TFLite)
        "hswish_q": LINEAR,  # hard-swish output
        "gate_h_q": SIGMOID,  # conv_h output, then the sigmoid
        "gate_w_q": SIGMOID,
        "gate_h_out_q": GATE,  # sigmoid output
        "gate_w_out_q": GATE,
        "mul_q": LINEAR,  # x * a_w (the layer output x * a_w * a_h is the output quantizer's)
    }

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
        self.data_format = _check_channels_last("CoordAttention", data_format)

    def build(self, input_shape):
        channels = _channels("CoordAttention", input_shape)
        self.channels = channels
        self.mip = hidden_width(channels, self.reduction, self.min_channels)
        shape = tf.TensorShape(input_shape)
        pooled = [shape[0], shape[1], 1, channels]
        self.conv1 = self._conv(self.mip, 1, "conv1")
        self._build_sublayer(self.conv1, pooled)
        self.bn1 = tf_keras.layers.BatchNormalization(
            axis=-1, epsilon=1e-5, momentum=0.9, name="bn1", dtype=self.dtype
        )
        reduced = [shape[0], shape[1], 1, self.mip]
        self._build_sublayer(self.bn1, reduced)
        self.conv_h = self._conv(channels, 1, "conv_h") if "h" in self.directions else None
        self.conv_w = self._conv(channels, 1, "conv_w") if "w" in self.directions else None
        for conv in (self.conv_h, self.conv_w):
            if conv is not None:
                self._build_sublayer(conv, reduced)
        super().build(input_shape)

    def _quantized_convs(self) -> list:
        return [conv for conv in (self.conv1, self.conv_h, self.conv_w) if conv is not None]

    def _weight_sublayers(self) -> list:
        return [sub for sub in (self.conv1, self.bn1, self.conv_h, self.conv_w) if sub is not None]

    def _transform(self, y, training):
        y = self.bn_q(self.bn1(y, training=training))
        return self.hswish_q(_hard_swish(y))

    def _joint_transform(self, y_h, y_w):
        height = tf.shape(y_h)[1]
        joint = tf.concat([y_h, tf.transpose(y_w, [0, 2, 1, 3])], axis=1)
        joint = self._transform(joint, True)
        return joint[:, :height], tf.transpose(joint[:, height:], [0, 2, 1, 3])

    @_plain_python
    def gates(self, inputs, training=None):
        """``(a_h, a_w)``: ``(N, H, 1, C)`` and ``(N, 1, W, C)``; None for a switched-off one."""
        y_h = y_w = None
        if "h" in self.directions:
            y_h = self.conv1(self.pool_h_q(tf.reduce_mean(inputs, axis=2, keepdims=True)))
        if "w" in self.directions:
            y_w = self.conv1(self.pool_w_q(tf.reduce_mean(inputs, axis=1, keepdims=True)))
        if y_h is not None and y_w is not None:
            y_h, y_w = _smart_cond(
                training,
                lambda: self._joint_transform(y_h, y_w),
                lambda: (self._transform(y_h, False), self._transform(y_w, False)),
            )
        elif y_h is not None:
            y_h = self._transform(y_h, training)
        else:
            y_w = self._transform(y_w, training)
        a_h = None if y_h is None else self.gate_h_out_q(self.gate_h_q(self.conv_h(y_h)))
        a_w = None if y_w is None else self.gate_w_out_q(self.gate_w_q(self.conv_w(y_w)))
        return a_h, a_w

    def call(self, inputs, training=None):
        a_h, a_w = self.gates(inputs, training=training)
        if a_h is not None and a_w is not None:
            return self.mul_q(inputs * a_w) * a_h
        return inputs * (a_h if a_h is not None else a_w)

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


@tf_keras.saving.register_keras_serializable(package="keras_coordatt")
class SqueezeExcite(_QuantPointsLayer):
    """tf_keras Squeeze-and-Excitation, the twin of ``keras_coordatt.SqueezeExcite`` (NHWC)."""

    QUANT_POINTS = {
        "pool_q": LINEAR,  # mean over H, W
        "reduce_q": LINEAR,  # relu(conv_reduce(.)) (one CONV_2D with fused ReLU)
        "gate_q": SIGMOID,  # conv_expand output, then the sigmoid
        "gate_out_q": GATE,
    }

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
        self.data_format = _check_channels_last("SqueezeExcite", data_format)

    def build(self, input_shape):
        channels = _channels("SqueezeExcite", input_shape)
        self.channels = channels
        self.hidden = hidden_width(channels, self.reduction, self.min_channels)
        batch = tf.TensorShape(input_shape)[0]
        self.conv_reduce = self._conv(self.hidden, 1, "conv_reduce")
        self._build_sublayer(self.conv_reduce, [batch, 1, 1, channels])
        self.conv_expand = self._conv(channels, 1, "conv_expand")
        self._build_sublayer(self.conv_expand, [batch, 1, 1, self.hidden])
        super().build(input_shape)

    def _quantized_convs(self) -> list:
        return [self.conv_reduce, self.conv_expand]

    def _weight_sublayers(self) -> list:
        return [self.conv_reduce, self.conv_expand]

    @_plain_python
    def gates(self, inputs):
        """The channel gate, ``(N, 1, 1, C)``."""
        squeezed = self.pool_q(tf.reduce_mean(inputs, axis=[1, 2], keepdims=True))
        hidden = self.reduce_q(tf.nn.relu(self.conv_reduce(squeezed)))
        return self.gate_out_q(self.gate_q(self.conv_expand(hidden)))

    def call(self, inputs):
        return inputs * self.gates(inputs)

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


@tf_keras.saving.register_keras_serializable(package="keras_coordatt")
class CBAM(_QuantPointsLayer):
    """tf_keras CBAM, the twin of ``keras_coordatt.CBAM`` (NHWC)."""

    QUANT_POINTS = {
        "avg_q": LINEAR,  # mean over H, W
        "max_q": LINEAR,  # max over H, W
        "hidden_avg_q": LINEAR,  # relu(mlp_reduce(avg))
        "hidden_max_q": LINEAR,
        "mlp_avg_q": LINEAR,  # mlp_expand(.)
        "mlp_max_q": LINEAR,
        "gate_c_q": SIGMOID,  # mlp(avg) + mlp(max), then the sigmoid
        "gate_c_out_q": GATE,
        "refined_q": LINEAR,  # x * m_c
        "cmax_q": LINEAR,  # max over channels
        "cmean_q": LINEAR,  # mean over channels
        "stacked_q": LINEAR,  # their concatenation
        "gate_s_q": SIGMOID,  # spatial_conv -> spatial_bn (one CONV_2D), then the sigmoid
        "gate_s_out_q": GATE,
    }

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
        self.data_format = _check_channels_last("CBAM", data_format)

    def build(self, input_shape):
        channels = _channels("CBAM", input_shape)
        self.channels = channels
        self.hidden = hidden_width(channels, self.reduction, self.min_channels)
        shape = tf.TensorShape(input_shape)
        self.mlp_reduce = self._conv(self.hidden, 1, "mlp_reduce")
        self._build_sublayer(self.mlp_reduce, [shape[0], 1, 1, channels])
        self.mlp_expand = self._conv(channels, 1, "mlp_expand")
        self._build_sublayer(self.mlp_expand, [shape[0], 1, 1, self.hidden])
        self.spatial_conv = self._conv(
            1, self.spatial_kernel_size, "spatial_conv", use_bias=False, padding="same"
        )
        self._build_sublayer(self.spatial_conv, [shape[0], shape[1], shape[2], 2])
        self.spatial_bn = tf_keras.layers.BatchNormalization(
            axis=-1, epsilon=1e-5, momentum=0.99, name="spatial_bn", dtype=self.dtype
        )
        self._build_sublayer(self.spatial_bn, [shape[0], shape[1], shape[2], 1])
        super().build(input_shape)

    def _quantized_convs(self) -> list:
        return [self.mlp_reduce, self.mlp_expand, self.spatial_conv]

    def _weight_sublayers(self) -> list:
        return [self.mlp_reduce, self.mlp_expand, self.spatial_conv, self.spatial_bn]

    def _forward(self, inputs, training):
        avg = self.avg_q(tf.reduce_mean(inputs, axis=[1, 2], keepdims=True))
        peak = self.max_q(tf.reduce_max(inputs, axis=[1, 2], keepdims=True))
        mlp_avg = self.mlp_avg_q(
            self.mlp_expand(self.hidden_avg_q(tf.nn.relu(self.mlp_reduce(avg))))
        )
        mlp_max = self.mlp_max_q(
            self.mlp_expand(self.hidden_max_q(tf.nn.relu(self.mlp_reduce(peak))))
        )
        channel_gate = self.gate_c_out_q(self.gate_c_q(mlp_avg + mlp_max))
        refined = self.refined_q(inputs * channel_gate)
        stacked = self.stacked_q(
            tf.concat(
                [
                    self.cmax_q(tf.reduce_max(refined, axis=-1, keepdims=True)),
                    self.cmean_q(tf.reduce_mean(refined, axis=-1, keepdims=True)),
                ],
                axis=-1,
            )
        )
        spatial = self.spatial_bn(self.spatial_conv(stacked), training=training)
        return channel_gate, self.gate_s_out_q(self.gate_s_q(spatial)), refined

    @_plain_python
    def gates(self, inputs, training=None):
        """``(m_c, m_s)``: ``(N, 1, 1, C)`` and ``(N, H, W, 1)``."""
        channel_gate, spatial_gate, _ = self._forward(inputs, training)
        return channel_gate, spatial_gate

    def call(self, inputs, training=None):
        _, spatial_gate, refined = self._forward(inputs, training)
        return refined * spatial_gate

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


ATTENTION_LAYERS = (CoordAttention, SqueezeExcite, CBAM)


# --------------------------------------------------------------------------------------------
# Quantizers and QuantizeConfigs
# --------------------------------------------------------------------------------------------


@tf_keras.saving.register_keras_serializable(package="keras_coordatt")
class KernelQuantizer(_quantizers.LastValueQuantizer):
    """8-bit per-output-channel symmetric kernel quantizer (tfmot's default for Conv2D).

    ``tag`` prefixes the range variables, so several kernels of one layer get distinct names.
    """

    def __init__(self, tag: str = "kernel"):
        super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)
        self.tag = tag

    def build(self, tensor_shape, name, layer):
        ranges = {}
        for key, start in (("min_var", -6.0), ("max_var", 6.0)):
            ranges[key] = layer.add_weight(
                f"{self.tag}_{name}_{key[:3]}",
                shape=(tensor_shape[-1],),
                initializer=tf_keras.initializers.Constant(start),
                trainable=False,
            )
        return ranges

    def get_config(self):
        return {"tag": self.tag}


@tf_keras.saving.register_keras_serializable(package="keras_coordatt")
class ActivationQuantizer(_quantizers.MovingAverageQuantizer):
    """8-bit asymmetric per-tensor quantizer with a moving-average range (tfmot's default).

    ``tag`` names the range variables (``<tag>_min``, ``<tag>_max``).
    """

    def __init__(self, tag: str = "activation"):
        super().__init__(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)
        self.tag = tag

    def build(self, tensor_shape, name, layer):
        return {
            key: layer.add_weight(
                f"{self.tag}_{key[:3]}",
                initializer=tf_keras.initializers.Constant(start),
                trainable=False,
            )
            for key, start in (("min_var", -6.0), ("max_var", 6.0))
        }

    def get_config(self):
        return {"tag": self.tag}


@tf_keras.saving.register_keras_serializable(package="keras_coordatt")
class PassThroughQuantizer(_quantizers.Quantizer):
    """Leaves a weight as it is (biases and BN parameters of the attention layers)."""

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        return inputs

    def get_config(self):
        return {}


@tf_keras.saving.register_keras_serializable(package="keras_coordatt")
class SigmoidOutputQuantizer(_quantizers.Quantizer):
    """Fixed fake-quant of a sigmoid's output to TFLite's int8 LOGISTIC range [0, 255/256]."""

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        low, high = SIGMOID_OUTPUT_RANGE
        return tf.quantization.fake_quant_with_min_max_args(
            inputs, min=low, max=high, num_bits=8, narrow_range=False
        )

    def get_config(self):
        return {}


@tf_keras.saving.register_keras_serializable(package="keras_coordatt")
class AttentionQuantizeConfig(_QuantizeConfig):
    """QuantizeConfig for the tf_keras CoordAttention, SqueezeExcite and CBAM layers.

    Kernels: per-channel symmetric 8-bit. Every quantization point of the layer (every tensor
    the int8 TFLite block materialises) gets an 8-bit moving-average fake-quant; sigmoid gates
    are quantized at their input (like tfmot's ``Activation('sigmoid')``) and at their output
    to TFLite's fixed LOGISTIC range; the layer output gets an 8-bit moving-average fake-quant.
    The converted block is all int8.
    """

    def _slots(self) -> dict:
        if not hasattr(self, "_weight_slots"):
            self._weight_slots = {}
        return self._weight_slots

    def _convs(self, layer):
        if not isinstance(layer, _QuantPointsLayer):
            raise ValueError(
                f"AttentionQuantizeConfig quantizes the tf_keras CoordAttention, SqueezeExcite "
                f"and CBAM layers of keras_coordatt.quantization, got {type(layer).__name__}."
            )
        return layer._quantized_convs()

    def get_weights_and_quantizers(self, layer):
        # Every trainable variable in creation order (kernels with the 8-bit per-channel
        # quantizer, biases and BN parameters with a pass-through one). QuantizeWrapperV2 puts
        # the returned weights first in its `trainable_weights`; returning only the kernels
        # would reorder the weights of a layer with several kernels and break h5 save / load.
        # Called once, when the wrapper is built: the (conv, variable) slots are kept (here, not
        # on the tracked layer), because assigning the fake-quantized kernel replaces
        # `conv.kernel`.
        kernels = {id(conv.kernel): conv for conv in self._convs(layer)}
        slots = [
            (kernels.get(id(variable)), variable)
            for sublayer in layer._weight_sublayers()
            for variable in sublayer.weights
            if variable.trainable
        ]
        self._slots()[id(layer)] = slots
        return [
            (variable, KernelQuantizer(conv.name) if conv is not None else PassThroughQuantizer())
            for conv, variable in slots
        ]

    def set_quantize_weights(self, layer, quantize_weights):
        slots = self._slots()[id(layer)]
        for (conv, _), weight in zip(slots, quantize_weights, strict=True):
            if conv is not None:
                conv.kernel = weight

    def get_activations_and_quantizers(self, layer):
        self._convs(layer)
        pairs = []
        for point, kind in layer.QUANT_POINTS.items():
            quantizer = SigmoidOutputQuantizer() if kind == GATE else ActivationQuantizer(point)
            pairs.append((layer.float_point(kind), quantizer))
        return pairs

    def set_quantize_activations(self, layer, quantize_activations):
        for point, activation in zip(layer.QUANT_POINTS, quantize_activations, strict=True):
            setattr(layer, point, activation)

    def get_output_quantizers(self, layer):
        return [ActivationQuantizer("output")]

    def get_config(self):
        return {}


@tf_keras.saving.register_keras_serializable(package="keras_coordatt")
class OutputQuantizeConfig(_QuantizeConfig):
    """Quantizes only a layer's output (8-bit, moving average): for ``Multiply``, which tfmot's
    default registry does not know (tfmot#733)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [ActivationQuantizer("output")]

    def get_config(self):
        return {}


def custom_objects() -> dict:
    """Every class of this module that a saved QAT model may reference, by name."""
    return {
        cls.__name__: cls
        for cls in (
            *ATTENTION_LAYERS,
            KernelQuantizer,
            ActivationQuantizer,
            PassThroughQuantizer,
            SigmoidOutputQuantizer,
            AttentionQuantizeConfig,
            OutputQuantizeConfig,
        )
    }
