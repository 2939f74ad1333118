"""uint8 image input for TFLite files: the normalisation moves inside the exported graph.

Phone runtimes (MediaPipe Tasks, the LiteRT task libraries) feed camera frames as uint8 RGB.
With ``export_tflite(..., input_type="uint8")`` the file takes them as they are and computes
``(pixels - mean) / std`` itself (by default :func:`keras_coordatt.applications.preprocess_input`'s
ImageNet statistics), then the model:

- float32 / float16 / dynamic: the graph's input is uint8, a ``CAST`` to float32 comes first;
- int8 (post-training): the graph is traced with a float input that the quantizer turns into
  uint8 (``inference_input_type``), its range pinned to ``[0, 255]`` so that scale 1 and zero
  point 0 make the uint8 value the pixel value; the first op is the ``QUANTIZE`` uint8 -> int8;
- int8 (QAT): the same, the ``[0, 255]`` range given by a fake-quant node on the input.

Outputs stay float32 (dequantized at the end for int8). Only numpy is imported here; TensorFlow
is passed in by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

INPUT_TYPES = ("float32", "uint8")
#: The pixel range of a uint8 input; its int8 quantization has scale 1, so pixels stay exact.
PIXEL_RANGE = (0.0, 255.0)


def _per_channel(values, name: str, channels: int) -> tuple[float, ...]:
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if array.ndim != 1 or len(array) not in (1, channels) or not np.all(np.isfinite(array)):
        raise ValueError(
            f"normalization {name} must be one finite number or {channels} (one per channel), "
            f"got {values!r}."
        )
    return tuple(float(v) for v in np.broadcast_to(array, (channels,)))


@dataclass(frozen=True)
class ImageInput:
    """A uint8 image input: the exported graph computes ``(pixels - mean) / std``.

    ``mean`` / ``std``: one value per channel, in pixel units (0..255).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def normalize(self, tf, pixels):
        """``(pixels - mean) / std`` in float32 (``pixels``: (N, H, W, C), any numeric dtype)."""
        pixels = tf.cast(pixels, tf.float32)
        scale = tf.constant([1.0 / s for s in self.std], tf.float32)
        return (pixels - tf.constant(self.mean, tf.float32)) * scale

    def input_dtype(self, tf, mode: str):
        """The traced input's dtype: uint8 for float files; float32 for int8 (the quantizer
        makes it uint8)."""
        return tf.float32 if mode == "int8" else tf.uint8

    def wrap(self, tf, model, qat: bool):
        """``pixels -> model(normalize(pixels), training=False)`` (a QAT model gets a fake-quant
        node with range ``[0, 255]`` on the pixels, so the converter quantizes the
        normalisation between it and the model's own input quantizer). The normalised pixels
        get no fake-quant of their own when the model's input quantizer follows: two in a row
        with different ranges before a same-scale op (the stem's ``PAD`` of MobileNetV2)
        stop the converter ("'tfl.pad' op quantization parameters violate the same scale
        constraint")."""

        def serve(pixels):
            if not qat:
                return model(self.normalize(tf, pixels), training=False)
            low, high = PIXEL_RANGE
            pixels = tf.quantization.fake_quant_with_min_max_args(pixels, min=low, max=high)
            centred = self._fake_quant(tf, pixels - tf.constant(self.mean, tf.float32),
                                       [low - m for m in self.mean], [high - m for m in self.mean])
            scaled = centred * tf.constant([1.0 / s for s in self.std], tf.float32)
            if not _quantizes_its_input(model):
                bounds = [(low - m) / s for m, s in zip(self.mean, self.std, strict=True)]
                tops = [(high - m) / s for m, s in zip(self.mean, self.std, strict=True)]
                scaled = self._fake_quant(tf, scaled, bounds, tops)
            return model(scaled, training=False)

        return serve

    @staticmethod
    def _fake_quant(tf, tensor, lows, highs):
        """``tensor`` fake-quantized to one range covering every channel's (QAT conversion)."""
        return tf.quantization.fake_quant_with_min_max_args(
            tensor, min=min(min(lows), 0.0), max=max(max(highs), 0.0)
        )

    def check_calibration(self, samples: np.ndarray) -> None:
        """ValueError unless the calibration samples are raw pixels (within 0..255)."""
        low, high = float(np.min(samples)), float(np.max(samples))
        if low < PIXEL_RANGE[0] or high > PIXEL_RANGE[1]:
            raise ValueError(
                "With input_type='uint8' the representative_dataset holds raw RGB images "
                f"(0..255, what the file takes), got values in [{low:.3g}, {high:.3g}]: pass the "
                "images before preprocess_input (the file normalises them itself)."
            )


def _quantizes_its_input(model) -> bool:
    """Whether every layer that reads ``model``'s input is a tfmot ``QuantizeLayer`` (the
    input quantizer ``quantize_apply`` puts first)."""
    layers = getattr(model, "layers", None) or []
    if not layers or type(layers[0]).__name__ != "InputLayer":
        return False
    readers = [node.outbound_layer for node in getattr(layers[0], "_outbound_nodes", [])]
    return bool(readers) and all(type(layer).__name__ == "QuantizeLayer"
                                 and getattr(layer, "quantizer", None) is not None
                                 for layer in readers)


def image_input(
    input_type: str,
    normalization: tuple[Sequence[float] | float, Sequence[float] | float] | None,
    mode: str,
    int8_io: bool,
    channels: int,
) -> ImageInput | None:
    """The :class:`ImageInput` for ``export_tflite``'s arguments (None for float32 input)."""
    if input_type not in INPUT_TYPES:
        raise ValueError(
            f"Unknown input_type {input_type!r}: use one of {', '.join(map(repr, INPUT_TYPES))}."
        )
    if input_type == "float32":
        if normalization is not None:
            raise ValueError("normalization=... needs input_type='uint8' (the float32 file "
                             "takes inputs already normalised).")
        return None
    if int8_io:
        raise ValueError("input_type='uint8' and int8_io=True exclude each other: the uint8 "
                         "file takes pixels, int8_io makes the input int8.")
    return ImageInput(*normalization_values(normalization, channels))


def normalization_values(normalization, channels: int) -> tuple[tuple[float, ...], ...]:
    """``(mean, std)``, one value per channel, from a ``(mean, std)`` pair of numbers or
    sequences in pixel units; None gives ``preprocess_input``'s ImageNet statistics."""
    if normalization is None:
        from keras_coordatt.applications.imagenet_utils import IMAGENET_MEAN, IMAGENET_STD

        normalization = (
            [255.0 * m for m in IMAGENET_MEAN], [255.0 * s for s in IMAGENET_STD]
        )
    if not isinstance(normalization, (tuple, list)) or len(normalization) != 2:
        raise ValueError(f"normalization must be a (mean, std) pair, got {normalization!r}.")
    mean = _per_channel(normalization[0], "mean", channels)
    std = _per_channel(normalization[1], "std", channels)
    if any(s <= 0 for s in std):
        raise ValueError(f"normalization std must be positive, got {std}.")
    return mean, std
