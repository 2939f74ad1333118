"""Attention layers: Coordinate Attention and the SE / CBAM baselines."""

from keras_coordatt.layers.cbam import CBAM
from keras_coordatt.layers.coord_attention import CoordAttention
from keras_coordatt.layers.squeeze_excite import SqueezeExcite

__all__ = ["CBAM", "CoordAttention", "SqueezeExcite"]
