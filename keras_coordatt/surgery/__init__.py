"""Attention in any functional Keras model: insert it, or swap existing attention for another.

:func:`add_attention` puts a :class:`~keras_coordatt.CoordAttention` (or SE / CBAM) block after
chosen layers of a functional model (pretrained keras.applications / keras-hub networks
included); :func:`replace_attention` swaps squeeze-and-excite blocks (MobileNetV3's,
EfficientNet's, the package's) for CA. Both return a new model built from copies of the
layers and weights; the model given is never modified. With ``identity_init`` (the default) the
new model starts out computing what the original computed (:mod:`._identity` says how).
"""

from keras_coordatt.surgery._api import COMPENSATIONS, add_attention, replace_attention
from keras_coordatt.surgery._placement import RULES

__all__ = ["COMPENSATIONS", "RULES", "add_attention", "replace_attention"]
