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

import dataclasses
import math
import os
import sys
import types
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keras_coordatt.export._hub_graph import (
    INPUT_NAME,
    OUTPUT_KEYS,
    POOLED_FEATURES_LAYER,
    Plan,
    batch_norm_frozen,
    batch_norm_momenta,
    build_root,
    plan_export,
    traced_for_saving,
    walk_layers,
)
from keras_coordatt.export._staging import check_target, staged_directory
from keras_coordatt.export.model_card import (
    MODEL_CARD_FILENAME,
    ArchitectureInfo,
    ModelCardInfo,
    apply_card_info,
    render_model_card,
    resolve_weights_info,
    spec_of,
)

if TYPE_CHECKING:  # pragma: no cover
    import keras

#: The two kinds of export (TF-Hub task names ``image-feature-vector`` / ``image-classification``).
KINDS = ("feature_vector", "classification")
#: ``preprocessing=`` values: ImageNet mean / std inside the model, or nothing.
PREPROCESSINGS = ("imagenet", None)
#: What to install for this module.
HUB_EXTRA = "pip install 'keras-coordatt[hub]'"
#: The model card's details that ``export_hub`` used to take one by one (now ``card=``).
_CARD_KEYWORDS = ("weights_source", "top1", "top5", "license", "description")


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


def require_tensorflow_backend() -> None:
    """ValueError unless Keras 3 runs on TensorFlow (a SavedModel needs it)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "export_hub writes a TensorFlow SavedModel and needs the TensorFlow backend of "
            f"Keras 3 (KERAS_BACKEND=tensorflow); the current backend is "
            f"{keras.backend.backend()!r}."
        )


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
    card: ModelCardInfo | None = None,
    **card_keywords: Any,
) -> HubExport:
    """Writes ``model`` as a reusable TF2 SavedModel for TF-Hub / Kaggle Models.

    Callers pass float32 RGB images in [0, 1], shape ``[batch, height, width, 3]``; the ImageNet
    normalisation is inside (``applications.preprocess_input(255 * x)``). See the module
    docstring for the interface and the BatchNorm behaviour.

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
            (shorthand for ``card=ModelCardInfo(weights=...)``; see :class:`ModelCardInfo`).
        freeze_batch_norm: export every BatchNormalization layer in inference mode, so
            ``training=True`` neither uses batch statistics nor updates moving statistics, and
            gamma / beta are left out of ``trainable_variables``.
        preprocessing: ``"imagenet"`` (default) or None when the model normalises its input
            itself.
        model_card: write ``MODEL_CARD.md`` into the directory.
        card: the model card's details (:class:`ModelCardInfo`: weights, their source,
            accuracy, licence, a one-line description).
        **card_keywords: deprecated: ``weights_source``, ``top1``, ``top5``, ``license``,
            ``description``, now fields of ``card``.

    Returns a :class:`HubExport` describing what was written.

    Raises:
        ValueError: unknown ``kind`` or ``preprocessing``; a model without the layer the kind
            needs; ``directory`` exists and is not empty (without ``overwrite``) or is not a
            previous export; a backend other than TensorFlow.
        ImportError: TensorFlow is not installed.
    """
    card = _card_argument(card, weights, card_keywords)
    _check_choices(kind, preprocessing)
    target = check_target(directory, overwrite)
    require_tensorflow_backend()
    plan = plan_export(model, kind)
    tf = import_tensorflow()
    with staged_directory(target) as staging:
        root, variables = _save(model, plan, kind, preprocessing, freeze_batch_norm, staging, tf)
        card_path = None
        if model_card:
            text = _model_card_text(model, plan, kind, variables, card, freeze_batch_norm,
                                    preprocessing)
            (staging / MODEL_CARD_FILENAME).write_text(text, encoding="utf-8")
            card_path = target / MODEL_CARD_FILENAME
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


def _save(model, plan: Plan, kind: str, preprocessing: str | None, freeze_batch_norm: bool,
          directory: Path, tf: Any) -> tuple[Any, list]:
    """Traces the root object once, in the context ``tf.saved_model.save`` saves in (traced
    outside it, save traces every function again), and saves it to ``directory``; returns the
    root and its variables. The BatchNorm freeze holds until save is done."""
    options = tf.saved_model.SaveOptions()
    with batch_norm_frozen(model, freeze_batch_norm):
        with traced_for_saving(options):
            root, signatures, variables = build_root(plan, kind, preprocessing, tf)
        tf.saved_model.save(root, str(directory), signatures=signatures, options=options)
    return root, variables


def _check_choices(kind: str, preprocessing: str | None) -> None:
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


def _card_argument(
    card: ModelCardInfo | None, weights: Any, card_keywords: dict[str, Any]
) -> ModelCardInfo:
    """One :class:`ModelCardInfo` from ``card=``, ``weights=`` and the deprecated keywords."""
    unknown = sorted(set(card_keywords) - set(_CARD_KEYWORDS))
    if unknown:
        raise TypeError(f"export_hub() got unexpected keyword argument(s) {', '.join(unknown)}")
    if card is not None and not isinstance(card, ModelCardInfo):
        raise ValueError(f"card= must be a ModelCardInfo, got {type(card).__name__}.")
    if card is not None and (card_keywords or not _same(weights, "unknown")):
        raise ValueError(
            "Pass the model card's details either in card=ModelCardInfo(...) or as "
            "weights= / keywords, not both."
        )
    if card_keywords:
        warnings.warn(
            f"export_hub({', '.join(f'{k}=' for k in card_keywords)}...) is deprecated: pass "
            "card=ModelCardInfo(...) (keras_coordatt.export.ModelCardInfo).",
            DeprecationWarning,
            stacklevel=3,
        )
    return card or ModelCardInfo(weights=weights, **card_keywords)


def _same(value: Any, text: str) -> bool:
    return isinstance(value, str) and value == text


def _model_card_text(
    model, plan: Plan, kind: str, variables, card: ModelCardInfo, freeze_batch_norm: bool,
    preprocessing: str | None,
) -> str:
    import keras

    import keras_coordatt
    from keras_coordatt.layers import CoordAttention

    spec = spec_of(model)
    arch = ArchitectureInfo(
        model_name=model.name,
        family=None if spec is None else spec.family,
        attention=None if spec is None else spec.attention,
        alpha=None if spec is None else float(spec.alpha),
        num_params=sum(math.prod(v.shape) for v in variables if "float" in str(v.dtype)),
        num_attention_blocks=sum(
            isinstance(layer, CoordAttention) for layer in walk_layers(plan.backbone)
        ),
        bn_momentum=batch_norm_momenta(plan.backbone),
    )
    size = plan.height if plan.height is not None and plan.height == plan.width else None
    info = resolve_weights_info(card.weights, model_name=model.name, input_size=size, spec=spec)
    versions = {
        "keras-coordatt": keras_coordatt.__version__,
        "keras": keras.__version__,
        "tensorflow": import_tensorflow().__version__,
    }
    return render_model_card(
        kind=kind,
        architecture=arch,
        weights=apply_card_info(info, card),
        input_shape=(None, plan.height, plan.width, 3),
        output_size=plan.output_size,
        output_key=OUTPUT_KEYS[kind],
        preprocessing=preprocessing,
        freeze_batch_norm=freeze_batch_norm,
        versions=versions,
        description=card.description,
    )


_MOVED_TO_CLI = {
    "CLI_MODELS": "keras_coordatt.applications.CATALOG",
    "add_cli_arguments": "keras_coordatt.cli.export_hub.add_arguments",
    "run_cli": "keras_coordatt.cli.export_hub.run",
    "register_cli": "keras_coordatt.cli (the CLI lists its commands itself)",
    "cli_main": "keras_coordatt.cli.main(['export-hub', ...])",
}


def __getattr__(name: str) -> Any:
    """Deprecated names: the ``export-hub`` command moved to ``keras_coordatt.cli``."""
    if name not in _MOVED_TO_CLI:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"keras_coordatt.export.hub.{name} is deprecated: use {_MOVED_TO_CLI[name]}.",
        DeprecationWarning,
        stacklevel=2,
    )
    from keras_coordatt.cli import export_hub as command

    if name == "CLI_MODELS":
        from keras_coordatt.applications.catalog import CATALOG

        return {entry.name: entry.builder_name for entry in CATALOG}
    if name == "register_cli":
        return lambda: None
    if name == "cli_main":
        from keras_coordatt.cli import main

        return lambda argv=None: main(["export-hub", *(argv if argv is not None else
                                                       sys.argv[1:])])
    return {"add_cli_arguments": command.add_arguments, "run_cli": command.run}[name]


__all__ = [
    "HUB_EXTRA",
    "INPUT_NAME",
    "KINDS",
    "MODEL_CARD_FILENAME",
    "OUTPUT_KEYS",
    "POOLED_FEATURES_LAYER",
    "HubExport",
    "ModelCardInfo",
    "export_hub",
    "import_tensorflow",
    "import_tensorflow_hub",
    "require_tensorflow_backend",
]
