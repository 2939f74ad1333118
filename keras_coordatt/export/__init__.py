"""Exports: TFLite (float32 / float16 / dynamic / int8) and LiteRT evaluation.

``export_tflite`` needs the ``[tf]`` extra, ``inspect_tflite`` / ``evaluate_tflite`` the
``[litert]`` extra; both are imported only when a function is called, so importing this package
is cheap. TF-Hub SavedModels: :func:`export_hub` (``[hub]`` extra, same lazy imports), the
model card's details in a :class:`ModelCardInfo`. TFLite metadata for MediaPipe Tasks:
:func:`write_metadata` (``[mediapipe]`` extra, for its flatbuffer schemas). Object detectors with
``TFLite_Detection_PostProcess``: :func:`export_detector_tflite` / :func:`run_detector_tflite`.
"""

from keras_coordatt.export.detection import export_detector_tflite, run_detector_tflite
from keras_coordatt.export.hub import HubExport, export_hub
from keras_coordatt.export.litert import LiteRTModel, evaluate_tflite
from keras_coordatt.export.metadata import write_metadata
from keras_coordatt.export.model_card import ModelCardInfo
from keras_coordatt.export.tflite import (
    MODES,
    ConversionError,
    TFLiteOp,
    export_tflite,
    float_ops,
    inspect_tflite,
    is_qat_model,
)

__all__ = [
    "MODES",
    "ConversionError",
    "HubExport",
    "LiteRTModel",
    "ModelCardInfo",
    "TFLiteOp",
    "evaluate_tflite",
    "export_detector_tflite",
    "export_hub",
    "export_tflite",
    "float_ops",
    "inspect_tflite",
    "is_qat_model",
    "run_detector_tflite",
    "write_metadata",
]
