"""What ``export_hub`` saves: the analysis of a Keras model (input layout, the pooled features
or the logits) and the trackable root object with its traced functions."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

#: Name of the output in the ``serving_default`` signature, per kind.
OUTPUT_KEYS = {"feature_vector": "feature_vector", "classification": "logits"}
#: Name of the pooled-feature layer of the builders.
POOLED_FEATURES_LAYER = "avg_pool"
#: Input name in the ``serving_default`` signature.
INPUT_NAME = "inputs"




@dataclasses.dataclass(frozen=True)
class Plan:
    backbone: Any  # keras.Model: inputs -> features (feature_vector) or pre-head tensor
    head: Any  # keras.layers.Dense whose pre-activation gives the logits, or None
    channels_first: bool
    height: int | None
    width: int | None
    output_size: int


def _producer(tensor) -> Any:
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history[0]


def _activation_name(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _single_image_input(model) -> tuple[bool, int | None, int | None]:
    import keras

    if not isinstance(model, keras.Model):
        raise ValueError(
            f"export_hub expects a Keras 3 `keras.Model`, got {type(model).__name__}. (tf_keras "
            "models are not supported: build the model with keras_coordatt.applications.)"
        )
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ValueError(
            f"Model {model.name!r} has no symbolic inputs (a subclassed model?): export_hub "
            "needs a functional or Sequential model, e.g. from keras_coordatt.applications."
        )
    if len(inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"Model {model.name!r} has {len(inputs)} inputs and {len(model.outputs)} outputs; "
            "export_hub needs one image input and one output."
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise ValueError(f"Model {model.name!r} input must be 4-D images, got shape {shape}.")
    if shape[-1] == 3:
        return False, shape[1], shape[2]
    if shape[1] == 3:
        return True, shape[2], shape[3]
    raise ValueError(
        f"Model {model.name!r} input must have 3 (RGB) channels, got shape {shape}."
    )


def _submodel(model, output, suffix: str):
    """A functional model from ``model``'s (single, unnested) input to ``output``; it shares
    the layers and variables of ``model``."""
    import keras

    return keras.Model(model.inputs[0], output, name=f"{model.name}_{suffix}")


def _plan_feature_vector(model) -> tuple[Any, Any]:
    import keras

    pooled = None
    try:
        pooled = model.get_layer(POOLED_FEATURES_LAYER)
    except ValueError:
        pass
    if pooled is None or not isinstance(pooled, keras.layers.GlobalAveragePooling2D):
        candidates = [
            layer
            for layer in model.layers
            if isinstance(layer, keras.layers.GlobalAveragePooling2D)
            and len(layer.output.shape) == 2
        ]
        pooled = candidates[-1] if candidates else None
    if pooled is None or len(pooled.output.shape) != 2:
        raise ValueError(
            f"kind='feature_vector' needs the pooled-feature layer: model {model.name!r} has no "
            f"GlobalAveragePooling2D layer (named {POOLED_FEATURES_LAYER!r} by the builders) "
            "with a 2-D output. Build it with include_top=True, or include_top=False and "
            "pooling='avg'."
        )
    return _submodel(model, pooled.output, "feature_vector"), None


def _plan_classification(model) -> tuple[Any, Any]:
    import keras

    output = model.outputs[0]
    if len(output.shape) != 2:
        raise ValueError(
            f"kind='classification' needs a classifier model with 2-D output (batch, classes); "
            f"model {model.name!r} outputs shape {tuple(output.shape)}. Build it with "
            "include_top=True."
        )
    layer = _producer(output)
    if isinstance(layer, (keras.layers.Activation, keras.layers.Softmax)):
        name = "softmax" if isinstance(layer, keras.layers.Softmax) else _activation_name(
            layer.activation
        )
        if name not in ("softmax", "sigmoid", "linear"):
            raise ValueError(
                f"kind='classification' exports logits, but model {model.name!r} ends in a "
                f"{name!r} activation that has no logits to undo (softmax, sigmoid or none)."
            )
        return _submodel(model, layer.input, "logits"), None
    if isinstance(layer, keras.layers.Dense):
        name = _activation_name(layer.activation)
        if name == "linear":
            return _submodel(model, output, "logits"), None
        if name in ("softmax", "sigmoid"):
            return _submodel(model, layer.input, "pre_logits"), layer
        raise ValueError(
            f"kind='classification' exports logits, but the classifier {layer.name!r} of model "
            f"{model.name!r} has activation {name!r}; build it with classifier_activation=None "
            "or 'softmax'."
        )
    raise ValueError(
        f"kind='classification' needs a model that ends in a Dense classifier (named "
        f"'predictions' by the builders, include_top=True); model {model.name!r} ends in "
        f"{type(layer).__name__} {getattr(layer, 'name', '')!r}."
    )


def plan_export(model, kind: str) -> Plan:
    channels_first, height, width = _single_image_input(model)
    if kind == "feature_vector":
        backbone, head = _plan_feature_vector(model)
    else:
        backbone, head = _plan_classification(model)
    size = head.units if head is not None else backbone.outputs[0].shape[-1]
    return Plan(backbone, head, channels_first, height, width, int(size))


def walk_layers(model) -> list:
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is not None:
        return list(flatten(include_self=False, recursive=True))
    return list(model.layers)  # pragma: no cover - every Keras 3 layer has _flatten_layers


@contextlib.contextmanager
def traced_for_saving(options: Any) -> Iterator[None]:
    """Traces in the context ``tf.saved_model.save(..., options=options)`` saves in.

    tf.function keys its traces by the save options' variable policy, so ``save`` traces every
    function traced outside a save context once more (the network twice for ``__call__``);
    traced here, ``save`` finds them. Without TensorFlow's ``save_context`` module (a private
    one) the functions are traced twice, with the same result.
    """
    try:
        from tensorflow.python.saved_model import save_context
    except ImportError:  # pragma: no cover - present in every TensorFlow 2.x release
        save_context = None
    if save_context is None or save_context.in_save_context():
        yield
        return
    with save_context.save_context(options):
        yield


@contextlib.contextmanager
def batch_norm_frozen(model, enabled: bool) -> Iterator[None]:
    """Sets ``trainable=False`` on every BatchNormalization layer while tracing (Keras 3 then
    runs them in inference mode whatever ``training`` is), and restores the flags after."""
    import keras

    changed = []
    if enabled:
        for layer in walk_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
                layer.trainable = False
                changed.append(layer)
    try:
        yield
    finally:
        for layer in changed:
            layer.trainable = True


# ------------------------------------------------------------------------------------------
# The exported object
# ------------------------------------------------------------------------------------------


def _unique(variables) -> list:
    seen, result = set(), []
    for variable in variables:
        if id(variable) not in seen:
            seen.add(id(variable))
            result.append(variable)
    return result


def build_root(plan: Plan, kind: str, preprocessing: str | None, tf: Any):
    """The trackable root object: ``__call__``, ``serve``, ``serve_training``, variable lists,
    ``regularization_losses`` (all traced while the caller holds any BN freeze)."""
    import keras

    from keras_coordatt.applications.imagenet_utils import IMAGENET_MEAN, IMAGENET_STD

    backbone, head = plan.backbone, plan.head
    mean = tf.constant(IMAGENET_MEAN, tf.float32)
    std = tf.constant(IMAGENET_STD, tf.float32)

    def forward(inputs, training=False):
        x = tf.cast(inputs, tf.float32)
        if preprocessing == "imagenet":
            x = (x - mean) / std
        if plan.channels_first:
            x = tf.transpose(x, (0, 3, 1, 2))
        y = backbone(x, training=training)
        if head is not None:
            kernel = head.kernel
            y = keras.ops.matmul(keras.ops.cast(y, kernel.dtype), kernel)
            if head.use_bias:
                y = y + head.bias
        return tf.cast(y, tf.float32)

    # ``serve``, ``serve_training`` and the signature call the traced ``__call__``, so the
    # SavedModel holds the network's graph twice (training False / True), not five times.
    # (Grappler optimises a nested call separately: with its default options the entry points
    # agree to float32 rounding, not bit for bit.)
    spec = tf.TensorSpec((None, plan.height, plan.width, 3), tf.float32, name=INPUT_NAME)
    call = tf.function(forward, autograph=False)
    call.get_concrete_function(spec, training=False)
    call.get_concrete_function(spec, training=True)
    serve = tf.function(lambda inputs: call(inputs, training=False), input_signature=[spec])
    serve_training = tf.function(
        lambda inputs: call(inputs, training=True), input_signature=[spec]
    )
    output_key = OUTPUT_KEYS[kind]
    signature = tf.function(
        lambda inputs: {output_key: call(inputs, training=False)}, input_signature=[spec]
    ).get_concrete_function()

    layers = [backbone] + ([head] if head is not None else [])
    variables = _unique(v for layer in layers for v in layer.variables)
    trainable = _unique(v for layer in layers for v in layer.trainable_variables)

    def regularization_loss(variable, regularizer):
        loss = tf.function(lambda: tf.cast(regularizer(variable), tf.float32), input_signature=[])
        loss.get_concrete_function()
        return loss

    losses = [
        regularization_loss(variable, variable.regularizer)
        for variable in trainable
        if getattr(variable, "regularizer", None) is not None
    ]

    root = tf.__internal__.tracking.AutoTrackable()
    root.__call__ = call
    root.serve = serve
    root.serve_training = serve_training
    root.variables = list(variables)
    root.trainable_variables = list(trainable)
    root.regularization_losses = losses
    # Whatever else the traced functions capture (there should be nothing), so it is saved.
    captured = []
    for concrete in getattr(call, "_list_all_concrete_functions", list)():
        captured.extend(concrete.variables)
    known = {id(v) for v in variables} | {id(getattr(v, "value", v)) for v in variables}
    root._captured_variables = [v for v in _unique(captured) if id(v) not in known]
    return root, {"serving_default": signature}, variables



def batch_norm_momenta(model) -> tuple[float, ...]:
    import keras

    return tuple(
        sorted(
            {
                float(layer.momentum)
                for layer in walk_layers(model)
                if isinstance(layer, keras.layers.BatchNormalization)
            }
        )
    )
