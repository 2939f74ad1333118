"""DeepLabV3 / DeepLabV3+ semantic segmentation on any backbone of ``keras_coordatt.applications``.

:func:`DeepLabV3` returns an :class:`ImageSegmenter`: a flat functional ``keras.Model`` made of
the backbone's own layers (shared, not copied) and standard Keras layers only, so it saves as
``.keras`` and loads with ``safe_mode=True``, runs on every Keras backend, and goes through
``keras_coordatt.quantization.quantize_model`` and ``keras_coordatt.export.export_tflite`` like the
classifiers. Layers (channels_last shapes, ``s`` the backbone's output stride):

* ASPP (Chen et al. 2017, "Rethinking Atrous Convolution") on the backbone's last block
  ``(N, H/s, W/s, C)`` (the ``P5`` level without MobileNetV2's 1x1 1280-channel head, which
  the segmenter drops, as TF DeepLab's and VainF/DeepLabV3Plus-Pytorch's MobileNetV2 do:
  320 channels at alpha 1; MobileNeXt's last block gives 1280): ``aspp_branch0_*`` 1x1
  conv / BN / ReLU; ``aspp_branch{1,2,3}_*`` 3x3 convs dilated by the atrous rates (6 / 12 /
  18 at s = 16, 12 / 24 / 36 at s = 8; 3 / 6 / 9 at s = 32, our extrapolation, the same field
  of view in input pixels as s = 16); image pooling ``aspp_pool`` (global average, kept
  ``(N, 1, 1, C)``) / ``aspp_pool_conv`` / ``aspp_pool_bn`` / ``aspp_pool_relu`` /
  ``aspp_pool_upsample``; ``aspp_concat`` of the five branches, its 1x1 projection, BN, ReLU
  (``aspp_project_*``) and ``aspp_dropout``.
* Optional DeepLabV3+ decoder (Chen et al. 2018) on ``P2`` (stride 4): ``decoder_upsample``
  (bilinear, to stride 4), ``decoder_project_*`` (1x1 conv to ``projection_filters`` = 48),
  ``decoder_concat``, two 3x3 conv / BN / ReLU (``decoder_conv{1,2}_*``).
* ``segmentation_head``: 1x1 conv to ``num_classes`` logits; ``segmentation_upsample``:
  bilinear ``UpSampling2D`` to the input size. Output ``(N, H, W, num_classes)`` logits.

The image-pooling branch is constant over space: ``aspp_pool_upsample`` repeats it over the
feature grid (``UpSampling2D``, nearest, which is exact for a 1x1 map and keeps int8 scales)
when the input size is known; for an unknown size (``(None, None, 3)``) it adds the pooled map
to zeros of the feature map's shape (``aspp_pool_zeros``: ``ReLU(max_value=0)``; ``Add``
broadcasts), the same values with no weights either way, so the weights of a model built at
``(None, None, 3)`` load by name into one built at a fixed size (for QAT and TFLite export,
which need a fixed size).

Input sizes: with a known input size, height and width must be multiples of the output
stride (a ValueError says which size to use). A backbone built with ``(None, None, 3)`` gives a
model that takes any size, but the output is ``ceil(H / s) * s`` pixels high (and wide), the
input size only for multiples of ``s``: feed such sizes. TFLite export needs a fixed size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_coordatt.applications import _blocks
from keras_coordatt.applications.features import feature_layers, feature_strides, stage_outputs
from keras_coordatt.applications.spec import model_spec
from keras_coordatt.layers.coord_attention import conv_initializer
from keras_coordatt.training.fit_setup import FirstFitTracedOnce

#: ASPP atrous rates per backbone output stride (DeepLabV3: 6 / 12 / 18 at 16, doubled at 8;
#: at 32 halved, our choice: the same rates in input pixels as at 16).
ATROUS_RATES = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}
#: Initial learning rate and momentum of the DeepLabV3 paper's SGD (poly schedule there).
DEFAULT_LEARNING_RATE = 0.007
DEFAULT_MOMENTUM = 0.9


def default_atrous_rates(output_stride: int) -> tuple[int, int, int]:
    """The ASPP rates at ``output_stride`` (8, 16 or 32), see :data:`ATROUS_RATES`."""
    if output_stride not in ATROUS_RATES:
        raise ValueError(
            f"No default atrous rates for output stride {output_stride!r} (known: "
            f"{sorted(ATROUS_RATES)}): pass atrous_rates=(...) explicitly."
        )
    return ATROUS_RATES[output_stride]


@keras.saving.register_keras_serializable(package="keras_coordatt")
class ImageSegmenter(FirstFitTracedOnce, keras.Model):
    """A functional segmentation model whose ``compile()`` has segmentation defaults.

    Built as ``ImageSegmenter(inputs, outputs, name=..., num_classes=..., ignore_label=...)``
    (use :func:`DeepLabV3`); otherwise a plain functional model. The constructor keeps the
    functional signature, so Keras saves, loads (``safe_mode=True`` included: no code is
    deserialized, only this registered class) and clones it as one; ``num_classes`` and
    ``ignore_label`` travel in ``get_config()``. Loading needs ``import keras_coordatt.tasks``
    first (it registers the class), as the attention layers need ``import keras_coordatt``.
    """

    def __init__(self, inputs, outputs, name=None, *, num_classes: int | None = None,
                 ignore_label: int | None = 255, **kwargs):
        super().__init__(inputs, outputs, name=name, **kwargs)
        if num_classes is not None:
            _check_int("num_classes", num_classes, minimum=1)
        if ignore_label is not None:
            _check_int("ignore_label", ignore_label)
        self.num_classes = num_classes
        self.ignore_label = ignore_label

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(num_classes=self.num_classes, ignore_label=self.ignore_label)
        return config

    def compile(self, optimizer="auto", loss="auto", *, metrics="auto", **kwargs) -> None:
        """``keras.Model.compile`` with ``"auto"`` defaults, as keras-hub's task models.

        * ``optimizer="auto"``: SGD, learning rate 0.007, momentum 0.9 (the DeepLabV3 paper's
          start; pass your own for a schedule);
        * ``loss="auto"``: ``SparseCategoricalCrossentropy(from_logits=True,
          ignore_class=ignore_label)``: the mean over the pixels whose label is not the ignore
          label (VOC's 255);
        * ``metrics="auto"``: ``[MeanIoU(num_classes, sparse_y_pred=False,
          ignore_class=ignore_label)]`` (named ``"mean_iou"``).

        Labels: integer masks ``(N, H, W)`` or ``(N, H, W, 1)``. Any other value is passed to
        ``keras.Model.compile`` as is.
        """
        if optimizer == "auto":
            optimizer = keras.optimizers.SGD(DEFAULT_LEARNING_RATE, momentum=DEFAULT_MOMENTUM)
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, ignore_class=self.ignore_label
            )
        if metrics == "auto":
            if self.num_classes is None:
                raise ValueError(
                    f"{self.name!r} has no num_classes, so metrics='auto' cannot build MeanIoU: "
                    "pass metrics=[...] explicitly."
                )
            metrics = [keras.metrics.MeanIoU(
                self.num_classes, name="mean_iou", ignore_class=self.ignore_label,
                sparse_y_pred=False,
            )]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)


def _check_int(name: str, value, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (
        minimum is not None and value < minimum
    ):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(f"`{name}` must be an integer{bound}, got {value!r}.")
    return value


def _check_backbone(backbone) -> dict[str, str]:
    """The ``P1``-``P5`` layer names of ``backbone`` and ``"aspp"``, the last block's output
    layer, after checking that ``backbone`` has no top."""
    if not isinstance(backbone, keras.Model):
        raise ValueError(
            f"`backbone` must be a keras.Model from keras_coordatt.applications, got "
            f"{type(backbone).__name__}."
        )
    spec = model_spec(backbone)
    if spec is not None and spec.include_top:
        raise ValueError(
            f"Backbone {backbone.name!r} has a classifier top: build it with "
            "include_top=False (and pooling=None)."
        )
    if spec is not None and spec.pooling is not None:
        raise ValueError(
            f"Backbone {backbone.name!r} pools its features (pooling={spec.pooling!r}): build it "
            "with pooling=None, the segmenter needs the feature map."
        )
    if len(backbone.inputs) != 1:
        raise ValueError(f"Backbone {backbone.name!r} must have one image input.")
    try:
        layers = feature_layers(backbone)
    except ValueError as error:
        raise ValueError(
            f"Backbone {backbone.name!r} is not a keras_coordatt.applications network with "
            f"include_top=False: {error}"
        ) from error
    blocks = [name for stage, name, *_ in stage_outputs(backbone) if stage.startswith("block")]
    return {**layers, "aspp": blocks[-1]}


def _check_input_size(backbone, output_stride: int, channel_axis: int) -> None:
    shape = tuple(backbone.inputs[0].shape)
    spatial = shape[2:] if channel_axis == 1 else shape[1:3]
    bad = [size for size in spatial if size is not None and size % output_stride]
    if bad:
        fixed = tuple(
            None if size is None else -(-size // output_stride) * output_stride
            for size in spatial
        )
        raise ValueError(
            f"The input size {spatial} of backbone {backbone.name!r} is not a multiple of its "
            f"output stride {output_stride}, so the logits could not be upsampled back to it: "
            f"rebuild the backbone with input_shape={(*fixed, 3)} (or another multiple of "
            f"{output_stride})."
        )


def _check_rates(atrous_rates, output_stride: int) -> tuple[int, ...]:
    if atrous_rates is None:
        return default_atrous_rates(output_stride)
    if isinstance(atrous_rates, (str, bytes)) or not isinstance(atrous_rates, Sequence):
        raise ValueError(f"`atrous_rates` must be a sequence of integers, got {atrous_rates!r}.")
    return tuple(_check_int("atrous_rates item", rate, minimum=1) for rate in atrous_rates)


class _Head:
    """Layer factory for the head: conv / BN / ReLU with stable names, one data format."""

    def __init__(self, data_format: str):
        self.data_format = data_format
        self.axis = -1 if data_format == "channels_last" else 1

    def conv(self, x, filters: int, kernel_size: int, name: str, *, dilation: int = 1,
             classifier: bool = False):
        """Bias-free conv (He init, as the backbone); the classifier has a bias and Keras'
        Glorot init, so the first logits are O(1) instead of O(10)."""
        return keras.layers.Conv2D(
            filters, kernel_size, padding="same" if kernel_size > 1 else "valid",
            dilation_rate=dilation, use_bias=classifier, data_format=self.data_format,
            kernel_initializer="glorot_uniform" if classifier else conv_initializer(), name=name,
        )(x)

    def bn_relu(self, x, prefix: str):
        x = keras.layers.BatchNormalization(
            axis=self.axis, epsilon=_blocks.BN_EPSILON, momentum=_blocks.BN_MOMENTUM,
            name=f"{prefix}_bn",
        )(x)
        return keras.layers.ReLU(name=f"{prefix}_relu")(x)

    def conv_bn_relu(self, x, filters: int, kernel_size: int, prefix: str, dilation: int = 1):
        x = self.conv(x, filters, kernel_size, f"{prefix}_conv", dilation=dilation)
        return self.bn_relu(x, prefix)

    def upsample(self, x, factor: int, name: str):
        return keras.layers.UpSampling2D(
            factor, data_format=self.data_format, interpolation="bilinear", name=name
        )(x)


def _broadcast_pooled(head: _Head, pooled, like):
    """The ``(N, 1, 1, F)`` image-pooling map repeated over ``like``'s ``(N, h, w, F)`` grid."""
    spatial = like.shape[1:3] if head.axis == -1 else like.shape[2:4]
    if None not in spatial:
        return keras.layers.UpSampling2D(
            tuple(spatial), data_format=head.data_format, interpolation="nearest",
            name="aspp_pool_upsample",
        )(pooled)
    # Size unknown until called: add the pooled map to zeros of ``like``'s shape (broadcast).
    zeros = keras.layers.ReLU(max_value=0.0, name="aspp_pool_zeros")(like)
    return keras.layers.Add(name="aspp_pool_upsample")([pooled, zeros])


def _aspp(head: _Head, features, filters: int, rates: tuple[int, ...], dropout: float):
    """ASPP with image pooling; returns ``(N, h, w, filters)``."""
    branches = [head.conv_bn_relu(features, filters, 1, "aspp_branch0")]
    for index, rate in enumerate(rates, 1):
        branches.append(head.conv_bn_relu(features, filters, 3, f"aspp_branch{index}", rate))
    pooled = keras.layers.GlobalAveragePooling2D(
        data_format=head.data_format, keepdims=True, name="aspp_pool"
    )(features)
    pooled = head.conv_bn_relu(pooled, filters, 1, "aspp_pool")
    branches.append(_broadcast_pooled(head, pooled, branches[0]))
    x = keras.layers.Concatenate(axis=head.axis, name="aspp_concat")(branches)
    x = head.conv_bn_relu(x, filters, 1, "aspp_project")
    return keras.layers.Dropout(dropout, name="aspp_dropout")(x)


def _decoder(head: _Head, x, low_level, factor: int, filters: int, projection_filters: int):
    """DeepLabV3+ decoder: upsample ``x`` by ``factor`` to stride 4, fuse with ``low_level``."""
    x = head.upsample(x, factor, "decoder_upsample")
    low_level = head.conv_bn_relu(low_level, projection_filters, 1, "decoder_project")
    x = keras.layers.Concatenate(axis=head.axis, name="decoder_concat")([x, low_level])
    x = head.conv_bn_relu(x, filters, 3, "decoder_conv1")
    return head.conv_bn_relu(x, filters, 3, "decoder_conv2")


def DeepLabV3(
    backbone: keras.Model,
    num_classes: int,
    *,
    aspp_filters: int = 256,
    atrous_rates: Sequence[int] | None = None,
    decoder: bool = False,
    projection_filters: int = 48,
    dropout: float = 0.1,
    ignore_label: int | None = 255,
    name: str | None = None,
) -> ImageSegmenter:
    """DeepLabV3 (or DeepLabV3+ with ``decoder=True``) on a ``keras_coordatt`` backbone.

    Args:
        backbone: a model of ``keras_coordatt.applications`` (MobileNetV2 / MobileNeXt, any
            attention) built with ``include_top=False`` and ``pooling=None``, at the output
            stride of your choice. Its layers and weights are used in place (shared).
        num_classes: number of classes (>= 1), background included.
        aspp_filters: channels of the ASPP branches, projection and decoder convs.
        atrous_rates: rates of the three dilated ASPP branches; None takes them from the
            backbone's true output stride (:func:`default_atrous_rates`).
        decoder: add the DeepLabV3+ decoder on the stride-4 features ``P2``.
        projection_filters: channels of the decoder's 1x1 projection of ``P2`` (48 in the paper).
        dropout: dropout rate after the ASPP projection (training only).
        ignore_label: the label that ``compile()``'s default loss and metric skip (VOC: 255;
            None for no ignore label).
        name: model name; default ``"deeplabv3_{backbone.name}"`` (``deeplabv3plus_`` with the
            decoder).

    Returns:
        An :class:`ImageSegmenter` taking the backbone's input (float images preprocessed by
        ``keras_coordatt.applications.preprocess_input``) and returning per-pixel logits
        ``(N, H, W, num_classes)`` (``(N, num_classes, H, W)`` for channels_first).

    Raises:
        ValueError: a backbone with a top or pooling, or not from ``keras_coordatt``; a known
            input size that is not a multiple of the output stride; an output stride without
            default rates and no ``atrous_rates``; invalid numbers.
    """
    layers = _check_backbone(backbone)
    _check_int("num_classes", num_classes, minimum=1)
    _check_int("aspp_filters", aspp_filters, minimum=1)
    _check_int("projection_filters", projection_filters, minimum=1)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"`dropout` must be a number in [0, 1), got {dropout!r}.")
    strides = feature_strides(backbone)
    output_stride = strides["P5"]
    rates = _check_rates(atrous_rates, output_stride)
    data_format = keras.config.image_data_format()
    head = _Head(data_format)
    _check_input_size(backbone, output_stride, head.axis)

    x = _aspp(head, backbone.get_layer(layers["aspp"]).output, aspp_filters, rates, dropout)
    final_stride = output_stride
    if decoder:
        low_level = backbone.get_layer(layers["P2"]).output
        factor = output_stride // strides["P2"]
        x = _decoder(head, x, low_level, factor, aspp_filters, projection_filters)
        final_stride = strides["P2"]
    x = head.conv(x, num_classes, 1, "segmentation_head", classifier=True)
    x = head.upsample(x, final_stride, "segmentation_upsample")
    default_name = f"deeplabv3{'plus' if decoder else ''}_{backbone.name}"
    return ImageSegmenter(
        backbone.inputs[0], x, name=name or default_name, num_classes=num_classes,
        ignore_label=ignore_label,
    )


# ---------------------------------------------------------------------------------------------
# Data checks
# ---------------------------------------------------------------------------------------------

#: Values of ``preprocess_input`` images: ``(x / 255 - mean) / std`` lies in [-2.12, 2.64].
PREPROCESSED_RANGE = (-3.0, 3.0)


def _as_numpy(name: str, value) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        try:
            value = keras.ops.convert_to_numpy(value)
        except Exception as error:  # noqa: BLE001 - any conversion failure is the user's input
            raise ValueError(
                f"`{name}` must be an array or tensor, got {type(value).__name__}."
            ) from error
    value = np.asarray(value)
    if value.dtype == object:
        raise ValueError(f"`{name}` must be a numeric array or tensor, got {value!r:.80}.")
    return value


def _check_images(images: np.ndarray, data_format: str) -> tuple[int, int, int]:
    """(N, H, W) of a preprocessed image batch, else ValueError naming the problem."""
    if images.ndim != 4:
        hint = " (one image: add a batch axis, images[None])" if images.ndim == 3 else ""
        raise ValueError(
            f"`images` must be a batch (N, H, W, 3) ({data_format}), got shape {images.shape}"
            f"{hint}."
        )
    channels = images.shape[-1] if data_format == "channels_last" else images.shape[1]
    if channels != 3:
        raise ValueError(
            f"`images` must have 3 (RGB) channels on the {data_format} channel axis, got shape "
            f"{images.shape}: convert grey / RGBA images to RGB (or check data_format)."
        )
    if images.dtype.kind != "f":
        raise ValueError(
            f"`images` must be float images preprocessed like the backbone's inputs, got dtype "
            f"{images.dtype}: apply keras_coordatt.applications.preprocess_input to the "
            "[0, 255] pixels."
        )
    if not np.all(np.isfinite(images)):
        raise ValueError("`images` contains NaN or infinite values.")
    low, high = PREPROCESSED_RANGE
    if images.size and (images.min() < low or images.max() > high):
        raise ValueError(
            f"`images` values span [{images.min():.3g}, {images.max():.3g}], outside the range "
            f"[{low}, {high}] of keras_coordatt.applications.preprocess_input: apply it to the "
            "[0, 255] pixels (once)."
        )
    if data_format == "channels_first":
        return images.shape[0], images.shape[2], images.shape[3]
    return images.shape[0], images.shape[1], images.shape[2]


def _check_masks(masks: np.ndarray, expected: tuple[int, int, int]) -> np.ndarray:
    shape = masks.shape[:-1] if masks.ndim == 4 and masks.shape[-1] == 1 else masks.shape
    if shape != expected:
        raise ValueError(
            f"`masks` must have shape (N, H, W) or (N, H, W, 1) matching the images, "
            f"(N, H, W) = {expected}, got {masks.shape}: resize masks with nearest-neighbour "
            "interpolation to the image size, one integer label per pixel."
        )
    if masks.dtype.kind == "f":
        if not np.all(np.isfinite(masks)) or np.any(masks != np.round(masks)):
            raise ValueError(
                "`masks` holds non-integer values: masks are class indices (nearest-neighbour "
                "resizing keeps them integer; bilinear does not)."
            )
    elif masks.dtype.kind not in "iu":
        raise ValueError(f"`masks` must hold integer class indices, got dtype {masks.dtype}.")
    return masks


def check_segmentation_batch(
    images,
    masks,
    num_classes: int,
    ignore_label: int | None = 255,
    *,
    data_format: str | None = None,
) -> None:
    """Checks one ``(images, masks)`` batch for a :func:`DeepLabV3` model; ValueError if bad.

    Args:
        images: ``(N, H, W, 3)`` float images (``(N, 3, H, W)`` for channels_first) preprocessed
            by ``keras_coordatt.applications.preprocess_input`` (values in [-3, 3]).
        masks: ``(N, H, W)`` or ``(N, H, W, 1)`` integer labels (floats with integer values are
            accepted): each in ``[0, num_classes)`` or equal to ``ignore_label``.
        num_classes: number of classes of the model.
        ignore_label: the label that the loss and metric skip (None: no such label).
        data_format: ``"channels_last"`` / ``"channels_first"``; default Keras' setting.

    NumPy arrays and backend tensors are accepted (a ``tf.data`` batch too, eagerly).

    Raises:
        ValueError: naming the problem and the fix: images that are not a float batch of RGB
            images in the preprocessed range (wrong rank, channels or dtype, raw 0-255 pixels,
            NaN), masks whose shape does not match the images or that are not integers, or label
            values outside ``[0, num_classes)`` other than ``ignore_label``.
    """
    _check_int("num_classes", num_classes, minimum=1)
    if ignore_label is not None:
        _check_int("ignore_label", ignore_label)
    data_format = data_format or keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"Unknown data_format {data_format!r}.")
    expected = _check_images(_as_numpy("images", images), data_format)
    masks = _check_masks(_as_numpy("masks", masks), expected)
    labels = np.unique(masks)
    bad = labels[((labels < 0) | (labels >= num_classes)) & (labels != ignore_label)]
    if bad.size:
        shown = ", ".join(str(int(value)) for value in bad[:8])
        count = int(np.isin(masks, bad).sum())
        raise ValueError(
            f"`masks` holds labels outside [0, {num_classes}) other than the ignore label "
            f"{ignore_label}: {shown}{' ...' if bad.size > 8 else ''} ({count} pixels). Remap "
            f"them to a class or to the ignore label, or set num_classes / ignore_label to "
            f"match the data (e.g. Penn-Fudan's instance ids: use mask > 0)."
        )
