"""Parameter and multiply-accumulate (MAdds) counts, and the README's comparison table.

Counting rules (the ones of ``docs/reference_networks.md`` and of the papers' tables):

* ``params``: weights a PyTorch ``sum(p.numel() for p in model.parameters())`` counts, i.e. every
  Keras weight except BatchNorm moving statistics (which PyTorch keeps as buffers);
* ``madds``: multiply-accumulates of convolutions and Dense layers only (no BN, activations,
  pooling or elementwise products), for one image. Attention layers count their internal
  convs on the tensors they really see: CoordAttention ``conv1`` on the ``H + W`` pooled
  positions, ``conv_h`` on ``H``, ``conv_w`` on ``W``; SE its two 1x1 convs once; CBAM its shared
  MLP twice (average- and max-pooled vectors) plus the 7x7 spatial conv on ``H x W``.

With these rules MBV2_CA-1.0 at 224x224 gives 3,950,648 params / 306.67 M MAdds, d-li14's
MobileNetV2-1.0 3,504,872 / 300.77 M and MobileNeXt (i2rnetv3) 1.0 3,535,416 / 311.3 M, the
numbers measured on the PyTorch originals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import keras

from keras_coordatt.layers import CBAM, CoordAttention, SqueezeExcite

_MOVING_STATS = ("moving_mean", "moving_variance")


def count_params(model: keras.Model) -> int:
    """Parameters as PyTorch counts them: all weights but BatchNorm moving statistics."""
    total = 0
    for variable in model.weights:
        name = variable.path.rsplit("/", 1)[-1]
        if name in _MOVING_STATS:
            continue
        total += math.prod(int(d) for d in variable.shape)
    return total


def _spatial(shape, data_format: str) -> tuple[int, int, int]:
    """``(H, W, C)`` of a 4-D shape; raises for unknown sizes."""
    if data_format == "channels_first":
        _, channels, height, width = shape
    else:
        _, height, width, channels = shape
    if height is None or width is None:
        raise ValueError(
            "MAdds need a fixed input size: build the model with e.g. input_shape=(224, 224, 3)."
        )
    return int(height), int(width), int(channels)


def _layer_madds(layer) -> int:
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        height, width, channels = _spatial(layer.output.shape, layer.data_format)
        kh, kw = layer.kernel_size
        return height * width * channels * kh * kw
    if isinstance(layer, keras.layers.Conv2D):
        height, width, channels = _spatial(layer.output.shape, layer.data_format)
        kh, kw = layer.kernel_size
        in_channels = int(layer.kernel.shape[2])
        return height * width * channels * kh * kw * in_channels
    if isinstance(layer, keras.layers.Dense):
        return int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
    if isinstance(layer, CoordAttention):
        height, width, channels = _spatial(layer.input.shape, layer.data_format)
        positions = (height if "h" in layer.directions else 0) + (
            width if "w" in layer.directions else 0
        )
        # conv1 on the H + W pooled positions, then conv_h on H and conv_w on W.
        return 2 * positions * channels * layer.mip
    if isinstance(layer, SqueezeExcite):
        return 2 * layer.channels * layer.hidden
    if isinstance(layer, CBAM):
        height, width, _ = _spatial(layer.input.shape, layer.data_format)
        kernel = layer.spatial_kernel_size
        return 2 * (2 * layer.channels * layer.hidden) + height * width * kernel * kernel * 2
    return 0


def count_madds(model: keras.Model) -> int:
    """Conv + Dense multiply-accumulates for one image (needs a fixed input size)."""
    return sum(_layer_madds(layer) for layer in model.layers)


def profile(model: keras.Model) -> dict[str, int]:
    """``{"params": ..., "madds": ...}`` of ``model`` (see the module docstring for the rules)."""
    return {"params": count_params(model), "madds": count_madds(model)}


# ----------------------------------------------------------------------------------------------
# README table

#: The CA paper's ImageNet table (README of houqb/CoordAttention): (params M, MAdds M, top-1 %).
PAPER = {
    "MobileNetV2-1.0": (3.5, 300, 72.3),
    "MobileNetV2 + SE": (3.89, 300, 73.5),
    "MobileNetV2 + CBAM": (3.89, 300, 73.6),
    "MobileNetV2 + CA": (3.95, 310, 74.3),
    "MobileNeXt-1.0": (3.5, 300, 74.0),
    "MobileNeXt + SE": (3.89, 300, 74.7),
    "MobileNeXt + CA": (4.09, 330, 75.2),
}


def _variants() -> list[tuple[str, str, Callable[..., keras.Model], dict]]:
    from keras_coordatt.applications import mobilenext
    from keras_coordatt.applications.mobilenet_v2 import MobileNetV2
    from keras_coordatt.applications.mobilenext import MobileNeXt

    def mobilenext_ca(transition):
        def build(**kwargs):
            return mobilenext._build(
                attention="ca", reduction=None, dropout_rate=0.2, name=None, input_tensor=None,
                pooling=None, classes=1000, classifier_activation="softmax",
                include_top=kwargs.pop("include_top", True), transition_attention=transition,
                **kwargs,
            )

        return build

    return [
        ("MobileNetV2-1.0", "`MobileNetV2()`", MobileNetV2, {}),
        ("MobileNetV2 + SE", '`MobileNetV2(attention="se")` (r=24)', MobileNetV2,
         {"attention": "se"}),
        ("MobileNetV2 + CBAM", '`MobileNetV2(attention="cbam")` (r=24)', MobileNetV2,
         {"attention": "cbam"}),
        ("MobileNetV2 + CA", "`MobileNetV2CA()` (r=32)", MobileNetV2, {"attention": "ca"}),
        ("MobileNeXt-1.0", "`MobileNeXt()`", MobileNeXt, {}),
        ("MobileNeXt + SE", '`MobileNeXt(attention="se")` (r=24)', MobileNeXt,
         {"attention": "se"}),
        ("MobileNeXt + CA", "`MobileNeXtCA()` (r=32)", mobilenext_ca("expand"), {}),
        ("MobileNeXt + CA", "variant: no CA in blocks 3, 6, 9, 13, 17", mobilenext_ca("none"),
         {}),
        ("MobileNeXt + CA", "variant: CA at the input of blocks 3, 6, 9, 13, 17",
         mobilenext_ca("input"), {}),
    ]


def profile_table(input_size: int = 224, variants: Iterable | None = None) -> list[dict]:
    """Builds every README variant (alpha 1.0, no weights) and profiles it."""
    rows = []
    for paper_name, builder_label, builder, kwargs in variants or _variants():
        model = builder(input_shape=(input_size, input_size, 3), alpha=1.0, weights=None,
                        **kwargs)
        rows.append({"paper": paper_name, "model": builder_label, **profile(model)})
    return rows


def markdown_table(input_size: int = 224, rows: list[dict] | None = None) -> str:
    """The README's model table: our params / MAdds at ``input_size`` next to the paper's."""
    rows = rows if rows is not None else profile_table(input_size)
    lines = [
        f"| paper row | keras_coordatt | params | MAdds ({input_size}x{input_size}) | "
        "paper params | paper MAdds | paper top-1 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        params_m, madds_m, top1 = PAPER[row["paper"]]
        lines.append(
            f"| {row['paper']} | {row['model']} | {row['params'] / 1e6:.3f} M | "
            f"{row['madds'] / 1e6:.1f} M | {params_m} M | {madds_m} M | {top1} % |"
        )
    return "\n".join(lines)
