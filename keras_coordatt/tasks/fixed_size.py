"""A functional model built for any input size, rebuilt at one fixed size with the same weights.

QAT (tfmot) and the TFLite converter need a fixed input size. A :func:`DeepLabV3` built at
``(None, None, 3)`` broadcasts its image-pooling branch by adding it to zeros of the feature
map (``aspp_pool_zeros`` + ``aspp_pool_upsample``, an ``Add``); at a known size that branch is
the ``UpSampling2D(nearest)`` a fixed-size :func:`DeepLabV3` has, which converts to int8 without
a constant-zero tensor (whose degenerate range an int8 file cannot represent).
"""

from __future__ import annotations

import copy

import keras

_ZEROS, _BROADCAST = "aspp_pool_zeros", "aspp_pool_upsample"


def _spatial() -> slice:
    """Where (H, W) sit in an (N, ...) image shape under Keras' image data format."""
    return slice(2, 4) if keras.config.image_data_format() == "channels_first" else slice(1, 3)


def _with_batch_shape(config: dict, height: int, width: int) -> dict:
    inputs = [layer for layer in config["layers"] if layer["class_name"] == "InputLayer"]
    if len(inputs) != 1:
        raise ValueError(f"Expected a model with one input, got {len(inputs)}.")
    shape = list(inputs[0]["config"]["batch_shape"])
    if len(shape) != 4:
        raise ValueError(f"Expected an image input (N, H, W, C) or (N, C, H, W), got {shape}.")
    shape[_spatial()] = [height, width]
    inputs[0]["config"]["batch_shape"] = shape
    return config


def _upsample_pooled_branch(config: dict, size: tuple[int, int]) -> dict:
    """Replaces the zeros + Add broadcast of the pooled branch by UpSampling2D(``size``)."""
    layers = {layer["name"]: layer for layer in config["layers"]}
    broadcast = layers[_BROADCAST]
    (args,) = [node["args"] for node in broadcast["inbound_nodes"]]
    pooled = [ref for ref in args[0] if ref["config"]["keras_history"][0] != _ZEROS]
    upsample = keras.layers.UpSampling2D(size, interpolation="nearest", name=_BROADCAST,
                                         dtype=broadcast["config"].get("dtype"))
    broadcast.update(class_name="UpSampling2D", module="keras.layers", registered_name=None,
                     config=upsample.get_config(),
                     inbound_nodes=[{"args": pooled, "kwargs": {}}])
    config["layers"] = [layer for layer in config["layers"] if layer["name"] != _ZEROS]
    return config


def at_input_size(model: keras.Model, height: int, width: int | None = None) -> keras.Model:
    """``model`` (a functional model, e.g. a :func:`DeepLabV3`) rebuilt for a fixed
    ``(height, width)`` input, with the same layers, names and weights (copied).

    Raises:
        ValueError: for a model that is not functional or has several / non-image inputs, or a
            size the model cannot take (e.g. not a multiple of a DeepLabV3's output stride).
    """
    width = height if width is None else width
    if not isinstance(model, keras.Model) or not hasattr(model, "get_config"):
        raise ValueError(f"Expected a functional keras.Model, got {type(model).__name__}.")
    config = _with_batch_shape(copy.deepcopy(model.get_config()), height, width)
    cls = type(model)
    fixed = cls.from_config(copy.deepcopy(config))
    names = {layer.name for layer in fixed.layers}
    if _ZEROS in names and _BROADCAST in names:
        size = tuple(fixed.get_layer(_ZEROS).output.shape[_spatial()])
        fixed = cls.from_config(_upsample_pooled_branch(config, size))
    output = fixed.outputs[0].shape
    spatial = tuple(output[_spatial()])
    if len(output) == 4 and spatial != (height, width):
        raise ValueError(
            f"{model.name!r} at {height}x{width} would segment at {spatial[0]}x{spatial[1]}: "
            "pick a size that is a multiple of its output stride (e.g. 16 for output_stride=16)."
        )
    for layer in fixed.layers:  # by name: the rebuilt graph may order its layers differently
        weights = model.get_layer(layer.name).get_weights()
        if weights:
            layer.set_weights(weights)
    return fixed
