"""Model cards (Markdown, TF-Hub / Kaggle Models layout) for the SavedModels of ``export_hub``.

The card follows the tfhub.dev model-page format: a ``# Module`` title, a one-line summary,
``<!-- key: value -->`` metadata lines (task, network-architecture, dataset, fine-tunable,
format, license), then Overview, Architecture, Inputs and outputs, Usage, Weights and accuracy,
Fine-tuning, Licence and Citation sections. The ``asset-path`` metadata line is left out: add it
when you publish the archive somewhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re

#: File name of the card inside an exported directory.
MODEL_CARD_FILENAME = "MODEL_CARD.md"

#: Licence of keras-coordatt's own code (what randomly initialised exports carry).
CODE_LICENSE = "Apache-2.0"

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

_FAMILY_TITLES = {"mobilenet_v2": "MobileNetV2", "mobilenext": "MobileNeXt"}
_ATTENTION_TITLES = {
    None: "",
    "ca": " + Coordinate Attention",
    "se": " + Squeeze-and-Excitation",
    "cbam": " + CBAM",
}
#: Default model names of the builders: ``{family}[_{attention}]_{alpha:.2f}``.
_BUILDER_NAME = re.compile(r"^(mobilenet_v2|mobilenext)(?:_(ca|se|cbam))?_(\d+\.\d+)$")


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
    """What the card says about the network (parsed from a builder model name when possible)."""

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
        text = _FAMILY_TITLES[self.family] + _ATTENTION_TITLES[self.attention]
        if self.alpha is not None:
            text += f" (alpha {self.alpha:g})"
        return text


def parse_builder_name(name: str) -> tuple[str | None, str | None, float | None]:
    """``(family, attention, alpha)`` from a builder's default model name, else Nones."""
    match = _BUILDER_NAME.match(name or "")
    if not match:
        return None, None, None
    return match.group(1), match.group(2), float(match.group(3))


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
) -> WeightsInfo:
    """Card metadata for a builder's ``weights=`` value.

    ``None`` (or ``"none"`` / ``"random"``) means random initialisation, ``"unknown"`` that the
    source was not stated; a registry preset name gives the registry's URL, pin, reported
    accuracy and licence; ``"imagenet"`` is resolved like the builders do (family,
    alpha and attention parsed from a builder's default ``model_name``); a local file is
    recorded by name and SHA-256.
    """
    if weights is None or (isinstance(weights, str) and weights.lower() in ("none", "random")):
        return WeightsInfo(name="random")
    if isinstance(weights, str) and weights.lower() in ("", "unknown"):
        return WeightsInfo(name="unknown")
    try:
        from keras_coordatt.weights import registry
    except ImportError:  # pragma: no cover - the registry ships with the package
        registry = None
    text = os.fspath(weights)
    if registry is not None and text in registry.PRESETS:
        return _preset_weights_info(registry.get_preset(text))
    if text == "imagenet":
        family, attention, alpha = parse_builder_name(model_name)
        preset = None
        if registry is not None and family is not None:
            preset = registry.find_imagenet_preset(family, alpha, attention, input_size)
        if preset is not None:
            return _preset_weights_info(preset)
        return WeightsInfo(
            name="imagenet",
            dataset="ImageNet (ILSVRC-2012)",
            notes="ImageNet weights; the registry preset could not be identified from the "
            f"model name {model_name!r}.",
        )
    if os.path.isfile(text):
        return WeightsInfo(
            name=os.path.basename(text),
            source=os.path.abspath(text),
            pin=f"sha256 {_file_sha256(text)}",
            notes="Local checkpoint file.",
        )
    return WeightsInfo(name=text, notes="Weights named by the exporter (not in the registry).")


def _license_tag(license_text: str) -> str:
    lowered = license_text.lower()
    if lowered.startswith("mit"):
        return "mit"
    if lowered.startswith("apache"):
        return "apache-2.0"
    return "custom"


def _percent(value: float | None) -> str:
    return "not reported" if value is None else f"{value:g} %"


def _dim(value: int | None) -> str:
    return "None" if value is None else str(value)


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
    slug = arch.model_name.replace(" ", "_")
    task = "image-feature-vector" if feature else "image-classification"
    family_tag = (arch.family or "custom").replace("_", "-")
    if arch.attention:
        family_tag += f"-{arch.attention}"
    if weights.pretrained:
        license_text = weights.license or "unknown"
    elif weights.random:
        license_text = CODE_LICENSE
    else:
        license_text = "unknown"
    what = "Feature vectors of images" if feature else "Image classification (logits)"
    summary = description or (
        f"{what} with {arch.title}, exported by keras-coordatt as a reusable TF2 SavedModel."
    )
    dynamic = height is None or width is None
    if not dynamic:
        size_text = f"height and width fixed to {height}x{width} pixels"
    else:
        size_text = "any height and width of at least 32 pixels"
        if weights.input_size:
            size_text += f" (the weights were trained at {weights.input_size}x{weights.input_size})"
    if feature:
        output_text = (
            f"`{output_key}`: float32 `[batch_size, {output_size}]`, the output of the "
            "global-average-pool layer (`avg_pool`), i.e. the input of the classifier. No "
            "dropout is included."
        )
    else:
        output_text = (
            f"`{output_key}`: float32 `[batch_size, {output_size}]`, unnormalised class scores "
            "(logits; apply `tf.nn.softmax` for probabilities). When the Keras model ended in a "
            "softmax, the exported function returns its input, the pre-softmax logits."
        )
        if output_size == 1000 and weights.dataset:
            output_text += (
                " Index i is ILSVRC-2012 class i (synsets sorted), the order of "
                "`keras.applications` `decode_predictions`; there is no background class."
            )
    pre_text = (
        "The model normalises its input itself: it computes `(x - mean) / std` with the "
        "ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), the same result as "
        "`keras_coordatt.applications.preprocess_input(255 * x)`. Do not normalise again."
        if preprocessing == "imagenet"
        else "No normalisation is applied inside: the network receives the [0, 1] values as is."
    )
    lines: list[str] = []
    add = lines.append
    add(f"# Module keras-coordatt/{slug}/{kind}/1")
    add("")
    add(summary)
    add("")
    add(f"<!-- task: {task} -->")
    add(f"<!-- network-architecture: {family_tag} -->")
    if weights.dataset:
        add("<!-- dataset: imagenet-ilsvrc-2012-cls -->")
    add("<!-- fine-tunable: true -->")
    add("<!-- format: saved_model_2 -->")
    add(f"<!-- license: {_license_tag(license_text)} -->")
    add("")
    add("## Overview")
    add("")
    add(
        f"{arch.title} from the Coordinate Attention paper (Hou, Zhou, Feng, CVPR 2021), built "
        "with the Keras 3 reference implementation `keras-coordatt` and exported with "
        "`keras_coordatt.export.export_hub(kind=" + repr(kind) + ")`."
    )
    if weights.random:
        add("")
        add(
            "**The weights are randomly initialised** (exported with `weights=None`): use this "
            "export to test a pipeline, not for predictions."
        )
    add("")
    add("## Architecture")
    add("")
    add(f"* Keras model: `{arch.model_name}`")
    if arch.family is not None:
        add(f"* Family: {_FAMILY_TITLES[arch.family]}; attention: {arch.attention or 'none'}")
    if arch.alpha is not None:
        add(f"* Width multiplier alpha: {arch.alpha:g}")
    add(f"* Coordinate Attention blocks: {arch.num_attention_blocks}")
    add(f"* Parameters in this export: {arch.num_params:,}")
    if arch.bn_momentum:
        momentum = ", ".join(f"{m:g}" for m in arch.bn_momentum)
        add(f"* BatchNormalization momentum (Keras convention): {momentum}")
    add("")
    add("## Inputs and outputs")
    add("")
    add(
        f"* Input: float32 RGB images `[batch_size, {_dim(height)}, {_dim(width)}, {channels}]`"
        f", values in **[0, 1]**; {size_text}."
    )
    add(f"* Preprocessing: {pre_text}")
    add(f"* Output: {output_text}")
    add(
        "* Entry points: `obj(images, training=False)` (the reusable SavedModel `__call__`; "
        "`training=True` for fine-tuning), `obj.serve(images)` and `obj.serve_training(images)` "
        "(for `keras.layers.TFSMLayer`), and the `serving_default` signature "
        f"(input `inputs`, output `{output_key}`)."
    )
    add(
        "* Attributes: `variables`, `trainable_variables` and `regularization_losses`, as the "
        "reusable SavedModel conventions ask."
    )
    add("")
    add("## Usage")
    add("")
    add("```python")
    add("import tensorflow as tf")
    add("import tensorflow_hub as hub  # with tf_keras installed")
    add("import tf_keras")
    add("")
    shape = f"({_dim(height)}, {_dim(width)}, 3)" if not dynamic else "(224, 224, 3)"
    add("model = tf_keras.Sequential([")
    add(f"    tf_keras.Input(shape={shape}),")
    add('    hub.KerasLayer("path/to/export", trainable=True),')
    if feature:
        add("    tf_keras.layers.Dense(num_classes),")
    add("])")
    add("")
    add("# Keras 3:")
    add("import keras")
    add('layer = keras.layers.TFSMLayer("path/to/export", call_training_endpoint="serve_training")')
    add("")
    add("# Plain TensorFlow:")
    add('obj = tf.saved_model.load("path/to/export")')
    add("outputs = obj(images, training=False)  # images: float32 in [0, 1]")
    add("```")
    add("")
    add("## Weights and accuracy")
    add("")
    if weights.pretrained:
        add(f"* Weights: `{weights.name}`")
        if weights.source:
            add(f"* Source: {weights.source}")
        if weights.pin:
            add(f"* Content pin: {weights.pin}")
        if weights.dataset:
            add(f"* Training data: {weights.dataset}")
        if weights.input_size:
            add(f"* Training / evaluation resolution: {weights.input_size}x{weights.input_size}")
        add(
            f"* ImageNet top-1: {_percent(weights.top1)}; top-5: {_percent(weights.top5)} "
            "(as reported by the weights' authors; not re-measured for this export)"
        )
        if weights.notes:
            add(f"* Notes: {weights.notes}")
    elif weights.random:
        add("* Weights: random initialisation; no accuracy to report.")
    else:
        add(
            "* Weights: not stated by the exporter (pass `weights=` to `export_hub`, e.g. the "
            "registry preset the model was built with); accuracy unknown."
        )
    add("")
    add("## Fine-tuning")
    add("")
    if freeze_batch_norm:
        add(
            "* This export was made with `freeze_batch_norm=True`: every BatchNormalization "
            "layer runs in inference mode (moving statistics, no updates) even with "
            "`training=True`, and its gamma / beta are not in `trainable_variables`. Dropout "
            "(classification exports) still follows `training`."
        )
    else:
        add(
            "* `training=True` normalises with the statistics of the current batch and updates "
            "every BatchNormalization layer's moving mean / variance in place "
            "(`moving = momentum * moving + (1 - momentum) * batch`), as a side effect of each "
            "call; `training=False` uses the moving statistics and changes nothing."
        )
        add(
            "* `hub.KerasLayer(..., trainable=False)` (the default) always calls with "
            "`training=False`: the layer is frozen, statistics included, also inside `fit`. "
            "With `trainable=True` the layer passes Keras' training flag: `fit` updates the "
            "weights and the BatchNorm statistics, `evaluate` / `predict` do not."
        )
        add(
            "* Small batches give noisy batch statistics: fine-tune with batches of 32 or more, "
            "or export with `freeze_batch_norm=True` to keep the ImageNet statistics."
        )
    add(
        "* Learning rate: start about 10x lower than for training from scratch (e.g. SGD 0.005 "
        "with momentum 0.9, or Adam 1e-4), and train the new head first with "
        "`trainable=False` when the new data set is small."
    )
    add(
        "* `regularization_losses` is empty unless the Keras model had kernel / bias "
        "regularizers: add weight decay in your optimizer if you want it."
    )
    add("")
    add("## Licence")
    add("")
    if weights.pretrained:
        add(f"* Weights: {weights.license or 'unknown'}")
        if weights.license_source:
            add(f"  ({weights.license_source})")
    elif weights.random:
        add("* Weights: none (random initialisation).")
    else:
        add("* Weights: unknown (source not stated at export).")
    add(f"* Code that built and exported the model (keras-coordatt): {CODE_LICENSE}")
    if weights.dataset:
        add(
            "* ImageNet images are for non-commercial research and education use; check "
            "whether that affects your use of weights trained on them."
        )
    add("")
    add("## Citation")
    add("")
    add("Coordinate Attention: Qibin Hou, Daquan Zhou, Jiashi Feng, \"Coordinate Attention for")
    add("Efficient Mobile Network Design\", CVPR 2021.")
    add("")
    add("```bibtex")
    add(CA_BIBTEX)
    if arch.family == "mobilenet_v2":
        add("")
        add(MOBILENET_V2_BIBTEX)
    elif arch.family == "mobilenext":
        add("")
        add(MOBILENEXT_BIBTEX)
    add("```")
    if versions:
        add("")
        add("## Export environment")
        add("")
        for package, version in versions.items():
            add(f"* {package} {version}")
    add("")
    return "\n".join(lines)


__all__ = [
    "CA_BIBTEX",
    "MODEL_CARD_FILENAME",
    "ArchitectureInfo",
    "WeightsInfo",
    "parse_builder_name",
    "render_model_card",
    "resolve_weights_info",
]
