"""MobileNeXt (Zhou et al., ECCV 2020), the official ``i2rnetv3`` network of
``yitu-opensource/MobileNeXt`` (the paper's 74.02 % model), optionally with attention.

Network (``docs/reference_networks.md`` §d), block ``i`` = the upstream ``features.i``:

* ``stem``: 3x3 conv stride 2, BN, ReLU6;
* ``block1`` ... ``block20``: sandglass blocks, one of four cases (t is a *reduction* ratio;
  ``hidden = in // t``, raised to ``_make_divisible(ceil(out / 6), 16)`` when below out / 6):

  ===== ============================== ================================================
  case  when                           layers (BN after every conv)
  ===== ============================== ================================================
  A     t == 2 (block 1)               dw1 s1, ReLU6 | reduce 1x1 | expand 1x1, ReLU6 |
                                       dw2 stride s
  B     in != out, stride 1, not keep  reduce 1x1 | expand 1x1, ReLU6 (no depthwise)
  C     in != out, stride 2, not keep  reduce 1x1 | expand 1x1, ReLU6 | dw2 stride 2
  D     otherwise                      dw1 s1, ReLU6 | reduce | expand, ReLU6 | dw2 s1;
                                       residual add unless keep_3x3
  ===== ============================== ================================================

  ``keep_3x3`` is set on the first block of the rows with n == 1 and s == 1 (blocks 2, 20);
* no head conv (block 20 outputs 1280 channels); global average pool, dropout 0.2,
  ``predictions``.

Widths: ``_make_divisible(c * alpha, d)`` (``d = 4`` only for ``alpha == 0.1``), except the
1280 stage, which stays 1280 for alpha < 1.

Attention (``attention="ca"``, MobileNeXtCA; also "se" / "cbam"): after the first depthwise
conv's BN + ReLU6 (the CA README: "after the first depthwise 3x3 convolution works better"),
before the reducing 1x1 conv; the residual still runs from block input to block output. Blocks
of cases B and C (blocks 3, 6, 9, 13, 17 at every alpha >= 0.1 we checked) have no first
depthwise conv; there the attention goes after the expanding 1x1 conv's BN + ReLU6 (before the
stride-2 depthwise conv of case C). Reasons: it is the only high-dimensional ReLU6 activation
of those blocks, i.e. the same kind of tensor the attention sees everywhere else (MBV2_CA, and
the first dw of the sandglass block operates at the wide end too); the CA authors advise
putting it after layers that expand channels; and of the obvious options it comes closest to
the paper's 4.09 M parameters (4.12 M; no attention in B/C: 3.97 M; at the B/C block input:
4.04 M). No upstream code or weights exist for MobileNeXt + CA, so this is our choice, not a port.
"""

from __future__ import annotations

import dataclasses
import math

import keras

from keras_coordatt.applications import _blocks
from keras_coordatt.applications._blocks import make_divisible, width_divisor

FAMILY = "mobilenext"

#: (reduction t, output channels c, repeats n, stride s) of the official i2rnetv3.
CFG = (
    (2, 96, 1, 2),
    (6, 144, 1, 1),
    (6, 192, 3, 2),
    (6, 288, 3, 2),
    (6, 384, 4, 1),
    (6, 576, 4, 2),
    (6, 960, 3, 1),
    (6, 1280, 1, 1),
)

#: Where attention goes in blocks without a first depthwise conv (cases B and C).
TRANSITION_ATTENTION = ("expand", "input", "none")


def _hidden(inp: int, out: int, reduction: int) -> int:
    hidden = inp // reduction
    if hidden < out / 6.0:
        hidden = make_divisible(math.ceil(out / 6.0), 16)
    return hidden


@dataclasses.dataclass(frozen=True)
class Sandglass:
    """Block ``block{index}`` of ``case`` A-D (module docstring): 1x1 reduction ``in_channels
    -> hidden`` (``hidden = in_channels // reduction``, raised to at least out / 6), 1x1
    expansion to ``out_channels``, depthwise convs per case; ``stride`` is the block's effective
    stride; residual add when ``residual``."""

    index: int
    case: str
    reduction: int
    in_channels: int
    hidden: int
    out_channels: int
    stride: int
    residual: bool


def _case(reduction: int, channels: int, out: int, stride: int, keep_3x3: bool):
    """``(case, residual, effective stride)`` of a block (module docstring's table)."""
    if reduction == 2:
        return "A", False, stride
    if channels != out and stride == 1 and not keep_3x3:
        return "B", False, 1
    if channels != out and stride == 2 and not keep_3x3:
        return "C", False, 2
    # As upstream: case D's last depthwise conv has stride 1 whatever the cfg says (only
    # reachable with in == out on a stride-2 row at exotic widths).
    return "D", not keep_3x3, 1


def block_plan(alpha: float) -> _blocks.NetworkPlan:
    """The stem and the 20 :class:`Sandglass` blocks at width ``alpha`` (no head)."""
    divisor = width_divisor(alpha)
    channels = make_divisible(32 * alpha, divisor)
    stem = _blocks.Stem(filters=channels)
    blocks = []
    for reduction, c, n, s in CFG:
        out = make_divisible(c * alpha, divisor)
        if c == 1280 and alpha < 1:
            out = 1280
        for repeat in range(n):
            stride = s if repeat == 0 else 1
            keep_3x3 = repeat == 0 and n == 1 and s == 1
            case, residual, effective = _case(reduction, channels, out, stride, keep_3x3)
            blocks.append(
                Sandglass(
                    index=len(blocks) + 1,
                    case=case,
                    reduction=reduction,
                    in_channels=channels,
                    hidden=_hidden(channels, out, reduction),
                    out_channels=out,
                    stride=effective,
                    residual=residual,
                )
            )
            channels = out
    return _blocks.NetworkPlan(stem, tuple(blocks), head=None)


def _sandglass(blocks: _blocks.Blocks, x, block: Sandglass, attention, reduction,
               transition_attention):
    prefix = f"block{block.index}"
    case = block.case
    shortcut = x
    if case in ("A", "D"):
        x = blocks.depthwise_bn(x, 1, f"{prefix}_dw1", activation=True)
        x = blocks.attention(x, attention, reduction, prefix)
    elif transition_attention == "input":
        x = blocks.attention(x, attention, reduction, prefix)
    x = blocks.conv_bn(x, block.hidden, 1, 1, f"{prefix}_reduce", activation=False)
    x = blocks.conv_bn(x, block.out_channels, 1, 1, f"{prefix}_expand", activation=True)
    if case in ("B", "C") and transition_attention == "expand":
        x = blocks.attention(x, attention, reduction, prefix)
    if case != "B":
        x = blocks.depthwise_bn(x, block.stride, f"{prefix}_dw2", activation=False)
    if block.residual:
        x = keras.layers.Add(name=f"{prefix}_add")([shortcut, x])
    return x


def _build(
    *,
    input_shape,
    alpha,
    include_top,
    weights,
    input_tensor,
    pooling,
    classes,
    classifier_activation,
    name,
    attention,
    reduction,
    dropout_rate,
    output_stride: int = 32,
    transition_attention: str = "expand",
) -> keras.Model:
    if transition_attention not in TRANSITION_ATTENTION:
        raise ValueError(
            f"Unknown transition_attention={transition_attention!r}: use one of "
            f"{TRANSITION_ATTENTION}."
        )
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
        x = _sandglass(blocks, x, block, attention, resolved["reduction"], transition_attention)
    x = blocks.head(x, plan.head)
    x = blocks.top(
        x, include_top=include_top, pooling=pooling, classes=classes,
        classifier_activation=classifier_activation, dropout_rate=dropout_rate,
    )
    spec = _blocks.make_spec(
        FAMILY, resolved, include_top=include_top, pooling=pooling, classes=classes
    )
    return _blocks.finish(inputs, x, weights, name=name, spec=spec, resolved=resolved)


def MobileNeXt(
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
    dropout_rate: float = 0.2,
    output_stride: int = 32,
) -> keras.Model:
    """MobileNeXt, the official ``i2rnetv3`` (3,535,416 params at alpha 1.0), with optional
    attention (see the module docstring for where it goes).

    Args:
        input_shape: ``(rows, cols, channels)`` (``(channels, rows, cols)`` for channels_first);
            rows/cols may be None, else >= 32. Default ``(224, 224, 3)`` with include_top,
            ``(None, None, 3)`` without.
        alpha: width multiplier; any value > 0 (upstream: 0.35, 0.5, 0.75, 1.0, 1.4).
        include_top: add global average pooling, dropout and the ``predictions`` Dense layer.
        weights: None, ``"imagenet"``, a registry preset name or a local checkpoint path.
        input_tensor: optional Keras tensor to use as the model input.
        pooling: with ``include_top=False``: None (4-D output), ``"avg"`` or ``"max"`` (2-D).
        classes: number of classes of the top.
        classifier_activation: activation of ``predictions``; None gives logits.
        name: model name.
        attention: None, ``"ca"``, ``"se"`` or ``"cbam"``.
        reduction: attention reduction ratio; None means 32 for CA, 24 for SE / CBAM.
        dropout_rate: dropout before the classifier (0.2 as the original).
        output_stride: 32 (the classifier network), 16 or 8 for dense prediction. The stride
            of a sandglass block sits on its *second* depthwise conv (``dw2``; ``dw1`` is always
            stride 1): ``block13_dw2`` (16; also ``block6_dw2`` for 8) runs at stride 1 and
            every later depthwise conv, ``dw1`` and ``dw2``, is dilated (rate 2, then 4;
            DeepLab convention, see ``keras_coordatt.applications._blocks``). Same layers and
            weights as at 32; with include_top the classifier pools the denser map.

    Returns:
        A ``keras.Model``: ``(N, classes)`` with include_top, else the ``(N, ceil(H/os),
        ceil(W/os), C)`` feature map (``os = output_stride``) or its pooled ``(N, C)`` vector;
        C = 1280 for alpha <= 1.
    """
    return _build(
        input_shape=input_shape, alpha=alpha, include_top=include_top, weights=weights,
        input_tensor=input_tensor, pooling=pooling, classes=classes,
        classifier_activation=classifier_activation, name=name, attention=attention,
        reduction=reduction, dropout_rate=dropout_rate, output_stride=output_stride,
    )


def MobileNeXtCA(
    input_shape: tuple[int | None, int | None, int] | None = None,
    alpha: float = 1.0,
    include_top: bool = True,
    weights: str | None = None,
    input_tensor=None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    name: str | None = None,
    *,
    reduction: int | None = None,
    dropout_rate: float = 0.2,
    output_stride: int = 32,
) -> keras.Model:
    """MobileNeXt with Coordinate Attention (``MobileNeXt(attention="ca")``).

    CA (r = 32) after the first depthwise conv of each sandglass block, and after the expanding
    1x1 conv in the blocks that have no first depthwise conv (see the module docstring).
    No upstream weights exist for this model, so ``weights`` defaults to None.
    At alpha 1.0: 4,120,369 params; MAdds in ``keras_coordatt.applications.profile``.
    """
    return _build(
        input_shape=input_shape, alpha=alpha, include_top=include_top, weights=weights,
        input_tensor=input_tensor, pooling=pooling, classes=classes,
        classifier_activation=classifier_activation, name=name, attention="ca",
        reduction=reduction, dropout_rate=dropout_rate, output_stride=output_stride,
    )
