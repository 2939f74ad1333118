"""MobileNetV2 with optional Coordinate Attention / SE / CBAM: ``houqb/CoordAttention``'s
``mbv2_ca.py`` (``attention="ca"``) and ``d-li14/mobilenetv2.pytorch`` (``attention=None``).

Network (``docs/reference_networks.md`` §b, §c), block ``i`` = the upstream ``features.i``:

* ``stem``: 3x3 conv stride 2 (``_make_divisible(32 * alpha)`` channels), BN, ReLU6;
* ``block1``: t = 1: dw 3x3, BN, ReLU6, 1x1 projection, BN. **No attention in this block.**
* ``block2`` ... ``block17``: t = 6: 1x1 expansion, BN, ReLU6, dw 3x3 (stride of the stage),
  BN, ReLU6, **attention** (CA / SE / CBAM, on the down-sampled map), 1x1 projection, BN,
  residual add when stride 1 and in == out channels;
* ``head``: 1x1 conv to 1280 channels (``_make_divisible(1280 * alpha)`` only when alpha > 1),
  BN, ReLU6; then global average pool, dropout, ``predictions``.

Channel widths use ``_make_divisible(c * alpha, d)`` with ``d = 4`` only for ``alpha == 0.1``
(``d = 8`` otherwise), exactly as the originals.
"""

from __future__ import annotations

import dataclasses

import keras

from keras_coordatt.applications import _blocks
from keras_coordatt.applications._blocks import make_divisible, width_divisor

FAMILY = "mobilenet_v2"

#: (expansion t, output channels c, repeats n, stride s) of the original code.
CFG = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


@dataclasses.dataclass(frozen=True)
class InvertedResidual:
    """Block ``block{index}``: 1x1 expansion ``in_channels -> hidden`` (``hidden = in_channels *
    expansion``; none when expansion is 1), depthwise 3x3 at ``stride``, attention, 1x1
    projection to ``out_channels``; residual add when ``residual``."""

    index: int
    expansion: int
    in_channels: int
    hidden: int
    out_channels: int
    stride: int
    residual: bool


def block_plan(alpha: float) -> _blocks.NetworkPlan:
    """The stem, the 17 :class:`InvertedResidual` blocks and the head at width ``alpha``."""
    divisor = width_divisor(alpha)
    channels = make_divisible(32 * alpha, divisor)
    stem = _blocks.Stem(filters=channels)
    blocks = []
    for expansion, c, n, s in CFG:
        out = make_divisible(c * alpha, divisor)
        for repeat in range(n):
            stride = s if repeat == 0 else 1
            blocks.append(
                InvertedResidual(
                    index=len(blocks) + 1,
                    expansion=expansion,
                    in_channels=channels,
                    hidden=round(channels * expansion),
                    out_channels=out,
                    stride=stride,
                    residual=stride == 1 and channels == out,
                )
            )
            channels = out
    head = make_divisible(1280 * alpha, divisor) if alpha > 1.0 else 1280
    return _blocks.NetworkPlan(stem, tuple(blocks), _blocks.Head(channels, head))


def _inverted_residual(blocks: _blocks.Blocks, x, block: InvertedResidual, attention, reduction):
    prefix = f"block{block.index}"
    shortcut = x
    if block.expansion != 1:
        x = blocks.conv_bn(x, block.hidden, 1, 1, f"{prefix}_expand", activation=True)
        x = blocks.depthwise_bn(x, block.stride, f"{prefix}_dw", activation=True)
        x = blocks.attention(x, attention, reduction, prefix)
    else:
        # The expansion-1 block has no attention in mbv2_ca.py.
        x = blocks.depthwise_bn(x, block.stride, f"{prefix}_dw", activation=True)
    x = blocks.conv_bn(x, block.out_channels, 1, 1, f"{prefix}_project", activation=False)
    if block.residual:
        x = keras.layers.Add(name=f"{prefix}_add")([shortcut, x])
    return x


def MobileNetV2(
    input_shape: tuple[int | None, int | None, int] | None = None,
    alpha: float = 1.0,
    include_top: bool = True,
    weights: str | None = "imagenet",
    input_tensor=None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    name: str | None = None,
    *,
    attention: str | None = None,
    reduction: int | None = None,
    dropout_rate: float = 0.1,
    output_stride: int = 32,
) -> keras.Model:
    """MobileNetV2 (Sandler et al. 2018) as in the CA paper's code, optionally with attention.

    ``attention=None`` is d-li14's MobileNetV2 (the paper's baseline, 3,504,872 params at
    alpha 1.0); ``attention="ca"`` is ``mbv2_ca.py``'s MBV2_CA (3,950,648 params), the model of
    the official ``mbv2_ca.pth``; ``"se"`` / ``"cbam"`` put SE / CBAM at the same place (after
    the depthwise conv's ReLU6, before the projection, in blocks 2-17).

    Args:
        input_shape: ``(rows, cols, channels)`` (``(channels, rows, cols)`` for channels_first);
            rows/cols may be None, else >= 32. Default ``(224, 224, 3)`` with include_top,
            ``(None, None, 3)`` without.
        alpha: width multiplier; any value > 0 (upstream: 0.1, 0.25, 0.35, 0.5, 0.75, 1.0, 1.4).
        include_top: add global average pooling, dropout and the ``predictions`` Dense layer.
        weights: None, ``"imagenet"``, a registry preset name or a local ``.pth`` /
            ``.pth.tar`` / ``.weights.h5`` path (see ``keras_coordatt.weights``).
        input_tensor: optional Keras tensor to use as the model input.
        pooling: with ``include_top=False``: None (4-D output ``(N, H/32, W/32, C)``),
            ``"avg"`` or ``"max"`` (2-D output ``(N, C)``).
        classes: number of classes of the top.
        classifier_activation: activation of ``predictions``; None gives logits.
        name: model name.
        attention: None, ``"ca"``, ``"se"`` or ``"cbam"``.
        reduction: attention reduction ratio; None means 32 for CA (paper), 24 for SE / CBAM
            (gives the paper's 3.89 M params at alpha 1.0).
        dropout_rate: dropout before the classifier: 0.1 as MBV2_CA (d-li14's code has none;
            dropout is inactive at inference so it does not change outputs).
        output_stride: 32 (the classifier network), 16 or 8 for dense prediction: the
            depthwise convs of ``block14`` (16; also ``block7`` for 8) run at stride 1 and the
            later ones are dilated (rate 2, then 4; DeepLab convention, see
            ``keras_coordatt.applications._blocks``). Same layers and weights as at 32, so
            ``weights`` load unchanged; with include_top the classifier pools the denser map
            (not the published accuracy).

    Returns:
        A ``keras.Model``: ``(N, classes)`` with include_top, else the ``(N, ceil(H/os),
        ceil(W/os), C)`` feature map (``os = output_stride``) or its pooled ``(N, C)`` vector;
        C = 1280 for alpha <= 1.
    """
    resolved = _blocks.prepare(
        family=FAMILY, input_shape=input_shape, alpha=alpha, include_top=include_top,
        weights=weights, input_tensor=input_tensor, pooling=pooling, classes=classes,
        classifier_activation=classifier_activation, attention=attention, reduction=reduction,
        dropout_rate=dropout_rate, output_stride=output_stride,
    )
    alpha, attention = resolved["alpha"], resolved["attention"]
    blocks = _blocks.Blocks(resolved["data_format"], resolved["output_stride"])
    img_input, inputs = _blocks.make_input(resolved["input_shape"], input_tensor)

    plan = block_plan(alpha)
    x = blocks.stem(img_input, plan.stem)
    for block in plan.blocks:
        x = _inverted_residual(blocks, x, block, attention, resolved["reduction"])
    x = blocks.head(x, plan.head)
    x = blocks.top(
        x, include_top=include_top, pooling=pooling, classes=classes,
        classifier_activation=classifier_activation, dropout_rate=dropout_rate,
    )
    spec = _blocks.make_spec(
        FAMILY, resolved, include_top=include_top, pooling=pooling, classes=classes
    )
    return _blocks.finish(inputs, x, weights, name=name, spec=spec, resolved=resolved)


def MobileNetV2CA(
    input_shape: tuple[int | None, int | None, int] | None = None,
    alpha: float = 1.0,
    include_top: bool = True,
    weights: str | None = "imagenet",
    input_tensor=None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    name: str | None = None,
    *,
    reduction: int | None = None,
    dropout_rate: float = 0.1,
    output_stride: int = 32,
) -> keras.Model:
    """MobileNetV2 with Coordinate Attention: ``MobileNetV2(attention="ca")``, the MBV2_CA of
    ``houqb/CoordAttention`` (3,950,648 params, 306.67 M MAdds at alpha 1.0 and 224x224).

    ``weights="imagenet"`` loads the official ``mbv2_ca.pth`` (alpha 1.0, 74.3 % top-1).
    Arguments as :func:`MobileNetV2`.
    """
    return MobileNetV2(
        input_shape=input_shape, alpha=alpha, include_top=include_top, weights=weights,
        input_tensor=input_tensor, pooling=pooling, classes=classes,
        classifier_activation=classifier_activation, name=name, attention="ca",
        reduction=reduction, dropout_rate=dropout_rate, output_stride=output_stride,
    )
