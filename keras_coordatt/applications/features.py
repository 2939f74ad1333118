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
8, 16, 16, 48, 1280; MobileNeXt 0.5: 16, 72, 96, 192, 1280.) Spatial size at stride s:
``ceil(H / s) x ceil(W / s)`` for any input size, (None, None, 3) included.
"""

from __future__ import annotations

import re

import keras

_GROUP = re.compile(r"^(stem|head|block\d+)_")
PYRAMID_STRIDES = {"P1": 2, "P2": 4, "P3": 8, "P4": 16, "P5": 32}


def _layer_stride(layer) -> int:
    strides = getattr(layer, "strides", None)
    if not strides or not isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D):
        return 1
    if isinstance(strides, int):
        return strides
    if len(set(strides)) != 1:
        raise ValueError(f"Layer {layer.name!r} has non-square strides {strides}.")
    return int(strides[0])


def stage_outputs(model: keras.Model) -> list[tuple[str, str, int]]:
    """``[(stage, last layer name, cumulative stride)]`` in network order."""
    stages: list[tuple[str, str, int]] = []
    stride = 1
    for layer in model.layers:
        match = _GROUP.match(layer.name)
        if match is None:
            continue
        stage = match.group(1)
        stride *= _layer_stride(layer)
        if stages and stages[-1][0] == stage:
            stages[-1] = (stage, layer.name, stride)
        elif any(name == stage for name, _, _ in stages):
            raise ValueError(f"Layers of stage {stage!r} are not contiguous in {model.name!r}.")
        else:
            stages.append((stage, layer.name, stride))
    if not stages:
        raise ValueError(
            f"Model {model.name!r} has no stem_/block{{i}}_/head_ layers: build it with "
            "keras_coordatt.applications."
        )
    return stages


def feature_layers(model: keras.Model) -> dict[str, str]:
    """``{"P1": layer name, ...}``: the last stage output at each pyramid stride."""
    by_stride = {}
    for _, layer_name, stride in stage_outputs(model):
        by_stride[stride] = layer_name
    missing = [key for key, stride in PYRAMID_STRIDES.items() if stride not in by_stride]
    if missing:
        raise ValueError(
            f"Model {model.name!r} has no stage at the stride of {missing} "
            f"(stage strides: {sorted(by_stride)})."
        )
    return {key: by_stride[stride] for key, stride in PYRAMID_STRIDES.items()}


def feature_strides(model: keras.Model) -> dict[str, int]:
    """``{"P1": 2, ..., "P5": 32}``: the true stride of each level of ``model``'s pyramid.

    A network built with ``output_stride`` below 32 keeps the stride of its later levels at
    ``output_stride`` (their convolutions are dilated instead of strided).
    """
    layers = feature_layers(model)
    strides = {name: stride for _, name, stride in stage_outputs(model)}
    return {key: strides[layer_name] for key, layer_name in layers.items()}


def feature_extractor(model: keras.Model, name: str | None = None) -> keras.Model:
    """A model with ``model``'s inputs returning the ``{"P1": ..., ..., "P5": ...}`` dict.

    Args:
        model: a ``keras_coordatt.applications`` model, with or without top, any input size
            (``(None, None, 3)`` too). Its weights are shared, not copied.
        name: name of the new model (default ``"{model.name}_features"``).

    Returns:
        ``keras.Model`` whose output maps ``"P{k}"`` to the ``(N, ceil(H/2^k), ceil(W/2^k), C_k)``
        feature map (``(N, C_k, ...)`` for channels_first); ``C_k`` as in the module docstring.
    """
    layers = feature_layers(model)
    outputs = {key: model.get_layer(layer_name).output for key, layer_name in layers.items()}
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outputs, name=name or f"{model.name}_features")
