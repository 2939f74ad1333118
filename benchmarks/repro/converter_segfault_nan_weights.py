"""Reproduction: the TFLite converter (TensorFlow 2.21.0) dies with SIGSEGV, instead of raising,
on a fake-quantized graph whose weights are NaN.

What we saw: the README's QAT recipe on a freshly built ``MobileNeXtCA`` at 224x224 killed the
Python process inside ``TFLiteConverter.convert()``. Root cause, in two parts:

1. Ours (fixed): ``keras_coordatt.quantization.calibrate`` took the activation ranges with
   BatchNormalization on its moving statistics only. In a fresh network those (0 / 1) do not
   match the batch statistics ``fit`` uses: training-mode activations were 100x wider than the
   ranges and got clipped, every BatchNormalization then divided the gradient by a tiny batch
   standard deviation, the gradients reached 1e30 at the stem, adam's second moment overflowed
   float32 and one step made every weight NaN. Calibration now covers both modes, and
   ``export_tflite`` refuses NaN weights with an error naming them.
2. The converter's (upstream): with NaN weights and ranges, the quantization driver's bias-scale
   check (``QuantizationDriver::ShouldCheckBiasScale`` called from
   ``SetBiasParamsWithAdjustments``, in ``PrepareQuantizePass``) reads the storage width of a
   quantized type that was never set (``mlir::Type::getIntOrFloatBitWidth`` on a null type) and
   segfaults. The graph below is the smallest we found that triggers it: one Coordinate
   Attention block (its 1x1 ``conv1`` shared by the two pooled branches) followed by a 1x1
   conv, quantized by tfmot, every trainable weight set to NaN. With finite weights it converts.
   ``export_tflite`` now converts in a child process, so such a crash raises
   ``keras_coordatt.export.ConversionError`` instead of ending the caller's process.

    python benchmarks/repro/converter_segfault_nan_weights.py nan      # exit status -11 / 139
    python benchmarks/repro/converter_segfault_nan_weights.py finite   # "converted ... bytes"

Needs the ``qat`` extra (tf-keras, tensorflow-model-optimization).
"""

import sys

import numpy as np
import tensorflow as tf

from keras_coordatt.quantization import CoordAttention, annotate_layer, calibrate, quantize_scope
from keras_coordatt.quantization._deps import import_qat_stack


def quantized_block():
    """tfmot QAT model: CoordAttention (16 channels, mip 8) -> 1x1 conv, ranges calibrated."""
    _, tf_keras, tfmot = import_qat_stack()
    inputs = tf_keras.Input((16, 16, 16))
    x = CoordAttention(reduction=2, name="ca")(inputs)
    model = tf_keras.Model(inputs, tf_keras.layers.Conv2D(8, 1, name="after")(x))
    annotated = tf_keras.models.clone_model(model, clone_function=annotate_layer)
    with quantize_scope():
        qat = tfmot.quantization.keras.quantize_apply(annotated)
    calibrate(qat, np.random.default_rng(0).random((4, 16, 16, 16), dtype=np.float32))
    return qat


def main(weights: str) -> None:
    qat = quantized_block()
    if weights == "nan":
        for variable in qat.trainable_weights:
            variable.assign(tf.fill(variable.shape, float("nan")))
    spec = tf.TensorSpec((1, 16, 16, 16), tf.float32)
    serve = tf.function(lambda x: qat(x, training=False), input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], qat
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    print("converted", len(converter.convert()), "bytes", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "nan")
