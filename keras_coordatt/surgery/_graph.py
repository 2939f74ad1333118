"""A read-only view of a functional Keras graph, and its rebuild with new layer instances.

:class:`Graph` lists a functional model's call nodes in topological order with each tensor's
producer and consumers. :func:`rebuild` walks those nodes and calls, for each one, a *copy* of
its operation (``from_config(get_config())``, weights copied after the call builds it), so the
model it reads is never modified. Hooks change the graph on the way: ``after`` maps a layer
name to a function of the layer's new output tensor (attention inserted after it), ``replace``
maps an original tensor id to ``(input tensor id, function)`` (a sub-graph replaced by one
layer), ``skip`` lists the node ids whose computation the replacement drops. Nested functional
models are rebuilt the same way, through ``plan_for(model)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
from keras.src.models.functional import Functional


def check_functional(model: Any, what: str) -> None:
    """ValueError unless ``model`` is a functional ``keras.Model`` (Sequential and subclassed
    models have no graph of layers to rebuild)."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"{what} needs a functional keras.Model, got {type(model).__name__}.")
    name = getattr(model, "name", "?")
    if isinstance(model, keras.Sequential):
        raise ValueError(
            f"{what} needs a functional model; {name!r} is a keras.Sequential. Rebuild it with "
            "the functional API: `x = inputs = keras.Input(shape)`, then `x = layer(x)` for "
            "each of its layers, and `keras.Model(inputs, x)`."
        )
    if not isinstance(model, Functional):
        raise ValueError(
            f"{what} needs a functional model; {name!r} is a subclassed keras.Model "
            f"({type(model).__name__}) whose graph is code, not layers. Write it with the "
            "functional API (keras.Model(inputs, outputs))."
        )


def producer(tensor) -> Any:
    """The operation (layer or op) that computes ``tensor``."""
    return tensor._keras_history.operation  # noqa: SLF001


class Graph:
    """Nodes of a functional model in topological order, with producers and consumers."""

    def __init__(self, model: keras.Model):
        self.model = model
        by_depth = model._nodes_by_depth  # noqa: SLF001
        self.nodes = [
            node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]
            if node.operation is not None and not node.is_input
        ]
        self.consumers: dict[int, list] = {}
        self.producer_node: dict[int, Any] = {}
        for node in self.nodes:
            for tensor in node.input_tensors:
                self.consumers.setdefault(id(tensor), []).append(node)
            for tensor in node.outputs:
                self.producer_node[id(tensor)] = node
        self.output_ids = {id(t) for t in model.outputs}
        self.depth = self._longest_paths()

    def _longest_paths(self) -> dict[int, int]:
        """Tensor id -> number of nodes on the longest path from a model input."""
        depth = {id(t): 0 for t in self.model.inputs}
        for node in self.nodes:
            level = 1 + max((depth.get(id(t), 0) for t in node.input_tensors), default=0)
            for tensor in node.outputs:
                depth[id(tensor)] = level
        return depth

    def layers(self) -> list[keras.layers.Layer]:
        """The model's layers (InputLayers excluded), each once, in graph order."""
        seen, result = set(), []
        for node in self.nodes:
            op = node.operation
            if isinstance(op, keras.layers.Layer) and id(op) not in seen:
                seen.add(id(op))
                result.append(op)
        return result

    def nodes_of(self, layer) -> list:
        return [node for node in self.nodes if node.operation is layer]

    def consumers_of(self, tensor) -> list:
        return self.consumers.get(id(tensor), [])


@dataclasses.dataclass
class Plan:
    """Edits of one functional model (nested ones get their own)."""

    after: dict[str, Callable] = dataclasses.field(default_factory=dict)
    replace: dict[int, tuple[int, Callable]] = dataclasses.field(default_factory=dict)
    skip: set[int] = dataclasses.field(default_factory=set)
    scales: dict[str, float] = dataclasses.field(default_factory=dict)  # layer -> kernel scale
    full_scales: dict[str, float] = dataclasses.field(default_factory=dict)  # all weights


def is_functional(op) -> bool:
    return isinstance(op, Functional) and not isinstance(op, keras.Sequential)


def copy_operation(op):
    """A new instance of ``op`` from its config (weights are copied once it is built)."""
    return op.__class__.from_config(op.get_config())


def _new_inputs(model: keras.Model) -> list:
    return [
        keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype,
                    name=producer(t).name)
        for t in model.inputs
    ]


def rebuild(model: keras.Model, plan_for: Callable[[keras.Model, Graph], Plan],
            scale_weights: Callable, cache: dict | None = None) -> keras.Model:
    """The functional model ``model`` rebuilt from copies of its operations with the edits of
    ``plan_for(model, graph)``; ``scale_weights(layer, plan)`` rescales a copied layer's
    weights (identity folding). ``model`` itself is only read."""
    cache = {} if cache is None else cache
    graph = Graph(model)
    plan = plan_for(model, graph)
    inputs = _new_inputs(model)
    tensors = {id(old): new for old, new in zip(model.inputs, inputs, strict=True)}
    copies: dict[int, Any] = {}
    for node in graph.nodes:
        if id(node) in plan.skip:
            continue
        replaced = [plan.replace[id(t)] for t in node.outputs if id(t) in plan.replace]
        if replaced:
            source, make = replaced[0]
            tensors[id(node.outputs[0])] = make(tensors[source])
            continue
        op = node.operation
        if id(op) not in copies:
            copies[id(op)] = (
                rebuild(op, plan_for, scale_weights, cache) if is_functional(op)
                else copy_operation(op)
            )
            fresh = True
        else:
            fresh = False
        new_op = copies[id(op)]
        args, kwargs = node.arguments.fill_in(tensors)
        outputs = new_op(*args, **kwargs)
        if fresh and isinstance(op, keras.layers.Layer) and not is_functional(op):
            new_op.set_weights(op.get_weights())
            scale_weights(new_op, plan)
        flat = keras.tree.flatten(outputs)
        for old, new in zip(node.outputs, flat, strict=True):
            tensors[id(old)] = new
        hook = plan.after.get(getattr(op, "name", None))
        if hook is not None:
            tensors[id(node.outputs[0])] = hook(flat[0])
    outputs = [tensors[id(t)] for t in model.outputs]
    return keras.Model(
        keras.tree.pack_sequence_as(model._inputs_struct, inputs),  # noqa: SLF001
        keras.tree.pack_sequence_as(model._outputs_struct, outputs),  # noqa: SLF001
        name=model.name,
    )
