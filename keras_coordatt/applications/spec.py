"""What a built model is: :class:`ModelSpec`, carried by every model of our four builders.

The builders return a :class:`ModelWithSpec`, a functional ``keras.Model`` (same layers, inputs,
outputs and graph as ``keras.Model(inputs, outputs)``) that also holds the :class:`ModelSpec`
of the arguments that define its network. The spec is part of the model's config, so it
survives ``model.save("x.keras")`` / ``keras.saving.load_model(..., safe_mode=True)``; a user's
``name=`` does not touch it. Read it with :func:`model_spec`, which returns None for any other
model (so callers never parse names). ``keras.models.clone_model`` rebuilds a functional model
through its class with inputs, outputs and name only, so a clone is a working
:class:`ModelWithSpec` whose spec is None (its layers may differ from the original's anyway).
A saved model names the registered class ``keras_coordatt>ModelWithSpec``, so loading it needs
``import keras_coordatt`` first, as the attention layers always did (a plain MobileNetV2 /
MobileNeXt saved by an earlier version loads as before, with no spec).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras

FAMILIES = ("mobilenet_v2", "mobilenext")
ATTENTIONS = (None, "ca", "se", "cbam")
#: Accepted ``output_stride`` values (input size / last feature map size).
OUTPUT_STRIDES = (8, 16, 32)
_FIELDS = ("family", "attention", "alpha", "reduction", "input_shape", "include_top",
           "pooling", "classes", "output_stride")
#: The keys of a spec saved before ``output_stride`` existed (read as output_stride 32).
_FIELDS_V1 = _FIELDS[:-1]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """The builder arguments that define a network.

    Attributes:
        family: ``"mobilenet_v2"`` or ``"mobilenext"``.
        attention: None, ``"ca"``, ``"se"`` or ``"cbam"``.
        alpha: width multiplier (> 0).
        reduction: attention reduction ratio; None without attention.
        input_shape: ``(height, width, channels)`` whatever the data format; height / width may
            be None (any input size).
        include_top: whether the model ends with the ``predictions`` classifier.
        pooling: None, ``"avg"`` or ``"max"`` (the builder argument, used without top).
        classes: number of classes (the builder argument, used with top).
        output_stride: 8, 16 or 32, the stride of the last feature map (32: the strided network;
            below 32 the later stages are dilated instead of strided).
    """

    family: str
    attention: str | None
    alpha: float
    reduction: int | None
    input_shape: tuple[int | None, int | None, int]
    include_top: bool
    pooling: str | None
    classes: int
    output_stride: int = 32

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"Unknown family={self.family!r}: use one of {FAMILIES}.")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"Unknown attention={self.attention!r}: use one of {ATTENTIONS}.")
        if (self.attention is None) != (self.reduction is None):
            raise ValueError(
                f"`reduction` must be None exactly when attention is None, got "
                f"attention={self.attention!r}, reduction={self.reduction!r}."
            )
        if self.output_stride not in OUTPUT_STRIDES:
            raise ValueError(
                f"`output_stride` must be one of {OUTPUT_STRIDES}, got {self.output_stride!r}."
            )
        shape = tuple(self.input_shape)
        if len(shape) != 3:
            raise ValueError(f"`input_shape` must be (height, width, channels), got {shape!r}.")
        object.__setattr__(self, "input_shape", shape)

    def to_config(self) -> dict[str, Any]:
        """A JSON-safe dict (``input_shape`` as a list), the inverse of :meth:`from_config`."""
        config = dataclasses.asdict(self)
        config["input_shape"] = list(self.input_shape)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelSpec:
        """The spec of a :meth:`to_config` dict; ValueError for missing or unknown keys. A dict
        without ``output_stride`` (saved by an earlier version) means output_stride 32."""
        if not isinstance(config, dict) or set(config) not in (set(_FIELDS), set(_FIELDS_V1)):
            keys = sorted(config) if isinstance(config, dict) else type(config).__name__
            raise ValueError(
                f"A ModelSpec config needs exactly the keys {_FIELDS} (output_stride optional), "
                f"got {keys}."
            )
        return cls(**{**config, "input_shape": tuple(config["input_shape"])})


@keras.saving.register_keras_serializable(package="keras_coordatt")
class ModelWithSpec(keras.Model):
    """A functional ``keras.Model`` holding the :class:`ModelSpec` of the builder that made it.

    Built as ``ModelWithSpec(inputs, outputs, name=..., spec=spec)``; everything else is a
    plain functional model. The constructor keeps the functional signature
    ``(inputs, outputs, name=None, **kwargs)`` so Keras serializes, clones and revives it as
    one; the spec travels in ``get_config()["spec"]``.
    """

    def __init__(self, inputs, outputs, name=None, *, spec: ModelSpec | dict | None = None,
                 **kwargs):
        super().__init__(inputs, outputs, name=name, **kwargs)
        if isinstance(spec, dict):
            spec = ModelSpec.from_config(spec)
        if spec is not None and not isinstance(spec, ModelSpec):
            raise ValueError(f"`spec` must be a ModelSpec, a dict or None, got {spec!r}.")
        self._coordatt_spec = spec

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        spec = self._coordatt_spec
        config["spec"] = None if spec is None else spec.to_config()
        return config


def model_spec(model: Any) -> ModelSpec | None:
    """The :class:`ModelSpec` of a model built by ``keras_coordatt.applications`` (also after a
    ``.keras`` save / load), else None."""
    spec = getattr(model, "_coordatt_spec", None)
    return spec if isinstance(spec, ModelSpec) else None
