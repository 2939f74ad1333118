"""TF-Hub / Kaggle Models export: reusable TF2 SavedModels for image feature vectors and logits.

:func:`export_hub` writes a SavedModel that follows the TF-Hub conventions for image models
(float32 RGB images in [0, 1], ``[batch, height, width, 3]``; a feature-vector model returns
the pooled features, a classification model the logits) and the *reusable SavedModel* interface
(``https://www.tensorflow.org/hub/reusable_saved_models``), so that it can be

* fine-tuned in tf_keras with ``tensorflow_hub.KerasLayer(path, trainable=True)``;
* loaded in Keras 3 with ``keras.layers.TFSMLayer(path)`` (endpoint ``serve``; add
  ``call_training_endpoint="serve_training"`` to fine-tune);
* loaded in plain TensorFlow with ``tf.saved_model.load(path)`` or served through the
  ``serving_default`` signature.

The loaded object ``obj`` has:

* ``obj(images, training=False)``: the forward pass (``__call__``), traced for
  ``training=False`` and ``training=True``;
* ``obj.variables``, ``obj.trainable_variables`` and ``obj.regularization_losses`` (zero-argument
  functions, one per kernel / bias regularizer of the Keras model; usually empty);
* ``obj.serve(images)`` / ``obj.serve_training(images)`` (inference / training mode) and the
  ``serving_default`` signature (input ``inputs``, output ``feature_vector`` or ``logits``).

BatchNormalization under ``training`` (measured, see ``tests/test_export_hub.py``):

* ``training=False`` normalises with the moving statistics and changes no variable;
* ``training=True`` normalises with the statistics of the batch and *updates the moving mean and
  variance in place* on every call (``moving = momentum * moving + (1 - momentum) * batch``,
  momentum 0.9 for the builders), as a side effect of the call itself; dropout (classification
  exports) is active;
* ``hub.KerasLayer(path)`` (``trainable=False``, the default) always calls with
  ``training=False``, also inside ``fit``: nothing in the layer changes;
* ``hub.KerasLayer(path, trainable=True)`` forwards Keras' training flag: ``fit`` updates the
  weights *and* the moving statistics, ``predict`` / ``evaluate`` change nothing;
* ``export_hub(..., freeze_batch_norm=True)`` exports BatchNorm in inference mode for both
  ``training`` values (statistics never change; gamma / beta are not trainable), the usual
  choice for fine-tuning on small batches.

The SavedModel needs the TensorFlow backend of Keras 3. The TensorFlow and tensorflow_hub
imports happen inside the functions; without them an ImportError names the extra to install.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import shutil
import sys
import types
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keras_coordatt.export.model_card import (
    MODEL_CARD_FILENAME,
    ArchitectureInfo,
    parse_builder_name,
    render_model_card,
    resolve_weights_info,
)

if TYPE_CHECKING:  # pragma: no cover
    import keras

#: The two kinds of export (TF-Hub task names ``image-feature-vector`` / ``image-classification``).
KINDS = ("feature_vector", "classification")
#: Name of the output in the ``serving_default`` signature, per kind.
OUTPUT_KEYS = {"feature_vector": "feature_vector", "classification": "logits"}
#: ``preprocessing=`` values: ImageNet mean / std inside the model, or nothing.
PREPROCESSINGS = ("imagenet", None)
#: What to install for this module.
HUB_EXTRA = "pip install 'keras-coordatt[hub]'"
#: Name of the pooled-feature layer of the builders.
POOLED_FEATURES_LAYER = "avg_pool"
#: Input name in the ``serving_default`` signature.
INPUT_NAME = "inputs"

#: ``--model`` choices of ``keras-coordatt export-hub`` -> builder in ``applications``.
CLI_MODELS = {
    "mobilenet_v2_ca": "MobileNetV2CA",
    "mobilenext_ca": "MobileNeXtCA",
    "mobilenet_v2": "MobileNetV2",
    "mobilenext": "MobileNeXt",
}


# ------------------------------------------------------------------------------------------
# Lazy imports
# ------------------------------------------------------------------------------------------


def import_tensorflow() -> types.ModuleType:
    """``import tensorflow``, or an ImportError that names the extra to install."""
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ImportError(
            f"TF-Hub export needs TensorFlow, which is not installed: {HUB_EXTRA}"
        ) from error
    return tf


def import_tensorflow_hub() -> types.ModuleType:
    """``import tensorflow_hub`` (with tf_keras, which ``hub.KerasLayer`` needs on TF >= 2.16).

    tensorflow-hub 0.16.1 imports ``pkg_resources`` (removed in setuptools 82,
    tensorflow/hub#934) for one version check; when that module is missing it is imported with
    a stand-in that provides ``parse_version`` only during the import.
    """
    import_tensorflow()
    try:
        import tf_keras  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"tensorflow_hub.KerasLayer needs tf_keras (Keras 2), which is not installed: "
            f"{HUB_EXTRA}"
        ) from error
    try:
        import tensorflow_hub as hub
    except ModuleNotFoundError as error:
        if error.name != "pkg_resources":
            raise ImportError(f"tensorflow_hub is not installed: {HUB_EXTRA}") from error
        hub = _import_hub_without_pkg_resources()
    except ImportError as error:
        raise ImportError(f"tensorflow_hub cannot be imported ({error}): {HUB_EXTRA}") from error
    return hub


def _import_hub_without_pkg_resources() -> types.ModuleType:
    from packaging.version import parse

    stand_in = types.ModuleType("pkg_resources")
    stand_in.parse_version = parse  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = stand_in
    try:
        import tensorflow_hub as hub
    finally:
        if sys.modules.get("pkg_resources") is stand_in:
            del sys.modules["pkg_resources"]
    return hub


def _require_tensorflow_backend() -> None:
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "export_hub writes a TensorFlow SavedModel and needs the TensorFlow backend of "
            f"Keras 3 (KERAS_BACKEND=tensorflow); the current backend is "
            f"{keras.backend.backend()!r}."
        )


# ------------------------------------------------------------------------------------------
# Model analysis
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Plan:
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


def _plan(model, kind: str) -> _Plan:
    channels_first, height, width = _single_image_input(model)
    if kind == "feature_vector":
        backbone, head = _plan_feature_vector(model)
    else:
        backbone, head = _plan_classification(model)
    size = head.units if head is not None else backbone.outputs[0].shape[-1]
    return _Plan(backbone, head, channels_first, height, width, int(size))


def _walk_layers(model) -> list:
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is not None:
        return list(flatten(include_self=False, recursive=True))
    return list(model.layers)  # pragma: no cover - every Keras 3 layer has _flatten_layers


@contextlib.contextmanager
def _batch_norm_frozen(model, enabled: bool) -> Iterator[None]:
    """Sets ``trainable=False`` on every BatchNormalization layer while tracing (Keras 3 then
    runs them in inference mode whatever ``training`` is), and restores the flags after."""
    import keras

    changed = []
    if enabled:
        for layer in _walk_layers(model):
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


def _build_root(plan: _Plan, kind: str, preprocessing: str | None):
    """The trackable root object: ``__call__``, ``serve``, ``serve_training``, variable lists,
    ``regularization_losses`` (all traced while the caller holds any BN freeze)."""
    import keras

    tf = import_tensorflow()
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


# ------------------------------------------------------------------------------------------
# Writing the directory atomically
# ------------------------------------------------------------------------------------------


def _check_target(directory: str | os.PathLike, overwrite: bool) -> Path:
    target = Path(os.fspath(directory)).expanduser().absolute()
    if target.exists() or target.is_symlink():
        if not target.is_dir():
            raise ValueError(f"Output path {str(target)!r} exists and is not a directory.")
        if any(target.iterdir()):
            if not overwrite:
                raise ValueError(
                    f"Output directory {str(target)!r} exists and is not empty; pass "
                    "overwrite=True (CLI: --overwrite) to replace it."
                )
            if not (target / "saved_model.pb").is_file():
                raise ValueError(
                    f"Refusing to overwrite {str(target)!r}: it is not empty and holds no "
                    "saved_model.pb, so it is not a previous export. Remove it yourself or "
                    "choose another directory."
                )
    return target


def _missing_parents(path: Path) -> list[Path]:
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    return missing


def _sibling(target: Path, tag: str) -> Path:
    """An unused hidden name beside ``target``: ``.{name}.{tag}-{random}``."""
    return target.parent / f".{target.name}.{tag}-{uuid.uuid4().hex[:12]}"


def _move_into_place(staging: Path, target: Path) -> None:
    """Renames ``staging`` to ``target``, replacing an existing ``target`` directory."""
    if not target.exists():
        os.replace(staging, target)
        return
    if not any(target.iterdir()):
        target.rmdir()
        os.replace(staging, target)
        return
    backup = _sibling(target, "old")
    os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


# ------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HubExport:
    """What :func:`export_hub` wrote.

    Attributes:
        path: the SavedModel directory.
        kind: ``"feature_vector"`` or ``"classification"``.
        input_shape: ``(None, height, width, 3)``; height / width are None when dynamic.
        output_key: output name in the ``serving_default`` signature.
        output_size: feature size or number of classes.
        num_variables, num_trainable_variables: sizes of ``obj.variables`` and
            ``obj.trainable_variables``.
        model_card: path of the Markdown model card, or None.
    """

    path: Path
    kind: str
    input_shape: tuple[None, int | None, int | None, int]
    output_key: str
    output_size: int
    num_variables: int
    num_trainable_variables: int
    model_card: Path | None


def export_hub(
    model: keras.Model,
    directory: str | os.PathLike,
    kind: str = "feature_vector",
    *,
    overwrite: bool = False,
    weights: str | os.PathLike | None = "unknown",
    freeze_batch_norm: bool = False,
    preprocessing: str | None = "imagenet",
    model_card: bool = True,
    weights_source: str | None = None,
    top1: float | None = None,
    top5: float | None = None,
    license: str | None = None,
    description: str | None = None,
) -> HubExport:
    """Writes ``model`` as a reusable TF2 SavedModel for TF-Hub / Kaggle Models.

    Callers pass float32 RGB images in [0, 1], shape ``[batch, height, width, 3]``; the
    ImageNet mean / std normalisation is inside (the result of
    ``applications.preprocess_input(255 * x)``). See the module docstring for the interface
    and the BatchNorm behaviour.

    Args:
        model: a functional Keras 3 model with one RGB image input, e.g. from
            ``keras_coordatt.applications``. Height / width stay dynamic when the model's are
            None (``input_shape=(None, None, 3)``), else they are fixed.
        directory: output directory; written to a temporary directory beside it and renamed,
            so a failed export leaves nothing behind.
        kind: ``"feature_vector"``: the output of the global-average-pool layer (``avg_pool``
            in the builders; a model built with ``include_top=True``, or ``include_top=False,
            pooling="avg"``). ``"classification"``: logits from the final Dense layer
            (``predictions``); a softmax / sigmoid on it (or a trailing softmax layer) is left
            out, so the export returns pre-activation logits.
        overwrite: replace an existing non-empty ``directory`` that holds a previous export.
        weights: the ``weights=`` value the model was built with, recorded in the model card
            (nothing is loaded): a registry preset name or ``"imagenet"`` (URL, pin, reported
            accuracy and licence from the registry), a checkpoint path (its SHA-256), None
            (random initialisation) or ``"unknown"`` (default).
        freeze_batch_norm: export every BatchNormalization layer in inference mode, so
            ``training=True`` neither uses batch statistics nor updates moving statistics, and
            gamma / beta are left out of ``trainable_variables``.
        preprocessing: ``"imagenet"`` (default) or None when the model normalises its input
            itself.
        model_card: write ``MODEL_CARD.md`` into the directory.
        weights_source, top1, top5, license: override / supply the model card's weights URL
            (or description), ImageNet top-1 / top-5 accuracy (%) and weights licence.
        description: one-line summary for the model card.

    Returns:
        A :class:`HubExport` describing what was written.

    Raises:
        ValueError: unknown ``kind`` or ``preprocessing``; a model without the layer the kind
            needs; ``directory`` exists and is not empty (without ``overwrite``) or is not a
            previous export; a backend other than TensorFlow.
        ImportError: TensorFlow is not installed.
    """
    if kind not in KINDS:
        raise ValueError(
            f"Unknown kind={kind!r}: use 'feature_vector' (pooled features) or "
            "'classification' (logits)."
        )
    if preprocessing not in PREPROCESSINGS:
        raise ValueError(
            f"Unknown preprocessing={preprocessing!r}: use 'imagenet' (normalise inside the "
            "model) or None."
        )
    target = _check_target(directory, overwrite)
    _require_tensorflow_backend()
    plan = _plan(model, kind)
    tf = import_tensorflow()

    created = _missing_parents(target)
    staging = _sibling(target, "tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()  # unlike tempfile.mkdtemp (0700), this honours the umask
        # tf.saved_model.save traces the functions again (in its save context): keep the
        # BatchNorm freeze until it is done.
        with _batch_norm_frozen(model, freeze_batch_norm):
            root, signatures, variables = _build_root(plan, kind, preprocessing)
            tf.saved_model.save(root, str(staging), signatures=signatures)
        momenta = _batch_norm_momenta(plan.backbone)
        card_path = None
        if model_card:
            card_text = _model_card_text(
                model, plan, kind, variables, momenta,
                weights=weights, freeze_batch_norm=freeze_batch_norm,
                preprocessing=preprocessing, weights_source=weights_source, top1=top1,
                top5=top5, license=license, description=description,
            )
            (staging / MODEL_CARD_FILENAME).write_text(card_text, encoding="utf-8")
            card_path = target / MODEL_CARD_FILENAME
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in created:
            with contextlib.suppress(OSError):
                parent.rmdir()
        raise
    return HubExport(
        path=target,
        kind=kind,
        input_shape=(None, plan.height, plan.width, 3),
        output_key=OUTPUT_KEYS[kind],
        output_size=plan.output_size,
        num_variables=len(root.variables),
        num_trainable_variables=len(root.trainable_variables),
        model_card=card_path,
    )


def _batch_norm_momenta(model) -> tuple[float, ...]:
    import keras

    return tuple(
        sorted(
            {
                float(layer.momentum)
                for layer in _walk_layers(model)
                if isinstance(layer, keras.layers.BatchNormalization)
            }
        )
    )


def _model_card_text(
    model, plan: _Plan, kind: str, variables, momenta, *, weights, freeze_batch_norm,
    preprocessing, weights_source, top1, top5, license, description,
) -> str:
    import keras

    import keras_coordatt
    from keras_coordatt.layers import CoordAttention

    family, attention, alpha = parse_builder_name(model.name)
    num_ca = sum(isinstance(layer, CoordAttention) for layer in _walk_layers(plan.backbone))
    arch = ArchitectureInfo(
        model_name=model.name,
        family=family,
        attention=attention,
        alpha=alpha,
        num_params=sum(math.prod(v.shape) for v in variables if "float" in str(v.dtype)),
        num_attention_blocks=num_ca,
        bn_momentum=momenta,
    )
    size = plan.height if plan.height is not None and plan.height == plan.width else None
    info = resolve_weights_info(weights, model_name=model.name, input_size=size)
    overrides = {}
    if weights_source is not None:
        overrides["source"] = weights_source
    if top1 is not None:
        overrides["top1"] = float(top1)
    if top5 is not None:
        overrides["top5"] = float(top5)
    if license is not None:
        overrides["license"] = license
        overrides["license_source"] = "stated by the exporter"
    if overrides:
        if not info.pretrained:
            overrides.setdefault("name", os.path.basename(str(weights_source or "")) or "custom")
        info = dataclasses.replace(info, **overrides)
    tf = import_tensorflow()
    versions = {
        "keras-coordatt": keras_coordatt.__version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
    }
    return render_model_card(
        kind=kind,
        architecture=arch,
        weights=info,
        input_shape=(None, plan.height, plan.width, 3),
        output_size=plan.output_size,
        output_key=OUTPUT_KEYS[kind],
        preprocessing=preprocessing,
        freeze_batch_norm=freeze_batch_norm,
        versions=versions,
        description=description,
    )


# ------------------------------------------------------------------------------------------
# CLI: keras-coordatt export-hub
# ------------------------------------------------------------------------------------------

CLI_HELP = "export a model as a TF-Hub / Kaggle Models SavedModel (feature vector or logits)"

CLI_DESCRIPTION = """\
Build a keras_coordatt model, load its weights and write a reusable TF2 SavedModel for
TF-Hub / Kaggle Models, with a MODEL_CARD.md beside it.

The SavedModel takes float32 RGB images in [0, 1], shape [batch, height, width, 3] (the
ImageNet normalisation is inside) and returns, by --kind:
  feature_vector  the global-average-pooled features [batch, 1280] (alpha <= 1), the
                  classifier's input
  classification  the logits [batch, classes] (no softmax)

Load it with tensorflow_hub.KerasLayer(OUT_DIR, trainable=True) (tf_keras, fine-tunable),
keras.layers.TFSMLayer(OUT_DIR) (Keras 3) or tf.saved_model.load(OUT_DIR).
"""

CLI_EPILOG = """\
examples:
  keras-coordatt export-hub --model mobilenet_v2_ca --weights imagenet mbv2_ca_fv
  keras-coordatt export-hub --model mobilenet_v2_ca --kind classification --input-size 224 \\
      mbv2_ca_logits
  keras-coordatt export-hub --model mobilenet_v2_ca --alpha 0.35 --weights none \\
      --kind feature_vector --overwrite /tmp/smoke_test

--weights: "imagenet" (the registry's default checkpoint, downloaded and verified), a preset
name (keras_coordatt.weights.list_presets()), a local .pth / .pth.tar / .weights.h5 file, or
"none" for random weights (to test a pipeline; the model card says so).
"""


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``export-hub`` arguments to ``parser``."""
    from keras_coordatt.cli import (
        alpha_argument,
        image_size_argument,
        positive_int_argument,
    )

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = CLI_EPILOG
    parser.add_argument("output", metavar="OUT_DIR", help="SavedModel directory to write")
    parser.add_argument(
        "--model", required=True, choices=list(CLI_MODELS),
        help="architecture: MobileNetV2 / MobileNeXt, with (_ca) or without Coordinate "
        "Attention",
    )
    parser.add_argument("--alpha", type=alpha_argument, default=1.0, help="width multiplier (1.0)")
    parser.add_argument(
        "--weights", default="imagenet",
        help='"imagenet" (default), a preset name, a local checkpoint, or "none" (random)',
    )
    parser.add_argument(
        "--kind", choices=KINDS, default="feature_vector",
        help="feature_vector (default): pooled features; classification: logits",
    )
    parser.add_argument(
        "--input-size", type=image_size_argument, default=None, metavar="N",
        help="fix the input to NxN pixels (default: any size, [batch, None, None, 3])",
    )
    parser.add_argument(
        "--classes", type=positive_int_argument, default=1000,
        help="classifier outputs for --kind classification (1000; other values need "
        "--weights none or a checkpoint with that many)",
    )
    parser.add_argument(
        "--freeze-batch-norm", action="store_true",
        help="export BatchNorm in inference mode for fine-tuning (no statistics updates)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUT_DIR if it holds an export"
    )
    parser.add_argument("--no-model-card", action="store_true", help="do not write MODEL_CARD.md")


def run_cli(args: argparse.Namespace) -> int:
    """Runs ``export-hub`` for parsed ``args``; raises ``keras_coordatt.cli.CliError``."""
    from keras_coordatt.cli import CliError

    try:
        target = _check_target(args.output, args.overwrite)
        weights = None if args.weights.lower() in ("none", "random") else args.weights
        if weights is not None and os.path.sep in weights and not os.path.exists(weights):
            raise ValueError(f"--weights file {weights!r} does not exist")
        _require_tensorflow_backend()
        import_tensorflow()
        from keras_coordatt import applications

        builder = getattr(applications, CLI_MODELS[args.model])
        size = args.input_size
        kwargs: dict[str, Any] = {
            "input_shape": (size, size, 3),
            "alpha": args.alpha,
            "weights": weights,
        }
        if args.kind == "feature_vector":
            kwargs.update(include_top=False, pooling="avg")
        else:
            kwargs.update(include_top=True, classes=args.classes, classifier_activation=None)
        model = builder(**kwargs)
        result = export_hub(
            model, target, args.kind, overwrite=args.overwrite, weights=weights,
            freeze_batch_norm=args.freeze_batch_norm, model_card=not args.no_model_card,
        )
    except (ValueError, ImportError, OSError) as error:
        raise CliError(str(error)) from None
    _, height, width, _ = result.input_shape
    size_text = "any size" if height is None else f"{height}x{width}"
    print(
        f"wrote {result.kind} SavedModel of {model.name} ({size_text} input, "
        f"{result.output_key} [batch, {result.output_size}], {result.num_trainable_variables}/"
        f"{result.num_variables} trainable variables) -> {result.path}"
    )
    if result.model_card is not None:
        print(f"model card: {result.model_card}")
    if weights is None:
        print("note: random weights (--weights none): for testing a pipeline only")
    return 0


def register_cli() -> None:
    """Registers ``export-hub`` with ``keras_coordatt.cli`` (idempotent; runs on import)."""
    from keras_coordatt.cli import register_command, registered_commands

    if "export-hub" in registered_commands():
        return
    register_command(
        "export-hub",
        help=CLI_HELP,
        description=CLI_DESCRIPTION,
        add_arguments=add_cli_arguments,
        run=run_cli,
    )


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``keras-coordatt export-hub`` through the package CLI (registers the command first)."""
    register_cli()
    from keras_coordatt.cli import main

    return main(["export-hub", *(argv if argv is not None else sys.argv[1:])])


__all__ = [
    "CLI_MODELS",
    "HUB_EXTRA",
    "INPUT_NAME",
    "KINDS",
    "MODEL_CARD_FILENAME",
    "OUTPUT_KEYS",
    "HubExport",
    "add_cli_arguments",
    "cli_main",
    "export_hub",
    "import_tensorflow",
    "import_tensorflow_hub",
    "register_cli",
    "run_cli",
]

register_cli()
