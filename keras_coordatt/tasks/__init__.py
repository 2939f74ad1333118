"""Task models on the backbones of ``keras_coordatt.applications``, standard Keras layers only.

Segmentation: :func:`DeepLabV3` (DeepLabV3 / DeepLabV3+) returns an :class:`ImageSegmenter`
(a functional model whose ``compile()`` has segmentation defaults); :func:`default_atrous_rates`
gives its ASPP rates per output stride; :func:`check_segmentation_batch` checks a batch of
images and masks before training; :func:`at_input_size` rebuilds a segmenter built for any
input size at one fixed size (QAT and TFLite export need it).

Detection: :func:`SSDLite` returns an :class:`ObjectDetector` (raw box encodings / class logits
as outputs, matching and the focal or hard-negative loss inside ``compute_loss``, decoded and
NMS'd detections from ``predict``, keras-hub's label and output dicts); :func:`ssd_anchors`
gives the SSD priors; :func:`check_detection_batch` checks labels before training;
:data:`BOUNDING_BOX_FORMATS` lists the accepted ``bounding_box_format`` values. Imports only
Keras (and NumPy).
"""

from keras_coordatt.tasks.anchors import BOUNDING_BOX_FORMATS, ssd_anchors
from keras_coordatt.tasks.detection import ObjectDetector, check_detection_batch
from keras_coordatt.tasks.fixed_size import at_input_size
from keras_coordatt.tasks.segmentation import (
    ATROUS_RATES,
    DeepLabV3,
    ImageSegmenter,
    check_segmentation_batch,
    default_atrous_rates,
)
from keras_coordatt.tasks.ssdlite import SSDLite

__all__ = [
    "ATROUS_RATES",
    "BOUNDING_BOX_FORMATS",
    "DeepLabV3",
    "ImageSegmenter",
    "ObjectDetector",
    "SSDLite",
    "at_input_size",
    "check_detection_batch",
    "check_segmentation_batch",
    "default_atrous_rates",
    "ssd_anchors",
]
