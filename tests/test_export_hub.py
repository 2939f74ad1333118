"""TF-Hub export (keras_coordatt.export.hub): the reusable SavedModel interface, parity with the
Keras model on real images (tf.saved_model.load, keras.layers.TFSMLayer, hub.KerasLayer),
fine-tuning, BatchNorm behaviour, model card, CLI, README snippet and bad input.

Models: MobileNetV2CA / MobileNeXtCA at alpha 0.35, random weights whose BatchNorm statistics are
calibrated on real CIFAR-10 images (so activations have realistic magnitudes), 96x96 ImageNet
images for parity.
"""

from __future__ import annotations

import csv
import re
import shlex
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras  # the [hub] extra is part of [dev]: a missing one fails
from PIL import Image

from keras_coordatt import CoordAttention, applications
from keras_coordatt import cli as cli_module
from keras_coordatt.applications import ModelSpec
from keras_coordatt.export import hub as hub_export
from keras_coordatt.export.hub import export_hub
from keras_coordatt.export.model_card import (
    MODEL_CARD_FILENAME,
    ArchitectureInfo,
    ModelCardInfo,
    parse_builder_name,
    render_model_card,
    resolve_weights_info,
)
from keras_coordatt.training import build_for_fit

from helpers import DATA_DIR, calibrate_batchnorm, cifar_files

pytestmark = pytest.mark.hub

hub = hub_export.import_tensorflow_hub()

REPO = Path(__file__).resolve().parents[1]
DATA = DATA_DIR
SIZE = 96  # parity images
TRAIN_SIZE = 64  # fine-tuning images
ATOL = 1e-5
CIFAR_CLASSES = ("airplane", "cat", "frog", "ship")


# ------------------------------------------------------------------------------------------
# data and helpers


def _load_image(path: Path, size: int) -> np.ndarray:
    """RGB in [0, 1]: shorter side resized to ``size`` (bicubic), then centre crop."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        w, h = image.size
        scale = size / min(w, h)
        image = image.resize(
            (max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC
        )
        w, h = image.size
        left, top = (w - size) // 2, (h - size) // 2
        image = image.crop((left, top, left + size, top + size))
        return np.asarray(image, dtype=np.float32) / 255.0


@pytest.fixture(scope="module")
def imagenet_images() -> np.ndarray:
    with open(DATA / "imagenet_small" / "labels.csv", newline="") as handle:
        files = [row["file"] for row in csv.DictReader(handle)]
    assert len(files) == 8
    return np.stack([_load_image(DATA / "imagenet_small" / f, SIZE) for f in files])


@pytest.fixture(scope="module")
def cifar_batch() -> tuple[np.ndarray, np.ndarray]:
    """8 real CIFAR-10 test images (2 per class of 4 classes), upscaled to 64, and labels."""
    images, labels = [], []
    for path, label in cifar_files(CIFAR_CLASSES, per_class=2):
        images.append(_load_image(path, TRAIN_SIZE))
        labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int32)


def _features(model, images: np.ndarray) -> np.ndarray:
    """Keras reference: ``avg_pool`` output on ``preprocess_input(255 * images)`` (eager)."""
    sub = keras.Model(model.inputs[0], model.get_layer("avg_pool").output)
    return np.asarray(sub(applications.preprocess_input(255.0 * images), training=False))


def _logits(model, images: np.ndarray) -> np.ndarray:
    """Keras reference logits: pooled features through ``predictions`` without its softmax."""
    dense = model.get_layer("predictions")
    kernel, bias = (np.asarray(w) for w in dense.get_weights())
    return _features(model, images).astype(np.float64) @ kernel + bias


def _variable(obj, path: str):
    matches = [v for v in obj.variables if v.name.split(":")[0] == path]
    assert len(matches) == 1, [v.name for v in obj.variables][:10]
    return matches[0]


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def _tiny_model(regularize: bool = False, name: str = "tiny_ca") -> keras.Model:
    """Conv-BN-ReLU6-CoordAttention-GAP-Dropout-Dense(softmax), dynamic input."""
    reg = keras.regularizers.L2(1e-3) if regularize else None
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", kernel_regularizer=reg)(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = CoordAttention(reduction=4, name="ca")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


# ------------------------------------------------------------------------------------------
# exported models shared by the tests


@pytest.fixture(scope="module")
def mbv2ca(cifar_batch):
    keras.utils.set_random_seed(1)
    model = applications.MobileNetV2CA(
        input_shape=(None, None, 3), alpha=0.35, weights=None, classes=10
    )
    calibrate_batchnorm(model, applications.preprocess_input(255.0 * cifar_batch[0]))
    return model


@pytest.fixture(scope="module")
def mnextca(cifar_batch):
    keras.utils.set_random_seed(2)
    model = applications.MobileNeXtCA(
        input_shape=(SIZE, SIZE, 3), alpha=0.35, weights=None, classes=10
    )
    images = keras.ops.image.resize(cifar_batch[0], (SIZE, SIZE)).numpy()
    calibrate_batchnorm(model, applications.preprocess_input(255.0 * images))
    return model


@pytest.fixture(scope="module")
def exports(tmp_path_factory, mbv2ca, mnextca):
    root = tmp_path_factory.mktemp("hub_exports")
    return {
        "mbv2ca_fv": export_hub(mbv2ca, root / "mbv2ca_fv", "feature_vector", weights=None),
        "mbv2ca_cls": export_hub(mbv2ca, root / "mbv2ca_cls", "classification", weights=None),
        "mnextca_fv": export_hub(mnextca, root / "mnextca_fv", weights=None),
    }


@pytest.fixture(scope="module")
def loaded(exports):
    """One ``tf.saved_model.load`` per export, shared by the tests that do not change it."""
    return {name: tf.saved_model.load(str(result.path)) for name, result in exports.items()}


CASES = [
    ("mbv2ca_fv", "mbv2ca", "feature_vector"),
    ("mbv2ca_cls", "mbv2ca", "classification"),
    ("mnextca_fv", "mnextca", "feature_vector"),
]


def _reference(request, model_name: str, kind: str, images: np.ndarray) -> np.ndarray:
    model = request.getfixturevalue(model_name)
    return _features(model, images) if kind == "feature_vector" else _logits(model, images)


# ------------------------------------------------------------------------------------------
# interface and parity


@pytest.fixture(scope="module", autouse=True)
def exact_graphs():
    """Runs this module's graphs without grappler's rewrites, so every entry point computes
    exactly what the eager Keras model computes (bit for bit on this machine). With grappler's
    default rewrites (fusions, reordering) they agree to float32 rounding only, which this
    random-weight network amplifies to ~2e-5 (a 1-ulp change of the input moves its features
    by ~1.6e-4): see test_default_graph_optimisations."""
    previous = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    yield
    tf.config.optimizer.set_experimental_options(
        {"disable_meta_optimizer": previous.get("disable_meta_optimizer", False)}
    )


@pytest.mark.parametrize("name,model_name,kind", CASES)
def test_interface_and_parity(
    request, exports, loaded, imagenet_images, name, model_name, kind
):
    """tf.saved_model.load, keras.layers.TFSMLayer and hub.KerasLayer all load the export, and
    every entry point returns the Keras model's output (preprocess_input on the Keras side)."""
    result = exports[name]
    reference = _reference(request, model_name, kind, imagenet_images)
    assert np.abs(reference).max() > 0.5, "calibration failed: outputs too small to compare"

    obj = loaded[name]
    assert callable(obj)
    assert len(obj.variables) == result.num_variables
    assert len(obj.trainable_variables) == result.num_trainable_variables
    assert {id(v) for v in obj.trainable_variables} <= {id(v) for v in obj.variables}
    moving = [v for v in obj.variables if "moving_" in v.name]
    assert moving and not any(v.trainable for v in moving)
    assert list(obj.regularization_losses) == []
    assert list(obj.signatures) == ["serving_default"]
    signature = obj.signatures["serving_default"]
    spec = signature.structured_input_signature[1]["inputs"]
    assert spec.dtype == tf.float32
    fixed = model_name == "mnextca"  # built with a fixed 96x96 input; mbv2ca is dynamic
    assert result.input_shape == ((None, SIZE, SIZE, 3) if fixed else (None, None, None, 3))
    assert spec.shape.as_list() == list(result.input_shape)
    assert list(signature.structured_outputs) == [result.output_key]
    assert result.output_size == (1280 if kind == "feature_vector" else 10)

    outputs = {
        "__call__": obj(imagenet_images),
        "__call__(training=False)": obj(imagenet_images, training=False),
        "serve": obj.serve(imagenet_images),
        "serving_default": signature(inputs=tf.constant(imagenet_images))[result.output_key],
        "TFSMLayer": keras.layers.TFSMLayer(str(result.path))(imagenet_images),
    }
    if hub is not None:  # the loaded object (test_hub_keras_layer_fine_tunes loads a path)
        model = tf_keras.Sequential([tf_keras.Input((SIZE, SIZE, 3)), hub.KerasLayer(obj)])
        outputs["hub.KerasLayer"] = model.predict(imagenet_images, batch_size=8, verbose=0)
    for entry, output in outputs.items():
        np.testing.assert_allclose(
            np.asarray(output), reference, rtol=0, atol=ATOL, err_msg=entry
        )
    if kind == "classification":  # pre-softmax logits of the softmax classifier
        model = request.getfixturevalue(model_name)
        probabilities = np.asarray(
            model(applications.preprocess_input(255.0 * imagenet_images))
        )
        np.testing.assert_allclose(
            tf.nn.softmax(outputs["__call__"]).numpy(), probabilities, atol=1e-6
        )
    if name == "mbv2ca_fv":
        trainable = keras.layers.TFSMLayer(
            str(result.path), call_training_endpoint="serve_training"
        )
        assert len(trainable.trainable_weights) == result.num_trainable_variables


class _RecordsTraces(keras.layers.Layer):
    """Identity that records the ``training`` flag of every Python call (in a traced function:
    every trace)."""

    def __init__(self, record, **kwargs):
        super().__init__(**kwargs)
        self.record = record  # a function (Keras would copy a list into a tracked one)

    def call(self, inputs, training=None):
        self.record(bool(training))
        return inputs


def test_export_traces_the_network_once_per_training_flag(tmp_path):
    """tf.function keys its traces by the save context: functions traced before
    tf.saved_model.save are traced again inside it unless traced in that context. The export
    traces the network twice in all (training False and True), not four times."""
    calls = []
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = _RecordsTraces(calls.append)(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    calls.clear()
    export_hub(model, tmp_path / "once", "classification", weights=None, model_card=False)
    assert sorted(calls) == [False, True]


def test_default_graph_optimisations(exports, mbv2ca, imagenet_images):
    """With grappler on (TensorFlow's default) the export differs from the eager Keras model
    by float32 rounding only."""
    reference = _features(mbv2ca, imagenet_images)
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False})
    try:
        obj = tf.saved_model.load(str(exports["mbv2ca_fv"].path))  # fresh functions
        for output in (obj(imagenet_images), obj.serve(imagenet_images)):
            error = np.abs(np.asarray(output) - reference).max()
            assert error <= 1e-4 * np.abs(reference).max(), error
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


# ------------------------------------------------------------------------------------------
# BatchNorm under training=True / False and fine-tuning


def test_batch_norm_training_flag(exports, mbv2ca, imagenet_images):
    """training=True: batch statistics, moving statistics updated in place with momentum 0.9;
    training=False: moving statistics, nothing changes."""
    obj = tf.saved_model.load(str(exports["mbv2ca_fv"].path))
    mean = _variable(obj, "stem_bn/moving_mean")
    variance = _variable(obj, "stem_bn/moving_variance")
    before = obj(imagenet_images, training=False).numpy()
    mean0, variance0 = mean.numpy().copy(), variance.numpy().copy()
    snapshot = [v.numpy().copy() for v in obj.variables]

    obj(imagenet_images, training=False)
    for variable, value in zip(obj.variables, snapshot, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)

    trained = obj(imagenet_images, training=True).numpy()
    assert np.abs(trained - before).max() > 1e-3  # batch statistics, not moving ones

    conv = keras.Model(mbv2ca.inputs[0], mbv2ca.get_layer("stem_conv").output)
    stem = np.asarray(conv(applications.preprocess_input(255.0 * imagenet_images)), np.float64)
    batch_mean, batch_variance = stem.mean(axis=(0, 1, 2)), stem.var(axis=(0, 1, 2))
    np.testing.assert_allclose(mean.numpy(), 0.9 * mean0 + 0.1 * batch_mean, atol=1e-5)
    np.testing.assert_allclose(
        variance.numpy(), 0.9 * variance0 + 0.1 * batch_variance, rtol=1e-4, atol=1e-5
    )
    # The Keras model is untouched; the update stays in the loaded object.
    assert np.abs(obj(imagenet_images, training=False).numpy() - before).max() > 1e-4
    np.testing.assert_array_equal(
        np.asarray(mbv2ca.get_layer("stem_bn").moving_mean), mean0
    )


def test_hub_keras_layer_fine_tunes(exports, cifar_batch):
    images, labels = cifar_batch
    tf_keras.utils.set_random_seed(0)
    layer = hub.KerasLayer(str(exports["mbv2ca_fv"].path), trainable=True)
    model = tf_keras.Sequential(
        [tf_keras.Input((TRAIN_SIZE, TRAIN_SIZE, 3)), layer, tf_keras.layers.Dense(4)]
    )
    assert len(layer.trainable_weights) == exports["mbv2ca_fv"].num_trainable_variables
    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate=1e-3),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    kernel = next(w for w in layer.trainable_weights if "block2_expand/kernel" in w.name)
    moving = next(w for w in layer.non_trainable_weights if "stem_bn/moving_mean" in w.name)
    kernel0, moving0 = kernel.numpy().copy(), moving.numpy().copy()

    build_for_fit(model, labels)  # one trace of the train step, not two
    history = model.fit(images, labels, batch_size=8, epochs=3, shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses  # measured: 1.40, 0.76, 0.46
    assert np.abs(kernel.numpy() - kernel0).max() > 0  # backbone weights were fine-tuned
    assert np.abs(moving.numpy() - moving0).max() > 0  # fit ran BN in training mode

    moving1 = moving.numpy().copy()
    model.predict(images, verbose=0)
    model.evaluate(images, labels, verbose=0)
    np.testing.assert_array_equal(moving.numpy(), moving1)  # inference changes nothing


def test_hub_keras_layer_frozen_by_default(loaded, cifar_batch):
    """trainable=False (default): the layer calls with training=False even when the model
    runs in training mode (as in fit): no batch statistics, no updates, no trainable weights."""
    images, _ = cifar_batch
    obj = loaded["mbv2ca_fv"]
    layer = hub.KerasLayer(obj)
    model = tf_keras.Sequential([tf_keras.Input((TRAIN_SIZE, TRAIN_SIZE, 3)), layer])
    assert layer.trainable_weights == [] and len(layer.weights) == len(obj.variables)
    snapshot = [w.numpy().copy() for w in layer.weights]
    trained = model(images, training=True).numpy()
    np.testing.assert_array_equal(trained, obj(images, training=False).numpy())
    for weight, value in zip(layer.weights, snapshot, strict=True):
        np.testing.assert_array_equal(weight.numpy(), value)


def test_freeze_batch_norm_and_regularization_losses(tmp_path, imagenet_images):
    keras.utils.set_random_seed(3)
    model = _tiny_model(regularize=True)
    calibrate_batchnorm(model, applications.preprocess_input(255.0 * imagenet_images))
    free = export_hub(model, tmp_path / "free", "feature_vector")
    frozen = export_hub(model, tmp_path / "frozen", "feature_vector", freeze_batch_norm=True)
    assert model.get_layer("bn").trainable and model.get_layer("ca").bn1.trainable  # restored
    # gamma / beta of both BN layers (the model's and CoordAttention's) are no longer trainable
    assert frozen.num_trainable_variables == free.num_trainable_variables - 4

    obj = tf.saved_model.load(str(frozen.path))
    snapshot = [v.numpy().copy() for v in obj.variables]
    np.testing.assert_allclose(
        obj(imagenet_images, training=True).numpy(),
        obj(imagenet_images, training=False).numpy(),
        atol=1e-6,
    )
    for variable, value in zip(obj.variables, snapshot, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)

    (loss,) = obj.regularization_losses
    kernel = model.layers[1].kernel
    np.testing.assert_allclose(loss().numpy(), 1e-3 * np.sum(np.square(kernel)), rtol=1e-5)
    layer = hub.KerasLayer(str(free.path), trainable=True)
    tf_keras.Sequential([tf_keras.Input((32, 32, 3)), layer])
    assert len(layer.losses) == 1


# ------------------------------------------------------------------------------------------
# model card


def test_model_card_written(exports):
    card = exports["mbv2ca_fv"].model_card
    assert card is not None and card.name == MODEL_CARD_FILENAME and card.is_file()
    text = card.read_text(encoding="utf-8")
    assert text.startswith("# Module keras-coordatt/mobilenet_v2_ca_0.35/feature_vector/1")
    for expected in (
        "<!-- task: image-feature-vector -->",
        "<!-- fine-tunable: true -->",
        "<!-- format: saved_model_2 -->",
        "## Overview",
        "## Architecture",
        "## Inputs and outputs",
        "`[batch_size, None, None, 3]`",
        "values in **[0, 1]**",
        "`feature_vector`: float32 `[batch_size, 1280]`",
        "randomly initialised",
        "## Fine-tuning",
        "moving mean / variance",
        "## Licence",
        "Coordinate Attention for Efficient Mobile Network Design",
        "author    = {Hou, Qibin and Zhou, Daquan and Feng, Jiashi}",
        "CVPR",
    ):
        assert expected in text, expected
    cls_text = exports["mbv2ca_cls"].model_card.read_text(encoding="utf-8")
    assert "<!-- task: image-classification -->" in cls_text
    assert "`logits`: float32 `[batch_size, 10]`" in cls_text
    fixed = exports["mnextca_fv"].model_card.read_text(encoding="utf-8")
    assert f"`[batch_size, {SIZE}, {SIZE}, 3]`" in fixed and "zhou2020rethinking" in fixed


def test_model_card_from_registry_preset():
    info = resolve_weights_info("mobilenetv2_ca_100_imagenet")
    assert info.top1 == 74.3 and info.license == "MIT"
    spec = ModelSpec("mobilenet_v2", "ca", 1.0, 32, (224, 224, 3), True, None, 1000)
    same = resolve_weights_info("imagenet", input_size=224, spec=spec)
    assert same == info
    # Without a spec nothing is guessed from the name.
    assert resolve_weights_info("imagenet", model_name="mobilenet_v2_ca_1.00").name == "imagenet"
    text = render_model_card(
        kind="classification",
        architecture=ArchitectureInfo("mobilenet_v2_ca_1.00", "mobilenet_v2", "ca", 1.0),
        weights=info,
        input_shape=(None, 224, 224, 3),
        output_size=1000,
        output_key="logits",
        preprocessing="imagenet",
        freeze_batch_norm=False,
    )
    for expected in (
        "* Weights: `mobilenetv2_ca_100_imagenet`",
        "houqb/CoordAttention",
        "git blob 07b6640600b7d767acfaebcf5ddb801b675073df",
        "ImageNet top-1: 74.3 %",
        "<!-- license: mit -->",
        "<!-- dataset: imagenet-ilsvrc-2012-cls -->",
        "`[batch_size, 224, 224, 3]`",
        "ILSVRC-2012 class i",
    ):
        assert expected in text, expected


def test_model_card_explicit_metadata(tmp_path):
    details = dict(
        weights_source="https://example.org/my_weights.weights.h5", top1=61.5, top5=83.25,
        license="CC-BY-4.0", description="My fine-tuned classifier.",
    )
    result = export_hub(
        _tiny_model(), tmp_path / "custom", "classification", card=ModelCardInfo(**details)
    )
    text = result.model_card.read_text(encoding="utf-8")
    for expected in (
        "My fine-tuned classifier.",
        "https://example.org/my_weights.weights.h5",
        "ImageNet top-1: 61.5 %; top-5: 83.25 %",
        "* Weights: CC-BY-4.0",
        "* Code that built and exported the model (keras-coordatt): MIT",
        "<!-- license: custom -->",
        "`logits`: float32 `[batch_size, 3]`",
    ):
        assert expected in text, expected
    assert "Apache" not in text
    # The old keywords still work, with a DeprecationWarning, and give the same card.
    with pytest.warns(DeprecationWarning, match="card=ModelCardInfo"):
        old = export_hub(_tiny_model(), tmp_path / "old", "classification", **details)
    assert _without_environment(old.model_card) == _without_environment(result.model_card)
    with pytest.raises(ValueError, match="not both"):
        export_hub(_tiny_model(), tmp_path / "both", card=ModelCardInfo(), weights=None)
    with pytest.raises(TypeError, match="top_1"):
        export_hub(_tiny_model(), tmp_path / "typo", top_1=70.0)
    unstated = export_hub(_tiny_model(), tmp_path / "unstated", model_card=True)
    assert "not stated by the exporter" in unstated.model_card.read_text(encoding="utf-8")
    none = export_hub(_tiny_model(), tmp_path / "no_card", model_card=False)
    assert none.model_card is None and not (none.path / MODEL_CARD_FILENAME).exists()


def _without_environment(path) -> str:
    return path.read_text(encoding="utf-8").split("## Export environment")[0]


def test_model_card_reads_the_model_spec_not_the_name(tmp_path):
    """A user's name= does not hide what the network is, also after a .keras round trip."""
    model = applications.MobileNeXtCA(
        input_shape=(SIZE, SIZE, 3), alpha=0.35, weights=None, classes=5, name="my_net"
    )
    model.save(tmp_path / "my_net.keras")
    # The reloaded model is the harder case (the spec must survive the round trip); the built
    # one carries the same spec object, so one export (a SavedModel each: ~13 s) covers both.
    reloaded = keras.saving.load_model(tmp_path / "my_net.keras", safe_mode=True)
    assert applications.model_spec(reloaded) == applications.model_spec(model) is not None
    result = export_hub(reloaded, tmp_path / "reloaded", weights=None)
    text = result.model_card.read_text(encoding="utf-8")
    assert text.startswith("# Module keras-coordatt/my_net/feature_vector/1")
    for expected in (
        "<!-- network-architecture: mobilenext-ca -->",
        "MobileNeXt + Coordinate Attention (alpha 0.35)",
        "* Family: MobileNeXt; attention: ca",
        "* Width multiplier alpha: 0.35",
        "zhou2020rethinking",
        "<!-- license: mit -->",
    ):
        assert expected in text, expected
    # A model that is not from the builders has no spec: the card says only what it knows.
    text = export_hub(_tiny_model(name="mobilenet_v2_ca_1.00"), tmp_path / "plain",
                      weights=None).model_card.read_text(encoding="utf-8")
    assert "<!-- network-architecture: custom -->" in text and "* Family:" not in text


def test_parse_builder_name_is_deprecated():
    with pytest.warns(DeprecationWarning, match="model_spec"):
        assert parse_builder_name("mobilenet_v2_ca_1.00") == (None, None, None)


# ------------------------------------------------------------------------------------------
# bad input: clear ValueError, nothing half-written


def test_unknown_kind(tmp_path, mbv2ca):
    with pytest.raises(ValueError, match="Unknown kind='embedding'.*feature_vector"):
        export_hub(mbv2ca, tmp_path / "out", kind="embedding")
    with pytest.raises(ValueError, match="Unknown preprocessing"):
        export_hub(mbv2ca, tmp_path / "out", preprocessing="caffe")
    assert list(tmp_path.iterdir()) == []


def test_feature_vector_needs_pooled_layer(tmp_path):
    model = applications.MobileNetV2CA(alpha=0.35, weights=None, include_top=False)
    target = tmp_path / "sub" / "out"
    with pytest.raises(ValueError, match="pooled-feature layer.*pooling='avg'"):
        export_hub(model, target, "feature_vector")
    with pytest.raises(ValueError, match="include_top=True"):
        export_hub(model, target, "classification")
    assert list(tmp_path.iterdir()) == []  # not even the parent directory


def test_classification_needs_logits(tmp_path):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(inputs)
    outputs = keras.layers.Dense(4, activation="relu", name="predictions")(x)
    with pytest.raises(ValueError, match="activation 'relu'"):
        export_hub(keras.Model(inputs, outputs), tmp_path / "out", "classification")
    assert list(tmp_path.iterdir()) == []


def test_existing_directory_and_overwrite(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    model = _tiny_model()
    with pytest.raises(ValueError, match="not empty; pass overwrite=True"):
        export_hub(model, target)
    with pytest.raises(ValueError, match="Refusing to overwrite"):
        export_hub(model, target, overwrite=True)  # not a previous export
    assert [p.name for p in target.iterdir()] == ["keep.txt"]

    (target / "keep.txt").unlink()  # an empty directory is fine without overwrite
    first = export_hub(model, target, "feature_vector")
    with pytest.raises(ValueError, match="overwrite=True"):
        export_hub(model, target, "classification")
    second = export_hub(model, target, "classification", overwrite=True)
    assert (first.output_key, second.output_key) == ("feature_vector", "logits")
    obj = tf.saved_model.load(str(target))
    assert list(obj.signatures["serving_default"].structured_outputs) == ["logits"]
    assert _leftovers(tmp_path, "out") == []


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    model = _tiny_model()
    target = tmp_path / "out"
    export_hub(model, target, "feature_vector")
    before = sorted(p.name for p in target.rglob("*"))

    def broken(**kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hub_export, "render_model_card", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_hub(model, target, "classification", overwrite=True)
    with pytest.raises(RuntimeError, match="disk full"):
        export_hub(model, tmp_path / "new" / "deeper")
    assert sorted(p.name for p in target.rglob("*")) == before  # old export intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp dirs, no parents
    obj = tf.saved_model.load(str(target))
    assert list(obj.signatures["serving_default"].structured_outputs) == ["feature_vector"]


def test_missing_extras_name_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_hub", None)
    with pytest.raises(ImportError, match=re.escape("pip install 'keras-coordatt[hub]'")):
        hub_export.import_tensorflow_hub()
    monkeypatch.setitem(sys.modules, "tf_keras", None)
    with pytest.raises(ImportError, match=r"tf_keras.*keras-coordatt\[hub\]"):
        hub_export.import_tensorflow_hub()
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(ImportError, match=r"keras-coordatt\[hub\]"):
        hub_export.import_tensorflow()


# ------------------------------------------------------------------------------------------
# CLI


def test_cli_help(capsys):
    assert cli_module.main(["export-hub", "--help"]) == 0
    out = capsys.readouterr().out
    for expected in (
        "feature_vector",
        "classification",
        "[0, 1]",
        "--weights",
        '"none"',
        "--input-size",
        "--overwrite",
        "OUT_DIR",
        "mobilenet_v2_ca",
    ):
        assert expected in out, expected


def test_cli_end_to_end(tmp_path, capsys, imagenet_images):
    out = tmp_path / "cli_export"
    args = [
        "export-hub", "--model", "mobilenet_v2_ca", "--alpha", "0.35", "--weights", "none",
        "--kind", "classification", "--classes", "7", "--input-size", "64", str(out),
    ]
    assert cli_module.main(args) == 0
    printed = capsys.readouterr().out
    assert "classification SavedModel" in printed and "random weights" in printed
    obj = tf.saved_model.load(str(out))
    spec = obj.signatures["serving_default"].structured_input_signature[1]["inputs"]
    assert spec.shape.as_list() == [None, 64, 64, 3]
    logits = obj(imagenet_images[:2, 16:80, 16:80]).numpy()
    assert logits.shape == (2, 7) and np.isfinite(logits).all()
    card = (out / MODEL_CARD_FILENAME).read_text(encoding="utf-8")
    assert "randomly initialised" in card and "`[batch_size, 64, 64, 3]`" in card

    assert cli_module.main(args) == 2  # exists: needs --overwrite
    err = capsys.readouterr().err
    assert "export-hub: error:" in err and "--overwrite" in err
    bad = ["export-hub", "--model", "mobilenet_v2_ca", "--weights", "no_such_preset",
           str(tmp_path / "x")]
    assert cli_module.main(bad) == 2
    assert "no_such_preset" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------
# README snippet


def _snippet_section() -> tuple[str, Path]:
    """The "## Use it from TF-Hub" section of README.md (it must have a Python block)."""
    heading = "## Use it from TF-Hub"
    path = REPO / "README.md"
    text = path.read_text(encoding="utf-8")
    assert heading in text, f"README.md has no {heading!r} section"
    section = re.split(r"\n## ", text.split(heading, 1)[1], maxsplit=1)[0]
    assert "```python" in section, f"the {heading!r} section of README.md has no Python block"
    return section, path


def test_readme_snippet_runs(tmp_path, monkeypatch):
    section, source = _snippet_section()
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)
    python = [code for lang, code in blocks if lang == "python"]
    shell = [code for lang, code in blocks if lang in ("bash", "sh", "shell")]
    assert python, f"no python block under the TF-Hub heading of {source}"

    # The shell command parses with the real CLI parser.
    parser = cli_module.build_parser()
    commands = [line for code in shell for line in code.splitlines()]
    commands = [line for line in commands if line.startswith("keras-coordatt export-hub")]
    assert commands
    for line in commands:
        args = parser.parse_args(shlex.split(line)[1:])
        assert args.kind in hub_export.KINDS

    # The Python block runs offline: random weights instead of the ImageNet download.
    # The Python block runs offline and faster: random weights instead of the ImageNet
    # download, and alpha 0.35 instead of 1.0.
    code = "\n".join(python)
    assert 'weights="imagenet"' in code
    code = code.replace('weights="imagenet"', "weights=None")
    builder = applications.MobileNetV2CA
    monkeypatch.setattr(
        applications, "MobileNetV2CA", lambda **kwargs: builder(**{**kwargs, "alpha": 0.35})
    )
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__snippet__"}
    exec(compile(code, str(source), "exec"), namespace)  # noqa: S102
    assert (tmp_path / "mbv2_ca_fv" / "saved_model.pb").is_file()
    assert tuple(namespace["features"].shape) == (8, 1280)
