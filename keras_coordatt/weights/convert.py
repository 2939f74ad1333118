"""Map an upstream PyTorch ``state_dict`` onto a ``keras_coordatt.applications`` model.

The mapping is derived from the Keras model itself, not from per-width tables: layers are
grouped by their name prefix (``stem_*``, ``block{i}_*``, ``head_*``, ``predictions``) and, inside
a group, numbered the way ``torch.nn.Sequential`` numbers its children: every conv, depthwise
conv, BatchNorm, ReLU6 and attention layer takes one index; zero-padding (part of PyTorch's
conv) and the residual ``Add`` take none. That reproduces the upstream keys of all networks we
port, at every width:

==================== ================================== =================================
Keras group          upstream prefix                    examples
==================== ================================== =================================
``stem_*``           ``features.0.{k}``                 ``features.0.0.weight`` (conv)
``block{i}_*``       ``features.{i}.conv.{k}``          MBV2_CA ``features.2.conv.6.conv1``
``head_*``           ``conv.{k}``                       MobileNetV2's 1x1 head conv
``predictions``      ``classifier.1`` or ``classifier`` with / without a Dropout before it
==================== ================================== =================================

Inside an attention layer: ``CoordAttention`` takes ``conv1``, ``bn1`` and ``conv_h``/``conv_w``
(``coordatt.py`` names) or ``conv2``/``conv3`` (``mbv2_ca.py`` names); ``SqueezeExcite`` takes
``conv_reduce``/``conv_expand`` (or ``fc1``/``fc2``); ``CBAM`` takes its Keras sublayer names.

Layouts: conv ``(O, I, kh, kw)`` -> ``(kh, kw, I, O)``; depthwise ``(C*m, 1, kh, kw)`` ->
``(kh, kw, C, m)``; Linear ``(out, in)`` -> ``(in, out)``; BatchNorm ``weight``, ``bias``,
``running_mean``, ``running_var`` -> ``gamma``, ``beta``, ``moving_mean``,
``moving_variance`` (``num_batches_tracked`` is consumed and ignored).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import keras
import numpy as np

from keras_coordatt.layers.specs import ATTENTION_SPECS, COORD_ATTENTION

_GROUP = re.compile(r"^(stem|head|block(\d+))_")
_MAX_LISTED = 25

#: Sub-module names inside attention layers: Keras sublayer -> accepted upstream names
#: (from the layers' descriptions in keras_coordatt.layers.specs).
_ATTENTION_SUBMODULES = {
    class_name: tuple((sub.name, sub.torch_names) for sub in spec.sublayers)
    for class_name, spec in ATTENTION_SPECS.items()
}


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One upstream tensor: its key, the Keras variable and how to convert it."""

    key: str
    variable: object
    kind: str  # "conv", "depthwise", "dense", "plain"
    torch_shape: tuple
    layer: str


@dataclasses.dataclass
class ConversionReport:
    """What :func:`load_torch_state_dict` did.

    ``loaded``: number of Keras variables assigned; ``missing``: upstream keys the model needed
    but the state_dict lacks (only with ``strict=False``); ``unused``: state_dict keys nothing
    consumed (only with ``strict=False``); ``skipped``: classifier keys left out because the
    model has no top.
    """

    loaded: int
    missing: list[str]
    unused: list[str]
    skipped: list[str]


def _torch_shape(kind: str, keras_shape: tuple) -> tuple:
    if kind == "conv":  # (kh, kw, I, O) -> (O, I, kh, kw)
        kh, kw, cin, cout = keras_shape
        return (cout, cin, kh, kw)
    if kind == "depthwise":  # (kh, kw, C, m) -> (C*m, 1, kh, kw)
        kh, kw, channels, multiplier = keras_shape
        return (channels * multiplier, 1, kh, kw)
    if kind == "dense":
        return tuple(reversed(keras_shape))
    return tuple(keras_shape)


def _to_keras(kind: str, array: np.ndarray, keras_shape: tuple) -> np.ndarray:
    if kind == "conv":
        return array.transpose(2, 3, 1, 0)
    if kind == "depthwise":
        kh, kw, channels, multiplier = keras_shape
        return array.reshape(channels, multiplier, kh, kw).transpose(2, 3, 0, 1)
    if kind == "dense":
        return array.T
    return array.reshape(keras_shape)


def _layer_entries(layer, prefix: str):
    """Entries of a leaf layer (conv, depthwise, BN, Dense) under the upstream ``prefix``.

    Returns ``(entries, optional_keys)``.
    """
    entries = []
    optional = []

    def add(suffix, variable, kind):
        shape = tuple(int(d) for d in variable.shape)
        entries.append(_Entry(f"{prefix}.{suffix}", variable, kind, _torch_shape(kind, shape),
                              layer.path if hasattr(layer, "path") else layer.name))

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        add("weight", layer.kernel, "depthwise")
        if layer.use_bias:
            add("bias", layer.bias, "plain")
    elif isinstance(layer, keras.layers.Conv2D):
        add("weight", layer.kernel, "conv")
        if layer.use_bias:
            add("bias", layer.bias, "plain")
    elif isinstance(layer, keras.layers.BatchNormalization):
        if layer.scale:
            add("weight", layer.gamma, "plain")
        if layer.center:
            add("bias", layer.beta, "plain")
        add("running_mean", layer.moving_mean, "plain")
        add("running_var", layer.moving_variance, "plain")
        optional.append(f"{prefix}.num_batches_tracked")
    elif isinstance(layer, keras.layers.Dense):
        add("weight", layer.kernel, "dense")
        if layer.use_bias:
            add("bias", layer.bias, "plain")
    else:
        raise ValueError(f"No PyTorch mapping for layer {layer.name!r} ({type(layer).__name__}).")
    return entries, optional


def _pick(state_keys, prefix: str, aliases: tuple[str, ...]) -> str:
    """The first alias whose tensors exist in the state_dict (the first alias otherwise)."""
    for alias in aliases:
        if any(key.startswith(f"{prefix}.{alias}.") for key in state_keys):
            return alias
    return aliases[0]


def _attention_entries(layer, prefix: str, state_keys):
    entries, optional = [], []
    submodules = _ATTENTION_SUBMODULES[type(layer).__name__]
    for attribute, aliases in submodules:
        sublayer = getattr(layer, attribute, None)
        if sublayer is None:  # e.g. a one-direction CoordAttention ablation
            continue
        alias = _pick(state_keys, prefix, aliases)
        sub_entries, sub_optional = _layer_entries(sublayer, f"{prefix}.{alias}")
        entries += sub_entries
        optional += sub_optional
    return entries, optional


_INDEXED = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.BatchNormalization,
    keras.layers.ReLU,
)
_NOT_INDEXED = (keras.layers.ZeroPadding2D, keras.layers.Add)


def _group_prefix(match: re.Match) -> str:
    group = match.group(1)
    if group == "stem":
        return "features.0"
    if group == "head":
        return "conv"
    return f"features.{int(match.group(2))}.conv"


def torch_layout(model: keras.Model, state_keys=()) -> tuple[list[_Entry], list[str], list[str]]:
    """Returns ``(entries, optional_keys, classifier_keys)`` for ``model``.

    ``entries`` lists every upstream tensor the model needs, with its Keras variable;
    ``state_keys`` (the checkpoint's keys) only choose between name aliases.
    """
    state_keys = list(state_keys)
    entries: list[_Entry] = []
    optional: list[str] = []
    classifier: list[_Entry] = []
    counters: dict[str, int] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer.name == "predictions":
            # MBV2_CA / MobileNeXt: Sequential(Dropout, Linear); d-li14 MobileNetV2: Linear.
            if any(k.startswith("classifier.1.") for k in state_keys):
                prefix = "classifier.1"
            elif any(k.startswith("classifier.") for k in state_keys):
                prefix = "classifier"
            else:
                prefix = "classifier.1"
            classifier += _layer_entries(layer, prefix)[0]
            continue
        match = _GROUP.match(layer.name)
        if match is None:
            if layer.weights:
                raise ValueError(
                    f"Layer {layer.name!r} has weights but no upstream name: the model is not "
                    "one of keras_coordatt.applications' networks."
                )
            continue
        if isinstance(layer, _NOT_INDEXED):
            continue
        prefix = _group_prefix(match)
        index = counters.get(prefix, 0)
        counters[prefix] = index + 1
        if type(layer).__name__ in _ATTENTION_SUBMODULES:
            new, opt = _attention_entries(layer, f"{prefix}.{index}", state_keys)
        elif isinstance(layer, keras.layers.ReLU):
            continue
        elif isinstance(layer, _INDEXED):
            new, opt = _layer_entries(layer, f"{prefix}.{index}")
        else:
            raise ValueError(
                f"No PyTorch mapping for layer {layer.name!r} ({type(layer).__name__})."
            )
        entries += new
        optional += opt
    return entries, optional, classifier


def _strip_prefix(state_dict: Mapping) -> dict[str, np.ndarray]:
    keys = list(state_dict)
    for prefix in ("module.", "model."):
        if keys and all(k.startswith(prefix) for k in keys):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
            keys = list(state_dict)
    return {k: np.asarray(v) for k, v in state_dict.items()}


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_MAX_LISTED]
    more = f"\n    ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return f"  {title} ({len(items)}):\n    " + "\n    ".join(shown) + more


_CA_KEY = re.compile(
    r"\.(" + "|".join(name for sub in COORD_ATTENTION.sublayers for name in sub.torch_names)
    + r")\."
)


def _hint(entries: list[_Entry], arrays: dict, unused: list[str]) -> str:
    """One line guessing the cause of a mismatch (attention or width)."""
    model_has_ca = any(_CA_KEY.search(e.key) for e in entries)
    ca_unused = [k for k in unused if _CA_KEY.search(k)]
    if ca_unused and not model_has_ca:
        return (
            f"\n  hint: the checkpoint has Coordinate Attention tensors (e.g. {ca_unused[0]}): "
            "build the model with attention='ca' (MobileNetV2CA / MobileNeXtCA)."
        )
    if model_has_ca and not any(_CA_KEY.search(k) for k in arrays):
        return (
            "\n  hint: the model has Coordinate Attention layers and the checkpoint has none: "
            "build it with attention=None."
        )
    stem = next((e for e in entries if e.key == "features.0.0.weight"), None)
    found = arrays.get("features.0.0.weight")
    if stem is not None and found is not None and tuple(found.shape) != stem.torch_shape:
        return (
            f"\n  hint: the stem has {found.shape[0]} channels in the checkpoint and "
            f"{stem.torch_shape[0]} in the model: the width multiplier (alpha) differs."
        )
    return ""


def load_torch_state_dict(
    model: keras.Model, state_dict: Mapping[str, np.ndarray], *, strict: bool = True
) -> ConversionReport:
    """Copies an upstream PyTorch ``state_dict`` into ``model`` (in place).

    Args:
        model: a model from ``keras_coordatt.applications`` (any width, attention, input size,
            data format; with or without top).
        state_dict: upstream key -> array (e.g. from
            ``keras_coordatt.weights.torch_checkpoint.load_torch_checkpoint``). A ``module.``
            prefix on every key (DataParallel) is stripped.
        strict: when True (default), every tensor of the model must be in ``state_dict`` and
            every tensor of ``state_dict`` must be used, except the classifier of a model built
            with ``include_top=False``. When False, missing and unused keys are reported, not
            raised. Shape mismatches always raise.

    Returns:
        A :class:`ConversionReport`.

    Raises:
        ValueError: listing the missing keys, the unused keys and the shape mismatches (e.g. an
            MBV2_CA checkpoint given to a plain MobileNetV2, a width-0.5 checkpoint given to an
            alpha-1.0 model), or a class-count mismatch of the classifier. Nothing is assigned
            when it raises.
    """
    arrays = _strip_prefix(state_dict)
    entries, optional, classifier = torch_layout(model, arrays.keys())
    skipped: list[str] = []
    if classifier:
        _check_classes(classifier[0], arrays)
        entries = entries + classifier
    else:
        skipped = sorted(k for k in arrays if k == "classifier" or k.startswith("classifier."))

    missing, mismatched, assignments = _match(entries, arrays)
    used = {entry.key for entry in entries} | set(optional) | set(skipped)
    unused = [k for k in arrays if k not in used]
    errors = []
    if mismatched:
        errors.append(_listing("shape mismatches", mismatched))
    if strict and missing:
        errors.append(_listing("missing keys (needed by the model, absent from the checkpoint)",
                               missing))
    if strict and unused:
        errors.append(_listing("unused keys (in the checkpoint, not used by the model)", unused))
    if errors:
        hint = _hint(entries, arrays, unused)
        raise ValueError(
            f"The PyTorch state_dict does not match Keras model {model.name!r} (wrong family, "
            f"attention or width?):\n" + "\n".join(errors) + hint
        )

    for entry, value in assignments:
        variable = entry.variable
        variable.assign(
            _to_keras(entry.kind, value, tuple(variable.shape)).astype(variable.dtype)
        )
    return ConversionReport(
        loaded=len(assignments),
        missing=missing,
        unused=unused,
        skipped=skipped,
    )


def _check_classes(dense_weight: _Entry, arrays: dict) -> None:
    """Raises when the checkpoint's classifier has another class count than the model's."""
    found = arrays.get(dense_weight.key)
    if found is not None and found.ndim == 2 and found.shape[0] != dense_weight.torch_shape[0]:
        raise ValueError(
            f"The checkpoint's classifier has {found.shape[0]} classes but the model has "
            f"{dense_weight.torch_shape[0]} (`{dense_weight.key}` has shape "
            f"{tuple(found.shape)}). Build the model with classes={found.shape[0]}, or with "
            "include_top=False to leave the classifier out."
        )


def _match(entries: list[_Entry], arrays: dict):
    """``(missing keys, shape mismatch lines, [(entry, array)] to assign)``."""
    missing, mismatched, assignments = [], [], []
    for entry in entries:
        value = arrays.get(entry.key)
        if value is None:
            missing.append(entry.key)
        elif tuple(value.shape) != entry.torch_shape:
            mismatched.append(
                f"{entry.key}: checkpoint {tuple(value.shape)}, model expects "
                f"{entry.torch_shape} (Keras layer {entry.layer})"
            )
        else:
            assignments.append((entry, value))
    return missing, mismatched, assignments


def torch_key_map(model: keras.Model, state_keys=()) -> list[tuple[str, tuple, str]]:
    """The readable mapping table ``[(upstream key, upstream shape, Keras variable path)]``.

    ``state_keys`` (e.g. a checkpoint's keys) pick between naming variants (``conv_h`` /
    ``conv2``, ``classifier.1`` / ``classifier``); without them the first variant is listed.
    """
    entries, _, classifier = torch_layout(model, list(state_keys))
    return [(e.key, e.torch_shape, e.variable.path) for e in entries + classifier]
