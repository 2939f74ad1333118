"""Where new attention goes: ``where`` as layer names, a predicate or a named rule.

Rules (the CA authors' advice: after the layers that expand channels / where SE sits, or at the
end of a residual branch):

* ``"after_depthwise_activation"``: after each activation layer that follows a
  ``DepthwiseConv2D`` (directly or through its BatchNormalization), as MobileNetV2 + CA;
* ``"residual_branch_end"``: on the residual branch of each ``Add``, before the add: after the
  layer producing the Add input with the longest path from the model input (the identity or
  projection shortcut is the shorter one).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Iterable

import keras

from keras_coordatt.surgery._graph import Graph, is_functional

_ACTIVATIONS = (
    keras.layers.ReLU, keras.layers.Activation, keras.layers.LeakyReLU, keras.layers.PReLU,
    keras.layers.ELU,
)


def _producer_layer(graph: Graph, tensor):
    node = graph.producer_node.get(id(tensor))
    return None if node is None else node.operation


def _after_depthwise_activation(graph: Graph) -> list[str]:
    names = []
    for layer in graph.layers():
        if not isinstance(layer, _ACTIVATIONS) or len(graph.nodes_of(layer)) != 1:
            continue
        source = _producer_layer(graph, graph.nodes_of(layer)[0].input_tensors[0])
        if isinstance(source, keras.layers.BatchNormalization):
            source = _producer_layer(graph, graph.nodes_of(source)[0].input_tensors[0])
        if isinstance(source, keras.layers.DepthwiseConv2D):
            names.append(layer.name)
    return names


def _residual_branch_end(graph: Graph) -> list[str]:
    names = []
    for layer in graph.layers():
        if not isinstance(layer, keras.layers.Add):
            continue
        for node in graph.nodes_of(layer):
            depths = [graph.depth.get(id(t), 0) for t in node.input_tensors]
            deepest = max(depths)
            if depths.count(deepest) > 1:
                warnings.warn(
                    f"residual_branch_end: the inputs of Add {layer.name!r} are equally deep, "
                    "so the residual branch is ambiguous; no attention is added there.",
                    stacklevel=4,
                )
                continue
            source = _producer_layer(graph, node.input_tensors[depths.index(deepest)])
            if isinstance(source, keras.layers.Layer):
                names.append(source.name)
    return names


RULES: dict[str, Callable[[Graph], list[str]]] = {
    "after_depthwise_activation": _after_depthwise_activation,
    "residual_branch_end": _residual_branch_end,
}


def all_layer_names(model: keras.Model) -> set[str]:
    """Names of the layers of ``model`` and of its nested functional models."""
    names = set()
    for layer in Graph(model).layers():
        names.add(layer.name)
        if is_functional(layer):
            names |= all_layer_names(layer)
    return names


def check_where(model: keras.Model, where) -> None:
    """ValueError for a ``where`` of the wrong type, an unknown rule or unknown layer names."""
    if callable(where):
        return
    if isinstance(where, str):
        if where in RULES:
            return
        where = [where]
    if not isinstance(where, Iterable):
        raise ValueError(
            f"`where` must be a list of layer names, a predicate (layer) -> bool or one of the "
            f"rules {sorted(RULES)}, got {where!r}."
        )
    known = all_layer_names(model)
    for name in where:
        if name not in known:
            close = difflib.get_close_matches(str(name), sorted(known), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(
                f"No layer named {name!r} in model {model.name!r} (nested models included)."
                f"{hint} `where` also takes a predicate or one of the rules {sorted(RULES)}."
            )


def select(graph: Graph, where) -> list[str]:
    """Names of the layers of ``graph`` (this level only) that ``where`` selects."""
    layers = graph.layers()
    if isinstance(where, str) and where in RULES:
        return RULES[where](graph)
    if callable(where):
        return [layer.name for layer in layers if where(layer)]
    wanted = {where} if isinstance(where, str) else set(where)
    return [layer.name for layer in layers if layer.name in wanted]


def check_site(graph: Graph, name: str, what: str) -> tuple[object, int]:
    """``(output tensor, channels)`` of the layer ``name`` after checking it is called once,
    has one 4-D output and a known channel count."""
    layer = next(layer for layer in graph.layers() if layer.name == name)
    nodes = graph.nodes_of(layer)
    if len(nodes) != 1 or len(nodes[0].outputs) != 1:
        raise ValueError(
            f"{what}: layer {name!r} is called {len(nodes)} times or has several outputs; "
            "attention goes after a layer with one call and one output."
        )
    tensor = nodes[0].outputs[0]
    return tensor, channels_of(tensor, f"{what}: the output of layer {name!r}")


def channels_of(tensor, where: str) -> int:
    """The channel count of a 4-D image tensor; ValueError naming ``where`` otherwise."""
    shape = tuple(tensor.shape)
    if len(shape) != 4:
        raise ValueError(
            f"{where} is {len(shape)}-D {shape}; attention needs a 4-D image feature map "
            "(batch, height, width, channels)."
        )
    axis = -1 if keras.config.image_data_format() == "channels_last" else 1
    if shape[axis] is None:
        raise ValueError(
            f"{where} has an unknown channel count {shape}; give the model input a fixed "
            "number of channels."
        )
    return int(shape[axis])
