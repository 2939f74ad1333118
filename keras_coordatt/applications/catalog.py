"""The one table of models: which networks exist and what each is called.

One :class:`ModelEntry` per model: its command-line name (``"mobilenet_v2_ca"``), family,
attention type, builder function and default ImageNet preset. The CLI, the weights registry,
the exporters and the model card read this table; nothing else lists the models.

Keras-only (the builders); the preset is named, not imported, so this module does not import
``keras_coordatt.weights``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from keras_coordatt.applications.mobilenet_v2 import MobileNetV2, MobileNetV2CA
from keras_coordatt.applications.mobilenext import MobileNeXt, MobileNeXtCA
from keras_coordatt.applications.spec import ATTENTIONS, FAMILIES


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One model of the catalog.

    Attributes:
        name: command-line name, ``{family}[_{attention}]`` (e.g. ``"mobilenet_v2_ca"``).
        family: ``"mobilenet_v2"`` or ``"mobilenext"``.
        attention: None, ``"ca"``, ``"se"`` or ``"cbam"``.
        builder: the public builder in ``keras_coordatt.applications``.
        default_preset: registry preset that ``weights="imagenet"`` loads at alpha 1.0 and
            224x224, or None when there are no ImageNet weights.
    """

    name: str
    family: str
    attention: str | None
    builder: Callable
    default_preset: str | None = None

    @property
    def builder_name(self) -> str:
        """``"MobileNetV2CA"`` etc.: the builder's name in ``keras_coordatt.applications``."""
        return self.builder.__name__


#: Every model, in the order the CLI lists them.
CATALOG: tuple[ModelEntry, ...] = (
    ModelEntry("mobilenet_v2", "mobilenet_v2", None, MobileNetV2, "mobilenetv2_100_imagenet"),
    ModelEntry("mobilenet_v2_ca", "mobilenet_v2", "ca", MobileNetV2CA,
               "mobilenetv2_ca_100_imagenet"),
    ModelEntry("mobilenext", "mobilenext", None, MobileNeXt, "mobilenext_100_imagenet"),
    ModelEntry("mobilenext_ca", "mobilenext", "ca", MobileNeXtCA, None),
)


def model_names() -> list[str]:
    """The command-line names of the catalog, in catalog order."""
    return [entry.name for entry in CATALOG]


def get_model_entry(name: str) -> ModelEntry:
    """The entry called ``name`` (CLI name or builder name); ValueError if there is none."""
    for entry in CATALOG:
        if name in (entry.name, entry.builder_name):
            return entry
    raise ValueError(f"Unknown model {name!r}: use one of {', '.join(model_names())}.")


def find_model_entry(family: str | None, attention: str | None) -> ModelEntry | None:
    """The entry of (family, attention), or None when the catalog has no builder for it."""
    for entry in CATALOG:
        if (entry.family, entry.attention) == (family, attention):
            return entry
    return None


__all__ = [
    "ATTENTIONS",
    "CATALOG",
    "FAMILIES",
    "ModelEntry",
    "find_model_entry",
    "get_model_entry",
    "model_names",
]
