"""TFLite export of an SSD object detector with the ``TFLite_Detection_PostProcess`` op.

:func:`export_detector_tflite` writes the phone convention of SSD models: the network (float,
or int8 from post-training calibration or from a QAT model) maps an image ``(1, H, W, 3)`` to
box encodings ``(1, N, 4)`` and softmax class scores ``(1, N, num_classes + 1)`` (background
at index 0), followed by the custom op ``TFLite_Detection_PostProcess`` that LiteRT's default
op resolver runs (no registration): the anchors ``(N, 4)`` a constant in the op's center-size
``(y, x, h, w)`` form, scales y / x / h / w 10 / 10 / 5 / 5 (the coder's variances 0.1 / 0.2),
``num_classes`` without the background (the op skips score column 0), class-agnostic fast NMS,
one class per detection. The four outputs, in this order:

* ``boxes`` ``(1, K, 4)`` float32 relative ``(ymin, xmin, ymax, xmax)`` (not clipped);
* ``classes`` ``(1, K)`` float32 class indices ``0 .. num_classes - 1``;
* ``scores`` ``(1, K)`` float32;
* ``num_detections`` ``(1,)`` float32; ``K = max_detections``, the slots after it unset.

The scheme is :func:`keras_coordatt.tasks.detection_postprocess.decode_detections` (Keras
``predict``) but for two details: the op keeps every candidate above the score threshold
(Keras the ``pre_nms_top_k`` best) and does not clip its boxes to the image.
:func:`run_detector_tflite` runs such a file and returns the Keras ``predict`` dict.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_coordatt.export import tflite as tflite_lib
from keras_coordatt.export._data import DataLike
from keras_coordatt.export._image_input import image_input
from keras_coordatt.export.metadata import _schema, write_metadata

POSTPROCESS_OP = "TFLite_Detection_PostProcess"
OUTPUT_NAMES = ("boxes", "classes", "scores", "num_detections")


def _check_detector(detector, qat_model, mode: str):
    """The model to convert (``detector`` or ``qat_model``) and whether it is QAT."""
    from keras_coordatt.tasks.detection import ObjectDetector

    if not isinstance(detector, ObjectDetector):
        raise ValueError(
            "export_detector_tflite takes a keras_coordatt.tasks ObjectDetector (from SSDLite), "
            f"got {type(detector).__name__}; export other models with export_tflite."
        )
    if qat_model is None:
        return detector
    if mode != "int8" or not tflite_lib.is_qat_model(qat_model):
        raise ValueError(
            "qat_model= takes the QAT twin of the detector (quantize_model(detector)) and "
            f"exports with mode='int8', got {type(qat_model).__name__} with mode={mode!r}."
        )
    shapes = [tuple(t.shape[1:]) for t in qat_model.outputs]
    expected = [tuple(t.shape[1:]) for t in detector.outputs]
    if shapes != expected:
        raise ValueError(
            f"qat_model's outputs {shapes} are not the detector's {expected}: pass the QAT "
            "model made from this detector by quantize_model(detector)."
        )
    return qat_model


def _check_labels(detector, labels) -> None:
    """Checks ``labels=`` (and the metadata writer's schemas) before the conversion."""
    if labels is None:
        return
    if isinstance(labels, str) or len(labels) != detector.num_classes:
        raise ValueError(f"labels must be the detector's {detector.num_classes} class names "
                         f"(without the background), got {labels!r}.")
    _schema("metadata_schema_py_generated")  # ImportError without the [mediapipe] extra


def postprocess_options(detector, score_threshold: float | None = None,
                        nms_iou_threshold: float | None = None,
                        max_detections: int | None = None) -> dict:
    """The attributes of ``TFLite_Detection_PostProcess`` for ``detector`` (its own thresholds
    unless given), plus ``"anchors"`` as an ``(N, 4)`` list of center-size ``yxhw``."""
    from keras_coordatt.tasks.anchors import VARIANCES
    from keras_coordatt.tasks.detection import _check_number

    score = detector.score_threshold if score_threshold is None else score_threshold
    iou = detector.nms_iou_threshold if nms_iou_threshold is None else nms_iou_threshold
    count = detector.max_detections if max_detections is None else max_detections
    return {
        "max_detections": int(_check_number("max_detections", count, 1)),
        "max_classes_per_detection": 1,
        "use_regular_nms": False,
        "nms_score_threshold": _check_number("score_threshold", score, 0.0, 1.0),
        "nms_iou_threshold": _check_number("nms_iou_threshold", iou, 0.0, 1.0),
        "y_scale": 1.0 / VARIANCES[0], "x_scale": 1.0 / VARIANCES[0],
        "h_scale": 1.0 / VARIANCES[1], "w_scale": 1.0 / VARIANCES[1],
        "num_classes": int(detector.num_classes),
        "anchors": np.asarray(detector.anchors, dtype=np.float32).tolist(),
    }


def network_float_ops(ops: list[tflite_lib.TFLiteOp]) -> list[tflite_lib.TFLiteOp]:
    """:func:`~keras_coordatt.export.float_ops` of a detector file without its
    ``TFLite_Detection_PostProcess`` (which takes float anchors and gives float outputs)."""
    return tflite_lib.float_ops([op for op in ops if op.name != POSTPROCESS_OP])


def export_detector_tflite(
    detector,
    path: str | os.PathLike,
    mode: str = "float32",
    representative_dataset: DataLike | None = None,
    *,
    qat_model=None,
    input_type: str = "float32",
    normalization: tuple | None = None,
    score_threshold: float | None = None,
    nms_iou_threshold: float | None = None,
    max_detections: int | None = None,
    representative_steps: int | None = None,
    strict: bool = True,
    isolate: bool = True,
    labels: Sequence[str] | None = None,
) -> str:
    """Converts an :class:`~keras_coordatt.tasks.ObjectDetector` to a ``.tflite`` detector
    ending in ``TFLite_Detection_PostProcess`` (module docstring); returns ``path``.

    Args:
        detector: the float detector (``SSDLite``); gives the anchors, ``num_classes`` and the
            default thresholds, and is the converted network unless ``qat_model`` is given.
        path: output file (written atomically).
        mode: as :func:`~keras_coordatt.export.export_tflite`: ``"float32"``, ``"float16"``,
            ``"dynamic"`` or ``"int8"`` (every op of the network int8: calibrated on
            ``representative_dataset``, or from ``qat_model``).
        representative_dataset: calibration images ``(M, H, W, 3)`` for ``mode="int8"``
            (preprocessed like the detector's inputs; raw 0..255 pixels with
            ``input_type="uint8"``), or anything ``export_tflite`` takes.
        qat_model: ``quantize_model(detector)`` after QAT fine-tuning (``mode="int8"``, no
            ``representative_dataset``): its fake-quant ranges give the int8 network.
        input_type / normalization: ``"uint8"`` makes the file take uint8 RGB images and
            normalise them itself (MediaPipe's input), as in ``export_tflite``.
        score_threshold / nms_iou_threshold / max_detections: the op's settings (default: the
            detector's own, those of its ``predict``).
        representative_steps: use at most this many calibration images.
        strict: with ``mode="int8"``, raise if an op of the network computes in float.
        isolate: convert in a child process (a converter crash raises ``ConversionError``).
        labels: ``num_classes`` class names (no background): also write the TFLite metadata
            MediaPipe's ``ObjectDetector`` needs (:func:`~keras_coordatt.export.write_metadata`
            ``task="detector"``; ``[mediapipe]`` extra; MediaPipe takes ``input_type="uint8"``).

    The file has a fixed batch of 1 (the op's kernel handles one image).

    Raises:
        ValueError: not an ObjectDetector; a ``qat_model`` that is not the detector's QAT twin
            or with a mode other than int8; the arguments ``export_tflite`` refuses; with
            ``strict``, float ops in an int8 network; ``labels`` not ``num_classes`` names.
        ImportError: ``labels`` without the ``[mediapipe]`` extra.
        ConversionError: the converter raised or crashed, or gave no post-processing op.
    """
    model = _check_detector(detector, qat_model, mode)
    _check_labels(detector, labels)
    qat = tflite_lib._check_arguments(model, mode, representative_dataset, False, 1)
    options = postprocess_options(detector, score_threshold, nms_iou_threshold, max_detections)
    shape = tflite_lib._resolve_shape(model, None)
    pixels = image_input(input_type, normalization, mode, False, shape[-1])
    tflite_lib._check_backend(model)
    tf = tflite_lib._import_tf()

    def head(outputs):  # [box_encodings, class_logits] -> [box_encodings, softmax scores]
        return [outputs[0], tf.nn.softmax(outputs[1], axis=-1)]

    flatbuffer = tflite_lib._convert(
        model, mode, qat, shape, 1, representative_dataset, representative_steps, False,
        isolate, pixels, head, {"detection_postprocess": options},
    )
    path = Path(path)
    tflite_lib._write_atomically(path, flatbuffer)
    if mode == "int8" and strict:
        bad = network_float_ops(tflite_lib.inspect_tflite(path))
        if bad:
            path.unlink()
            raise ValueError(tflite_lib._float_op_report(model, bad))
    if labels is not None:
        write_metadata(path, labels, task="detector")
    return str(path)


def run_detector_tflite(path: str | os.PathLike, images: np.ndarray, num_threads: int = 2,
                        reference_kernels: bool = False) -> dict[str, np.ndarray]:
    """Runs a detector file of :func:`export_detector_tflite` image by image.

    ``images`` ``(B, H, W, 3)``: what the file takes (preprocessed floats, or raw pixels for a
    uint8 input). Returns ``{"boxes": (B, K, 4) relative yxyx, "labels": (B, K) int32,
    "confidence": (B, K), "num_detections": (B,) int32}``: the file's four outputs in the
    form of the Keras ``predict`` dict (slots after ``num_detections`` padded with -1).
    ``reference_kernels=True``: LiteRT's builtin kernels without the default XNNPACK delegate.
    """
    from keras_coordatt.export.litert import _quantize

    interpreter_class, resolver = tflite_lib._litert_interpreter_class()
    options = ({"experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
               if reference_kernels else {})
    interpreter = interpreter_class(model_path=os.fspath(path), num_threads=num_threads,
                                    **options)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    outputs = interpreter.get_output_details()
    if len(outputs) != 4:
        raise ValueError(f"{path} has {len(outputs)} outputs, not the post-processing op's 4.")
    found = {key: [] for key in ("boxes", "labels", "confidence", "num_detections")}
    for image in np.asarray(images):
        interpreter.set_tensor(source["index"], _quantize(np.asarray(image[None]), source))
        interpreter.invoke()
        boxes, classes, scores, count = (interpreter.get_tensor(o["index"])[0] for o in outputs)
        keep = np.arange(len(scores)) < int(count)
        found["boxes"].append(np.where(keep[:, None], boxes, -1.0))
        found["labels"].append(np.where(keep, classes, -1).astype("int32"))
        found["confidence"].append(np.where(keep, scores, -1.0))
        found["num_detections"].append(int(count))
    return {key: np.asarray(value, dtype="int32" if key in ("labels", "num_detections")
                            else "float32") for key, value in found.items()}
