"""Model cards (Markdown, TF-Hub / Kaggle Models layout) for the SavedModels of ``export_hub``.

The card follows the tfhub.dev model-page format: a ``# Module`` title, a one-line summary,
``<!-- key: value -->`` metadata lines (task, network-architecture, dataset, fine-tunable,
format, license), then Overview, Architecture, Inputs and outputs, Usage, Weights and accuracy,
Fine-tuning, Licence and Citation sections. The layout and fixed text are the template
``templates/model_card.md`` (a :class:`string.Template`, package data); this module computes
its fields, what the network is from :func:`keras_coordatt.applications.model_spec`, never from
the model's name. The ``asset-path`` line is left out: add it when you publish the archive.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import string
import warnings
from importlib import resources
from typing import Any

#: File name of the card inside an exported directory.
MODEL_CARD_FILENAME = "MODEL_CARD.md"

#: Licence of keras-coordatt's own code (what randomly initialised exports carry).
CODE_LICENSE = "MIT"

CA_BIBTEX = """@inproceedings{hou2021coordinate,
  title     = {Coordinate Attention for Efficient Mobile Network Design},
  author    = {Hou, Qibin and Zhou, Daquan and Feng, Jiashi},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern
               Recognition (CVPR)},
  pages     = {13713--13722},
  year      = {2021}
}"""

MOBILENET_V2_BIBTEX = """@inproceedings{sandler2018mobilenetv2,
  title     = {MobileNetV2: Inverted Residuals and Linear Bottlenecks},
  author    = {Sandler, Mark and Howard, Andrew and Zhu, Menglong and Zhmoginov, Andrey and
               Chen, Liang-Chieh},
  booktitle = {Proceedings of the IEEE Conference on Computer Vision and Pattern
               Recognition (CVPR)},
  pages     = {4510--4520},
  year      = {2018}
}"""

MOBILENEXT_BIBTEX = """@inproceedings{zhou2020rethinking,
  title     = {Rethinking Bottleneck Structure for Efficient Mobile Network Design},
  author    = {Zhou, Daquan and Hou, Qibin and Chen, Yunpeng and Feng, Jiashi and Yan, Shuicheng},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2020}
}"""

_FAMILY_BIBTEX = {"mobilenet_v2": MOBILENET_V2_BIBTEX, "mobilenext": MOBILENEXT_BIBTEX}
_ATTENTION_TITLES = {
    None: "",
    "ca": " + Coordinate Attention",
    "se": " + Squeeze-and-Excitation",
    "cbam": " + CBAM",
}


@dataclasses.dataclass(frozen=True)
class ModelCardInfo:
    """What the exporter says about the weights, for the model card (``export_hub(card=...)``).

    Attributes:
        weights: the ``weights=`` value the model was built with (nothing is loaded): a
            registry preset name or ``"imagenet"`` (URL, pin, reported accuracy and licence
            from the registry), a checkpoint path (its SHA-256), None (random initialisation)
            or ``"unknown"`` (default).
        weights_source: the weights' URL or description (overrides the registry's).
        top1, top5: ImageNet top-1 / top-5 accuracy in % (override the registry's).
        license: licence of the weights (overrides the registry's).
        description: one-line summary at the top of the card.
    """

    weights: str | os.PathLike | None = "unknown"
    weights_source: str | None = None
    top1: float | None = None
    top5: float | None = None
    license: str | None = None
    description: str | None = None


@dataclasses.dataclass(frozen=True)
class WeightsInfo:
    """Where the exported weights come from, for the model card.

    Attributes:
        name: short name: a registry preset, ``"imagenet"``, a file name, or ``"random"``.
        source: URL or local path of the checkpoint (empty when unknown).
        pin: content hash of the checkpoint (``git blob <sha1>`` or ``sha256 <hex>``).
        top1, top5: ImageNet accuracy in %, as reported by the weights' authors.
        license: licence of the weights.
        license_source: where that licence statement comes from.
        dataset: training data set (``"ImageNet (ILSVRC-2012)"`` for the registry presets).
        input_size: training resolution, when known.
        notes: anything else worth saying (one paragraph).
    """

    name: str = "unknown"
    source: str = ""
    pin: str = ""
    top1: float | None = None
    top5: float | None = None
    license: str = ""
    license_source: str = ""
    dataset: str = ""
    input_size: int | None = None
    notes: str = ""

    @property
    def random(self) -> bool:
        """Random initialisation (the builders' ``weights=None``)."""
        return self.name == "random"

    @property
    def unknown(self) -> bool:
        """The exporter did not say where the weights come from."""
        return self.name == "unknown"

    @property
    def pretrained(self) -> bool:
        return not (self.random or self.unknown)


@dataclasses.dataclass(frozen=True)
class ArchitectureInfo:
    """What the card says about the network (family, attention and alpha from the model's
    :class:`~keras_coordatt.applications.ModelSpec`; None for other models)."""

    model_name: str
    family: str | None = None
    attention: str | None = None
    alpha: float | None = None
    num_params: int = 0
    num_attention_blocks: int = 0
    bn_momentum: tuple[float, ...] = ()

    @property
    def title(self) -> str:
        if self.family is None:
            return self.model_name
        text = _family_title(self.family) + _ATTENTION_TITLES[self.attention]
        if self.alpha is not None:
            text += f" (alpha {self.alpha:g})"
        return text


def _family_title(family: str) -> str:
    """``"MobileNetV2"`` for ``"mobilenet_v2"``: the name of the family's plain builder in the
    catalog."""
    from keras_coordatt.applications.catalog import find_model_entry

    entry = find_model_entry(family, None)
    return entry.builder_name if entry is not None else family


def spec_of(model: Any) -> Any:
    """``keras_coordatt.applications.model_spec(model)``: the ModelSpec a builder's model
    carries (family, attention, alpha, ...), or None for any other model."""
    from keras_coordatt.applications import model_spec

    return model_spec(model)


def parse_builder_name(name: str) -> tuple[str | None, str | None, float | None]:
    """Deprecated: model names are not parsed any more; use
    ``keras_coordatt.applications.model_spec(model)``. Always ``(None, None, None)``."""
    warnings.warn(
        "parse_builder_name is deprecated and returns Nones: read "
        "keras_coordatt.applications.model_spec(model) instead.",
        DeprecationWarning,
        stacklevel=2,
    )
    return None, None, None


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _preset_weights_info(preset) -> WeightsInfo:
    pins = []
    if preset.git_blob:
        pins.append(f"git blob {preset.git_blob}")
    if preset.sha256:
        pins.append(f"sha256 {preset.sha256}")
    return WeightsInfo(
        name=preset.name,
        source=preset.upstream_url,
        pin=", ".join(pins),
        top1=preset.top1,
        top5=preset.top5,
        license=preset.license,
        license_source=preset.license_source,
        dataset="ImageNet (ILSVRC-2012)",
        input_size=preset.input_size,
        notes=preset.description,
    )


def resolve_weights_info(
    weights: str | os.PathLike | None,
    *,
    model_name: str = "",
    input_size: int | None = None,
    spec: Any = None,
) -> WeightsInfo:
    """Card metadata for a builder's ``weights=`` value.

    ``None`` (or ``"none"`` / ``"random"``) means random initialisation, ``"unknown"`` that the
    source was not stated; a registry preset name gives the registry's URL, pin, reported
    accuracy and licence; ``"imagenet"`` is resolved like the builders do, from ``spec`` (the
    model's ``ModelSpec``: family, alpha, attention); a local file is recorded by name and
    SHA-256. ``model_name`` is only quoted in messages.
    """
    if weights is None or (isinstance(weights, str) and weights.lower() in ("none", "random")):
        return WeightsInfo(name="random")
    if isinstance(weights, str) and weights.lower() in ("", "unknown"):
        return WeightsInfo(name="unknown")
    from keras_coordatt.weights import registry

    text = os.fspath(weights)
    if text in registry.PRESETS:
        return _preset_weights_info(registry.get_preset(text))
    if text == "imagenet":
        preset = None
        if spec is not None:
            preset = registry.find_imagenet_preset(
                spec.family, spec.alpha, spec.attention, input_size
            )
        if preset is not None:
            return _preset_weights_info(preset)
        return WeightsInfo(
            name="imagenet",
            dataset="ImageNet (ILSVRC-2012)",
            notes="ImageNet weights; the registry preset could not be identified for the "
            f"model {model_name!r} (no keras_coordatt ModelSpec, or no preset for it).",
        )
    if os.path.isfile(text):
        return WeightsInfo(
            name=os.path.basename(text),
            source=os.path.abspath(text),
            pin=f"sha256 {_file_sha256(text)}",
            notes="Local checkpoint file.",
        )
    return WeightsInfo(name=text, notes="Weights named by the exporter (not in the registry).")


def apply_card_info(info: WeightsInfo, card: ModelCardInfo) -> WeightsInfo:
    """``info`` with the exporter's overrides from ``card`` (source, accuracy, licence)."""
    overrides: dict[str, Any] = {}
    if card.weights_source is not None:
        overrides["source"] = card.weights_source
    if card.top1 is not None:
        overrides["top1"] = float(card.top1)
    if card.top5 is not None:
        overrides["top5"] = float(card.top5)
    if card.license is not None:
        overrides["license"] = card.license
        overrides["license_source"] = "stated by the exporter"
    if overrides and not info.pretrained:
        name = os.path.basename(str(card.weights_source or "")) or "custom"
        overrides.setdefault("name", name)
    return dataclasses.replace(info, **overrides) if overrides else info


def _license_tag(license_text: str) -> str:
    lowered = license_text.lower()
    if lowered.startswith("mit"):
        return "mit"
    if lowered.startswith("apache"):
        return "apache-2.0"
    return "custom"


def _percent(value: float | None) -> str:
    return "not reported" if value is None else f"{value:g} %"


_dim = str  # a dimension: "None" when dynamic


@functools.lru_cache(maxsize=1)
def _template() -> string.Template:
    path = resources.files("keras_coordatt.export") / "templates" / "model_card.md"
    return string.Template(path.read_text(encoding="utf-8"))


def _architecture_lines(arch: ArchitectureInfo) -> list[str]:
    lines = [f"* Keras model: `{arch.model_name}`"]
    if arch.family is not None:
        lines.append(f"* Family: {_family_title(arch.family)}; attention: "
                     f"{arch.attention or 'none'}")
    if arch.alpha is not None:
        lines.append(f"* Width multiplier alpha: {arch.alpha:g}")
    lines.append(f"* Coordinate Attention blocks: {arch.num_attention_blocks}")
    lines.append(f"* Parameters in this export: {arch.num_params:,}")
    if arch.bn_momentum:
        momentum = ", ".join(f"{m:g}" for m in arch.bn_momentum)
        lines.append(f"* BatchNormalization momentum (Keras convention): {momentum}")
    return lines


def _output_text(feature: bool, output_key: str, output_size: int, weights: WeightsInfo) -> str:
    if feature:
        return (
            f"`{output_key}`: float32 `[batch_size, {output_size}]`, the output of the "
            "global-average-pool layer (`avg_pool`), i.e. the input of the classifier. No "
            "dropout is included."
        )
    text = (
        f"`{output_key}`: float32 `[batch_size, {output_size}]`, unnormalised class scores "
        "(logits; apply `tf.nn.softmax` for probabilities). When the Keras model ended in a "
        "softmax, the exported function returns its input, the pre-softmax logits."
    )
    if output_size == 1000 and weights.dataset:
        text += (
            " Index i is ILSVRC-2012 class i (synsets sorted), the order of "
            "`keras.applications` `decode_predictions`; there is no background class."
        )
    return text


def _size_text(height: int | None, width: int | None, weights: WeightsInfo) -> str:
    if height is not None and width is not None:
        return f"height and width fixed to {height}x{width} pixels"
    text = "any height and width of at least 32 pixels"
    if weights.input_size:
        text += f" (the weights were trained at {weights.input_size}x{weights.input_size})"
    return text


def _preprocessing_text(preprocessing: str | None) -> str:
    if preprocessing == "imagenet":
        return (
            "The model normalises its input itself: it computes `(x - mean) / std` with the "
            "ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), the same result "
            "as `keras_coordatt.applications.preprocess_input(255 * x)`. Do not normalise again."
        )
    return "No normalisation is applied inside: the network receives the [0, 1] values as is."


def _weights_lines(weights: WeightsInfo) -> list[str]:
    if weights.random:
        return ["* Weights: random initialisation; no accuracy to report."]
    if weights.unknown:
        return [
            "* Weights: not stated by the exporter (pass `weights=` to `export_hub`, e.g. the "
            "registry preset the model was built with); accuracy unknown."
        ]
    lines = [f"* Weights: `{weights.name}`"]
    if weights.source:
        lines.append(f"* Source: {weights.source}")
    if weights.pin:
        lines.append(f"* Content pin: {weights.pin}")
    if weights.dataset:
        lines.append(f"* Training data: {weights.dataset}")
    if weights.input_size:
        size = weights.input_size
        lines.append(f"* Training / evaluation resolution: {size}x{size}")
    lines.append(
        f"* ImageNet top-1: {_percent(weights.top1)}; top-5: {_percent(weights.top5)} "
        "(as reported by the weights' authors; not re-measured for this export)"
    )
    if weights.notes:
        lines.append(f"* Notes: {weights.notes}")
    return lines


def _fine_tuning_lines(freeze_batch_norm: bool) -> list[str]:
    if freeze_batch_norm:
        return [
            "* This export was made with `freeze_batch_norm=True`: every BatchNormalization "
            "layer runs in inference mode (moving statistics, no updates) even with "
            "`training=True`, and its gamma / beta are not in `trainable_variables`. Dropout "
            "(classification exports) still follows `training`."
        ]
    return [
        "* `training=True` normalises with the statistics of the current batch and updates "
        "every BatchNormalization layer's moving mean / variance in place "
        "(`moving = momentum * moving + (1 - momentum) * batch`), as a side effect of each "
        "call; `training=False` uses the moving statistics and changes nothing.",
        "* `hub.KerasLayer(..., trainable=False)` (the default) always calls with "
        "`training=False`: the layer is frozen, statistics included, also inside `fit`. "
        "With `trainable=True` the layer passes Keras' training flag: `fit` updates the "
        "weights and the BatchNorm statistics, `evaluate` / `predict` do not.",
        "* Small batches give noisy batch statistics: fine-tune with batches of 32 or more, "
        "or export with `freeze_batch_norm=True` to keep the ImageNet statistics.",
    ]


def _weights_license(weights: WeightsInfo) -> str:
    if weights.pretrained:
        return weights.license or "unknown"
    return CODE_LICENSE if weights.random else "unknown"


def _licence_lines(weights: WeightsInfo) -> list[str]:
    if weights.pretrained:
        lines = [f"* Weights: {weights.license or 'unknown'}"]
        if weights.license_source:
            lines.append(f"  ({weights.license_source})")
    elif weights.random:
        lines = ["* Weights: none (random initialisation)."]
    else:
        lines = ["* Weights: unknown (source not stated at export)."]
    lines.append(f"* Code that built and exported the model (keras-coordatt): {CODE_LICENSE}")
    if weights.dataset:
        lines.append(
            "* ImageNet images are for non-commercial research and education use; check "
            "whether that affects your use of weights trained on them."
        )
    return lines


def render_model_card(
    *,
    kind: str,
    architecture: ArchitectureInfo,
    weights: WeightsInfo,
    input_shape: tuple,
    output_size: int,
    output_key: str,
    preprocessing: str | None,
    freeze_batch_norm: bool,
    versions: dict[str, str] | None = None,
    description: str | None = None,
) -> str:
    """The Markdown model card of one export (see the module docstring for the layout)."""
    _, height, width, channels = input_shape
    feature = kind == "feature_vector"
    arch = architecture
    family_tag = (arch.family or "custom").replace("_", "-")
    if arch.attention:
        family_tag += f"-{arch.attention}"
    what = "Feature vectors of images" if feature else "Image classification (logits)"
    dynamic = height is None or width is None
    environment = ""
    if versions:
        environment = "\n## Export environment\n\n" + "\n".join(
            f"* {package} {version}" for package, version in versions.items()
        )
    fields = {
        "slug": arch.model_name.replace(" ", "_"),
        "kind": kind,
        "kind_repr": repr(kind),
        "summary": description or (
            f"{what} with {arch.title}, exported by keras-coordatt as a reusable TF2 SavedModel."
        ),
        "task": "image-feature-vector" if feature else "image-classification",
        "family_tag": family_tag,
        "dataset_tag": "<!-- dataset: imagenet-ilsvrc-2012-cls -->\n" if weights.dataset else "",
        "license_tag": _license_tag(_weights_license(weights)),
        "title": arch.title,
        "random_warning": (
            "\n**The weights are randomly initialised** (exported with `weights=None`): use this "
            "export to test a pipeline, not for predictions.\n" if weights.random else ""
        ),
        "architecture": "\n".join(_architecture_lines(arch)),
        "height": _dim(height),
        "width": _dim(width),
        "channels": channels,
        "size_text": _size_text(height, width, weights),
        "preprocessing_text": _preprocessing_text(preprocessing),
        "output_text": _output_text(feature, output_key, output_size, weights),
        "output_key": output_key,
        "usage_shape": "(224, 224, 3)" if dynamic else f"({_dim(height)}, {_dim(width)}, 3)",
        "usage_head": "    tf_keras.layers.Dense(num_classes),\n" if feature else "",
        "weights_section": "\n".join(_weights_lines(weights)),
        "fine_tuning": "\n".join(_fine_tuning_lines(freeze_batch_norm)),
        "licence_section": "\n".join(_licence_lines(weights)),
        "bibtex": "\n\n".join(
            [CA_BIBTEX] + ([_FAMILY_BIBTEX[arch.family]] if arch.family in _FAMILY_BIBTEX else [])
        ),
        "environment": environment,
    }
    return _template().substitute(fields).rstrip("\n") + "\n"


__all__ = [
    "CA_BIBTEX",
    "CODE_LICENSE",
    "MODEL_CARD_FILENAME",
    "ArchitectureInfo",
    "ModelCardInfo",
    "WeightsInfo",
    "apply_card_info",
    "parse_builder_name",
    "render_model_card",
    "resolve_weights_info",
    "spec_of",
]
