"""Identity start: a new attention block that leaves the network's function unchanged.

Every attention layer of the package multiplies its input by sigmoid gates. With the
convolutions that produce the gates zero-initialised (kernel and bias), each gate is the
constant ``sigmoid(0) = 1/2`` whatever the input (in training and inference mode), so the block
computes ``x * c`` with ``c = 1/4`` (CA with both directions, CBAM) or ``1/2`` (SE, one-direction
CA). The factor ``k = 1/c`` (a power of two, so the rescaling is exact in floating point) is
folded into an adjacent layer of the copy:

* backward, into the layer that produces the block's input, through layers that commute with a
  positive scale (ReLU without cap, LeakyReLU, dropout, padding, pooling, reshape, Add of
  foldable branches): a BatchNormalization (gamma, beta) or a conv / dense layer with a linear
  or ReLU activation (kernel, bias), as long as no other layer reads the scaled tensors;
* else forward, into every layer that reads the block's output: conv / dense kernels (their
  input scale), through the same scale-commuting layers, Adds of scaled inputs and Multiplies
  of one scaled input (so an SE block after the new one passes the scale on);
* else (``compensation="auto"``) a ``keras.layers.Rescaling(k)`` after the block, with a
  warning naming the layer; ``compensation="fold"`` raises instead.

The zeroed gate kernels still get a gradient (``x * sigmoid'(0) * features``), so the first
optimizer step moves them; the layers before them (CA's ``conv1`` / ``bn1``, SE's and CBAM's
reducing conv) get a gradient from the second step on.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_coordatt.layers import CBAM, CoordAttention, SqueezeExcite

#: Attention class -> the sub-layers whose output goes into a sigmoid gate.
GATE_CONVS = {
    CoordAttention: ("conv_h", "conv_w"),
    SqueezeExcite: ("conv_expand",),
    CBAM: ("mlp_expand", "spatial_conv"),
}

_WEIGHTED = (
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D, keras.layers.Dense,
)
_PASSTHROUGH = (
    keras.layers.LeakyReLU, keras.layers.Dropout, keras.layers.SpatialDropout2D,
    keras.layers.ZeroPadding2D, keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D, keras.layers.Reshape,
    keras.layers.Flatten, keras.layers.Identity,
)
_KERNELS = ("kernel", "pointwise_kernel")
_OUTPUT_WEIGHTS = ("bias", "gamma", "beta")


def gate_product(layer_cls: type, arguments: dict) -> float:
    """The constant ``c`` a zero-gated ``layer_cls(**arguments)`` multiplies its input by."""
    if layer_cls is CoordAttention:
        return 0.5 ** len(arguments.get("directions", "hw"))
    if layer_cls is CBAM:
        return 0.25
    return 0.5


def zero_gates(layer) -> None:
    """Zeroes the kernels and biases of the built attention ``layer``'s gate convolutions."""
    for name in GATE_CONVS[type(layer)]:
        conv = getattr(layer, name, None)
        if conv is None:  # a direction CoordAttention does not compute
            continue
        for weight in conv.weights:
            weight.assign(np.zeros(weight.shape, dtype=weight.dtype))


def _activation(layer) -> str:
    value = layer.get_config().get("activation", "linear")
    return value if isinstance(value, str) else "other"


def _passthrough(op) -> bool:
    if isinstance(op, keras.layers.ReLU):
        config = op.get_config()
        return config["max_value"] is None and not config["threshold"]
    if isinstance(op, keras.layers.Activation):
        return _activation(op) in ("relu", "linear")
    return isinstance(op, _PASSTHROUGH)


def _output_scalable(op) -> bool:
    if isinstance(op, keras.layers.BatchNormalization):
        return bool(op.scale)
    return isinstance(op, _WEIGHTED) and _activation(op) in ("relu", "linear")


def _single_use(graph, op) -> bool:
    return isinstance(op, keras.layers.Layer) and len(graph.nodes_of(op)) == 1


def fold_backward(graph, tensor, rerouted: set | None, depth: int = 0) -> dict | None:
    """``{layer name: "output"}`` whose outputs, scaled, scale ``tensor`` (all of whose reads
    go to the new block when ``rerouted`` is None, else the nodes in ``rerouted`` are them);
    None when no such layer exists."""
    consumers = graph.consumers_of(tensor)
    if rerouted is None:
        pass
    elif any(id(node) not in rerouted for node in consumers) or id(tensor) in graph.output_ids:
        return None
    node = graph.producer_node.get(id(tensor))
    if node is None or depth > 16 or not _single_use(graph, node.operation):
        return None
    op = node.operation
    if _output_scalable(op):
        return {op.name: "output"}
    if isinstance(op, keras.layers.Add) or (_passthrough(op) and len(node.input_tensors) == 1):
        found: dict = {}
        for source in node.input_tensors:
            if len(graph.consumers_of(source)) != 1:
                return None
            branch = fold_backward(graph, source, {id(node)}, depth + 1)
            if branch is None:
                return None
            found.update(branch)
        return found
    return None


def _carries_scale(op, hits: list[bool]) -> bool:
    """Whether ``op``'s output is scaled like its inputs flagged in ``hits``."""
    if len(hits) == 1:
        return _passthrough(op)
    if isinstance(op, keras.layers.Multiply):
        return sum(hits) == 1
    return isinstance(op, keras.layers.Add) and all(hits)


def fold_forward(graph, tensor) -> dict | None:
    """``{layer name: "input"}``: the conv / dense layers whose kernels, scaled, absorb a scale
    of ``tensor`` for every reader, through scale-commuting layers, a Multiply of one scaled
    input (an SE gate) and an Add of scaled inputs; None when a reader cannot."""
    scaled, found = {id(tensor)}, {}
    for node in graph.nodes:
        hits = [id(t) in scaled for t in node.input_tensors]
        if not any(hits):
            continue
        op = node.operation
        if not _single_use(graph, op):
            return None
        if isinstance(op, _WEIGHTED) and len(hits) == 1:
            found[op.name] = "input"
        elif _carries_scale(op, hits):
            scaled.update(id(t) for t in node.outputs)
        else:
            return None
    if scaled & graph.output_ids or not found:
        return None
    return found


def scale_weights(layer, output_scale: float, kernel_scale: float) -> None:
    """Multiplies ``layer``'s kernel by ``output_scale * kernel_scale`` and its bias / gamma /
    beta by ``output_scale``."""
    for weight in layer.weights:
        leaf = weight.path.split("/")[-1]
        factor = 1.0
        if leaf in _KERNELS:
            factor = output_scale * kernel_scale
        elif leaf in _OUTPUT_WEIGHTS:
            factor = output_scale
        if factor != 1.0:
            weight.assign(np.asarray(weight.numpy()) * np.asarray(factor, weight.dtype))
