"""Quantization-aware training of keras_coordatt models through tensorflow-model-optimization."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_coordatt.export._data import DataLike, iter_batches
from keras_coordatt.export._ranges import MIN_RANGE_WIDTH, widen_range
from keras_coordatt.quantization import tf_keras_layers
from keras_coordatt.quantization._bn_floor import (
    DEFAULT_BN_VARIANCE_FLOOR,
    check_variance_floor,
    floor_bn_gain,
)
from keras_coordatt.quantization._deps import import_qat_stack
from keras_coordatt.quantization.configs import QuantizeScheme
from keras_coordatt.quantization.twin import to_tf_keras

tf, tf_keras, tfmot = import_qat_stack()
_qk = tfmot.quantization.keras


def quantize_scope(*custom_objects: dict):
    """tfmot's ``quantize_scope`` plus keras_coordatt's tf_keras layers, quantizers and configs.

    Use it to load a saved QAT model::

        with keras_coordatt.quantization.quantize_scope():
            model = tf_keras.models.load_model("qat.keras")
    """
    return _qk.quantize_scope(tf_keras_layers.custom_objects(), *custom_objects)


def annotate_layer(layer):
    """``quantize_annotate_layer`` with the QuantizeConfig keras_coordatt uses for ``layer``.

    Our attention twins get :class:`AttentionQuantizeConfig`, ``Multiply`` gets
    :class:`OutputQuantizeConfig`, anything else tfmot's default 8-bit registry.
    """
    if isinstance(layer, tf_keras_layers.ATTENTION_LAYERS):
        return _qk.quantize_annotate_layer(layer, tf_keras_layers.AttentionQuantizeConfig())
    if type(layer) is tf_keras.layers.Multiply:
        return _qk.quantize_annotate_layer(layer, tf_keras_layers.OutputQuantizeConfig())
    return _qk.quantize_annotate_layer(layer)


def _is_tf_keras_model(model) -> bool:
    return isinstance(model, tf_keras.Model)


def check_fixed_input_shape(model) -> None:
    """ValueError unless every input of ``model`` has fixed (non-batch) dimensions."""
    for tensor in model.inputs:
        shape = tuple(tensor.shape)
        if any(dim is None for dim in shape[1:]):
            channels = shape[-1] if shape[-1] is not None else 3
            raise ValueError(
                f"QAT needs a fixed input shape; rebuild with input_shape=(224, 224, {channels}) "
                f"(or another fixed size). Model {model.name!r} has input shape {shape}."
            )


def quantize_model(
    model,
    calibration_data: DataLike | None = None,
    *,
    calibration_steps: int | None = None,
    bn_variance_floor: float = DEFAULT_BN_VARIANCE_FLOOR,
):
    """Returns a tf_keras QAT model of ``model``, ready for ``compile`` / ``fit``.

    ``model`` is a Keras 3 functional model (e.g. from ``keras_coordatt.applications``) with a
    fixed input shape; it is rebuilt in tf_keras (:func:`to_tf_keras`, weights copied), annotated
    (:func:`annotate_layer`) and passed to tfmot's ``quantize_apply`` with the default 8-bit
    scheme. A tf_keras functional model (e.g. built with the tf_keras attention layers) is
    quantized as is.

    tfmot's range trackers start at [-6, 6] and follow each batch with decay 0.999, so a fresh
    QAT model needs thousands of steps before its ranges mean anything. Pass
    ``calibration_data`` (input batches, see :func:`calibrate`) to start them from the float
    model's real ranges instead; that is what you want when fine-tuning trained weights.

    ``bn_variance_floor`` (default 0.01, 0 disables) bounds the gain of BatchNormalization
    channels whose moving variance is ~0 (a dead unit upstream): unbounded, the converter folds
    a gain of ``gamma / sqrt(epsilon)`` into the int8 kernel, and the int8 file no longer
    follows the QAT model. In every trained BatchNormalization of the QAT model, ``epsilon`` is
    raised by ``floor = bn_variance_floor * median(moving variance)`` and ``gamma`` rescaled
    per channel so that each channel with variance ``>= floor`` computes exactly what it did; a
    channel below gets the gain it would have at variance ``floor``. Being the layer's
    ``epsilon``, the bound holds through ``fit`` and in the export. ``model`` is not modified.

    Raises:
        ValueError: for a layer that cannot be rebuilt or quantized (naming it and its type), an
            input shape that is not fixed, or ``bn_variance_floor`` outside ``[0, 1]``.
    """
    bn_variance_floor = check_variance_floor(bn_variance_floor)
    if _is_tf_keras_model(model):
        float_model = model
    else:
        if not isinstance(model, keras.Model):
            raise ValueError(f"Expected a Keras 3 or tf_keras model, got {type(model).__name__}.")
        check_fixed_input_shape(model)
        float_model = to_tf_keras(model)
    check_fixed_input_shape(float_model)
    try:
        annotated = tf_keras.models.clone_model(float_model, clone_function=annotate_layer)
        with quantize_scope():
            qat_model = _qk.quantize_apply(annotated, scheme=QuantizeScheme())
    except (ValueError, RuntimeError, TypeError) as error:
        raise ValueError(f"tfmot cannot quantize {model.name!r}: {error}") from error
    floor_bn_gain(qat_model, bn_variance_floor, tf_keras.layers.BatchNormalization)
    if calibration_data is not None:
        calibrate(qat_model, calibration_data, steps=calibration_steps)
    return qat_model


# ---------------------------------------------------------------------------------------------
# Range calibration
# ---------------------------------------------------------------------------------------------


_RANGE_QUANTIZERS = (_qk.quantizers.MovingAverageQuantizer, _qk.quantizers.AllValuesQuantizer)


def _range_quantizers(model) -> list:
    """Every moving-average / all-values activation quantizer of a tfmot QAT model."""
    found: dict[int, Any] = {}
    for layer in model.layers:
        candidates = list(getattr(layer, "_output_quantizers", None) or [])
        candidates += [
            activation.quantizer for activation in getattr(layer, "_quantize_activations", [])
        ]
        if getattr(layer, "quantizer", None) is not None:  # tfmot's input QuantizeLayer
            candidates.append(layer.quantizer)
        for quantizer in candidates:
            if isinstance(quantizer, _RANGE_QUANTIZERS):
                found[id(quantizer)] = quantizer
    return list(found.values())


class _Observations:
    """Per-batch ``[min, max]`` of every range quantizer's input, per calibration pass."""

    def __init__(self):
        self.stats: dict[int, list] = {}
        self.current_pass = 0

    def observer_class(self, base: type) -> type:
        observations = self

        def __call__(quantizer, inputs, training, weights, **kwargs):  # noqa: N807
            if training and weights:
                low = min(float(tf.reduce_min(inputs)), 0.0)
                high = max(float(tf.reduce_max(inputs)), 0.0)
                entry = observations.stats.setdefault(
                    id(weights["min_var"]), [weights["min_var"], weights["max_var"], base, {}]
                )
                entry[3].setdefault(observations.current_pass, []).append((low, high))
            return inputs

        return type(f"Observing{base.__name__}", (base,), {"__call__": __call__})

    def assign(self, min_width: float) -> list[str]:
        """Sets every observed range; returns the names of the ranges that had to be widened."""
        widened = []
        for min_var, max_var, base, passes in self.stats.values():
            low, high = 0.0, 0.0
            for ranges in passes.values():  # the union over the passes
                lows, highs = np.array(ranges).T
                if issubclass(base, _qk.quantizers.AllValuesQuantizer):
                    pass_low, pass_high = lows.min(), highs.max()
                else:  # the fixed point of the moving average: the mean batch range
                    pass_low, pass_high = lows.mean(), highs.mean()
                low, high = min(low, pass_low), max(high, pass_high)
            if not np.isfinite(low) or not np.isfinite(high):
                raise ValueError(
                    f"Calibration saw non-finite values at {min_var.name.rsplit('_min', 1)[0]}: "
                    "the float model overflows on this data (check its weights and inputs)."
                )
            new_low, new_high = (float(v) for v in widen_range(low, high, min_width))
            if (new_low, new_high) != (low, high):
                widened.append(min_var.name.rsplit("_min", 1)[0])
            min_var.assign(new_low)
            max_var.assign(new_high)
        return widened


def _batch_norms(model) -> list:
    return [m for m in model.submodules if isinstance(m, tf_keras.layers.BatchNormalization)]


def _observe(model, data, steps, batch_size) -> None:
    seen = 0
    for inputs, _ in iter_batches(data, batch_size=batch_size, limit=steps):
        model(tf.convert_to_tensor(inputs, tf.float32), training=True)
        seen += 1
    if not seen:
        raise ValueError("calibrate() got no data batches.")


def calibrate(
    model,
    data: DataLike,
    *,
    steps: int | None = None,
    batch_size: int = 32,
    min_width: float = MIN_RANGE_WIDTH,
):
    """Initialises the activation ranges of a QAT model from data; returns the model.

    Runs ``steps`` batches of ``data`` (input batches or ``(inputs, labels)``; arrays are cut
    into ``batch_size`` batches) through the model twice with float activations: once with
    BatchNormalization on its moving statistics (as the exported model computes) and once on
    batch statistics (as ``fit`` computes; the moving statistics are restored afterwards).
    Every moving-average range becomes the union over the two passes of the mean per-batch
    ``[min, max]`` of its tensor (the value tfmot's moving average converges to), the input
    range the overall ``[min, max]``, and weight ranges the current weights. Dropout is off.

    The two passes agree for a trained network. For a freshly built one (moving statistics
    still 0 / 1) they can differ by orders of magnitude, and ranges taken from the first pass
    alone clip every training-mode activation: each BatchNormalization then divides the
    gradient by a tiny batch standard deviation, and after 20 blocks it overflows float32
    (adam's second moment becomes inf, the weights NaN).

    Ranges narrower than ``min_width`` (a tensor constant on the data: dead units, a gate
    that never moves) are widened to it, so that no op of the int8 export falls back to float.

    Raises:
        ValueError: ``model`` is not a QAT model, ``data`` is empty, or the model produces
            non-finite values on it.
    """
    quantizers = _range_quantizers(model)
    if not quantizers:
        raise ValueError(f"{model.name!r} has no activation quantizers: is it a QAT model?")
    observations = _Observations()
    original = {id(q): type(q) for q in quantizers}
    batch_norms = {bn: bn.trainable for bn in _batch_norms(model)}
    moving = [(v, v.numpy()) for bn in batch_norms for v in (bn.moving_mean, bn.moving_variance)]
    dropouts = {m: m.rate for m in model.submodules if isinstance(m, tf_keras.layers.Dropout)}
    try:
        for quantizer in quantizers:
            quantizer.__class__ = observations.observer_class(type(quantizer))
        for dropout in dropouts:
            dropout.rate = 0.0
        for observation_pass, batch_statistics in enumerate((False, True)):
            observations.current_pass = observation_pass
            for bn, trainable in batch_norms.items():  # a non-trainable tf_keras BN runs on
                bn.trainable = trainable and batch_statistics  # its moving statistics
            _observe(model, data, steps, batch_size)
    finally:
        for quantizer in quantizers:
            quantizer.__class__ = original[id(quantizer)]
        for bn, trainable in batch_norms.items():
            bn.trainable = trainable
        for dropout, rate in dropouts.items():
            dropout.rate = rate
        for variable, value in moving:
            variable.assign(value)
    observations.assign(min_width)
    return model
