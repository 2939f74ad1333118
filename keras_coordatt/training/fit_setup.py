"""Creating a compiled model's training variables before its first ``fit``.

On the TensorFlow backend Keras 3 (without a distribution strategy) and tf_keras create the
optimizer's slot variables and the compiled metrics' variables inside the first trace of the
train step. A ``tf.function`` that creates variables is traced a second time, so the first
epoch of a MobileNetV2CA pays the trace twice: 23 s instead of 12 s for its first step at 32x32
on two CPU cores (Keras 3.15, TensorFlow 2.20), and 37 s instead of 25 s for its QAT model.
:func:`build_for_fit` creates those variables eagerly, so the step is traced once. Training
computes exactly the same thing.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np


def _output_placeholders(model, map_structure) -> Any:
    """Zeros shaped like one sample of the model's output structure (a tensor, list or dict),
    or None when the model has no symbolic output or a shape is unknown."""
    try:
        outputs = model.output
    except (AttributeError, ValueError):  # a subclassed or never-called model
        return None
    shapes = []
    map_structure(lambda output: shapes.append(tuple(output.shape[1:])), outputs)
    if not shapes or any(dim is None for shape in shapes for dim in shape):
        return None
    return map_structure(lambda output: np.zeros((1, *output.shape[1:]), "float32"), outputs)


def _first_sample(targets: Any) -> Any:
    """One sample of ``targets``; for a ``tf.data.Dataset`` of ``(inputs, labels, ...)``
    batches, zeros shaped and typed like its labels (read from its spec: nothing is iterated,
    so the dataset's shuffling is not advanced)."""
    spec = getattr(targets, "element_spec", None)
    if spec is not None:
        import tensorflow as tf

        return tf.nest.map_structure(
            lambda label: np.zeros((1, *label.shape[1:]), label.dtype.as_numpy_dtype), spec[1])
    if isinstance(targets, (list, tuple)):
        return type(targets)(_first_sample(t) for t in targets)
    if isinstance(targets, dict):
        return {key: _first_sample(value) for key, value in targets.items()}
    return np.asarray(targets)[:1]


def _is_tf_keras(model) -> bool:
    return type(model).__module__.startswith("tf_keras")


def build_for_fit(model, targets: Any) -> None:
    """Creates the optimizer and compiled-metric variables of a compiled ``model`` now.

    ``model``: a compiled Keras 3 or tf_keras model (e.g. the QAT model of
    :func:`keras_coordatt.quantization.quantize_model`); ``targets``: one batch (or more) of
    the labels ``fit`` will see, e.g. ``y_train`` of shape ``(N,)`` for sparse labels, or the
    ``tf.data.Dataset`` of ``(inputs, labels)`` batches ``fit`` gets. Metric
    states are reset afterwards and no weight changes, so ``fit`` then trains exactly as it
    would have, with its train step traced once instead of twice on TensorFlow.

    Raises:
        ValueError: if ``model`` is not compiled.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(f"Model {model.name!r} is not compiled: call compile() first.")
    strategy = getattr(model, "distribute_strategy", None)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        if _is_tf_keras(model):
            _build_tf_keras(model, optimizer, targets)
        else:
            _build_keras(model, optimizer, targets)


def _build_keras(model, optimizer, targets) -> None:
    import keras

    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    placeholders = _output_placeholders(model, keras.tree.map_structure)
    if placeholders is not None:
        model.compute_metrics(None, _first_sample(targets), placeholders)
        model.reset_metrics()


def _build_tf_keras(model, optimizer, targets) -> None:
    import tensorflow as tf

    if hasattr(optimizer, "build") and not getattr(optimizer, "_built", False):
        optimizer.build(model.trainable_variables)
    placeholders = _output_placeholders(model, tf.nest.map_structure)
    metrics = getattr(model, "compiled_metrics", None)
    if placeholders is not None and metrics is not None:
        metrics.update_state(tf.nest.map_structure(tf.convert_to_tensor, _first_sample(targets)),
                             tf.nest.map_structure(tf.convert_to_tensor, placeholders))
        model.reset_metrics()


def _labels_readable(targets: Any) -> bool:
    """Whether :func:`build_for_fit` can take one sample of ``targets`` without consuming data:
    arrays (or dicts / lists of them), or a ``tf.data.Dataset`` of ``(inputs, labels, ...)``."""
    spec = getattr(targets, "element_spec", None)
    if spec is not None:
        return isinstance(spec, tuple) and len(spec) >= 2
    if isinstance(targets, dict):
        return all(_labels_readable(value) for value in targets.values())
    if isinstance(targets, (list, tuple)):
        return all(_labels_readable(value) for value in targets)
    return hasattr(targets, "shape") and hasattr(targets, "__getitem__")


def prepare_first_fit(model, x: Any, y: Any) -> None:
    """:func:`build_for_fit` with the data of a ``fit(x, y)`` call, when it helps and is safe.

    Only on the TensorFlow backend, when ``model`` is compiled and its optimizer not built yet
    (the first ``fit``), and when the labels can be read without consuming data (``y`` arrays, or
    ``x`` a ``tf.data.Dataset`` of ``(inputs, labels)``). The variables are the ones the first
    trace would create, built from the same ``trainable_variables``, so training is unchanged.
    If the labels do not fit the model, nothing is built here and ``fit`` reports the problem.
    """
    import keras

    optimizer = getattr(model, "optimizer", None)
    if keras.backend.backend() != "tensorflow" or optimizer is None or optimizer.built:
        return
    targets = y if y is not None else x if getattr(x, "element_spec", None) is not None else None
    if targets is None or not _labels_readable(targets):
        return
    try:
        build_for_fit(model, targets)
    except (ValueError, TypeError):
        model.reset_metrics()  # fit raises its own error about these labels


class FirstFitTracedOnce:
    """Mixin for the task models: their first ``fit`` traces the train step once, not twice
    (:func:`prepare_first_fit`). Put it before ``keras.Model`` in the bases."""

    def fit(self, x=None, y=None, *args, **kwargs):
        prepare_first_fit(self, x, y)
        return super().fit(x, y, *args, **kwargs)
