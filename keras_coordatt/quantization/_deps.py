"""Lazy, guarded imports of TensorFlow, tf_keras and tensorflow-model-optimization."""

from __future__ import annotations

import os

QAT_EXTRA_HINT = (
    "keras_coordatt.quantization needs tf-keras and tensorflow-model-optimization: "
    "pip install 'keras-coordatt[qat]'"
)


def import_qat_stack():
    """Returns ``(tf, tf_keras, tfmot)`` or raises an ImportError naming the ``[qat]`` extra.

    ``import tensorflow_model_optimization`` sets ``TF_USE_LEGACY_KERAS=1`` as a side effect; the
    previous value is restored afterwards so that importing this package does not change what
    ``tf.keras`` means for the rest of the process (tfmot keeps its own reference to tf_keras).
    """
    previous = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow as tf
        import tensorflow_model_optimization as tfmot
        import tf_keras
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(QAT_EXTRA_HINT) from error
    finally:
        if previous is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = previous
    return tf, tf_keras, tfmot
