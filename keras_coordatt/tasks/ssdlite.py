"""SSDLite (Sandler et al. 2018, "MobileNetV2") on any backbone of ``keras_coordatt.applications``.

:func:`SSDLite` returns an :class:`~keras_coordatt.tasks.detection.ObjectDetector`: a flat
functional ``keras.Model`` made of the backbone's own layers (shared, not copied) and standard
Keras layers (channels_last). Six feature levels, at 320x320 grids of 20 / 10 / 5 / 3 / 2 / 1:

* ``stride16``: the wide tensor at stride 16 that the SSDLite convention taps, the input of
  the backbone's first stride-2 convolution towards stride 32: MobileNetV2's ``block14``
  expansion output (``block14_expand_relu``, 576 channels at alpha 1, TF's
  ``layer_15/expansion_output``; Keras' ``block_13_expand_relu``), MobileNeXt's ``block13``
  expansion (after its attention, if any). Found from the layers' strides
  (:mod:`keras_coordatt.applications.features`), so any width and ``output_stride`` works;
  ``stride16_feature="block"`` taps the last stride-16 block (``P4``, 96 channels: what the
  authors' PyTorch code taps) instead.
* ``stride32``: the backbone's last feature (``P5``: MobileNetV2's 1280-channel head).
* ``extra1``-``extra4``: inverted residuals with stride 2, no residual (1x1 expansion conv /
  BN / ReLU6, depthwise 3x3 stride 2 "same" / BN / ReLU6, 1x1 projection / BN): 512, 256, 256,
  64 channels, expansion 0.2, 0.5, 0.5, 0.5 (``extra{k}_expand`` / ``_dw`` / ``_project`` and
  ``_bn`` / ``_relu``).

Predictors per level ``k`` (0-5): ``box_head{k}`` and ``class_head{k}``: depthwise 3x3 / BN /
ReLU6 / 1x1 conv with bias (``_dw``, ``_dw_bn``, ``_dw_relu``, ``_conv``); on the last level a
plain 1x1 conv (``_conv``). ``box_reshape{k}`` / ``class_reshape{k}`` flatten the grid to
``(B, h * w * A, 4)`` / ``(B, h * w * A, num_classes + 1)`` (row-major, then the ``A`` anchors
of a cell: the order of :func:`keras_coordatt.tasks.anchors.ssd_anchors`); ``box_encodings``
and ``class_logits`` concatenate the levels. The background bias of ``class_head*_conv`` starts
at ``log(99 * num_classes)`` (every anchor 99 % background), so a focal-loss start is stable.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from keras_coordatt.applications import _blocks
from keras_coordatt.applications.features import _nominal_factors, feature_layers, stage_outputs
from keras_coordatt.layers._base import conv_initializer
from keras_coordatt.tasks import anchors as anchor_lib
from keras_coordatt.tasks.detection import ObjectDetector
from keras_coordatt.tasks.segmentation import _check_backbone

#: The authors' extra layers: output channels and expansion ratios (``OUT_CHANNELS[2:]``).
EXTRA_CHANNELS = (512, 256, 256, 64)
EXTRA_EXPANSIONS = (0.2, 0.5, 0.5, 0.5)
STRIDE16_FEATURES = ("expansion", "block")


def _stride16_layer(backbone: keras.Model, which: str) -> str:
    """Name of the layer giving the stride-16 level (module docstring)."""
    if which == "block":
        return feature_layers(backbone)["P4"]
    first = next(stage for stage, _, _, nominal in stage_outputs(backbone) if nominal == 32)
    strided = [name for name, (_, nominal) in _nominal_factors(backbone).items()
               if name.startswith(f"{first}_") and nominal == 2]
    tensor = backbone.get_layer(strided[0]).input
    producers = {id(layer.output): layer for layer in backbone.layers}
    layer = producers[id(tensor)]
    if isinstance(layer, keras.layers.ZeroPadding2D):  # the explicit padding of a stride-2 conv
        layer = producers[id(layer.input)]
    return layer.name


def _bn(x, name: str):
    return keras.layers.BatchNormalization(
        epsilon=_blocks.BN_EPSILON, momentum=_blocks.BN_MOMENTUM, name=name
    )(x)


def _conv(x, filters: int, name: str, *, bias: bool = False):
    initializer = "glorot_uniform" if bias else conv_initializer()
    return keras.layers.Conv2D(filters, 1, use_bias=bias, kernel_initializer=initializer,
                               name=name)(x)


def _depthwise(x, stride: int, prefix: str):
    x = keras.layers.DepthwiseConv2D(3, stride, padding="same", use_bias=False,
                                     depthwise_initializer=conv_initializer(),
                                     name=f"{prefix}_dw")(x)
    x = _bn(x, f"{prefix}_dw_bn")
    return keras.layers.ReLU(6.0, name=f"{prefix}_dw_relu")(x)


def _extra_block(x, filters: int, expansion: float, prefix: str):
    """Inverted residual with stride 2 (no residual): expand / depthwise / project."""
    hidden = max(1, int(round(x.shape[-1] * expansion)))
    x = _conv(x, hidden, f"{prefix}_expand")
    x = _bn(x, f"{prefix}_expand_bn")
    x = keras.layers.ReLU(6.0, name=f"{prefix}_expand_relu")(x)
    x = _depthwise(x, 2, prefix)
    x = _conv(x, filters, f"{prefix}_project")
    return _bn(x, f"{prefix}_project_bn")


def _predictor(x, filters: int, prefix: str, last: bool):
    if not last:
        x = _depthwise(x, 1, prefix)
    return _conv(x, filters, f"{prefix}_conv", bias=True)


def _check_sequences(extra_channels, extra_expansions, min_sizes, max_sizes, aspect_ratios):
    levels = 2 + len(extra_channels)
    if len(extra_expansions) != len(extra_channels):
        raise ValueError(
            f"extra_channels ({len(extra_channels)}) and extra_expansions "
            f"({len(extra_expansions)}) must have one entry per extra layer."
        )
    for name, value in (("min_sizes", min_sizes), ("max_sizes", max_sizes),
                        ("aspect_ratios", aspect_ratios)):
        if len(value) != levels:
            raise ValueError(
                f"`{name}` needs one entry per level: {levels} (2 backbone levels + "
                f"{len(extra_channels)} extra layers), got {len(value)}."
            )


def _check_arguments(backbone, num_classes, bounding_box_format, stride16_feature) -> dict:
    """Checks what :func:`SSDLite` needs; returns the backbone's pyramid layer names."""
    anchor_lib.check_bounding_box_format(bounding_box_format)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"`num_classes` must be an integer >= 1, got {num_classes!r}.")
    if stride16_feature not in STRIDE16_FEATURES:
        raise ValueError(f"`stride16_feature` must be one of {STRIDE16_FEATURES}, got "
                         f"{stride16_feature!r}.")
    if keras.config.image_data_format() != "channels_last":
        raise ValueError("SSDLite is built channels_last: set keras.config.set_image_data_format"
                         "('channels_last') before building the backbone.")
    layers = _check_backbone(backbone)
    shape = tuple(backbone.inputs[0].shape)
    if None in shape[1:3]:
        raise ValueError(
            f"SSDLite needs a backbone with a fixed input size (the anchors depend on it), got "
            f"input shape {shape}: build it with input_shape=(320, 320, 3) for example."
        )
    return layers


def _heads(levels, anchors_per_cell, num_classes: int):
    boxes, logits = [], []
    for k, (level, count) in enumerate(zip(levels, anchors_per_cell, strict=True)):
        last = k == len(levels) - 1
        cells = level.shape[1] * level.shape[2] * count
        box = _predictor(level, count * 4, f"box_head{k}", last)
        boxes.append(keras.layers.Reshape((cells, 4), name=f"box_reshape{k}")(box))
        logit = _predictor(level, count * (num_classes + 1), f"class_head{k}", last)
        logits.append(
            keras.layers.Reshape((cells, num_classes + 1), name=f"class_reshape{k}")(logit)
        )
    return (keras.layers.Concatenate(axis=1, name="box_encodings")(boxes),
            keras.layers.Concatenate(axis=1, name="class_logits")(logits))


def _background_bias(model: keras.Model, count: int, num_classes: int) -> None:
    """Class biases: background ``log(99 * num_classes)``, classes 0 (module docstring)."""
    for k in range(count):
        layer = model.get_layer(f"class_head{k}_conv")
        kernel, bias = layer.get_weights()
        bias = np.zeros_like(bias).reshape(-1, num_classes + 1)
        bias[:, 0] = np.log(99.0 * num_classes)
        layer.set_weights([kernel, bias.reshape(-1)])


def SSDLite(
    backbone: keras.Model,
    num_classes: int,
    bounding_box_format: str = "yxyx",
    *,
    stride16_feature: str = "expansion",
    extra_channels: Sequence[int] = EXTRA_CHANNELS,
    extra_expansions: Sequence[float] = EXTRA_EXPANSIONS,
    min_sizes: Sequence[float] = anchor_lib.DEFAULT_MIN_SIZES,
    max_sizes: Sequence[float] = anchor_lib.DEFAULT_MAX_SIZES,
    aspect_ratios: Sequence[Sequence[float]] = anchor_lib.DEFAULT_ASPECT_RATIOS,
    clip_anchors: bool = True,
    matching_iou_threshold: float = 0.5,
    score_threshold: float = 0.05,
    nms_iou_threshold: float = 0.5,
    max_detections: int = 100,
    name: str | None = None,
) -> ObjectDetector:
    """SSDLite on a ``keras_coordatt`` backbone (module docstring).

    Args:
        backbone: a model of ``keras_coordatt.applications`` (MobileNetV2 / MobileNeXt, any
            attention) built with ``include_top=False``, ``pooling=None`` and a fixed input
            size (320x320 in the paper); its layers and weights are used in place (shared).
        num_classes: object classes (>= 1), background not included (the model adds it).
        bounding_box_format: format of the boxes of ``fit`` labels and ``predict`` outputs
            (:data:`~keras_coordatt.tasks.anchors.BOUNDING_BOX_FORMATS`; ``rel_*`` relative,
            the others in pixels of the input size).
        stride16_feature: ``"expansion"`` (SSDLite's wide tap) or ``"block"`` (``P4``).
        extra_channels / extra_expansions: the extra stride-2 layers after ``P5``.
        min_sizes / max_sizes / aspect_ratios / clip_anchors: the anchors, one entry per level
            (sizes as fractions of the image side; defaults: the authors' COCO priors).
        matching_iou_threshold: IoU from which an anchor is positive in training.
        score_threshold / nms_iou_threshold / max_detections: ``predict``'s post-processing
            (the authors' test settings 0.05 / 0.5, 100 detections).
        name: model name; default ``"ssdlite_{backbone.name}"``.

    Returns:
        An :class:`ObjectDetector` taking preprocessed images ``(B, H, W, 3)``
        (``keras_coordatt.applications.preprocess_input``) and returning ``[box_encodings
        (B, N, 4), class_logits (B, N, num_classes + 1)]``; ``N = model.anchors.shape[0]``
        (3232 at 320x320: 20 * 20 * 6 + 10 * 10 * 6 + 5 * 5 * 6 + 3 * 3 * 6 + 2 * 2 * 6 + 4).

    Raises:
        ValueError: a backbone with a top, pooling or no fixed input size, or not from
            ``keras_coordatt``; channels_first; an unknown ``bounding_box_format`` (the message
            lists the accepted ones); per-level settings of the wrong length; invalid numbers.
    """
    layers = _check_arguments(backbone, num_classes, bounding_box_format, stride16_feature)
    _check_sequences(extra_channels, extra_expansions, min_sizes, max_sizes, aspect_ratios)

    levels = [backbone.get_layer(_stride16_layer(backbone, stride16_feature)).output,
              backbone.get_layer(layers["P5"]).output]
    for k, (filters, expansion) in enumerate(zip(extra_channels, extra_expansions, strict=True)):
        levels.append(_extra_block(levels[-1], int(filters), float(expansion), f"extra{k + 1}"))
    per_cell = [anchor_lib.boxes_per_cell(ratios) for ratios in aspect_ratios]
    box_encodings, class_logits = _heads(levels, per_cell, num_classes)
    anchor_config = {
        "feature_sizes": [(int(level.shape[1]), int(level.shape[2])) for level in levels],
        "min_sizes": list(min_sizes), "max_sizes": list(max_sizes),
        "aspect_ratios": [tuple(ratios) for ratios in aspect_ratios], "clip": bool(clip_anchors),
    }
    model = ObjectDetector(
        backbone.inputs[0], [box_encodings, class_logits],
        name=name or f"ssdlite_{backbone.name}", num_classes=num_classes,
        bounding_box_format=bounding_box_format, anchor_config=anchor_config,
        matching_iou_threshold=matching_iou_threshold, score_threshold=score_threshold,
        nms_iou_threshold=nms_iou_threshold, max_detections=max_detections,
    )
    _background_bias(model, len(levels), num_classes)
    return model
