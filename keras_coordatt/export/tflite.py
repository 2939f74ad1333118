"""TFLite export (float32, float16, dynamic-range, full-integer int8) and a .tflite op lister."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_coordatt.export._data import DataLike, iter_batches

MODES = ("float32", "float16", "dynamic", "int8")
TF_EXTRA_HINT = "TFLite export needs TensorFlow: pip install 'keras-coordatt[tf]'"
LITERT_EXTRA_HINT = (
    "Reading or running .tflite files needs ai-edge-litert: pip install 'keras-coordatt[litert]'"
)
_FLOAT_TYPES = frozenset({"float16", "float32", "float64"})


def _import_tf():
    try:
        import tensorflow as tf
    except ImportError as error:  # pragma: no cover - only without the extra
        raise ImportError(TF_EXTRA_HINT) from error
    return tf


def _litert_interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as error:  # pragma: no cover - only without the extra
        raise ImportError(LITERT_EXTRA_HINT) from error
    return Interpreter, OpResolverType


# ---------------------------------------------------------------------------------------------
# Model kinds
# ---------------------------------------------------------------------------------------------


def _is_keras3_model(model) -> bool:
    import keras

    return isinstance(model, keras.Model)


def _is_tf_keras_model(model) -> bool:
    tf_keras = sys.modules.get("tf_keras")
    return tf_keras is not None and isinstance(model, tf_keras.Model)


def is_qat_model(model) -> bool:
    """True for a tf_keras model quantized by tfmot (it holds QuantizeWrapper/QuantizeLayer)."""
    if not _is_tf_keras_model(model):
        return False
    names = {"QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer"}
    return any(type(layer).__name__ in names for layer in model.layers)


def _single_input_shape(model) -> tuple:
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ValueError(f"Model {model.name!r} has no known inputs: build it (functional API).")
    if len(inputs) != 1:
        raise ValueError(f"export_tflite supports single-input models, {model.name!r} has "
                         f"{len(inputs)} inputs.")
    return tuple(inputs[0].shape)


def _resolve_shape(model, input_shape) -> tuple:
    """The fixed (H, W, C) to export, from the model or ``input_shape``."""
    model_shape = _single_input_shape(model)[1:]
    if input_shape is not None:
        input_shape = tuple(int(dim) for dim in input_shape)
        if len(input_shape) != len(model_shape) or any(
            known is not None and known != given
            for known, given in zip(model_shape, input_shape, strict=True)
        ):
            raise ValueError(
                f"input_shape={input_shape} does not fit the model's input shape {model_shape}."
            )
        return input_shape
    if any(dim is None for dim in model_shape):
        channels = model_shape[-1] if model_shape and model_shape[-1] is not None else 3
        raise ValueError(
            f"TFLite export needs a fixed input shape, model {model.name!r} has {model_shape}: "
            f"pass input_shape=(224, 224, {channels}) (or rebuild the model with one)."
        )
    return tuple(model_shape)


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def _representative(data: DataLike, batch_size: int | None, steps: int | None, shape: tuple):
    """A converter representative_dataset: float32 batches cut to the exported batch size."""

    def generator() -> Iterator[list[np.ndarray]]:
        count = 0
        for inputs, _ in iter_batches(data):
            inputs = np.asarray(inputs, dtype=np.float32)
            if inputs.shape[1:] != shape:
                raise ValueError(
                    f"representative_dataset batch of shape {inputs.shape} does not match the "
                    f"exported input shape (batch,) + {shape}."
                )
            size = batch_size or 1
            for start in range(0, len(inputs) - size + 1, size):
                if steps is not None and count >= steps:
                    return
                yield [inputs[start : start + size]]
                count += 1

    return generator


def _check_backend(model) -> None:
    import keras

    if _is_keras3_model(model) and keras.backend.backend() != "tensorflow":
        raise ValueError(
            "TFLite export of a Keras 3 model needs the TensorFlow backend "
            f"(KERAS_BACKEND=tensorflow), the current backend is {keras.backend.backend()!r}."
        )


def _convert(
    tf, model, mode, qat, shape, batch_size, representative_dataset, representative_steps, int8_io
) -> bytes:
    """Traces ``model(inputs, training=False)`` for one input signature and converts it.

    The same path serves Keras 3 and tf_keras models. The concrete function is frozen directly
    (``experimental_lower_to_saved_model = False``): lowered through a SavedModel, the converter
    keeps a Keras 3 model's variables as VAR_HANDLE / READ_VARIABLE ops, and ``from_keras_model``
    on a QAT model traces the learning-phase branches of every layer too, which made a
    MobileNetV2CA 0.35 conversion take over a minute instead of a few seconds.
    """
    spec = tf.TensorSpec((batch_size, *shape), tf.float32, name="inputs")
    serve = tf.function(lambda inputs: model(inputs, training=False), input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], model
    )
    converter.experimental_lower_to_saved_model = False
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if not qat:
            converter.representative_dataset = _representative(
                representative_dataset, batch_size, representative_steps, shape
            )
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # (A QAT model keeps TFLITE_BUILTINS: TF 2.21's converter refuses INT8-only ops without
        # a representative dataset before it looks at the fake-quant ops; `strict` checks
        # the result instead.)
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter.convert()


def export_tflite(
    model,
    path: str | os.PathLike,
    mode: str = "float32",
    representative_dataset: DataLike | None = None,
    *,
    int8_io: bool = False,
    input_shape: tuple[int, int, int] | None = None,
    batch_size: int | None = None,
    representative_steps: int | None = None,
    strict: bool = True,
) -> str:
    """Converts ``model`` to a ``.tflite`` file with builtin ops only; returns ``path``.

    Args:
        model: a Keras 3 model (TensorFlow backend), a tf_keras model, or a QAT model from
            :func:`keras_coordatt.quantization.quantize_model` (its fake-quant ranges give the
            int8 parameters). ``model(inputs, training=False)`` is traced for one input
            signature and converted as a frozen concrete function.
        path: output file (parent folders are created).
        mode: ``"float32"``; ``"float16"`` (fp16 weights); ``"dynamic"`` (int8 weights, float
            activations); ``"int8"`` (full integer: every op int8, from a QAT model or by
            post-training calibration on ``representative_dataset``).
        representative_dataset: calibration inputs for ``mode="int8"`` on a float model: input
            batches, ``(inputs, labels)`` batches or arrays, a ``tf.data.Dataset``, or a callable
            returning one; preprocessed exactly like the model's inputs. Ignored for QAT models.
        int8_io: with ``mode="int8"``, int8 input and output tensors instead of float ones (use
            each tensor's scale / zero point to (de)quantize; :func:`evaluate_tflite` does).
        input_shape: the ``(H, W, C)`` to export a model built with ``(None, None, C)`` at.
        batch_size: fixed batch size of the exported graph; None (default) exports a dynamic
            batch (LiteRT's ``resize_tensor_input`` picks it; the default shape is batch 1).
        representative_steps: use at most this many calibration samples (batches of
            ``batch_size``, or single images for a dynamic batch).
        strict: for ``mode="int8"``, raise if any op computes in float (see :func:`float_ops`).

    Raises:
        ValueError: unknown ``mode``; ``mode="int8"`` with neither a representative dataset nor
            a QAT model; ``int8_io`` without int8; a QAT model with another mode; an input shape
            that is not fixed; a Keras 3 model on a non-TensorFlow backend.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}: use one of {', '.join(map(repr, MODES))}.")
    if int8_io and mode != "int8":
        raise ValueError(f"int8_io=True needs mode='int8', got mode={mode!r}.")
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise ValueError(f"batch_size must be None or an integer >= 1, got {batch_size!r}.")
    keras3 = _is_keras3_model(model)
    tf_keras_model = not keras3 and _is_tf_keras_model(model)
    if not keras3 and not tf_keras_model:
        raise ValueError(
            f"export_tflite takes a Keras 3 or tf_keras model, got {type(model).__name__}."
        )
    qat = tf_keras_model and is_qat_model(model)
    if qat and mode != "int8":
        raise ValueError(
            f"{model.name!r} is a QAT model: export it with mode='int8' (export the float model "
            f"for mode={mode!r})."
        )
    if mode == "int8" and not qat and representative_dataset is None:
        raise ValueError(
            "mode='int8' needs a representative_dataset (calibration input batches) for a float "
            "model, or a QAT model from keras_coordatt.quantization.quantize_model."
        )
    shape = _resolve_shape(model, input_shape)

    _check_backend(model)
    tf = _import_tf()
    flatbuffer = _convert(
        tf, model, mode, qat, shape, batch_size, representative_dataset, representative_steps,
        int8_io,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as handle:
        try:
            handle.write(flatbuffer)
        except BaseException:
            handle.close()
            os.unlink(handle.name)
            raise
    os.chmod(handle.name, 0o644)  # NamedTemporaryFile creates 0600; a model file is not secret
    os.replace(handle.name, path)
    if mode == "int8" and strict:
        bad = float_ops(inspect_tflite(path), allow_float_io=not int8_io)
        if bad:
            path.unlink()
            raise ValueError(
                "The int8 export computes in float in "
                f"{len(bad)} op(s): {', '.join(op.name for op in bad[:8])}. A layer was not "
                "quantized; pass strict=False to keep such a model."
            )
    return str(path)


# ---------------------------------------------------------------------------------------------
# Inspection
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TFLiteOp:
    """One op of a .tflite graph: its builtin name and the dtypes of its tensors."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def is_float(self) -> bool:
        """True if any input or output tensor is floating point."""
        return any(dtype in _FLOAT_TYPES for dtype in self.inputs + self.outputs)


def _interpreter(path: str | os.PathLike, num_threads: int | None = None):
    interpreter_class, resolver = _litert_interpreter_class()
    return interpreter_class(
        model_path=os.fspath(path),
        num_threads=num_threads,
        experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )


def inspect_tflite(path: str | os.PathLike) -> list[TFLiteOp]:
    """Every op of the main graph of a .tflite file, in execution order, with tensor dtypes.

    Read with the LiteRT interpreter (no delegate), e.g.
    ``[TFLiteOp('QUANTIZE', ('float32',), ('int8',)), TFLiteOp('CONV_2D', ('int8', 'int8',
    'int32'), ('int8',)), ...]``. Optional inputs that are absent are left out.
    """
    interpreter = _interpreter(path)
    dtypes = {
        detail["index"]: np.dtype(detail["dtype"]).name
        for detail in interpreter.get_tensor_details()
    }
    ops = []
    for op in interpreter._get_ops_details():  # noqa: SLF001 - LiteRT has no public op list
        ops.append(
            TFLiteOp(
                name=op["op_name"],
                inputs=tuple(dtypes[i] for i in op["inputs"] if i >= 0),
                outputs=tuple(dtypes[i] for i in op["outputs"] if i >= 0),
            )
        )
    return ops


def float_ops(ops: list[TFLiteOp], *, allow_float_io: bool = True) -> list[TFLiteOp]:
    """The ops of ``ops`` that touch a float tensor.

    With ``allow_float_io`` the float side of a ``QUANTIZE`` fed by float (the model input) and
    of a ``DEQUANTIZE`` to float (the model output) is allowed: an all-int8 model with float I/O
    returns ``[]``. Without it every float tensor counts.
    """
    bad = []
    for op in ops:
        if allow_float_io and op.name == "QUANTIZE" and not any(
            dtype in _FLOAT_TYPES for dtype in op.outputs
        ):
            continue
        if allow_float_io and op.name == "DEQUANTIZE" and not any(
            dtype in _FLOAT_TYPES for dtype in op.inputs
        ):
            continue
        if op.is_float:
            bad.append(op)
    return bad
