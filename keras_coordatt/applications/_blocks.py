"""Building blocks and argument handling shared by the MobileNetV2 and MobileNeXt builders.

Conventions, identical to the original PyTorch code (``docs/reference_networks.md`` §b-§d):

* every 3x3 conv pads one zero pixel on each side: ``padding="same"`` at stride 1 (identical),
  explicit ``ZeroPadding2D(1)`` + ``padding="valid"`` at stride 2 (Keras ``"same"`` would pad
  bottom/right instead of top/left on even sizes);
* no bias on backbone convs; BatchNorm epsilon 1e-5, momentum 0.9 (PyTorch's 0.1);
* ReLU6 as ``keras.layers.ReLU(6.0)`` layers, so quantization tools can fuse them;
* conv kernels He-normal over fan-out, the classifier ``Normal(0, 0.01)`` (as the originals).

Output stride (``output_stride`` 16 or 8, for dense prediction): :class:`Blocks` walks the 3x3
convs in network order with the DeepLab rule of TF-slim's ``mobilenet_base`` (TF Model Garden;
torchvision's ResNet ``replace_stride_with_dilation`` does the same): once the stride so far
equals ``output_stride``, each further conv runs at stride 1 with the dilation rate reached
*before* it, and only the convs after it use the rate multiplied by its nominal stride. So the
conv whose stride is removed keeps the previous rate (1 at the first removal, 2 at the second);
the later ones get 2, then 4. Dilated convs pad ``rate`` pixels on each side (Keras
``"same"`` at stride 1, symmetric for an odd kernel), so the network is the "a trous" version of
the strided one: without attention or global pooling, its output subsampled every
``32 // output_stride`` pixels (from the top-left one) is the strided network's output. (The
other convention, e.g. torchvision's dilated MobileNetV3, gives the would-be-strided conv the new
rate already; that network is not the strided one subsampled.)
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import keras

from keras_coordatt.applications.spec import ATTENTIONS, OUTPUT_STRIDES, ModelSpec, ModelWithSpec
from keras_coordatt.layers import CBAM, CoordAttention, SqueezeExcite
from keras_coordatt.layers.coord_attention import conv_initializer

POOLINGS = (None, "avg", "max")

#: Default reduction ratio per attention type. CA: 32 (the paper). SE and CBAM: 24, which gives
#: the paper's 3.89 M parameters for MobileNetV2-1.0 + SE / + CBAM (3,890,136 / 3,891,736).
DEFAULT_REDUCTION = {"ca": 32, "se": 24, "cbam": 24}

#: Attention key ("ca", "se", "cbam") -> layer class (the key of the layer's description).
_ATTENTION_LAYERS = {cls.SPEC.attention: cls for cls in (CoordAttention, SqueezeExcite, CBAM)}

#: Smallest accepted input height/width (as keras.applications' MobileNetV2).
MIN_SIZE = 32
DEFAULT_SIZE = 224

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


# ----------------------------------------------------------------------------------------------
# network plans: what each family's ``block_plan(alpha)`` returns


@dataclasses.dataclass(frozen=True)
class Stem:
    """``stem_conv``: 3x3 conv with ``filters`` output channels at ``stride``, BN, ReLU6."""

    filters: int
    stride: int = 2


@dataclasses.dataclass(frozen=True)
class Head:
    """``head_conv``: 1x1 conv ``in_channels -> filters``, BN, ReLU6 (MobileNetV2 only)."""

    in_channels: int
    filters: int


@dataclasses.dataclass(frozen=True)
class NetworkPlan:
    """A backbone: stem, blocks (``block1``... in order; the family's block type), optional
    head (None: the last block feeds the top directly)."""

    stem: Stem
    blocks: tuple
    head: Head | None = None


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """``_make_divisible`` of the original code: nearest multiple of ``divisor``, never below
    ``min_value`` (default ``divisor``) and never more than 10 % below ``value``."""
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def width_divisor(alpha: float) -> int:
    """Channel divisor of the originals: 4 when ``alpha == 0.1`` exactly, else 8."""
    return 4 if alpha == 0.1 else 8


def dense_initializer() -> keras.initializers.Initializer:
    """``Normal(0, 0.01)``, the classifier initialisation of the originals."""
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.01)


# ----------------------------------------------------------------------------------------------
# argument checks


def check_alpha(alpha) -> float:
    """Returns ``alpha`` as a float after checking it is a finite number > 0."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise ValueError(f"`alpha` must be a positive number, got {alpha!r}.")
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"`alpha` must be a finite number > 0, got {alpha!r}.")
    return float(alpha)


def check_attention(attention) -> str | None:
    """Checks ``attention`` is one of None, "ca", "se", "cbam" (case-insensitive)."""
    if isinstance(attention, str):
        attention = attention.lower()
    if attention not in ATTENTIONS:
        raise ValueError(
            f"Unknown attention={attention!r}: use None, 'ca' (Coordinate Attention), "
            "'se' (Squeeze-and-Excitation) or 'cbam'."
        )
    return attention


def check_output_stride(output_stride) -> int:
    """Checks ``output_stride`` is one of 8, 16, 32 (an int)."""
    if (
        isinstance(output_stride, bool)
        or not isinstance(output_stride, numbers.Integral)
        or output_stride not in OUTPUT_STRIDES
    ):
        raise ValueError(
            f"`output_stride` must be one of {OUTPUT_STRIDES} (32: the strided network; 16 or "
            f"8: the last one or two stages dilated instead of strided), got {output_stride!r}."
        )
    return int(output_stride)


def resolve_reduction(attention: str | None, reduction) -> int | None:
    """The reduction ratio to use: ``reduction`` or the per-attention default."""
    if attention is None:
        if reduction is not None:
            raise ValueError(f"`reduction={reduction!r}` needs an attention type (attention=None).")
        return None
    if reduction is None:
        return DEFAULT_REDUCTION[attention]
    if isinstance(reduction, bool) or not isinstance(reduction, numbers.Integral) or reduction < 1:
        raise ValueError(f"`reduction` must be an integer >= 1 or None, got {reduction!r}.")
    return int(reduction)


def check_top_arguments(
    include_top: bool, weights, pooling, classes, classifier_activation, dropout_rate
) -> None:
    """Checks ``pooling``, ``classes``, ``classifier_activation`` and ``dropout_rate``."""
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling={pooling!r}: use None, 'avg' or 'max'.")
    if isinstance(dropout_rate, bool) or not isinstance(dropout_rate, numbers.Real) or not (
        0.0 <= dropout_rate < 1.0
    ):
        raise ValueError(f"`dropout_rate` must be a number in [0, 1), got {dropout_rate!r}.")
    if not include_top:
        return
    if isinstance(classes, bool) or not isinstance(classes, numbers.Integral) or classes < 1:
        raise ValueError(
            f"`classes` must be an integer >= 1 with include_top=True, got {classes!r}."
        )
    if weights is not None and classifier_activation not in (None, "softmax"):
        raise ValueError(
            "With pretrained weights, `classifier_activation` must be None or 'softmax', "
            f"got {classifier_activation!r}."
        )


def _spatial_and_channels(shape: tuple, data_format: str) -> tuple[tuple, object]:
    if data_format == "channels_first":
        return tuple(shape[1:]), shape[0]
    return tuple(shape[:2]), shape[2]


def resolve_input_shape(
    input_shape, input_tensor, *, include_top: bool, weights, data_format: str
) -> tuple:
    """Checks ``input_shape`` / ``input_tensor`` and returns the (3-tuple) input shape.

    Default when both are None: ``(224, 224, 3)`` with ``include_top=True`` (as
    keras.applications), ``(None, None, 3)`` otherwise. Height and width may be None; when
    known they must be >= ``MIN_SIZE``. The channel count must be known, and 3 when
    ``weights`` is given.
    """
    if input_shape is not None:
        try:
            input_shape = tuple(None if d is None else int(d) for d in input_shape)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"`input_shape` must be a tuple of 3 ints (or None), got {input_shape!r}."
            ) from error
        if len(input_shape) != 3:
            raise ValueError(
                f"`input_shape` must have 3 entries (rows, cols, channels) for channels_last or "
                f"(channels, rows, cols) for channels_first, got {input_shape!r}."
            )
    if input_tensor is not None:
        tensor_shape = getattr(input_tensor, "shape", None)
        if tensor_shape is None:
            raise ValueError(
                f"`input_tensor` must be a Keras tensor (e.g. keras.Input(...)), got "
                f"{type(input_tensor).__name__}."
            )
        tensor_shape = tuple(tensor_shape)
        if len(tensor_shape) != 4:
            raise ValueError(
                f"`input_tensor` must be 4-D (batch, ...), got shape {tensor_shape}."
            )
        tensor_shape = tensor_shape[1:]
        if input_shape is not None:
            for given, actual in zip(input_shape, tensor_shape, strict=True):
                if given is not None and actual is not None and given != actual:
                    raise ValueError(
                        f"`input_shape={input_shape}` is incompatible with the shape of "
                        f"`input_tensor` {tensor_shape} (batch axis excluded)."
                    )
            input_shape = tuple(
                a if a is not None else g for g, a in zip(input_shape, tensor_shape, strict=True)
            )
        else:
            input_shape = tensor_shape
    if input_shape is None:
        size = DEFAULT_SIZE if include_top else None
        input_shape = (3, size, size) if data_format == "channels_first" else (size, size, 3)
    spatial, channels = _spatial_and_channels(input_shape, data_format)
    if channels is None or channels < 1:
        raise ValueError(
            f"The channel count must be known and >= 1 ({data_format}), got input shape "
            f"{input_shape}."
        )
    if weights is not None and channels != 3:
        raise ValueError(
            f"Pretrained weights need 3 input channels (RGB), got input shape {input_shape} "
            f"({data_format})."
        )
    for size in spatial:
        if size is not None and size < MIN_SIZE:
            raise ValueError(
                f"Input height and width must be at least {MIN_SIZE}, got input shape "
                f"{input_shape} ({data_format})."
            )
    return input_shape


def make_input(input_shape: tuple, input_tensor):
    """Returns ``(img_input, model_inputs)`` as keras.applications does."""
    if input_tensor is None:
        img_input = keras.layers.Input(shape=input_shape, name="input_layer")
        return img_input, img_input
    if keras.backend.is_keras_tensor(input_tensor):
        sources = keras.utils.get_source_inputs(input_tensor)
        return input_tensor, sources[0] if len(sources) == 1 else sources
    img_input = keras.layers.Input(tensor=input_tensor, shape=input_shape)
    return img_input, img_input


# ----------------------------------------------------------------------------------------------
# layers


class Blocks:
    """Layer factory bound to one data format (channels axis for BN, attention layers) and one
    ``output_stride``: the 3x3 convs must be made in network order, each with its nominal
    stride (the one of the strided network); the module docstring says which become dilated."""

    def __init__(self, data_format: str, output_stride: int = 32):
        self.data_format = data_format
        self.channel_axis = -1 if data_format == "channels_last" else 1
        self.output_stride = output_stride
        self._stride = 1  # stride reached so far
        self._rate = 1  # dilation rate of the next conv once the stride is removed

    def _atrous(self, stride: int) -> tuple[int, int]:
        """``(stride, dilation rate)`` of the next 3x3 conv, whose nominal stride is ``stride``."""
        if self._stride == self.output_stride:
            rate = self._rate
            self._rate *= stride
            return 1, rate
        self._stride *= stride
        return stride, 1

    def channels(self, tensor) -> int:
        return int(tensor.shape[self.channel_axis])

    def bn(self, x, name: str):
        return keras.layers.BatchNormalization(
            axis=self.channel_axis, epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name
        )(x)

    def relu6(self, x, name: str):
        return keras.layers.ReLU(6.0, name=name)(x)

    def _pad(self, x, kernel_size: int, stride: int, name: str) -> tuple[object, str]:
        """``(x, padding)`` of PyTorch's symmetric padding (``rate * (k // 2)`` pixels a side):
        Keras ``"same"`` at stride 1, explicit ``ZeroPadding2D(k // 2)`` + ``"valid"`` at 2."""
        if stride == 1:
            return x, "same"
        x = keras.layers.ZeroPadding2D(kernel_size // 2, data_format=self.data_format, name=name)(x)
        return x, "valid"

    def conv(self, x, filters: int, kernel_size: int, stride: int, name: str, pad_name=None):
        """Bias-free conv at nominal ``stride``; 3x3 convs pad like PyTorch's ``padding=1``
        (``padding=rate`` when dilated)."""
        rate = 1
        if kernel_size == 1:
            padding = "valid"
        else:
            stride, rate = self._atrous(stride)
            x, padding = self._pad(x, kernel_size, stride, pad_name or f"{name}_pad")
        return keras.layers.Conv2D(
            filters, kernel_size, strides=stride, padding=padding, dilation_rate=rate,
            use_bias=False, data_format=self.data_format, kernel_initializer=conv_initializer(),
            name=name,
        )(x)

    def depthwise(self, x, stride: int, name: str):
        """Bias-free depthwise 3x3 conv at nominal ``stride``, PyTorch's symmetric padding."""
        stride, rate = self._atrous(stride)
        x, padding = self._pad(x, 3, stride, f"{name}_pad")
        return keras.layers.DepthwiseConv2D(
            3, strides=stride, padding=padding, dilation_rate=rate, use_bias=False,
            data_format=self.data_format, depthwise_initializer=conv_initializer(), name=name,
        )(x)

    def stem(self, x, stem: Stem):
        """``stem_pad`` -> ``stem_conv`` (3x3, stride 2) -> ``stem_bn`` -> ``stem_relu``."""
        x = self.conv(x, stem.filters, 3, stem.stride, "stem_conv", pad_name="stem_pad")
        x = self.bn(x, "stem_bn")
        return self.relu6(x, "stem_relu")

    def head(self, x, head: Head | None):
        """``head_conv`` (1x1) -> ``head_bn`` -> ``head_relu``; identity when ``head`` is None."""
        if head is None:
            return x
        x = self.conv(x, head.filters, 1, 1, "head_conv")
        x = self.bn(x, "head_bn")
        return self.relu6(x, "head_relu")

    def conv_bn(self, x, filters, kernel_size, stride, name, *, activation: bool):
        """conv -> ``{name}_bn`` -> optional ReLU6 ``{name}_relu``."""
        x = self.conv(x, filters, kernel_size, stride, name)
        x = self.bn(x, f"{name}_bn")
        return self.relu6(x, f"{name}_relu") if activation else x

    def depthwise_bn(self, x, stride, name, *, activation: bool):
        """depthwise -> ``{name}_bn`` -> optional ReLU6 ``{name}_relu``."""
        x = self.depthwise(x, stride, name)
        x = self.bn(x, f"{name}_bn")
        return self.relu6(x, f"{name}_relu") if activation else x

    def attention(self, x, attention: str | None, reduction: int | None, prefix: str):
        """Applies the attention block ``{prefix}_{attention}`` (identity when None)."""
        if attention is None:
            return x
        layer_cls = _ATTENTION_LAYERS[attention]
        return layer_cls(
            reduction=reduction, data_format=self.data_format, name=f"{prefix}_{attention}"
        )(x)

    def top(
        self, x, *, include_top, pooling, classes, classifier_activation, dropout_rate
    ):
        """Global average pool -> dropout -> ``predictions`` Dense, or the ``pooling`` option."""
        if include_top:
            x = keras.layers.GlobalAveragePooling2D(
                data_format=self.data_format, name="avg_pool"
            )(x)
            if dropout_rate > 0:
                x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
            return keras.layers.Dense(
                classes, activation=classifier_activation, kernel_initializer=dense_initializer(),
                bias_initializer="zeros", name="predictions",
            )(x)
        if pooling == "avg":
            return keras.layers.GlobalAveragePooling2D(
                data_format=self.data_format, name="avg_pool"
            )(x)
        if pooling == "max":
            return keras.layers.GlobalMaxPooling2D(data_format=self.data_format, name="max_pool")(x)
        return x


# ----------------------------------------------------------------------------------------------
# the steps every builder shares


def prepare(
    *,
    family: str,
    input_shape,
    alpha,
    include_top: bool,
    weights,
    input_tensor,
    pooling,
    classes,
    classifier_activation,
    attention,
    reduction,
    dropout_rate,
    output_stride,
) -> dict:
    """Checks every builder argument, calls the weights check, returns the resolved values."""
    from keras_coordatt import weights as weights_lib

    attention = check_attention(attention)
    output_stride = check_output_stride(output_stride)
    alpha = check_alpha(alpha)
    reduction = resolve_reduction(attention, reduction)
    check_top_arguments(include_top, weights, pooling, classes, classifier_activation, dropout_rate)
    data_format = keras.config.image_data_format()
    input_shape = resolve_input_shape(
        input_shape, input_tensor, include_top=include_top, weights=weights,
        data_format=data_format,
    )
    weights_lib.check_weights_argument(
        weights, family=family, alpha=alpha, attention=attention, include_top=include_top,
        classes=classes, input_shape=input_shape, reduction=reduction,
    )
    return {
        "alpha": alpha,
        "attention": attention,
        "reduction": reduction,
        "data_format": data_format,
        "input_shape": input_shape,
        "output_stride": output_stride,
    }


def finish(inputs, outputs, weights, *, name: str | None, spec: ModelSpec, resolved: dict):
    """The model carrying ``spec`` (see :mod:`.spec`), with ``weights`` loaded when not None
    (through ``keras_coordatt.weights.load_weights``)."""
    model = ModelWithSpec(
        inputs, outputs, name=default_name(spec) if name is None else name, spec=spec,
    )
    if weights is not None:
        from keras_coordatt import weights as weights_lib

        weights_lib.load_weights(
            model, weights, family=spec.family, alpha=spec.alpha, attention=spec.attention,
            input_shape=resolved["input_shape"], reduction=spec.reduction,
        )
    return model


def make_spec(family: str, resolved: dict, *, include_top: bool, pooling, classes) -> ModelSpec:
    """The :class:`ModelSpec` of resolved builder arguments (input shape as (H, W, C))."""
    shape = resolved["input_shape"]
    if resolved["data_format"] == "channels_first":
        shape = (shape[1], shape[2], shape[0])
    return ModelSpec(
        family=family, attention=resolved["attention"], alpha=resolved["alpha"],
        reduction=resolved["reduction"], input_shape=shape, include_top=bool(include_top),
        pooling=pooling, classes=classes, output_stride=resolved["output_stride"],
    )


def default_name(spec: ModelSpec) -> str:
    """``{family}[_{attention}]_{alpha:.2f}[_os{output_stride}]`` (no suffix at 32), e.g.
    ``mobilenet_v2_ca_1.00`` or ``mobilenext_0.50_os16``."""
    suffix = f"_{spec.attention}" if spec.attention else ""
    stride = f"_os{spec.output_stride}" if spec.output_stride != 32 else ""
    return f"{spec.family}{suffix}_{spec.alpha:.2f}{stride}"
