"""keras-coordatt: Coordinate Attention (Hou, Zhou, Feng, CVPR 2021) for Keras 3.

The core (``layers``, ``applications``, ``tasks``) needs only ``keras``. Quantization, export and
TF-Hub helpers live in submodules that import TensorFlow, tf_keras and tfmot lazily.
"""

__version__ = "0.1.0"

from keras_coordatt._native_stderr import filtered_native_stderr

# TensorFlow's C++ start-up lines (absl banner, oneDNN / CUDA probe INFO) are held back while
# Keras imports its backend; any other line is shown (see keras_coordatt/_native_stderr.py).
with filtered_native_stderr():
    from keras_coordatt import applications, tasks
    from keras_coordatt.layers import CBAM, CoordAttention, SqueezeExcite
    from keras_coordatt.surgery import add_attention, replace_attention

__all__ = [
    "CBAM", "CoordAttention", "SqueezeExcite", "add_attention", "applications",
    "replace_attention", "tasks", "__version__",
]
