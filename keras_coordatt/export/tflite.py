"""TFLite export (float32, float16, dynamic-range, full-integer int8) and a .tflite op lister."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_coordatt.export._data import DataLike, calibration_samples
from keras_coordatt.export._dilation import direct_dilated_convolutions
from keras_coordatt.export._image_input import ImageInput, image_input
from keras_coordatt.export._ranges import range_pairs, widen_range
from keras_coordatt.export._request import conversion_request, write_request

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


def _check_backend(model) -> None:
    import keras

    if _is_keras3_model(model) and keras.backend.backend() != "tensorflow":
        raise ValueError(
            "TFLite export of a Keras 3 model needs the TensorFlow backend "
            f"(KERAS_BACKEND=tensorflow), the current backend is {keras.backend.backend()!r}."
        )


class ConversionError(RuntimeError):
    """The TFLite converter failed or crashed on a model (its own message is included)."""


def _check_finite_weights(model) -> None:
    """ValueError naming the variables of ``model`` that hold NaN or infinity."""
    bad = [w.name for w in model.weights if not np.all(np.isfinite(np.asarray(w)))]
    if bad:
        raise ValueError(
            f"{len(bad)} variable(s) of {model.name!r} hold NaN or infinity, e.g. "
            f"{', '.join(bad[:5])}: training diverged (lower the learning rate, or start QAT "
            "from calibrated ranges: quantize_model(model, calibration_data=...)). Nothing "
            "was converted."
        )


#: Smallest |gamma| a BatchNormalization of a QAT model is converted with. The converter folds
#: BN into the preceding conv and quantizes the folded kernel per output channel: a channel
#: with gamma == 0 (a pruned or never-firing unit) would have scale 0 and leave the conv float.
MIN_BATCH_NORM_GAMMA = 1e-6


def _batch_norms(model) -> list:
    """Every BatchNormalization layer of ``model``, nested ones (attention blocks) included."""
    if _is_keras3_model(model):
        layers = model._flatten_layers(include_self=False, recursive=True)  # noqa: SLF001
    else:
        layers = model.submodules
    return [layer for layer in layers if type(layer).__name__ == "BatchNormalization"]


class _ConvertibleQuantization:
    """Context for a quantized conversion: every ``<name>_min`` / ``<name>_max`` range of a QAT
    model (``ranges``) at least ``MIN_RANGE_WIDTH`` wide and every BatchNormalization
    ``|gamma|`` at least ``MIN_BATCH_NORM_GAMMA`` (both restored on exit). A degenerate range
    (``min == max``: a tensor that never moved) or a zero gamma gives the converter no scale,
    and it would compute the ops around that tensor in float. The outputs change by far less
    than one int8 step."""

    def __init__(self, model, ranges: bool):
        self.model = model
        self.ranges = ranges
        self.saved = []

    def _replace(self, variable, value) -> None:
        self.saved.append((variable, np.asarray(variable)))
        variable.assign(np.asarray(value).astype(np.asarray(variable).dtype))

    def __enter__(self):
        for name, min_var, max_var in range_pairs(self.model.weights) if self.ranges else ():
            low, high = np.asarray(min_var), np.asarray(max_var)
            if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
                raise ValueError(f"Quantization range {name} is not finite: {low} .. {high}.")
            new_low, new_high = widen_range(low, high)
            if not (np.array_equal(new_low, low) and np.array_equal(new_high, high)):
                self._replace(min_var, new_low)
                self._replace(max_var, new_high)
        for module in _batch_norms(self.model):
            gamma = getattr(module, "gamma", None)
            if gamma is not None:
                value = np.asarray(gamma)
                if np.any(np.abs(value) < MIN_BATCH_NORM_GAMMA):
                    sign = np.where(value < 0, -1.0, 1.0)
                    self._replace(gamma, np.where(np.abs(value) < MIN_BATCH_NORM_GAMMA,
                                                  sign * MIN_BATCH_NORM_GAMMA, value))
        return self

    def __exit__(self, *exc_info):
        for variable, value in reversed(self.saved):
            variable.assign(value)


def _frozen_graph(tf, model, shape, batch_size, pixels: ImageInput | None = None, mode="",
                  qat=False, head=None):
    """``model(inputs, training=False)`` (or, for a uint8 image input, ``pixels.wrap``'s
    normalisation then the model) traced for one input signature, variables frozen; ``head``
    (``outputs -> outputs``, TensorFlow ops) is applied to the model's outputs if given.

    Returns ``(graph_def, input_name, output_names)``. Frozen the way the converter freezes a
    concrete function itself (no lowering through a SavedModel: that kept a Keras 3 model's
    variables as VAR_HANDLE ops and made a QAT conversion trace every learning-phase branch).
    """
    dtype = pixels.input_dtype(tf, mode) if pixels else tf.float32
    spec = tf.TensorSpec((batch_size, *shape), dtype, name="inputs")
    call = pixels.wrap(tf, model, qat) if pixels else lambda x: model(x, training=False)
    serve = tf.function(call if head is None else lambda x: head(call(x)),
                        input_signature=[spec])
    function = serve.get_concrete_function()
    return (freeze_variables(function), function.inputs[0].name,
            [tensor.name for tensor in function.outputs])


def freeze_variables(function, public_api: bool = False):
    """The ``GraphDef`` of a concrete function with every variable a constant and every function
    call inlined (``convert_variables_to_constants_v2_as_graph(lower_control_flow=False,
    aggressive_inlining=True)``'s graph; node names unchanged).

    That public function also rebuilds the frozen graph as a concrete function, which prunes it
    op by op in Python (a second or two at 224x224) to give a result we do not use; this calls
    the step before it, ``_replace_variables_by_constants``, and falls back to the public
    function (``public_api=True``, or a TensorFlow without that step). Both give the same bytes
    (tests/test_export_tflite.py).
    """
    from tensorflow.python.framework import convert_to_constants as constants

    options = {"lower_control_flow": False, "aggressive_inlining": True}
    if not public_api:
        try:
            data = constants._FunctionConverterDataInEager(func=function, **options)  # noqa: SLF001
            replace = constants._replace_variables_by_constants  # noqa: SLF001
        except (AttributeError, TypeError):
            pass
        else:
            return replace(converter_data=data)[0]
    return constants.convert_variables_to_constants_v2_as_graph(function, **options)[1]


def _run_converter(request: dict, graph_def, samples, isolate: bool) -> bytes:
    """Converts in a child process (``isolate``) or in this one; returns the flatbuffer."""
    with tempfile.TemporaryDirectory(prefix="keras_coordatt_tflite_") as folder:
        folder = Path(folder)
        write_request(folder, request, graph_def, samples)
        if isolate:
            _convert_in_child(folder)
        else:
            from keras_coordatt.export import _convert_worker

            _convert_worker.main(str(folder))
        if (folder / "error.txt").exists():
            message = (folder / "error.txt").read_text().split("\n\n", 1)[0]
            raise ConversionError(f"The TFLite converter failed: {message}")
        return (folder / "model.tflite").read_bytes()


def _convert_in_child(folder: Path) -> None:
    from keras_coordatt.export._converter_process import CONVERTER

    status, died = CONVERTER.run(folder)
    if died or (status != 0 and not (folder / "error.txt").exists()):
        log = folder / "converter.log"
        text = log.read_bytes().decode(errors="replace") if log.exists() else ""
        tail = text.strip().splitlines()[-15:]
        cause = signal.Signals(-status).name if status < 0 else f"exit status {status}"
        raise ConversionError(
            f"The TFLite converter crashed ({cause}); this process and the model are "
            "unharmed. Its last output:\n  " + "\n  ".join(tail)
        )


def _convert(model, mode, qat, shape, batch_size, representative_dataset, steps, int8_io,
             isolate, pixels: ImageInput | None, head=None, extra_request=None) -> bytes:
    """Freezes and converts ``model`` (``head``: see :func:`_frozen_graph`; ``extra_request``:
    more keys of the worker's request, e.g. the detection post-processing)."""
    tf = _import_tf()
    _check_finite_weights(model)
    samples = None
    if mode == "int8" and not qat:
        samples = calibration_samples(representative_dataset, batch_size, steps, shape)
        if pixels:
            pixels.check_calibration(samples)
    quantized = mode in ("int8", "dynamic")
    with _ConvertibleQuantization(model, qat) if quantized else contextlib.nullcontext(), \
            direct_dilated_convolutions(tf):
        graph_def, input_name, output_names = _frozen_graph(tf, model, shape, batch_size,
                                                            pixels, mode, qat, head)
    request = conversion_request(mode, qat, input_name, output_names, int8_io=int8_io,
                                 uint8_input=pixels is not None, **(extra_request or {}))
    return _run_converter(request, graph_def, samples, isolate)


def _check_arguments(model, mode, representative_dataset, int8_io, batch_size) -> bool:
    """Validates the arguments of :func:`export_tflite`; returns whether ``model`` is QAT."""
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}: use one of {', '.join(map(repr, MODES))}.")
    if int8_io and mode != "int8":
        raise ValueError(f"int8_io=True needs mode='int8', got mode={mode!r}.")
    if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise ValueError(f"batch_size must be None or an integer >= 1, got {batch_size!r}.")
    keras3 = _is_keras3_model(model)
    if not keras3 and not _is_tf_keras_model(model):
        raise ValueError(
            f"export_tflite takes a Keras 3 or tf_keras model, got {type(model).__name__}."
        )
    qat = not keras3 and is_qat_model(model)
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
    return qat


def _write_atomically(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as handle:
        try:
            handle.write(content)
        except BaseException:
            handle.close()
            os.unlink(handle.name)
            raise
    os.chmod(handle.name, 0o644)  # NamedTemporaryFile creates 0600; a model file is not secret
    os.replace(handle.name, path)


def _float_op_report(model, bad: list[TFLiteOp]) -> str:
    """Which layers and tensors the float ops of an int8 export touch."""
    layer_names = [layer.name for layer in getattr(model, "layers", [])]
    tensors, layers = [], []
    for op in bad:
        for name, dtype in zip(op.input_names + op.output_names, op.inputs + op.outputs,
                               strict=False):
            if dtype in _FLOAT_TYPES and name not in tensors:
                tensors.append(name)
                layers += [n for n in layer_names if f"/{n}/" in f"/{name}" and n not in layers]
    return (
        f"The int8 export computes in float in {len(bad)} op(s): "
        f"{', '.join(op.name for op in bad[:8])}. Layers: {', '.join(layers[:8]) or 'unknown'}. "
        f"Float tensors: {'; '.join(t[:120] for t in tensors[:6])}. A layer was not quantized "
        "(or its range is degenerate); pass strict=False to keep such a model."
    )


def export_tflite(
    model,
    path: str | os.PathLike,
    mode: str = "float32",
    representative_dataset: DataLike | None = None,
    *,
    int8_io: bool = False,
    input_type: str = "float32",
    normalization: tuple | None = None,
    input_shape: tuple[int, int, int] | None = None,
    batch_size: int | None = None,
    representative_steps: int | None = None,
    strict: bool = True,
    isolate: bool = True,
) -> str:
    """Converts ``model`` to a ``.tflite`` file with builtin ops only; returns ``path``.

    Args:
        model: a Keras 3 model (TensorFlow backend), a tf_keras model, or a QAT model from
            :func:`keras_coordatt.quantization.quantize_model` (its fake-quant ranges give the
            int8 parameters). ``model(inputs, training=False)`` is traced for one input
            signature, frozen and converted.
        path: output file (parent folders are created; written atomically).
        mode: ``"float32"``; ``"float16"`` (fp16 weights); ``"dynamic"`` (int8 weights, float
            activations); ``"int8"`` (full integer: every op int8, from a QAT model or by
            post-training calibration on ``representative_dataset``).
        representative_dataset: calibration inputs for ``mode="int8"`` on a float model: input
            batches, ``(inputs, labels)`` batches or arrays, a ``tf.data.Dataset``, or a callable
            returning one; preprocessed exactly like the model's inputs. Ignored for QAT models.
        int8_io: with ``mode="int8"``, int8 input and output tensors instead of float ones (use
            each tensor's scale / zero point to (de)quantize; :func:`evaluate_tflite` does).
        input_type: ``"uint8"``: the file takes uint8 RGB images (N, H, W, 3) and normalises
            them itself, ``(pixels - mean) / std`` (what phone runtimes such as MediaPipe feed);
            outputs stay float32; an int8 file's first op is the uint8 -> int8 ``QUANTIZE``.
            ``representative_dataset`` then holds raw images (0..255).
        normalization: ``(mean, std)`` for ``input_type="uint8"``, in pixel units, one value
            or one per channel; default :func:`~keras_coordatt.applications.preprocess_input`'s.
        input_shape: the ``(H, W, C)`` to export a model built with ``(None, None, C)`` at.
        batch_size: fixed batch size of the exported graph; None (default) exports a dynamic
            batch (LiteRT's ``resize_tensor_input`` picks it; the default shape is batch 1).
        representative_steps: use at most this many calibration samples (batches of
            ``batch_size``, or single images for a dynamic batch).
        strict: for ``mode="int8"``, raise if any op computes in float (see :func:`float_ops`).
        isolate: run the converter in a child process (default), so that a converter crash
            raises :class:`ConversionError` instead of ending this process; about 3 s more.

    A QAT model's quantization ranges narrower than ``MIN_RANGE_WIDTH`` and BatchNormalization
    gammas smaller than ``MIN_BATCH_NORM_GAMMA`` are converted widened to them (a degenerate
    range or a zero gamma would leave its ops in float); the model itself is unchanged.

    Raises:
        ValueError: unknown ``mode``; ``mode="int8"`` with neither a representative dataset nor
            a QAT model; ``int8_io`` without int8; a QAT model with another mode; an input shape
            that is not fixed; a bad ``input_type`` / ``normalization``; a Keras 3 model on a
            non-TensorFlow backend; NaN or infinite weights; with ``strict``, an int8 result with
            float ops (naming layers and tensors).
        ConversionError: the converter raised, or crashed.
    """
    qat = _check_arguments(model, mode, representative_dataset, int8_io, batch_size)
    shape = _resolve_shape(model, input_shape)
    pixels = image_input(input_type, normalization, mode, int8_io, shape[-1])
    _check_backend(model)
    flatbuffer = _convert(model, mode, qat, shape, batch_size, representative_dataset,
                          representative_steps, int8_io, isolate, pixels)
    path = Path(path)
    _write_atomically(path, flatbuffer)
    if mode == "int8" and strict:
        bad = float_ops(inspect_tflite(path), allow_float_io=not int8_io)
        if bad:
            path.unlink()
            raise ValueError(_float_op_report(model, bad))
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
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()

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
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}

    def dtypes(indices):
        return tuple(np.dtype(tensors[i]["dtype"]).name for i in indices if i >= 0)

    def names(indices):
        return tuple(tensors[i]["name"] for i in indices if i >= 0)

    return [
        TFLiteOp(
            name=op["op_name"],
            inputs=dtypes(op["inputs"]),
            outputs=dtypes(op["outputs"]),
            input_names=names(op["inputs"]),
            output_names=names(op["outputs"]),
        )
        for op in interpreter._get_ops_details()  # noqa: SLF001 - LiteRT has no public op list
    ]


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
