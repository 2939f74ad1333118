"""keras-hub interop: a package backbone as a ``keras_hub.models.FeaturePyramidBackbone``.

Oracles: the package's own ``feature_extractor`` (equal values, true strides), keras-hub's task
models built on the adapter (DeepLabV3 / RetinaNet) trained on real Penn-Fudan images with
their masks and boxes (``tests/data/pennfudan_small``), and ``.keras`` save / load.

The training steps run eagerly: tracing the whole training step as a graph costs about 70 s on
two shared CPU cores (the backbone alone, with or without keras-hub), an eager step a few
seconds; the computation is the same.
"""

from __future__ import annotations

import json
import math

import keras
import keras_hub
import numpy as np
import pytest

from keras_coordatt.applications import (
    MobileNetV2,
    MobileNeXt,
    ModelSpec,
    feature_extractor,
    feature_strides,
    model_spec,
    preprocess_input,
)
from keras_coordatt.interop.keras_hub import (
    KERAS_HUB_EXTRA_HINT,
    CoordAttBackbone,
    as_keras_hub_backbone,
    keras_hub_levels,
)

from helpers import DATA_DIR, run_python

PENNFUDAN_DIR = DATA_DIR / "pennfudan_small"
to_numpy = keras.ops.convert_to_numpy


def load_pennfudan() -> tuple[np.ndarray, np.ndarray, dict[str, list[list[float]]]]:
    """4 real Penn-Fudan images (4, 128, 128, 3) float32 in [0, 255], their person masks
    (4, 128, 128, 1) int32 in {0, 1} and boxes ``{name: [[y0, x0, y1, x1], ...]}`` (pixels)."""
    import tensorflow as tf

    boxes = json.loads((PENNFUDAN_DIR / "boxes.json").read_text())
    images, masks = [], []
    for name in sorted(boxes):
        images.append(tf.io.decode_jpeg(tf.io.read_file(str(PENNFUDAN_DIR / f"{name}.jpg"))))
        masks.append(tf.io.decode_png(tf.io.read_file(str(PENNFUDAN_DIR / f"{name}_mask.png"))))
    return (np.stack(images).astype("float32"), np.stack(masks).astype("int32"),
            {name: boxes[name] for name in sorted(boxes)})


def fit_losses(model: keras.Model, x, y, steps: int) -> list[float]:
    """The loss of each of ``steps`` training steps on the batch ``(x, y)``."""
    losses: list[float] = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: losses.append(float(logs["loss"]))
    )
    model.fit(x, y, batch_size=len(x), epochs=steps, shuffle=False, verbose=0,
              callbacks=[record])
    return losses


@pytest.mark.parametrize(
    "builder, attention", [(MobileNetV2, "ca"), (MobileNetV2, "se"), (MobileNeXt, "cbam"),
                           (MobileNeXt, None)],
)
def test_pyramid_outputs_are_the_feature_extractor_maps(builder, attention):
    model = builder(include_top=False, weights=None, alpha=0.35, input_shape=(None, None, 3),
                    attention=attention)
    encoder = as_keras_hub_backbone(model)
    assert isinstance(encoder, keras_hub.models.FeaturePyramidBackbone)
    assert encoder.image_shape == (None, None, 3)
    assert list(encoder.pyramid_outputs) == ["P1", "P2", "P3", "P4", "P5"]
    assert encoder.pyramid_strides == feature_strides(model) == {
        "P1": 2, "P2": 4, "P3": 8, "P4": 16, "P5": 32}
    # Weights are shared, not copied.
    assert {id(w) for w in encoder.weights} == {id(w) for w in model.weights}

    images, _, _ = load_pennfudan()
    crops = preprocess_input(images[:2, 5:101, 17:129])  # a real 96 x 112 crop
    got = keras.Model(encoder.inputs, encoder.pyramid_outputs)(crops)
    want = feature_extractor(model)(crops)
    for key, stride in encoder.pyramid_strides.items():
        shape = (2, math.ceil(96 / stride), math.ceil(112 / stride), want[key].shape[-1])
        assert tuple(got[key].shape) == shape, key
        np.testing.assert_array_equal(to_numpy(got[key]), to_numpy(want[key]))
    np.testing.assert_array_equal(to_numpy(encoder(crops)), to_numpy(want["P5"]))


def test_pyramid_keys_follow_the_true_strides():
    """keras-hub reads "Pn" as stride 2**n: with output stride 16 / 8 the deepest level at the
    last stride takes that key (the contract's feature_strides of a dilated network)."""
    os32 = {"P1": 2, "P2": 4, "P3": 8, "P4": 16, "P5": 32}
    os16 = {"P1": 2, "P2": 4, "P3": 8, "P4": 16, "P5": 16}
    os8 = {"P1": 2, "P2": 4, "P3": 8, "P4": 8, "P5": 8}
    assert keras_hub_levels(os32) == {key: key for key in os32}
    assert keras_hub_levels(os16) == {"P1": "P1", "P2": "P2", "P3": "P3", "P4": "P5"}
    assert keras_hub_levels(os8) == {"P1": "P1", "P2": "P2", "P3": "P5"}
    with pytest.raises(ValueError, match="powers of two"):
        keras_hub_levels({"P1": 2, "P2": 6})


def test_dilated_backbone_in_keras_hub_deeplab():
    """Output stride 16: the deepest level takes keras-hub's key P4 (stride 16), and keras-hub's
    DeepLabV3 on it, pooling P4 and upsampling by 16, segments at the input size."""
    model = MobileNetV2(include_top=False, weights=None, alpha=0.35, input_shape=(64, 64, 3),
                        attention="ca", output_stride=16)
    encoder = as_keras_hub_backbone(model)
    assert list(encoder.pyramid_outputs) == ["P1", "P2", "P3", "P4"]
    images, _, _ = load_pennfudan()
    crops = preprocess_input(images[:2, :64, :64])
    got = keras.Model(encoder.inputs, encoder.pyramid_outputs)(crops)
    deepest = feature_extractor(model)(crops)["P5"]
    np.testing.assert_array_equal(to_numpy(got["P4"]), to_numpy(deepest))
    deeplab = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, spatial_pyramid_pooling_key="P4", upsampling_size=16,
        dilation_rates=[6, 12, 18])
    segmenter = keras_hub.models.DeepLabV3ImageSegmenter(backbone=deeplab, num_classes=2)
    assert tuple(segmenter(crops).shape) == (2, 64, 64, 2)


def test_bad_backbones_are_refused():
    with pytest.raises(ValueError, match="carries no ModelSpec"):
        as_keras_hub_backbone(keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)]))
    with_top = ModelSpec(family="mobilenet_v2", attention=None, alpha=0.35, reduction=None,
                         input_shape=(224, 224, 3), include_top=True, pooling=None, classes=10)
    with pytest.raises(ValueError, match="include_top=False"):
        CoordAttBackbone(with_top)
    model = MobileNetV2(include_top=False, weights=None, alpha=0.35)
    with pytest.raises(ValueError, match="output_stride=16"):
        CoordAttBackbone(model_spec(model), output_stride=16, model=model)
    other = MobileNeXt(include_top=False, weights=None, alpha=0.35)
    with pytest.raises(ValueError, match="not with the given spec"):
        CoordAttBackbone(model_spec(other), model=model)


def test_from_config_rebuilds_the_package_network():
    model = MobileNeXt(include_top=False, weights=None, alpha=0.35, attention="se",
                       input_shape=(64, 96, 3))
    encoder = as_keras_hub_backbone(model, name="encoder")
    config = json.loads(json.dumps(encoder.get_config()))  # JSON-safe
    assert config["spec"] == model_spec(model).to_config() and config["output_stride"] == 32
    rebuilt = CoordAttBackbone.from_config(config)
    assert rebuilt.name == "encoder" and rebuilt.coordatt_spec == model_spec(model)
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in encoder.layers]
    rebuilt.set_weights(encoder.get_weights())
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64, 96, 3)).astype("float32")
    np.testing.assert_allclose(to_numpy(rebuilt(x)), to_numpy(encoder(x)), rtol=0, atol=0)


def test_deeplab_v3_plus_segmenter_trains_and_round_trips(tmp_path):
    """keras-hub's DeepLabV3+ (ASPP on P5, decoder on P2) on a CA backbone, person masks."""
    keras.utils.set_random_seed(0)
    images, masks, _ = load_pennfudan()
    x = preprocess_input(images[:, 40:104, 32:96])  # real 64 x 64 crops with people in them
    y = masks[:, 40:104, 32:96]
    assert 0.1 < y.mean() < 0.9
    encoder = as_keras_hub_backbone(
        MobileNetV2(include_top=False, weights=None, alpha=0.35, attention="ca")
    )
    backbone = keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder, spatial_pyramid_pooling_key="P5", upsampling_size=8,
        dilation_rates=[1, 2, 3], low_level_feature_key="P2", image_shape=(64, 64, 3),
    )
    segmenter = keras_hub.models.DeepLabV3ImageSegmenter(backbone, num_classes=2)
    segmenter.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=None,
        run_eagerly=True,
    )
    ca_kernel = encoder.get_layer("block5_ca").weights[0]
    before = to_numpy(ca_kernel).copy()
    losses = fit_losses(segmenter, x, y, steps=2)
    assert len(losses) == 2 and np.isfinite(losses).all(), losses
    assert not np.allclose(to_numpy(ca_kernel), before)  # gradients reach the CA layers
    want = to_numpy(segmenter(x, training=False))
    assert want.shape == (4, 64, 64, 2)

    path = tmp_path / "segmenter.keras"
    segmenter.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.backbone.image_encoder, CoordAttBackbone)
    assert loaded.backbone.image_encoder.coordatt_spec == encoder.coordatt_spec
    np.testing.assert_allclose(to_numpy(loaded(x, training=False)), want, rtol=0, atol=1e-5)


def test_retinanet_detector_trains_and_round_trips(tmp_path):
    """keras-hub's RetinaNet (FPN on P3-P5) on a MobileNeXt + CA backbone, pedestrian boxes."""
    keras.utils.set_random_seed(0)
    images, _, boxes = load_pennfudan()
    x = preprocess_input(images)
    most = max(len(found) for found in boxes.values())
    y = {"boxes": np.full((4, most, 4), -1.0, "float32"), "labels": np.full((4, most), -1, "int32")}
    for i, found in enumerate(boxes.values()):
        y["boxes"][i, :len(found)] = found
        y["labels"][i, :len(found)] = 0
    encoder = as_keras_hub_backbone(
        MobileNeXt(include_top=False, weights=None, alpha=0.35, attention="ca"))
    backbone = keras_hub.models.RetinaNetBackbone(
        image_encoder=encoder, min_level=3, max_level=5, use_p5=True, image_shape=(128, 128, 3),
    )
    detector = keras_hub.models.RetinaNetObjectDetector(
        backbone, num_classes=1, bounding_box_format="yxyx", pre_logits_num_conv_layers=1,
    )
    detector.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    losses = fit_losses(detector, x, y, steps=2)
    assert len(losses) == 2 and np.isfinite(losses).all(), losses

    path = tmp_path / "detector.keras"
    detector.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.backbone.image_encoder, CoordAttBackbone)
    got, want = loaded(x, training=False), detector(x, training=False)
    for key in ("bbox_regression", "cls_logits"):
        np.testing.assert_allclose(to_numpy(got[key]), to_numpy(want[key]), rtol=0, atol=1e-5)


def test_keras_hub_is_optional():
    """``import keras_coordatt`` (and ``keras_coordatt.interop``) never imports keras_hub; the
    adapter without keras-hub raises an ImportError naming the extra."""
    code = (
        "import json, sys; import keras_coordatt, keras_coordatt.applications, "
        "keras_coordatt.interop; loaded = 'keras_hub' in sys.modules; sys.modules['keras_hub'] = "
        "None\ntry:\n    import keras_coordatt.interop.keras_hub\n    message = None\n"
        "except ImportError as error:\n    message = str(error)\n"
        "print(json.dumps({'loaded': loaded, 'message': message}))"
    )
    result = run_python(code, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"loaded": False, "message": KERAS_HUB_EXTRA_HINT}
    assert "pip install 'keras-coordatt[keras-hub]'" in KERAS_HUB_EXTRA_HINT
