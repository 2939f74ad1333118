"""tfmot quantizers and QuantizeConfigs of the tf_keras attention layers.

:class:`AttentionQuantizeConfig` quantizes a layer of
:mod:`keras_coordatt.quantization.tf_keras_layers` (its conv kernels per channel, every
quantization point, its output); :class:`OutputQuantizeConfig` quantizes only a layer's output
(``Multiply``). Registered under ``keras_coordatt>`` in tf_keras, so saved QAT models load inside
``keras_coordatt.quantization.quantize_scope``.
"""

from __future__ import annotations

from importlib import import_module

from keras_coordatt.quantization._deps import import_qat_stack
from keras_coordatt.quantization._points import GATE, _QuantPointsLayer

tf, tf_keras, tfmot = import_qat_stack()

_quantizers = tfmot.quantization.keras.quantizers
_QuantizeConfig = tfmot.quantization.keras.QuantizeConfig
_DEFAULT_8BIT = "tensorflow_model_optimization.python.core.quantization.keras.default_8bit"
_default_registry = import_module(f"{_DEFAULT_8BIT}.default_8bit_quantize_registry")
_default_scheme = import_module(f"{_DEFAULT_8BIT}.default_8bit_quantize_scheme")

# TFLite's int8 LOGISTIC output: scale 1/256, zero point -128, i.e. the range [0, 255/256].
SIGMOID_OUTPUT_RANGE = (0.0, 255.0 / 256.0)


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
class DepthwiseKernelQuantizer(_quantizers.LastValueQuantizer):
    """8-bit symmetric quantizer of a depthwise kernel ``(kh, kw, C, m)``, per output channel.

    tfmot's default quantizes "per axis" along the kernel's last axis, which for a depthwise
    kernel is the depth multiplier ``m`` (1): one scale for all ``C * m`` channels. The TFLite
    converter folds BatchNorm into the kernel and quantizes the result per channel, so a
    per-tensor grid trained in QAT is re-rounded at conversion and the int8 file no longer
    computes what the QAT model computed. Quantizing each of the ``C * m`` output channels on
    its own grid makes the folded kernel land exactly on the converter's per-channel grid.
    """

    def __init__(self):
        super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

    def build(self, tensor_shape, name, layer):
        channels = int(tensor_shape[-2]) * int(tensor_shape[-1])
        return {
            key: layer.add_weight(
                f"{name}_{key[:3]}",
                shape=(channels,),
                initializer=tf_keras.initializers.Constant(start),
                trainable=False,
            )
            for key, start in (("min_var", -6.0), ("max_var", 6.0))
        }

    def __call__(self, inputs, training, weights, **kwargs):
        shape = inputs.shape
        per_channel = tf.reshape(inputs, (shape[0], shape[1], 1, shape[2] * shape[3]))
        quantized = super().__call__(per_channel, training, weights, **kwargs)
        return tf.reshape(quantized, shape)

    def get_config(self):
        return {}


@tf_keras.saving.register_keras_serializable(package="keras_coordatt")
class DepthwiseQuantizeConfig(_default_registry.Default8BitQuantizeConfig):
    """tfmot's DepthwiseConv2D config with the kernel quantized per output channel
    (:class:`DepthwiseKernelQuantizer`); activations as tfmot's default."""

    def __init__(self):
        super().__init__(["depthwise_kernel"], ["activation"], False)
        self.weight_quantizer = DepthwiseKernelQuantizer()

    def get_config(self):
        return {}


class QuantizeRegistry(_default_registry.Default8BitQuantizeRegistry):
    """tfmot's default 8-bit registry with :class:`DepthwiseQuantizeConfig` for DepthwiseConv2D."""

    def __init__(self):
        super().__init__(disable_per_axis=False)
        self._layer_quantize_map[tf_keras.layers.DepthwiseConv2D] = DepthwiseQuantizeConfig()


class QuantizeScheme(_default_scheme.Default8BitQuantizeScheme):
    """tfmot's default 8-bit scheme (layout transforms: Conv/BN/ReLU fusion) with
    :class:`QuantizeRegistry`."""

    def get_quantize_registry(self):
        return QuantizeRegistry()


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
