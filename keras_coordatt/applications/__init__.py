"""keras.applications-style builders: MobileNetV2 / MobileNeXt with Coordinate Attention.

Builders: :func:`MobileNetV2`, :func:`MobileNetV2CA`, :func:`MobileNeXt`, :func:`MobileNeXtCA`.
Helpers: :func:`preprocess_input`, :func:`decode_predictions` (ImageNet), :func:`feature_extractor`
(``P1``-``P5`` pyramid), :func:`feature_strides`, :func:`profile` (params / MAdds),
:func:`markdown_table`,
:func:`model_spec` (the :class:`ModelSpec` a built model carries).
The table of models: :data:`CATALOG` (:class:`ModelEntry` per model), :func:`get_model_entry`,
:func:`find_model_entry`, :func:`model_names`.
"""

from keras_coordatt.applications.catalog import (
    CATALOG,
    ModelEntry,
    find_model_entry,
    get_model_entry,
    model_names,
)
from keras_coordatt.applications.features import feature_extractor, feature_strides
from keras_coordatt.applications.imagenet_utils import decode_predictions, preprocess_input
from keras_coordatt.applications.mobilenet_v2 import MobileNetV2, MobileNetV2CA
from keras_coordatt.applications.mobilenext import MobileNeXt, MobileNeXtCA
from keras_coordatt.applications.profiling import (
    count_madds,
    count_params,
    markdown_table,
    profile,
)
from keras_coordatt.applications.spec import ModelSpec, ModelWithSpec, model_spec

__all__ = [
    "CATALOG",
    "ModelSpec",
    "ModelWithSpec",
    "MobileNeXt",
    "MobileNeXtCA",
    "MobileNetV2",
    "MobileNetV2CA",
    "ModelEntry",
    "count_madds",
    "count_params",
    "decode_predictions",
    "feature_extractor",
    "feature_strides",
    "find_model_entry",
    "get_model_entry",
    "markdown_table",
    "model_names",
    "model_spec",
    "preprocess_input",
    "profile",
]
