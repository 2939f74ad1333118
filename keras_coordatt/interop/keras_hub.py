"""A package backbone as a ``keras_hub.models.FeaturePyramidBackbone`` (the ``[keras-hub]`` extra).

``as_keras_hub_backbone(model)`` wraps a network of ``keras_coordatt.applications`` (built with
``include_top=False``) so that keras-hub's task models take it as their ``image_encoder``::

    encoder = as_keras_hub_backbone(MobileNetV2CA(include_top=False, weights=None))
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, spatial_pyramid_pooling_key="P5", upsampling_size=8,
        dilation_rates=[6, 12, 18])
    segmenter = keras_hub.models.DeepLabV3ImageSegmenter(backbone, num_classes=21)

``pyramid_outputs`` follows keras-hub's convention, ``"Pn"`` = the feature map at stride ``2**n``
(keras-hub's DeepLabV3 computes its upsampling from the key), so its keys come from the true
strides of :func:`keras_coordatt.applications.feature_strides`: for each stride, the deepest
level of :func:`~keras_coordatt.applications.feature_extractor` at that stride. At output
stride 32 that is exactly ``P1``..``P5`` of ``feature_extractor``; a network built with
``output_stride=16`` gives ``P1``..``P4`` (``P4`` = its last stage, the extractor's ``P5``),
``output_stride=8`` gives ``P1``..``P3``. The backbone's own output is its deepest level.

The adapter shares the wrapped model's layers and weights. Its config is the model's
:class:`~keras_coordatt.applications.ModelSpec` (plus the output stride), so ``from_config``
and ``.keras`` save / load rebuild the network with the package's builders; loading a saved
file needs ``import keras_coordatt.interop.keras_hub`` first (it registers the class).
"""

from __future__ import annotations

from typing import Any

import keras

from keras_coordatt.applications.catalog import find_model_entry
from keras_coordatt.applications.features import feature_layers, feature_strides
from keras_coordatt.applications.spec import ModelSpec, model_spec

KERAS_HUB_EXTRA_HINT = (
    "keras_coordatt.interop.keras_hub needs keras-hub: pip install 'keras-coordatt[keras-hub]'"
)

try:
    from keras_hub.models import FeaturePyramidBackbone
except ImportError as error:  # exercised in a subprocess that hides keras_hub
    raise ImportError(KERAS_HUB_EXTRA_HINT) from error

DEFAULT_OUTPUT_STRIDE = 32


def keras_hub_levels(strides: dict[str, int]) -> dict[str, str]:
    """``{keras-hub key: package key}`` for the true ``strides`` of the package's levels.

    Args:
        strides: ``feature_strides(model)``, e.g. ``{"P1": 2, ..., "P4": 16, "P5": 16}``.

    Returns:
        For each distinct stride ``2**n``, ``"Pn"`` mapped to the deepest package level at that
        stride: ``{"P1": "P1", ..., "P4": "P5"}`` for the example above.
    """
    levels: dict[str, str] = {}
    for key in sorted(strides, key=lambda k: int(k[1:])):
        stride = strides[key]
        if stride < 2 or stride & (stride - 1):
            raise ValueError(
                f"Pyramid level {key!r} has stride {stride}: keras-hub's pyramid keys need "
                f"powers of two (got strides {strides})."
            )
        levels[f"P{stride.bit_length() - 1}"] = key
    return levels


def _builder_kwargs(spec: ModelSpec, output_stride: int) -> dict[str, Any]:
    """The builder arguments that rebuild ``spec`` (random weights)."""
    kwargs = spec.to_config()
    kwargs.pop("family")
    height, width, channels = kwargs.pop("input_shape")
    if keras.config.image_data_format() == "channels_first":
        kwargs["input_shape"] = (channels, height, width)
    else:
        kwargs["input_shape"] = (height, width, channels)
    if output_stride != DEFAULT_OUTPUT_STRIDE and "output_stride" not in kwargs:
        kwargs["output_stride"] = output_stride
    return kwargs


def _check_spec(spec: ModelSpec | dict) -> ModelSpec:
    if isinstance(spec, dict):
        spec = ModelSpec.from_config(spec)
    if not isinstance(spec, ModelSpec):
        raise ValueError(f"`spec` must be a ModelSpec or its config dict, got {spec!r}.")
    if spec.include_top:
        raise ValueError(
            "A keras-hub backbone needs a network without classifier: build it with "
            "include_top=False."
        )
    return spec


@keras.saving.register_keras_serializable(package="keras_coordatt")
class CoordAttBackbone(FeaturePyramidBackbone):
    """A package network (any family / attention) as a keras-hub ``FeaturePyramidBackbone``.

    Args:
        spec: the network's :class:`~keras_coordatt.applications.ModelSpec` (or its config
            dict), with ``include_top=False``.
        output_stride: the network's output stride (32, or 16 / 8 where the builders take
            ``output_stride``); None reads it from ``model``, else 32.
        model: the built network to wrap (its layers and weights are shared); default: a new
            one built from ``spec`` with random weights (``from_config`` does this).
        **kwargs: keras-hub ``Backbone`` arguments (``name``, ``dtype``, ``trainable``).

    Inputs ``(N, H, W, 3)`` images as the package's builders take them (their
    ``preprocess_input``); output the deepest pyramid level ``(N, H/s, W/s, C)``;
    ``pyramid_outputs`` as in the module docstring.
    """

    def __init__(
        self,
        spec: ModelSpec | dict,
        output_stride: int | None = None,
        *,
        model: keras.Model | None = None,
        **kwargs,
    ):
        spec = _check_spec(spec)
        if model is None:
            stride = DEFAULT_OUTPUT_STRIDE if output_stride is None else int(output_stride)
            builder = find_model_entry(spec.family, None).builder
            model = builder(weights=None, **_builder_kwargs(spec, stride))
        elif model_spec(model) != spec:
            raise ValueError(
                f"`model` was built with {model_spec(model)}, not with the given spec {spec}."
            )
        strides = feature_strides(model)
        if output_stride is not None and int(output_stride) != max(strides.values()):
            raise ValueError(
                f"output_stride={output_stride}, but the network's pyramid has strides "
                f"{strides}."
            )
        layers = feature_layers(model)
        levels = keras_hub_levels(strides)
        pyramid = {hub: model.get_layer(layers[key]).output for hub, key in levels.items()}
        deepest = pyramid[max(pyramid, key=lambda k: int(k[1:]))]
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        super().__init__(inputs=inputs, outputs=deepest, **kwargs)
        self.coordatt_spec = spec
        self.output_stride = max(strides.values())
        self.pyramid_strides = {hub: strides[key] for hub, key in levels.items()}
        self.pyramid_outputs = pyramid

    @property
    def image_shape(self) -> tuple[int | None, ...]:
        """The input shape without the batch axis, as keras-hub backbones report it."""
        return tuple(self.inputs[0].shape[1:])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"spec": self.coordatt_spec.to_config(), "output_stride": self.output_stride})
        return config


def as_keras_hub_backbone(model: keras.Model, name: str | None = None) -> CoordAttBackbone:
    """``model`` (a ``keras_coordatt.applications`` network, ``include_top=False``) as a
    :class:`CoordAttBackbone`, sharing its layers and weights.

    Raises:
        ValueError: ``model`` was not built by the package's builders (no ModelSpec), or has a
            classifier.
    """
    spec = model_spec(model)
    if spec is None:
        raise ValueError(
            f"Model {getattr(model, 'name', model)!r} carries no ModelSpec: wrap a model built "
            "by keras_coordatt.applications (MobileNetV2, MobileNetV2CA, MobileNeXt, "
            "MobileNeXtCA) with include_top=False."
        )
    return CoordAttBackbone(spec, model=model, name=name or f"{model.name}_keras_hub")


__all__ = ["CoordAttBackbone", "KERAS_HUB_EXTRA_HINT", "as_keras_hub_backbone",
           "keras_hub_levels"]
