"""tf_keras (Keras 2) twins of the attention layers (their QuantizeConfigs: :mod:`.configs`).

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

Arguments, defaults, weight-holding sub-layers and their constants come from the same
description as the Keras 3 layers (:mod:`keras_coordatt.layers.specs`); only the computation,
written with quantization points, is here.
"""

from __future__ import annotations

from keras_coordatt.layers.specs import CBAM as CBAM_SPEC
from keras_coordatt.layers.specs import COORD_ATTENTION, SQUEEZE_EXCITE
from keras_coordatt.quantization._deps import import_qat_stack
from keras_coordatt.quantization._points import (
    GATE,
    LINEAR,
    SIGMOID,
    _hard_swish,
    _plain_python,
    _QuantPointsLayer,
    _smart_cond,
)

# The quantizers and QuantizeConfigs live in .configs; imported here too, as before.
from keras_coordatt.quantization.configs import (  # noqa: F401
    SIGMOID_OUTPUT_RANGE,
    ActivationQuantizer,
    AttentionQuantizeConfig,
    DepthwiseKernelQuantizer,
    DepthwiseQuantizeConfig,
    KernelQuantizer,
    OutputQuantizeConfig,
    PassThroughQuantizer,
    SigmoidOutputQuantizer,
)

tf, tf_keras, tfmot = import_qat_stack()

__all__ = [
    "ATTENTION_LAYERS", "CBAM", "GATE", "LINEAR", "SIGMOID", "SIGMOID_OUTPUT_RANGE",
    "ActivationQuantizer", "AttentionQuantizeConfig", "CoordAttention", "KernelQuantizer",
    "OutputQuantizeConfig", "PassThroughQuantizer", "SigmoidOutputQuantizer", "SqueezeExcite",
    "custom_objects",
]


@tf_keras.saving.register_keras_serializable(package="keras_coordatt")
class CoordAttention(_QuantPointsLayer):
    """tf_keras Coordinate Attention, the twin of ``keras_coordatt.CoordAttention`` (NHWC).

    Same arguments, weights (``conv1``, ``bn1``, ``conv_h``, ``conv_w``) and outputs. Inference
    runs the two pooled descriptors through ``conv1 -> bn1 -> hard-swish`` separately (BN is an
    affine map there); training concatenates them so BN takes its statistics over the
    ``N x (H + W)`` positions together, like the paper's code.
    """

    SPEC = COORD_ATTENTION
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


@tf_keras.saving.register_keras_serializable(package="keras_coordatt")
class SqueezeExcite(_QuantPointsLayer):
    """tf_keras Squeeze-and-Excitation, the twin of ``keras_coordatt.SqueezeExcite`` (NHWC)."""

    SPEC = SQUEEZE_EXCITE
    QUANT_POINTS = {
        "pool_q": LINEAR,  # mean over H, W
        "reduce_q": LINEAR,  # relu(conv_reduce(.)) (one CONV_2D with fused ReLU)
        "gate_q": SIGMOID,  # conv_expand output, then the sigmoid
        "gate_out_q": GATE,
    }

    @_plain_python
    def gates(self, inputs):
        """The channel gate, ``(N, 1, 1, C)``."""
        squeezed = self.pool_q(tf.reduce_mean(inputs, axis=[1, 2], keepdims=True))
        hidden = self.reduce_q(tf.nn.relu(self.conv_reduce(squeezed)))
        return self.gate_out_q(self.gate_q(self.conv_expand(hidden)))

    def call(self, inputs):
        return inputs * self.gates(inputs)


@tf_keras.saving.register_keras_serializable(package="keras_coordatt")
class CBAM(_QuantPointsLayer):
    """tf_keras CBAM, the twin of ``keras_coordatt.CBAM`` (NHWC)."""

    SPEC = CBAM_SPEC
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


ATTENTION_LAYERS = (CoordAttention, SqueezeExcite, CBAM)


def custom_objects() -> dict:
    """Every class of this module that a saved QAT model may reference, by name."""
    return {
        cls.__name__: cls
        for cls in (
            *ATTENTION_LAYERS,
            KernelQuantizer,
            DepthwiseKernelQuantizer,
            DepthwiseQuantizeConfig,
            ActivationQuantizer,
            PassThroughQuantizer,
            SigmoidOutputQuantizer,
            AttentionQuantizeConfig,
            OutputQuantizeConfig,
        )
    }
