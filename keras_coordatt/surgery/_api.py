"""``add_attention`` and ``replace_attention``: attention in any functional Keras model."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import keras

from keras_coordatt.surgery import _identity
from keras_coordatt.surgery._graph import Graph, Plan, check_functional, rebuild
from keras_coordatt.surgery._patterns import LAYER_KINDS, find_blocks
from keras_coordatt.surgery._placement import channels_of, check_site, check_where, select

COMPENSATIONS = ("auto", "fold", "rescale")
Where = str | Iterable[str] | Callable[[keras.layers.Layer], bool]


def _attention_class(key: Any, argument: str) -> type:
    if not isinstance(key, str) or key.lower() not in LAYER_KINDS:
        raise ValueError(
            f"Unknown {argument}={key!r}: use 'ca' (Coordinate Attention), 'se' "
            "(Squeeze-and-Excitation) or 'cbam'."
        )
    return LAYER_KINDS[key.lower()]


def _check_compensation(compensation: str) -> None:
    if compensation not in COMPENSATIONS:
        raise ValueError(
            f"Unknown compensation={compensation!r}: use 'auto' (fold into an adjacent layer, "
            "else a Rescaling layer), 'fold' (fold or raise) or 'rescale' (Rescaling layer)."
        )


class _Builder:
    """Makes the new attention blocks of one call and the identity-start bookkeeping."""

    def __init__(self, layer_cls, reduction, arguments, identity_init, compensation, what):
        self.layer_cls = layer_cls
        self.arguments = dict(arguments)
        if reduction is not None:
            self.arguments["reduction"] = reduction
        self.key = layer_cls.SPEC.attention
        self.identity_init = identity_init
        self.compensation = compensation
        self.what = what
        self.scale = 1.0 / _identity.gate_product(layer_cls, self.arguments)
        self.count = 0
        layer_cls(**self.arguments)  # argument errors now, before any rebuilding

    def plan_fold(self, plan: Plan, graph: Graph, block_input, block_output, rerouted,
                  anchor: str) -> bool:
        """Records the identity fold of one block in ``plan``; True when a Rescaling layer
        must follow the block instead."""
        if not self.identity_init:
            return False
        if self.compensation == "rescale":
            return True
        found = _identity.fold_backward(graph, block_input, rerouted)
        if found is None:
            found = _identity.fold_forward(graph, block_output)
        if found is None:
            message = (
                f"{self.what}: the new attention at {anchor!r} cannot fold its constant start "
                f"gate (x {1 / self.scale:g}) into an adjacent layer (no BatchNormalization / "
                "conv / dense reachable through scale-commuting layers that nothing else reads)"
            )
            if self.compensation == "fold":
                raise ValueError(message + "; use compensation='auto' or 'rescale'.")
            warnings.warn(
                message + f"; a Rescaling({self.scale:g}) layer follows it to keep the start "
                "exact (quantize_model does not take Rescaling layers).", stacklevel=4,
            )
            return True
        for name, kind in found.items():
            target = plan.full_scales if kind == "output" else plan.scales
            target[name] = target.get(name, 1.0) * self.scale
        return False

    def maker(self, name: str, rescale: bool) -> Callable:
        def make(tensor):
            layer = self.layer_cls(name=name, **self.arguments)
            outputs = layer(tensor)
            if self.identity_init:
                _identity.zero_gates(layer)
            if rescale:
                outputs = keras.layers.Rescaling(self.scale, name=f"{name}_scale")(outputs)
            return outputs

        self.count += 1
        return make


def _apply_scales(layer, plan: Plan) -> None:
    output = plan.full_scales.get(layer.name, 1.0)
    kernel = plan.scales.get(layer.name, 1.0)
    if output != 1.0 or kernel != 1.0:
        _identity.scale_weights(layer, output, kernel)


def _unique(name: str, taken: set[str], what: str, from_user: bool) -> str:
    if name in taken:
        if from_user:
            raise ValueError(f"{what}: the new layer name {name!r} is already taken.")
        index = 1
        while f"{name}_{index}" in taken:
            index += 1
        name = f"{name}_{index}"
    taken.add(name)
    return name


def add_attention(
    model: keras.Model,
    where: Where,
    attention: str = "ca",
    reduction: int | None = None,
    *,
    identity_init: bool = True,
    compensation: str = "auto",
    name_fn: Callable[[str], str] | None = None,
    **attention_kwargs: Any,
) -> keras.Model:
    """A copy of the functional ``model`` with an attention block after each selected layer.

    Args:
        model: a functional ``keras.Model`` (nested functional models are rebuilt too); it is
            only read: the result has new layer instances with copies of its weights.
        where: layer names (of any nesting level), a predicate ``(layer) -> bool``, or a rule:
            ``"after_depthwise_activation"`` or ``"residual_branch_end"`` (before each Add,
            on the non-shortcut input). Each selected layer must have one 4-D output
            ``(N, H, W, C)`` with known ``C``; every reader of it reads the block's output.
        attention: ``"ca"``, ``"se"`` or ``"cbam"`` (:class:`~keras_coordatt.CoordAttention`,
            ``SqueezeExcite``, ``CBAM``).
        reduction: the block's reduction ratio; None: the layer's default (32 for CA).
        identity_init: zero the gate convolutions and fold the constant gate into an adjacent
            layer so the new model computes what ``model`` computes (see
            :mod:`keras_coordatt.surgery._identity`); False: the layers' own initialisation.
        compensation: ``"auto"`` (fold, else a ``Rescaling`` layer with a warning), ``"fold"``
            (fold, else ValueError) or ``"rescale"`` (always a ``Rescaling`` layer).
        name_fn: new block name from the selected layer's name; default ``f"{name}_{attention}"``.
        **attention_kwargs: other arguments of the attention layer (``min_channels``, ...).

    Returns:
        A plain functional ``keras.Model`` with the same inputs, outputs and name (a builder's
        ``ModelSpec`` is not carried over: the network is no longer the builder's).

    Raises:
        ValueError: a Sequential / subclassed model, an unknown layer name or rule, a selected
            layer that is shared, not 4-D or has unknown channels, nothing selected.
    """
    what = "add_attention"
    check_functional(model, what)
    _check_compensation(compensation)
    check_where(model, where)
    builder = _Builder(_attention_class(attention, "attention"), reduction, attention_kwargs,
                       identity_init, compensation, what)

    def plan_for(sub: keras.Model, graph: Graph) -> Plan:
        plan = Plan()
        taken = {layer.name for layer in graph.layers()}
        for name in select(graph, where):
            tensor, _ = check_site(graph, name, what)
            new_name = name_fn(name) if name_fn else f"{name}_{builder.key}"
            new_name = _unique(new_name, taken, what, name_fn is not None)
            rescale = builder.plan_fold(plan, graph, tensor, tensor, None, name)
            plan.after[name] = builder.maker(new_name, rescale)
        return plan

    result = rebuild(model, plan_for, _apply_scales)
    if builder.count == 0:
        raise ValueError(f"{what}: `where={where!r}` selects no layer of model {model.name!r}.")
    return result


def replace_attention(
    model: keras.Model,
    old: str = "se",
    new: str = "ca",
    reduction: int | None = None,
    *,
    identity_init: bool = True,
    compensation: str = "auto",
    name_fn: Callable[[str], str] | None = None,
    **attention_kwargs: Any,
) -> keras.Model:
    """A copy of the functional ``model`` with each ``old`` attention block swapped for ``new``.

    ``old="se"`` finds the package's ``SqueezeExcite`` layers and squeeze-and-excite
    sub-graphs (keras.applications MobileNetV3's and EfficientNet's: global average pooling,
    two conv / dense layers and a gate multiplying the block input, see
    :mod:`keras_coordatt.surgery._patterns`); ``"ca"`` / ``"cbam"`` the package's layers.
    The replaced block's weights are dropped, so the new model does not compute what ``model``
    did (a warning says so); with ``identity_init`` each new block starts as the identity (the
    old gates set to 1), folded as in :func:`add_attention`. Default names: the old block's
    common name prefix + ``_{new}`` (``block2a_se_excite`` -> ``block2a_ca``); ``name_fn``
    maps the old block's output layer name to the new name. Other arguments as
    :func:`add_attention`. Raises ValueError when ``model`` has no ``old`` block.
    """
    what = "replace_attention"
    check_functional(model, what)
    _check_compensation(compensation)
    _attention_class(old, "old")
    builder = _Builder(_attention_class(new, "new"), reduction, attention_kwargs,
                       identity_init, compensation, what)

    def plan_for(sub: keras.Model, graph: Graph) -> Plan:
        plan = Plan()
        taken = {layer.name for layer in graph.layers()}
        for block in find_blocks(graph, old.lower()):
            channels_of(block.input, f"{what}: the input of block {block.anchor!r}")
            new_name = name_fn(block.anchor) if name_fn else f"{block.default_name}_{builder.key}"
            new_name = _unique(new_name, taken, what, name_fn is not None)
            rerouted = {id(node) for node in block.nodes}
            rescale = builder.plan_fold(plan, graph, block.input, block.output, rerouted,
                                        block.anchor)
            plan.replace[id(block.output)] = (id(block.input), builder.maker(new_name, rescale))
            plan.skip |= {id(node) for node in block.nodes[:-1]}
        return plan

    result = rebuild(model, plan_for, _apply_scales)
    if builder.count == 0:
        raise ValueError(f"{what}: model {model.name!r} has no {old!r} attention block.")
    warnings.warn(
        f"{what}: {builder.count} {old!r} blocks of {model.name!r} were replaced by {new!r}; "
        "their learned gates are gone, so the new model does not compute what the original "
        "did" + (" (each new block starts as the identity)." if identity_init else "."),
        stacklevel=2,
    )
    return result
