"""Existing attention blocks in a functional graph: the package's layers and the
squeeze-and-excite sub-graphs of keras.applications.

An SE sub-graph is ``Multiply([x, gate])`` where ``gate`` comes from ``x`` through a chain of
single-input operations that starts with a global average pooling and holds at least two
conv / dense layers, none of whose results is read outside the chain: MobileNetV3's
``GlobalAveragePooling2D(keepdims) -> Conv2D -> ReLU -> Conv2D -> (+3, ReLU6, *1/6) -> Multiply``
and EfficientNet's ``GlobalAveragePooling2D -> Reshape -> Conv2D(swish) -> Conv2D(sigmoid) ->
multiply``.
"""

from __future__ import annotations

import dataclasses
import os

import keras

from keras_coordatt.layers import CBAM, CoordAttention, SqueezeExcite

#: ``old=`` keys of replace_attention -> the package layer class of that attention.
LAYER_KINDS = {"ca": CoordAttention, "se": SqueezeExcite, "cbam": CBAM}
_MAX_CHAIN = 12
_SE_WORDS = ("squeeze_excite", "se")


@dataclasses.dataclass
class Block:
    """One attention block: its input tensor, output tensor, the nodes it spans (the output
    node last) and the name of the new block that replaces it."""

    input: object
    output: object
    nodes: list
    default_name: str

    @property
    def anchor(self) -> str:
        return self.nodes[-1].operation.name


def _se_chain(graph, x, gate) -> list | None:
    """The nodes from ``x`` to ``gate`` (gate's producer first) when they form an SE gate."""
    chain, tensor = [], gate
    while len(chain) < _MAX_CHAIN:
        node = graph.producer_node.get(id(tensor))
        if node is None or len(node.input_tensors) != 1 or len(node.outputs) != 1:
            return None
        if len(graph.consumers_of(tensor)) != 1 or id(tensor) in graph.output_ids:
            return None
        chain.append(node)
        (source,) = node.input_tensors
        if source is x:
            break
        tensor = source
    else:
        return None
    first = chain[-1].operation
    weighted = [n for n in chain if isinstance(n.operation, (keras.layers.Conv2D,
                                                             keras.layers.Dense))]
    if not isinstance(first, keras.layers.GlobalAveragePooling2D) or len(weighted) < 2:
        return None
    return chain[::-1]


def _block_name(names: list[str]) -> str:
    prefix = os.path.commonprefix(names).rstrip("_")
    for word in _SE_WORDS:
        if prefix.endswith(word):
            prefix = prefix[: -len(word)].rstrip("_")
            break
    return prefix or names[-1]


def find_blocks(graph, old: str) -> list[Block]:
    """The ``old`` attention blocks of ``graph`` ("se": SE sub-graphs and SqueezeExcite layers;
    "ca" / "cbam": the package's layers), in graph order."""
    blocks = []
    layer_cls = LAYER_KINDS[old]
    for node in graph.nodes:
        op = node.operation
        if isinstance(op, layer_cls):
            blocks.append(Block(node.input_tensors[0], node.outputs[0], [node],
                                _block_name([op.name])))
            continue
        if old != "se" or not isinstance(op, keras.layers.Multiply):
            continue
        if len(node.input_tensors) != 2:
            continue
        a, b = node.input_tensors
        for x, gate in ((a, b), (b, a)):
            chain = _se_chain(graph, x, gate)
            if chain is not None:
                names = [chain[0].operation.name, op.name]
                blocks.append(Block(x, node.outputs[0], [*chain, node], _block_name(names)))
                break
    return blocks
