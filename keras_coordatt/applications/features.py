"""Multi-scale feature maps (a ``P1``-``P5`` pyramid) of the MobileNetV2 / MobileNeXt builders.

``feature_extractor(model)`` returns a ``keras.Model`` with the same inputs whose output is a
dict ``{"P1": stride 2, "P2": stride 4, "P3": stride 8, "P4": stride 16, "P5": stride 32}``:
for each stride, the output of the *last* stage (stem, block or head) at that stride, as
timm's ``features_only`` / keras-hub's pyramid outputs. Channels (channels_last: last axis):

=========  ==========================  =================================================
key        MobileNetV2 / MobileNetV2CA  MobileNeXt / MobileNeXtCA
=========  ==========================  =================================================
P1 (s2)    ``block1`` out: 16           ``stem_relu``: 32
P2 (s4)    ``block3`` out: 24           ``block2`` out: 144
P3 (s8)    ``block6`` out: 32           ``block5`` out: 192
P4 (s16)   ``block13`` out: 96          ``block12`` out: 384
P5 (s32)   ``head_relu``: 1280          ``block20`` out: 1280
=========  ==========================  =================================================

(alpha 1.0; other widths scale these as the block plans do, e.g. MobileNetV2 0.5:
8, 16, 16, 48, 1280; MobileNeXt 0.5: 16, 72, 96, 192, 1280.)

Levels are the stages of the *strided* network: ``Pk`` is the last stage whose nominal stride
(its stride at ``output_stride=32``) is ``2^k``, so a backbone built with ``output_stride`` 16 or
8 gives the same layers (same channels). Their true strides, :func:`feature_strides`, stop
growing at ``output_stride``: 2, 4, 8, 16, 16 at 16 and 2, 4, 8, 8, 8 at 8. Spatial size of a
level of true stride s: ``ceil(H / s) x ceil(W / s)`` for any input size, (None, None, 3)
included. Everything is read from the layers themselves (strides and dilation rates), so it works
on models loaded from ``.keras`` files and on clones too.
"""

from __future__ import annotations

import re

import keras

_GROUP = re.compile(r"^(stem|head|block\d+)_")
PYRAMID_STRIDES = {"P1": 2, "P2": 4, "P3": 8, "P4": 16, "P5": 32}


def _square(layer, attribute: str) -> int:
    value = getattr(layer, attribute)
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise ValueError(f"Layer {layer.name!r} has non-square {attribute} {value}.")
    return int(value[0])


def _spatial_convs(model: keras.Model) -> list[tuple[str, int, int]]:
    """``[(layer name, stride, dilation rate)]`` of the stage convs with a kernel above 1x1."""
    convs = []
    for layer in model.layers:
        if _GROUP.match(layer.name) is None:
            continue
        if not isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D):
            continue
        if _square(layer, "kernel_size") > 1:
            convs.append(
                (layer.name, _square(layer, "strides"), _square(layer, "dilation_rate"))
            )
    return convs


def _nominal_factors(model: keras.Model) -> dict[str, tuple[int, int]]:
    """``{conv name: (true stride, nominal stride)}`` factor pairs of the spatial convs.

    With the DeepLab rule of the builders (``_blocks`` module docstring) the dilation rate only
    grows right after a conv whose stride was removed, by that stride: so a conv's nominal
    stride is its stride times (next conv's rate / its own rate).
    """
    convs = _spatial_convs(model)
    factors = {}
    for i, (name, stride, rate) in enumerate(convs):
        next_rate = convs[i + 1][2] if i + 1 < len(convs) else rate
        if next_rate % rate:
            raise ValueError(
                f"Dilation rates of {model.name!r} shrink or jump after {name!r} "
                f"({rate} -> {next_rate}): not a network of keras_coordatt.applications."
            )
        factors[name] = (stride, stride * (next_rate // rate))
    return factors


def stage_outputs(model: keras.Model) -> list[tuple[str, str, int, int]]:
    """``[(stage, last layer name, cumulative stride, cumulative nominal stride)]`` in
    network order (the nominal stride is the one at ``output_stride=32``)."""
    factors = _nominal_factors(model)
    stages: list[tuple[str, str, int, int]] = []
    stride = nominal = 1
    for layer in model.layers:
        match = _GROUP.match(layer.name)
        if match is None:
            continue
        stage = match.group(1)
        true_factor, nominal_factor = factors.get(layer.name, (1, 1))
        stride *= true_factor
        nominal *= nominal_factor
        if stages and stages[-1][0] == stage:
            stages[-1] = (stage, layer.name, stride, nominal)
        elif any(entry[0] == stage for entry in stages):
            raise ValueError(f"Layers of stage {stage!r} are not contiguous in {model.name!r}.")
        else:
            stages.append((stage, layer.name, stride, nominal))
    if not stages:
        raise ValueError(
            f"Model {model.name!r} has no stem_/block{{i}}_/head_ layers: build it with "
            "keras_coordatt.applications."
        )
    return stages


def _levels(model: keras.Model) -> dict[str, tuple[str, int]]:
    """``{"P1": (layer name, true stride), ...}``: the last stage at each nominal stride."""
    by_nominal = {}
    for _, layer_name, stride, nominal in stage_outputs(model):
        by_nominal[nominal] = (layer_name, stride)
    missing = [key for key, stride in PYRAMID_STRIDES.items() if stride not in by_nominal]
    if missing:
        raise ValueError(
            f"Model {model.name!r} has no stage at the stride of {missing} "
            f"(stage strides: {sorted(by_nominal)})."
        )
    return {key: by_nominal[stride] for key, stride in PYRAMID_STRIDES.items()}


def feature_layers(model: keras.Model) -> dict[str, str]:
    """``{"P1": layer name, ...}``: the last stage output at each pyramid level (nominal stride
    ``2^k``, whatever the ``output_stride``)."""
    return {key: layer_name for key, (layer_name, _) in _levels(model).items()}


def feature_strides(model: keras.Model) -> dict[str, int]:
    """``{"P1": 2, ..., "P5": 32}``: the true stride of each level of ``model``'s pyramid.

    A network built with ``output_stride`` below 32 keeps the stride of its later levels at
    ``output_stride`` (their convolutions are dilated instead of strided): ``{..., "P4": 16,
    "P5": 16}`` at 16, ``{..., "P3": 8, "P4": 8, "P5": 8}`` at 8.
    """
    return {key: stride for key, (_, stride) in _levels(model).items()}


def feature_extractor(model: keras.Model, name: str | None = None) -> keras.Model:
    """A model with ``model``'s inputs returning the ``{"P1": ..., ..., "P5": ...}`` dict.

    Args:
        model: a ``keras_coordatt.applications`` model, with or without top, any input size
            (``(None, None, 3)`` too). Its weights are shared, not copied.
        name: name of the new model (default ``"{model.name}_features"``).

    Returns:
        ``keras.Model`` whose output maps ``"P{k}"`` to the ``(N, ceil(H/s_k), ceil(W/s_k), C_k)``
        feature map (``(N, C_k, ...)`` for channels_first); ``s_k = feature_strides(model)["P{k}"]``
        (``2^k`` at output_stride 32), ``C_k`` as in the module docstring.
    """
    layers = feature_layers(model)
    outputs = {key: model.get_layer(layer_name).output for key, layer_name in layers.items()}
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outputs, name=name or f"{model.name}_features")
