"""One description per attention type, read by the Keras 3 layers, their tf_keras twins
(``keras_coordatt.quantization.tf_keras_layers``) and the PyTorch converter
(``keras_coordatt.weights.convert``).

An :class:`AttentionSpec` says, for one layer class: its constructor arguments (order, defaults,
checks; they are also its ``get_config`` keys), and its weight-holding sub-layers in creation
order: their names, the PyTorch sub-module names the converter accepts for them, and their
constants (conv width, kernel, bias, padding; BatchNorm epsilon / momentum). Every conv kernel
starts from :data:`CONV_INITIALIZER`. :class:`AttentionArguments` is the mixin that stores and
checks the arguments and writes the config for both frameworks.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from keras_coordatt.layers._common import (
    check_directions,
    check_odd_kernel_size,
    check_positive_int,
    hidden_width,
)

#: ``VarianceScaling`` arguments of every conv kernel: He normal over fan-out, the
#: initialisation of the original PyTorch code (Keras 3 and tf_keras take the same arguments).
CONV_INITIALIZER = {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"}


@dataclasses.dataclass(frozen=True)
class Argument:
    """A constructor argument: ``check(name, value)`` returns the value to store."""

    name: str
    default: Any
    check: Callable[[str, Any], Any] | None = None  # None: data_format, checked per framework


@dataclasses.dataclass(frozen=True)
class SubLayer:
    """A sub-layer holding weights.

    ``kind`` is ``"conv"`` or ``"bn"``. A conv maps ``in_channels`` to ``filters`` channels,
    each one of ``"channels"`` (the input's), ``"hidden"`` (the bottleneck width
    ``max(min_channels, channels // reduction)``) or a number; ``kernel_size`` is a number or
    the name of the argument holding it. A BN normalises ``in_channels`` channels.
    ``direction`` (CoordAttention): the sub-layer exists only when ``directions`` contains it.
    ``torch_names``: the upstream PyTorch sub-module names, the first one canonical.
    """

    name: str
    kind: str
    in_channels: str | int
    torch_names: tuple[str, ...]
    filters: str | int = 0
    kernel_size: str | int = 1
    use_bias: bool = True
    padding: str = "valid"
    epsilon: float = 1e-5
    momentum: float = 0.9
    direction: str | None = None


@dataclasses.dataclass(frozen=True)
class AttentionSpec:
    """One attention type: layer class name, builder key, arguments and sub-layers."""

    class_name: str
    attention: str
    hidden_attribute: str  # the layer attribute holding the bottleneck width
    arguments: tuple[Argument, ...]
    sublayers: tuple[SubLayer, ...]

    @property
    def argument_names(self) -> tuple[str, ...]:
        return tuple(argument.name for argument in self.arguments)

    @property
    def defaults(self) -> dict[str, Any]:
        return {argument.name: argument.default for argument in self.arguments}

    @property
    def sublayer_names(self) -> tuple[str, ...]:
        return tuple(sub.name for sub in self.sublayers)

    def signature(self) -> inspect.Signature:
        """``(<arguments with defaults>, **kwargs)``, the class's constructor signature."""
        keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
        parameters = [inspect.Parameter(a.name, keyword, default=a.default)
                      for a in self.arguments]
        parameters.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
        return inspect.Signature(parameters)

    def bind(self, args: tuple, kwargs: dict) -> tuple[dict[str, Any], dict[str, Any]]:
        """Splits constructor ``(args, kwargs)`` into ``(argument values, other kwargs)``."""
        if len(args) > len(self.arguments):
            raise TypeError(
                f"{self.class_name} takes at most {len(self.arguments)} positional arguments "
                f"({', '.join(self.argument_names)}), got {len(args)}."
            )
        values = self.defaults
        rest = dict(kwargs)
        for name, value in zip(self.argument_names, args, strict=False):
            if name in rest:
                raise TypeError(f"{self.class_name} got multiple values for argument {name!r}.")
            values[name] = value
        for name in self.argument_names:
            if name in rest:
                values[name] = rest.pop(name)
        return values, rest

    def widths(self, channels: int, values: Mapping[str, Any]) -> dict[str, int]:
        """``{"channels": C, "hidden": max(min_channels, C // reduction)}``."""
        return {
            "channels": channels,
            "hidden": hidden_width(channels, values["reduction"], values["min_channels"]),
        }

    def active_sublayers(self, values: Mapping[str, Any]) -> tuple[SubLayer, ...]:
        """The sub-layers a layer with argument ``values`` builds (direction switches)."""
        directions = values.get("directions", "")
        return tuple(s for s in self.sublayers if s.direction is None or s.direction in directions)


def _size(value: str | int, sizes: Mapping[str, Any]) -> int:
    return sizes[value] if isinstance(value, str) else value


def build_shape(sub: SubLayer, sizes: Mapping[str, Any], batch, channel_axis: int) -> tuple:
    """The 4-D shape ``sub`` is built with: ``(batch, 1, 1, in_channels)`` (channels_last;
    weights depend on the channel count only)."""
    shape = [batch, 1, 1, 1]
    shape[channel_axis] = _size(sub.in_channels, sizes)
    return tuple(shape)


def conv_arguments(sub: SubLayer, sizes: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``Conv2D`` (Keras 3 and tf_keras alike) for the conv ``sub``;
    ``sizes`` maps "channels" / "hidden" / argument names to numbers."""
    return {
        "filters": _size(sub.filters, sizes),
        "kernel_size": _size(sub.kernel_size, sizes),
        "use_bias": sub.use_bias,
        "padding": sub.padding,
        "name": sub.name,
    }


def batch_norm_arguments(sub: SubLayer) -> dict[str, Any]:
    """Keyword arguments of ``BatchNormalization`` for the BN ``sub`` (axis excluded)."""
    return {"epsilon": sub.epsilon, "momentum": sub.momentum, "name": sub.name}


def _directions(name: str, value):
    return check_directions(value)


_MIN_CHANNELS = Argument("min_channels", 8, check_positive_int)
_DATA_FORMAT = Argument("data_format", None)

COORD_ATTENTION = AttentionSpec(
    class_name="CoordAttention",
    attention="ca",
    hidden_attribute="mip",
    arguments=(
        Argument("reduction", 32, check_positive_int),
        _MIN_CHANNELS,
        Argument("directions", "hw", _directions),
        _DATA_FORMAT,
    ),
    sublayers=(
        SubLayer("conv1", "conv", "channels", ("conv1",), filters="hidden"),
        SubLayer("bn1", "bn", "hidden", ("bn1",), epsilon=1e-5, momentum=0.9),
        # coordatt.py names conv_h / conv_w, mbv2_ca.py conv2 / conv3
        SubLayer("conv_h", "conv", "hidden", ("conv_h", "conv2"), filters="channels",
                 direction="h"),
        SubLayer("conv_w", "conv", "hidden", ("conv_w", "conv3"), filters="channels",
                 direction="w"),
    ),
)

SQUEEZE_EXCITE = AttentionSpec(
    class_name="SqueezeExcite",
    attention="se",
    hidden_attribute="hidden",
    arguments=(Argument("reduction", 16, check_positive_int), _MIN_CHANNELS, _DATA_FORMAT),
    sublayers=(
        SubLayer("conv_reduce", "conv", "channels", ("conv_reduce", "fc1"), filters="hidden"),
        SubLayer("conv_expand", "conv", "hidden", ("conv_expand", "fc2"), filters="channels"),
    ),
)

CBAM = AttentionSpec(
    class_name="CBAM",
    attention="cbam",
    hidden_attribute="hidden",
    arguments=(
        Argument("reduction", 16, check_positive_int),
        _MIN_CHANNELS,
        Argument("spatial_kernel_size", 7, check_odd_kernel_size),
        _DATA_FORMAT,
    ),
    sublayers=(
        SubLayer("mlp_reduce", "conv", "channels", ("mlp_reduce",), filters="hidden"),
        SubLayer("mlp_expand", "conv", "hidden", ("mlp_expand",), filters="channels"),
        # channel-wise [max, mean] -> one channel, 'same' padding, no bias, as CBAM's code
        SubLayer("spatial_conv", "conv", 2, ("spatial_conv",), filters=1,
                 kernel_size="spatial_kernel_size", use_bias=False, padding="same"),
        SubLayer("spatial_bn", "bn", 1, ("spatial_bn",), epsilon=1e-5, momentum=0.99),
    ),
)

#: Every attention type, by layer class name.
ATTENTION_SPECS: dict[str, AttentionSpec] = {
    spec.class_name: spec for spec in (COORD_ATTENTION, SQUEEZE_EXCITE, CBAM)
}


class AttentionArguments:
    """Mixin of the attention layers (Keras 3 and tf_keras): argument storage and config.

    A subclass sets ``SPEC`` and defines ``_check_data_format(value)``; its ``__init__`` calls
    :meth:`_set_arguments` with the constructor's argument values.
    """

    SPEC: ClassVar[AttentionSpec]

    def _check_data_format(self, value):
        raise NotImplementedError

    def _set_arguments(self, values: Mapping[str, Any]) -> None:
        for argument in self.SPEC.arguments:
            value = values[argument.name]
            if argument.check is None:
                value = self._check_data_format(value)
            else:
                value = argument.check(argument.name, value)
            setattr(self, argument.name, value)

    def _set_widths(self, channels: int) -> dict[str, Any]:
        """Stores ``channels`` and the bottleneck width; returns every size a sub-layer uses."""
        values = self._argument_values()
        widths = self.SPEC.widths(channels, values)
        self.channels = channels
        setattr(self, self.SPEC.hidden_attribute, widths["hidden"])
        return {**values, **widths}

    def _sublayers(self) -> list[tuple[SubLayer, Any]]:
        """``[(sub-layer description, built sub-layer)]`` of the built layer, in order."""
        active = self.SPEC.active_sublayers(self._argument_values())
        return [(sub, getattr(self, sub.name)) for sub in active]

    def _argument_values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.SPEC.argument_names}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(self._argument_values())
        return config
