"""Runs the TFLite converter on a frozen graph, in a process of its own.

``main(REQUEST_DIR)``, loaded from this file by ``export_tflite`` (only TensorFlow is imported)
and called once per request by ``serve`` in the reusable child (``_converter_process``):
reads ``request.json`` (input / output tensor names, converter settings), ``graph.pb`` (a frozen
``GraphDef``: every variable already a constant) and, for post-training int8,
``calibration.npy`` (the representative samples, ``(steps, batch, H, W, C)``); writes
``model.tflite``, or ``error.txt`` and exit status 1 when the converter raises. A request with
``"detection_postprocess"`` (an object detector: the graph's outputs are box encodings and
class scores) gets the custom op ``TFLite_Detection_PostProcess`` appended
(:func:`_with_postprocess`). A converter
that crashes (segmentation fault, abort) ends only this process: the parent reports it.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path


def _imported_graph(tf, graph_def):
    """``graph_def`` imported into a function without inputs or outputs (its graph holds every
    tensor by name)."""

    def import_graph():
        tf.compat.v1.import_graph_def(graph_def, name="")

    return tf.compat.v1.wrap_function(import_graph, [])


def _concrete_function(tf, graph_def, input_name: str, output_names: list[str]):
    """The frozen graph as a concrete function ``inputs -> outputs``."""
    wrapped = _imported_graph(tf, graph_def)
    graph = wrapped.graph
    return wrapped.prune(
        graph.as_graph_element(input_name), [graph.as_graph_element(n) for n in output_names]
    )


def _frozen_graph_converter(tf, graph_def, input_name: str, output_names: list[str],
                            refreeze: bool = False):
    """A ``TFLiteConverterV2`` that converts ``graph_def`` as it is.

    ``graph_def`` is already frozen with its functions inlined (``export_tflite`` did it).
    ``from_concrete_functions`` on it as a concrete function would freeze it again, pruning
    and rebuilding it op by op in Python twice: about three seconds at 224x224, to convert the
    same GraphDef. So the converter gets the graph with its input and output tensors through
    its freezing step, ``_freeze_concrete_function``; the result is the same file, byte for
    byte (tests/test_export_tflite.py). ``refreeze=True``, or a TensorFlow whose converter has no
    such step, takes the public path.
    """
    converter_class = tf.lite.TFLiteConverter
    if refreeze or not callable(getattr(converter_class, "_freeze_concrete_function", None)):
        function = _concrete_function(tf, graph_def, input_name, output_names)
        return converter_class.from_concrete_functions([function])

    imported = _imported_graph(tf, graph_def)
    inputs = [imported.graph.get_tensor_by_name(input_name)]
    outputs = [imported.graph.get_tensor_by_name(name) for name in output_names]
    converter = converter_class.from_concrete_functions([imported])
    converter._freeze_concrete_function = lambda: (graph_def, inputs, outputs, imported)  # noqa: SLF001
    return converter


#: The op's attributes (the kernel's names) and their text-proto value fields.
_POSTPROCESS_ATTRIBUTES = (
    ("max_detections", "i"), ("max_classes_per_detection", "i"), ("use_regular_nms", "b"),
    ("nms_score_threshold", "f"), ("nms_iou_threshold", "f"), ("y_scale", "f"),
    ("x_scale", "f"), ("h_scale", "f"), ("w_scale", "f"), ("num_classes", "i"),
)


def _implements_signature(options: dict) -> str:
    """The ``experimental_implements`` text proto naming ``TFLite_Detection_PostProcess``."""
    def value(kind, raw):
        return str(bool(raw)).lower() if kind == "b" else repr(float(raw)) if kind == "f" \
            else str(int(raw))

    fields = [f'attr {{ key: "{key}" value {{ {kind}: {value(kind, options[key])} }} }}'
              for key, kind in _POSTPROCESS_ATTRIBUTES]
    return " ".join(['name: "TFLite_Detection_PostProcess"', *fields])


def _with_postprocess(tf, network, options: dict):
    """``network`` (``image -> [box_encodings (1, N, 4), scores (1, N, C + 1)]``) followed by
    a composite function that the converter replaces by ``TFLite_Detection_PostProcess`` (the
    TF Object Detection API's way); ``options["anchors"]``: ``(N, 4)`` center-size ``yxhw``.
    Returns ``(module, concrete function)``: the converter saves the module as a SavedModel,
    the path on which the composite function survives (freezing would inline it)."""
    import numpy as np

    anchors = np.asarray(options["anchors"], dtype=np.float32)

    @tf.function(experimental_implements=_implements_signature(options))
    def postprocess(box_encodings, scores, anchors):
        del box_encodings, scores, anchors  # the converter replaces this body by the op
        return (tf.constant(0.0, name="boxes"), tf.constant(0.0, name="classes"),
                tf.constant(0.0, name="scores"), tf.constant(0.0, name="num_detections"))

    spec = network.inputs[0]
    module = tf.Module()
    module.network = network

    @tf.function(input_signature=[tf.TensorSpec(spec.shape, spec.dtype)])
    def serve(images):
        box_encodings, scores = module.network(images)
        return postprocess(box_encodings, scores, tf.constant(anchors))

    module.serve = serve
    return module, serve.get_concrete_function()


def _converter(tf, graph_def, request: dict, directory: Path, refreeze: bool = False):
    names = (request["input"], request["outputs"])
    if request.get("detection_postprocess"):
        function = _concrete_function(tf, graph_def, *names)
        module, function = _with_postprocess(tf, function, request["detection_postprocess"])
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], module)
        converter.allow_custom_ops = True
    else:
        converter = _frozen_graph_converter(tf, graph_def, *names, refreeze=refreeze)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    mode = request["mode"]
    if mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if not request["qat"]:
            import numpy as np

            samples = np.load(directory / "calibration.npy", mmap_mode="r")
            converter.representative_dataset = lambda: ([np.asarray(s)] for s in samples)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter._experimental_calibrate_only = True  # noqa: SLF001 - see _quantize
        # (A QAT model keeps TFLITE_BUILTINS: TF 2.21's converter refuses INT8-only ops without
        # a representative dataset before it looks at the fake-quant ops; export_tflite checks
        # the result instead.)
        if request["int8_io"]:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        elif request.get("uint8_input"):
            converter.inference_input_type = tf.uint8
    return converter


def _widen_range():
    """``keras_coordatt.export._ranges.widen_range``, loaded from its file beside this one (this
    process imports TensorFlow only, not the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_ranges", Path(__file__).with_name("_ranges.py"))
    ranges = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ranges)
    return ranges.widen_range


def _widen_calibrated_ranges(calibrated: bytes, min_width: float, pixel_input: bool) -> bytes:
    """Every tensor range the calibrator recorded, at least ``min_width`` wide.

    A tensor that is constant on the calibration data (a dead ReLU, a block whose input never
    fires) is recorded as ``[0, 0]``; the quantizer then gives it a scale near 1e-8, and
    XNNPACK refuses to run the model (its requantization scales go out of range). With
    ``pixel_input`` the model's input range is ``[0, 255]`` whatever the calibration images
    held: scale 1 and zero point 0, so a uint8 input value is the pixel value.
    """
    import numpy as np
    from tensorflow.lite.tools import flatbuffer_utils

    widen_range = _widen_range()
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    for subgraph in model.subgraphs:
        for index, tensor in enumerate(subgraph.tensors):
            quantization = tensor.quantization
            if quantization is None or quantization.min is None or quantization.max is None:
                continue
            low, high = widen_range(quantization.min, quantization.max, min_width)
            if pixel_input and index in subgraph.inputs:
                low, high = [0.0], [255.0]
            quantization.min = np.asarray(low, dtype=np.float32)
            quantization.max = np.asarray(high, dtype=np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _quantize(tf, calibrated: bytes, request: dict) -> bytes:
    """The second half of post-training int8 conversion, on widened calibration ranges (what
    ``TFLiteConverter._quantize`` does after calibrating)."""
    from tensorflow.lite.python.convert import mlir_quantize

    io_type = tf.int8 if request["int8_io"] else tf.float32
    pixel_input = bool(request.get("uint8_input"))
    return mlir_quantize(
        _widen_calibrated_ranges(calibrated, request["min_range_width"], pixel_input),
        input_data_type=tf.uint8 if pixel_input else io_type,
        output_data_type=io_type,
    )


def _standard_output_order(flatbuffer: bytes) -> bytes:
    """The model's outputs in the post-processing op's order (boxes, classes, scores, count):
    the SavedModel path sorts them by name."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    codes = [getattr(code, "customCode", None) for code in model.operatorCodes]
    subgraph = model.subgraphs[0]
    for operator in subgraph.operators:
        code = codes[operator.opcodeIndex]
        if code is not None and code.decode() == "TFLite_Detection_PostProcess":
            if sorted(operator.outputs) != sorted(subgraph.outputs):
                raise ValueError("TFLite_Detection_PostProcess does not give the model's outputs.")
            subgraph.outputs = list(operator.outputs)
            return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    raise ValueError("The converter did not produce TFLite_Detection_PostProcess.")


def main(directory: str, refreeze: bool = False) -> int:
    """Converts the request in ``directory``; 0, or 1 with ``error.txt`` written.
    ``refreeze``: see :func:`_frozen_graph_converter`."""
    directory = Path(directory)
    try:
        import tensorflow as tf

        request = json.loads((directory / "request.json").read_text())
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString((directory / "graph.pb").read_bytes())
        flatbuffer = _converter(tf, graph_def, request, directory, refreeze).convert()
        if request["mode"] == "int8" and not request["qat"]:
            flatbuffer = _quantize(tf, flatbuffer, request)
        if request.get("detection_postprocess"):
            flatbuffer = _standard_output_order(flatbuffer)
        (directory / "model.tflite").write_bytes(flatbuffer)
    except Exception as error:  # reported to the parent, which raises
        (directory / "error.txt").write_text(
            f"{type(error).__name__}: {error}\n\n{traceback.format_exc()}"
        )
        return 1
    return 0


def serve(reply_fd: int) -> int:
    """Converts the request folder named on each stdin line; answers ``main``'s status on
    ``reply_fd``. The converter's output of a request goes to its folder's ``converter.log``."""
    try:
        import tensorflow  # noqa: F401 - imported while the parent freezes the first graph
    except ImportError:
        pass  # main() reports it in error.txt
    home = os.getcwd()
    with os.fdopen(reply_fd, "w") as replies:
        for line in sys.stdin:
            directory = line.rstrip("\n")
            sys.stdout.flush()
            sys.stderr.flush()
            log = os.open(os.path.join(directory, "converter.log"),
                          os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.close(log)
            os.chdir(directory)
            try:
                status = main(directory)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.chdir(home)
            replies.write(f"{status}\n")
            replies.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
