"""Task models on the backbones of ``keras_coordatt.applications``, standard Keras layers only.

Segmentation: :func:`DeepLabV3` (DeepLabV3 / DeepLabV3+) returns an :class:`ImageSegmenter`
(a functional model whose ``compile()`` has segmentation defaults); :func:`default_atrous_rates`
gives its ASPP rates per output stride; :func:`check_segmentation_batch` checks a batch of
images and masks before training; :func:`at_input_size` rebuilds a segmenter built for any
input size at one fixed size (QAT and TFLite export need it). Imports only Keras (and NumPy).
"""

from keras_coordatt.tasks.fixed_size import at_input_size
from keras_coordatt.tasks.segmentation import (
    ATROUS_RATES,
    DeepLabV3,
    ImageSegmenter,
    check_segmentation_batch,
    default_atrous_rates,
)

__all__ = [
    "ATROUS_RATES",
    "DeepLabV3",
    "ImageSegmenter",
    "at_input_size",
    "check_segmentation_batch",
    "default_atrous_rates",
]
