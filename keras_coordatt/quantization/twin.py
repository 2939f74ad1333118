"""Keras 3 -> tf_keras: rebuild a functional model layer by layer and copy its weights.

tfmot only quantizes tf_keras (Keras 2) functional models. :func:`to_tf_keras` walks the
Keras 3 functional graph through its serialized config (each layer's class, config and inbound
nodes), recreates every layer in tf_keras from the arguments that define its computation, wires
the same graph, and copies the weights across layer by layer. Only layer types whose behaviour is
known to be identical in both Keras versions are accepted; anything else is a ValueError naming
the layer.
"""

from __future__ import annotations

from typing import Any

import keras

from keras_coordatt.layers import CBAM, CoordAttention, SqueezeExcite
from keras_coordatt.quantization import tf_keras_layers
from keras_coordatt.quantization._deps import import_qat_stack

tf, tf_keras, _ = import_qat_stack()

# Keras 3 class name -> config keys that carry over unchanged to the tf_keras layer.
_CONV_KEYS = ("kernel_size", "strides", "padding", "data_format", "dilation_rate", "use_bias")
_BUILTIN_KEYS: dict[str, tuple[str, ...]] = {
    "Conv2D": ("filters", "groups", *_CONV_KEYS),
    "DepthwiseConv2D": ("depth_multiplier", *_CONV_KEYS),
    "BatchNormalization": ("axis", "momentum", "epsilon", "center", "scale"),
    "ReLU": ("max_value", "negative_slope", "threshold"),
    "ZeroPadding2D": ("padding", "data_format"),
    "Add": (),
    "Multiply": (),
    "Concatenate": ("axis",),
    "GlobalAveragePooling2D": ("data_format", "keepdims"),
    "GlobalMaxPooling2D": ("data_format", "keepdims"),
    "Dropout": ("rate", "noise_shape", "seed"),
    "Dense": ("units", "use_bias"),
    "Activation": (),
    "Reshape": ("target_shape",),
    "Flatten": ("data_format",),
    "UpSampling2D": ("size", "data_format", "interpolation"),
}
_ACTIVATION_KEYS = ("activation",)
_REGULARIZER_KEYS = (
    "kernel_regularizer",
    "bias_regularizer",
    "depthwise_regularizer",
    "beta_regularizer",
    "gamma_regularizer",
    "activity_regularizer",
)
_CONSTRAINT_KEYS = (
    "kernel_constraint",
    "bias_constraint",
    "depthwise_constraint",
    "beta_constraint",
    "gamma_constraint",
)
# Keras 3 activation names that tf_keras spells differently.
_ACTIVATION_ALIASES = {"silu": "swish"}
_TF_KERAS_ACTIVATIONS = frozenset(
    {"linear", "relu", "relu6", "sigmoid", "softmax", "tanh", "swish", "elu", "selu", "gelu",
     "softplus", "softsign", "exponential"}
)

# Keras 3 attention class -> its tf_keras twin; both read their arguments and weight-holding
# sub-layers from the same AttentionSpec (``cls.SPEC``, keras_coordatt.layers.specs).
_ATTENTION: dict[type, type] = {
    CoordAttention: tf_keras_layers.CoordAttention,
    SqueezeExcite: tf_keras_layers.SqueezeExcite,
    CBAM: tf_keras_layers.CBAM,
}

SUPPORTED_LAYERS = tuple(
    ["InputLayer", *_BUILTIN_KEYS, *(cls.__name__ for cls in _ATTENTION)]
)


def _unsupported(layer: keras.layers.Layer, why: str = "") -> ValueError:
    return ValueError(
        f"Cannot rebuild layer {layer.name!r} of type {type(layer).__name__} in tf_keras"
        f"{': ' + why if why else ''}. Supported layer types: {', '.join(SUPPORTED_LAYERS)}."
    )


def _translate_activation(layer, value):
    if value is None:
        return None
    if not isinstance(value, str):
        raise _unsupported(layer, f"activation {value!r} is not a built-in activation name")
    name = _ACTIVATION_ALIASES.get(value, value)
    if name not in _TF_KERAS_ACTIVATIONS:
        raise _unsupported(layer, f"activation {value!r} has no tf_keras equivalent")
    return name


def _translate_regularizer(layer, key: str, value):
    if value is None:
        return None
    class_name = value.get("class_name") if isinstance(value, dict) else None
    config = value.get("config", {}) if isinstance(value, dict) else {}
    if class_name == "L2":
        return tf_keras.regularizers.L2(config.get("l2", 0.0))
    if class_name == "L1":
        return tf_keras.regularizers.L1(config.get("l1", 0.0))
    if class_name == "L1L2":
        return tf_keras.regularizers.L1L2(config.get("l1", 0.0), config.get("l2", 0.0))
    raise _unsupported(layer, f"{key}={value!r} (only L1, L2 and L1L2 are translated)")


def _tf_keras_layer(layer: keras.layers.Layer):
    """A new, unbuilt tf_keras layer computing what the Keras 3 ``layer`` computes."""
    if isinstance(layer, keras.Model):
        raise _unsupported(layer, "nested models are not supported; use a flat functional model")
    policy = getattr(layer, "dtype_policy", None)
    if policy is not None and getattr(policy, "name", "float32") != "float32":
        raise _unsupported(layer, f"dtype policy {policy.name!r} (QAT works in float32)")
    cls = type(layer)
    if cls in _ATTENTION:
        config = layer.get_config()
        arguments = {key: config[key] for key in cls.SPEC.argument_names}
        return _ATTENTION[cls](name=layer.name, **arguments)
    name = cls.__name__
    if name not in _BUILTIN_KEYS or cls is not getattr(keras.layers, name, None):
        raise _unsupported(layer)
    config = layer.get_config()
    kwargs: dict[str, Any] = {key: config[key] for key in _BUILTIN_KEYS[name] if key in config}
    for key in _ACTIVATION_KEYS:
        if key in config:
            kwargs[key] = _translate_activation(layer, config[key])
    for key in _REGULARIZER_KEYS:
        if config.get(key) is not None:
            kwargs[key] = _translate_regularizer(layer, key, config[key])
    for key in _CONSTRAINT_KEYS:
        if config.get(key) is not None:
            raise _unsupported(layer, f"{key} is not translated")
    if name == "BatchNormalization" and (config.get("renorm") or config.get("synchronized")):
        raise _unsupported(layer, "renorm / synchronized BatchNormalization")
    twin = getattr(tf_keras.layers, name)(name=layer.name, **kwargs)
    twin.trainable = layer.trainable
    return twin


def _copy_weights(source: keras.layers.Layer, target) -> None:
    cls = type(source)
    if cls in _ATTENTION:
        for sublayer in cls.SPEC.sublayer_names:
            if getattr(source, sublayer, None) is not None:
                getattr(target, sublayer).set_weights(getattr(source, sublayer).get_weights())
        target.trainable = source.trainable
        return
    weights = source.get_weights()
    if len(weights) != len(target.get_weights()):
        raise _unsupported(source, "its weights do not map one to one onto the tf_keras layer")
    target.set_weights(weights)


def _history_refs(structure) -> Any:
    """Replaces serialized Keras tensors in an inbound-node structure by their keras_history."""
    if isinstance(structure, dict) and structure.get("class_name") == "__keras_tensor__":
        return _TensorRef(*structure["config"]["keras_history"])
    if isinstance(structure, (list, tuple)):
        return [_history_refs(item) for item in structure]
    if isinstance(structure, dict):
        return {key: _history_refs(value) for key, value in structure.items()}
    return structure


class _TensorRef:
    def __init__(self, layer_name: str, node_index: int, tensor_index: int):
        self.key = (layer_name, node_index)
        self.tensor_index = tensor_index


def _resolve(structure, outputs: dict) -> Any:
    if isinstance(structure, _TensorRef):
        return outputs[structure.key][structure.tensor_index]
    if isinstance(structure, list):
        return [_resolve(item, outputs) for item in structure]
    if isinstance(structure, dict):
        return {key: _resolve(value, outputs) for key, value in structure.items()}
    return structure


def _ready(structure, outputs: dict) -> bool:
    if isinstance(structure, _TensorRef):
        return structure.key in outputs
    if isinstance(structure, list):
        return all(_ready(item, outputs) for item in structure)
    if isinstance(structure, dict):
        return all(_ready(value, outputs) for value in structure.values())
    return True


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _refs(spec) -> list:
    """``input_layers`` / ``output_layers`` of a functional config as a list of refs."""
    if spec and not isinstance(spec[0], (list, tuple)):
        spec = [spec]
    return [_TensorRef(*entry) for entry in spec]


def _check_keras3_functional(model) -> None:
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Expected a Keras 3 model (keras.Model), got {type(model).__module__}."
            f"{type(model).__name__}."
        )
    if isinstance(model, keras.Sequential):
        return
    config = model.get_config() if hasattr(model, "get_config") else None
    if not isinstance(config, dict) or "layers" not in config or "input_layers" not in config:
        raise ValueError(
            f"{model.name!r} is not a functional model (a subclassed keras.Model cannot be "
            "rebuilt layer by layer); build it with the functional API."
        )


def to_tf_keras(model: keras.Model, *, copy_weights: bool = True):
    """Rebuilds a Keras 3 functional (or Sequential) model in tf_keras, weights included.

    The result has the same layer names, structure and outputs (within float rounding); our
    attention layers become their tf_keras twins from
    :mod:`keras_coordatt.quantization.tf_keras_layers`.

    Raises:
        ValueError: for a layer type that has no exact tf_keras counterpart (naming the layer and
            its type), a subclassed or nested model, or a non-float32 dtype policy.
    """
    _check_keras3_functional(model)
    if isinstance(model, keras.Sequential):
        return _sequential_to_tf_keras(model, copy_weights)

    layers_by_name = {layer.name: layer for layer in model.layers}
    config = model.get_config()
    outputs: dict[tuple[str, int], list] = {}
    pending: list[tuple[str, int, Any]] = []
    twins: dict[str, Any] = {}
    inputs_by_name: dict[str, Any] = {}
    for layer_config in config["layers"]:
        layer = layers_by_name[layer_config["name"]]
        if layer_config["class_name"] == "InputLayer":
            batch_shape = tuple(layer_config["config"]["batch_shape"])
            tensor = tf_keras.Input(
                batch_shape=batch_shape, name=layer.name, dtype=layer_config["config"]["dtype"]
            )
            inputs_by_name[layer.name] = tensor
            outputs[(layer.name, 0)] = [tensor]
            continue
        twins[layer.name] = _tf_keras_layer(layer)
        for node_index, node in enumerate(layer_config["inbound_nodes"]):
            pending.append((layer.name, node_index, _history_refs(node)))

    while pending:
        progressed = False
        for item in list(pending):
            name, node_index, node = item
            if not _ready(node, outputs):
                continue
            args = _resolve(node.get("args", []), outputs)
            kwargs = {
                key: value
                for key, value in _resolve(node.get("kwargs", {}), outputs).items()
                if key not in ("training", "mask")
            }
            result = twins[name](*args, **kwargs)
            outputs[(name, node_index)] = _as_list(result)
            pending.remove(item)
            progressed = True
        if not progressed:
            raise ValueError(f"Could not order the layers of {model.name!r} (cyclic config?).")

    tf_inputs = [inputs_by_name[ref.key[0]] for ref in _refs(config["input_layers"])]
    tf_outputs = [_resolve(ref, outputs) for ref in _refs(config["output_layers"])]
    twin_model = tf_keras.Model(
        tf_inputs if len(tf_inputs) > 1 else tf_inputs[0],
        tf_outputs if len(tf_outputs) > 1 else tf_outputs[0],
        name=model.name,
    )
    if copy_weights:
        for name, twin in twins.items():
            _copy_weights(layers_by_name[name], twin)
    return twin_model


def _sequential_to_tf_keras(model: keras.Sequential, copy_weights: bool):
    shape = model.inputs[0].shape if model.inputs else None
    if shape is None:
        raise ValueError(f"Sequential model {model.name!r} has no known input shape; build it.")
    tensor = inputs = tf_keras.Input(batch_shape=tuple(shape), name=f"{model.name}_input")
    pairs = []
    for layer in model.layers:
        twin = _tf_keras_layer(layer)
        tensor = twin(tensor)
        pairs.append((layer, twin))
    twin_model = tf_keras.Model(inputs, tensor, name=model.name)
    if copy_weights:
        for layer, twin in pairs:
            _copy_weights(layer, twin)
    return twin_model

