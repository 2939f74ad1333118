"""TFLite metadata for image classifiers, segmenters and detectors, as MediaPipe Tasks reads it.

:func:`write_metadata` adds to a ``.tflite`` file what the TFLite metadata convention puts
there: a ``ModelMetadata`` flatbuffer (file identifier ``M001``) in a buffer of the model named
``"TFLITE_METADATA"`` — model name / description / version / author / licence, the input image
(RGB, normalisation mean / std, value range), the output tensor (a segmenter's per-pixel class
axis or a classifier's scores) and its labels file — and the labels file itself in a zip archive
appended to the model (stored uncompressed; the ``.tflite`` stays a valid model and becomes a
valid zip file). A segmenter also gets MediaPipe's ``"SEGMENTER_METADATA"`` custom metadata
(the output activation, identifier ``V001``). A detector ending in ``TFLite_Detection_PostProcess``
(:func:`~keras_coordatt.export.export_detector_tflite`) gets its four outputs described by the
names MediaPipe's ``ObjectDetector`` looks up — ``location`` (relative ``ymin, xmin, ymax, xmax``
boxes: ``BoundingBoxProperties`` ``BOUNDARIES``, ``RATIO``, index ``[1, 0, 3, 2]`` = where left,
top, right, bottom sit), ``category`` (the labels file, ``TENSOR_VALUE_LABELS``: a class index
names a line), ``score`` and ``number of detections`` — and the first three grouped.

Written from the flatbuffer schemas that ``mediapipe`` ships
(``mediapipe/tasks/metadata/*_py_generated.py``: the metadata, segmenter-options and TFLite
model schemas), loaded from their files so that ``mediapipe`` itself (its native libraries) is
not imported; they need only ``flatbuffers``. In ``mediapipe==1.2.2`` the bundled metadata
writers do not import (a compiled module is missing), the schemas do.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

from keras_coordatt.export._image_input import normalization_values

MEDIAPIPE_EXTRA_HINT = (
    "TFLite metadata needs the flatbuffer schemas shipped with mediapipe: "
    "pip install 'keras-coordatt[mediapipe]'"
)
METADATA_NAME = "TFLITE_METADATA"
SEGMENTER_METADATA_NAME = "SEGMENTER_METADATA"
ACTIVATIONS = {"none": 0, "sigmoid": 1, "softmax": 2}
TASKS = ("segmenter", "classifier", "detector")
LABELS_FILE = "labels.txt"
POSTPROCESS_OP = "TFLite_Detection_PostProcess"
DETECTION_OUTPUTS = {  # the names MediaPipe finds a detector's outputs by, in the op's order
    "location": "Boxes (1, K, 4): relative ymin, xmin, ymax, xmax.",
    "category": "Class indices (1, K) into the labels file.",
    "score": "Scores (1, K).",
    "number of detections": "Number of valid detections (1,).",
}
# The schema version each part needs (metadata_schema.fbs history): custom metadata is 1.5.0,
# tensor groups 1.2.0.
_PARSER_VERSION = {"segmenter": "1.5.0", "classifier": "1.0.0", "detector": "1.2.0"}


@functools.cache
def _schema(name: str):
    """The generated module ``mediapipe/tasks/metadata/{name}.py``, loaded from its file."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(MEDIAPIPE_EXTRA_HINT)
    path = Path(spec.submodule_search_locations[0]) / "tasks" / "metadata" / f"{name}.py"
    if not path.is_file():
        raise ImportError(f"{path} is missing: {MEDIAPIPE_EXTRA_HINT} (mediapipe==1.2.2).")
    module_spec = importlib.util.spec_from_file_location(f"_keras_coordatt_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def _finish(table, identifier: bytes) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(table.Pack(builder), file_identifier=identifier)
    return bytes(builder.Output())


def _tensor_info(model, index: int) -> tuple[tuple[int, ...], str]:
    tflite = _schema("schema_py_generated")
    tensor = model.subgraphs[0].tensors[index]
    names = {v: k.lower() for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
    return tuple(int(d) for d in tensor.shape), names.get(tensor.type, str(tensor.type))


def _image_input(meta, shape, dtype: str, normalization):
    """TensorMetadata of the image input: RGB, normalisation options and the value range."""
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"The model's input is not an RGB image batch: shape {shape}.")
    if dtype == "uint8":
        if normalization is not None:
            raise ValueError("This file takes uint8 pixels and normalises them itself: "
                             "leave normalization=None.")
        mean, std = [0.0], [1.0]
        low, high = [0.0], [255.0]
    elif dtype == "float32":
        mean, std = normalization_values(normalization, 3)
        if len(set(mean)) == 1 and len(set(std)) == 1:  # one value: what MediaPipe accepts
            mean, std = mean[:1], std[:1]
        low = [(0.0 - m) / s for m, s in zip(mean, std, strict=True)]
        high = [(255.0 - m) / s for m, s in zip(mean, std, strict=True)]
    else:
        raise ValueError(f"Image input of type {dtype}: TFLite metadata for images needs a "
                         "uint8 or float32 input (export with int8_io=False).")
    unit = meta.ProcessUnitT()
    unit.optionsType = meta.ProcessUnitOptions.NormalizationOptions
    unit.options = meta.NormalizationOptionsT()
    unit.options.mean, unit.options.std = mean, std
    tensor = meta.TensorMetadataT()
    tensor.name, tensor.description = "image", "Input image (N, H, W, 3), RGB."
    tensor.content = meta.ContentT()
    tensor.content.contentPropertiesType = meta.ContentProperties.ImageProperties
    tensor.content.contentProperties = meta.ImagePropertiesT()
    tensor.content.contentProperties.colorSpace = meta.ColorSpaceType.RGB
    tensor.processUnits = [unit]
    tensor.stats = meta.StatsT()
    tensor.stats.min, tensor.stats.max = low, high
    return tensor


def _labels_file(meta, labels: Sequence[str], classes: int, kind: str = "TENSOR_AXIS_LABELS"):
    if len(labels) != classes or any(not str(x) or "\n" in str(x) for x in labels):
        raise ValueError(f"labels must be {classes} non-empty one-line names (the output has "
                         f"{classes} classes), got {list(labels)!r}.")
    associated = meta.AssociatedFileT()
    associated.name, associated.description = LABELS_FILE, "Class names, one per line."
    associated.type = getattr(meta.AssociatedFileType, kind)
    return associated


def _postprocess_classes(model) -> int | None:
    """``num_classes`` of the model's ``TFLite_Detection_PostProcess`` op; None without one."""
    from flatbuffers import flexbuffers

    codes = [_text(code.customCode or b"") for code in model.operatorCodes]
    for op in model.subgraphs[0].operators:
        if codes[op.opcodeIndex] == POSTPROCESS_OP:
            return int(flexbuffers.Loads(bytes(bytearray(op.customOptions)))["num_classes"])
    return None


def _detection_outputs(meta, labels: Sequence[str], classes: int):
    """TensorMetadata of the op's four outputs and the group of the first three."""
    outputs = []
    for name, description in DETECTION_OUTPUTS.items():
        tensor = meta.TensorMetadataT()
        tensor.name, tensor.description = name, description
        tensor.content = meta.ContentT()
        tensor.content.contentPropertiesType = meta.ContentProperties.FeatureProperties
        tensor.content.contentProperties = meta.FeaturePropertiesT()
        if name != "number of detections":
            tensor.content.range = meta.ValueRangeT()
            tensor.content.range.min = tensor.content.range.max = 2  # (1, K, ...): axis 2
        outputs.append(tensor)
    box = meta.BoundingBoxPropertiesT()
    box.index = [1, 0, 3, 2]  # left, top, right, bottom in (ymin, xmin, ymax, xmax)
    box.type, box.coordinateType = meta.BoundingBoxType.BOUNDARIES, meta.CoordinateType.RATIO
    outputs[0].content.contentPropertiesType = meta.ContentProperties.BoundingBoxProperties
    outputs[0].content.contentProperties = box
    outputs[1].associatedFiles = [_labels_file(meta, labels, classes, "TENSOR_VALUE_LABELS")]
    group = meta.TensorGroupT()
    group.name, group.tensorNames = "detection_result", list(DETECTION_OUTPUTS)[:3]
    return outputs, [group]


def _output(meta, task: str, shape, labels: Sequence[str]):
    """TensorMetadata of the logits / scores: the class axis, its labels file."""
    expected = 4 if task == "segmenter" else 2
    if len(shape) != expected:
        raise ValueError(f"A {task}'s output is {expected}-D, this model's is {shape}: "
                         f"pass task={'classifier' if task == 'segmenter' else 'segmenter'!r}?")
    tensor = meta.TensorMetadataT()
    tensor.content = meta.ContentT()
    if task == "segmenter":
        tensor.name, tensor.description = "segmentation_masks", "Per-pixel class logits."
        tensor.content.contentPropertiesType = meta.ContentProperties.ImageProperties
        tensor.content.contentProperties = meta.ImagePropertiesT()
        tensor.content.contentProperties.colorSpace = meta.ColorSpaceType.GRAYSCALE
        tensor.content.range = meta.ValueRangeT()
        tensor.content.range.min, tensor.content.range.max = 1, 2  # the (H, W) axes
    else:
        tensor.name, tensor.description = "scores", "Per-class scores."
        tensor.content.contentPropertiesType = meta.ContentProperties.FeatureProperties
        tensor.content.contentProperties = meta.FeaturePropertiesT()
    tensor.associatedFiles = [_labels_file(meta, labels, shape[-1])]
    return tensor


def _segmenter_options(activation: str):
    options_schema = _schema("image_segmenter_metadata_schema_py_generated")
    options = options_schema.ImageSegmenterOptionsT()
    options.activation = ACTIVATIONS[activation]
    options.minParserVersion = "1.0.0"
    custom = _schema("metadata_schema_py_generated").CustomMetadataT()
    custom.name = SEGMENTER_METADATA_NAME
    custom.data = list(_finish(options, b"V001"))
    return custom


def _with_metadata_buffer(model, metadata: bytes) -> bytes:
    """The model flatbuffer with ``metadata`` as its (only) ``TFLITE_METADATA`` buffer."""
    import numpy as np

    tflite = _schema("schema_py_generated")
    buffer = tflite.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    entries = [m for m in (model.metadata or []) if _text(m.name) != METADATA_NAME]
    entry = tflite.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers)
    model.buffers.append(buffer)
    model.metadata = [*entries, entry]
    return _finish(model, b"TFL3")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _subgraph(meta, model, task, labels, normalization, activation, path):
    """SubGraphMetadata of ``model`` for ``task`` (default: from its outputs), and the task."""
    graph = model.subgraphs[0]
    classes = _postprocess_classes(model)
    task = task or ("detector" if classes is not None else None)
    if len(graph.inputs) != 1:
        raise ValueError(f"{path}: write_metadata takes models with one image input.")
    subgraph = meta.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [_image_input(meta, *_tensor_info(model, graph.inputs[0]),
                                                 normalization)]
    if task == "detector":
        if classes is None or len(graph.outputs) != 4:
            raise ValueError(
                f"{path}: task='detector' takes a file ending in {POSTPROCESS_OP} with its four "
                f"outputs (export_detector_tflite); this one has {len(graph.outputs)} outputs "
                f"and {'no' if classes is None else 'the'} post-processing op.")
        outputs, groups = _detection_outputs(meta, labels, classes)
        subgraph.outputTensorMetadata, subgraph.outputTensorGroups = outputs, groups
        return subgraph, task
    if len(graph.outputs) != 1:
        raise ValueError(f"{path}: a classifier or segmenter has one output, this model has "
                         f"{len(graph.outputs)}.")
    out_shape, _ = _tensor_info(model, graph.outputs[0])
    task = task or ("segmenter" if len(out_shape) == 4 else "classifier")
    subgraph.outputTensorMetadata = [_output(meta, task, out_shape, labels)]
    if task == "segmenter":
        subgraph.customMetadata = [_segmenter_options(activation)]
    return subgraph, task


def write_metadata(
    path: str | os.PathLike,
    labels: Sequence[str],
    *,
    task: str | None = None,
    name: str | None = None,
    description: str | None = None,
    version: str | None = None,
    author: str | None = None,
    license: str | None = None,  # noqa: A002 - the schema's field name
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    activation: str = "softmax",
    output_path: str | os.PathLike | None = None,
) -> str:
    """Writes TFLite metadata and a labels file into a ``.tflite`` image model; returns its path.

    Args:
        path: a ``.tflite`` file with one float32 or uint8 image input (N, H, W, 3) (e.g. from
            ``export_tflite(..., input_type="uint8")``) and one output, or a detector of
            ``export_detector_tflite`` (four outputs). Metadata it already holds is replaced.
        labels: one name per class (the output's last axis; a detector's class indices,
            without the background), written as ``labels.txt``.
        task: ``"segmenter"`` (output (N, H, W, classes)), ``"classifier"`` (output
            (N, classes)) or ``"detector"`` (``TFLite_Detection_PostProcess`` outputs); default
            from the outputs.
        name, description, version, author, license: model information (``name`` defaults
            to the file name).
        normalization: ``(mean, std)`` in pixel units a float32-input file expects, one value
            or one per channel (default ``preprocess_input``'s ImageNet statistics); must be
            None for a uint8 input (the file normalises itself: mean 0, std 1 are written).
        activation: ``"softmax"``, ``"sigmoid"`` or ``"none"``: what MediaPipe applies to a
            segmenter's logits for its confidence masks (the category mask is the argmax).
        output_path: write there instead of over ``path``.

    Raises:
        ImportError: the ``[mediapipe]`` extra (its schema files) is missing.
        ValueError: not an RGB image model of that task (a detector without the op or its
            four outputs); labels that do not match the classes;
            an unknown task or activation.
    """
    meta, tflite = _schema("metadata_schema_py_generated"), _schema("schema_py_generated")
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}: use one of {sorted(ACTIVATIONS)}.")
    if task not in (None, *TASKS):
        raise ValueError(f"Unknown task {task!r}: use one of {', '.join(map(repr, TASKS))}.")
    model = tflite.ModelT.InitFromPackedBuf(bytearray(Path(path).read_bytes()), 0)
    subgraph, task = _subgraph(meta, model, task, labels, normalization, activation, path)
    in_type = _tensor_info(model, model.subgraphs[0].inputs[0])[1]
    info = meta.ModelMetadataT()
    info.name = name or Path(path).stem
    info.description = description or f"Image {task} ({in_type} RGB input)."
    info.version, info.author, info.license = version, author, license
    info.subgraphMetadata = [subgraph]
    info.minParserVersion = _PARSER_VERSION[task]
    content = io.BytesIO()
    content.write(_with_metadata_buffer(model, _finish(info, b"M001")))
    with zipfile.ZipFile(content, "a", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(LABELS_FILE, "".join(f"{label}\n" for label in labels))
    from keras_coordatt.export.tflite import _write_atomically

    target = Path(output_path if output_path is not None else path)
    _write_atomically(target, content.getvalue())
    return str(target)
