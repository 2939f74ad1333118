"""Quantization-aware training (QAT) for keras_coordatt models; needs the ``[qat]`` extra.

tensorflow-model-optimization (tfmot) only quantizes tf_keras (Keras 2) functional models, so
this package bridges the two Keras versions:

* :func:`quantize_model` takes a Keras 3 model from ``keras_coordatt.applications`` (fixed input
  shape), rebuilds it in tf_keras with its weights (:func:`to_tf_keras`), quantizes it with
  tfmot's default 8-bit scheme plus our QuantizeConfigs, and returns a tf_keras model ready for
  ``compile`` / ``fit``; optionally with its ranges calibrated from data (:func:`calibrate`).
* :class:`CoordAttention`, :class:`SqueezeExcite` and :class:`CBAM` here are the tf_keras
  versions of the layers, for tf_keras users: annotate them with
  ``tfmot.quantization.keras.quantize_annotate_layer(layer, AttentionQuantizeConfig())`` (or
  :func:`annotate_layer`) and they export to an all-int8 TFLite block.
* Saved QAT models load inside :func:`quantize_scope`.

Export the QAT model with ``keras_coordatt.export.export_tflite(qat_model, path, mode="int8")``.

Importing this package imports TensorFlow, tf_keras and tfmot; ``import keras_coordatt`` does
not. Use ``keras`` (Keras 3) or ``tf_keras`` explicitly, never ``tf.keras``.
"""

from keras_coordatt.quantization._deps import QAT_EXTRA_HINT, import_qat_stack

import_qat_stack()

from keras_coordatt.quantization.qat import (  # noqa: E402
    annotate_layer,
    calibrate,
    check_fixed_input_shape,
    quantize_model,
    quantize_scope,
)
from keras_coordatt.quantization.tf_keras_layers import (  # noqa: E402
    CBAM,
    ActivationQuantizer,
    AttentionQuantizeConfig,
    CoordAttention,
    KernelQuantizer,
    OutputQuantizeConfig,
    SigmoidOutputQuantizer,
    SqueezeExcite,
)
from keras_coordatt.quantization.twin import SUPPORTED_LAYERS, to_tf_keras  # noqa: E402

__all__ = [
    "CBAM",
    "QAT_EXTRA_HINT",
    "SUPPORTED_LAYERS",
    "ActivationQuantizer",
    "AttentionQuantizeConfig",
    "CoordAttention",
    "KernelQuantizer",
    "OutputQuantizeConfig",
    "SigmoidOutputQuantizer",
    "SqueezeExcite",
    "annotate_layer",
    "calibrate",
    "check_fixed_input_shape",
    "quantize_model",
    "quantize_scope",
    "to_tf_keras",
]
