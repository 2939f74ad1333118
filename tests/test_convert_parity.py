"""Upstream PyTorch checkpoints -> Keras models, through the real reader
(``load_torch_checkpoint``) and the real converter (``load_torch_state_dict``): outputs equal the
original PyTorch code's (fixtures in tests/data/fixtures, 1e-4 absolute), and every mismatch of
family, attention, width or classes is refused with the keys named."""

from __future__ import annotations

import ast

import keras
import numpy as np
import pytest

from keras_coordatt.applications import MobileNetV2, MobileNetV2CA, MobileNeXt, MobileNeXtCA
from keras_coordatt.weights.convert import load_torch_state_dict, torch_key_map
from keras_coordatt.weights.torch_checkpoint import load_torch_checkpoint

from conftest import DATA_DIR

FIXTURES = DATA_DIR / "fixtures"
CHECKPOINTS = DATA_DIR / "checkpoints"
ATOL = 1e-4

CASES = {
    # fixture name: (checkpoint file, builder, alpha)
    "mbv2_ca_w0.5": ("mbv2_ca_w0.5.pth", MobileNetV2CA, 0.5),
    "dli14_mobilenetv2_w0.35": ("dli14_mobilenetv2_w0.35_legacy.pth", MobileNetV2, 0.35),
    "yitu_mobilenext_i2rnetv3_w0.5": (
        "yitu_mobilenext_i2rnetv3_w0.5_timm_legacy.pth.tar", MobileNeXt, 0.5
    ),
}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.load(FIXTURES / "input_img_2x224x224x3_nhwc.npy")


_STATE_DICTS: dict[str, dict] = {}


def state_dict(case: str) -> dict[str, np.ndarray]:
    """The checkpoint of ``case`` read once per session by the safe reader (copied per use)."""
    if case not in _STATE_DICTS:
        _STATE_DICTS[case] = load_torch_checkpoint(CHECKPOINTS / CASES[case][0])
    return dict(_STATE_DICTS[case])


def numpy_weights(model: keras.Model) -> list[np.ndarray]:
    return [np.asarray(v.numpy()) for v in model.weights]


# ----------------------------------------------------------------------------------------------
# parity


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_pytorch(case, images):
    _, builder, alpha = CASES[case]
    model = builder(alpha=alpha, weights=None, classifier_activation=None)
    report = load_torch_state_dict(model, state_dict(case))
    assert not report.missing and not report.unused and not report.skipped
    logits = np.asarray(model.predict_on_batch(images))
    expected = np.load(FIXTURES / f"{case}_logits.npy")
    np.testing.assert_allclose(logits, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("case", sorted(CASES))
def test_pooled_features_match_pytorch(case, images):
    _, builder, alpha = CASES[case]
    model = builder(alpha=alpha, weights=None, include_top=False, pooling="avg",
                    input_shape=(224, 224, 3))
    report = load_torch_state_dict(model, state_dict(case))
    assert report.skipped and all(k.startswith("classifier") for k in report.skipped)
    pooled = np.asarray(model.predict_on_batch(images))
    expected = np.load(FIXTURES / f"{case}_pooled.npy")
    np.testing.assert_allclose(pooled, expected, rtol=0, atol=ATOL)


def test_channels_first_parity(images):
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        model = MobileNetV2CA(alpha=0.5, weights=None, classifier_activation=None)
        assert model.input_shape == (None, 3, 224, 224)
        load_torch_state_dict(model, state_dict("mbv2_ca_w0.5"))
        logits = np.asarray(model.predict_on_batch(images.transpose(0, 3, 1, 2)))
    finally:
        keras.config.set_image_data_format(previous)
    np.testing.assert_allclose(logits, np.load(FIXTURES / "mbv2_ca_w0.5_logits.npy"), atol=ATOL)


# ----------------------------------------------------------------------------------------------
# the mapping covers every upstream key at width 1.0 (key lists with shapes, no weights)


def keys_file(name: str) -> dict[str, np.ndarray]:
    arrays = {}
    for line in (FIXTURES / name).read_text().splitlines():
        key, shape, dtype = line.split("\t")
        arrays[key] = np.zeros(ast.literal_eval(shape), dtype=dtype)
    return arrays


@pytest.mark.parametrize(
    "keys, builder",
    [
        ("mbv2_ca_w1.0_keys.txt", MobileNetV2CA),
        ("dli14_mobilenetv2_w1.0_keys.txt", MobileNetV2),
        ("yitu_mobilenext_i2rnetv3_w1.0_keys_only.txt", MobileNeXt),
    ],
)
def test_width_one_key_lists_map_exactly(keys, builder):
    arrays = keys_file(keys)
    model = builder(alpha=1.0, weights=None, input_shape=(32, 32, 3))
    report = load_torch_state_dict(model, arrays)
    assert report.loaded == len(model.weights)
    table = torch_key_map(model, arrays)
    expected = [(k, v.shape) for k, v in arrays.items() if not k.endswith("num_batches_tracked")]
    assert [(key, shape) for key, shape, _ in table] == expected  # same keys, same order


def test_key_map_is_readable():
    model = MobileNetV2CA(alpha=0.35, weights=None, input_shape=(32, 32, 3))
    keys = state_dict("mbv2_ca_w0.5").keys()
    table = {key: path for key, _, path in torch_key_map(model, keys)}
    assert table["features.0.0.weight"] == "stem_conv/kernel"
    assert table["features.2.conv.3.weight"] == "block2_dw/kernel"
    assert table["features.2.conv.6.conv1.weight"] == "block2_ca/conv1/kernel"
    assert table["features.2.conv.6.conv2.bias"] == "block2_ca/conv_h/bias"
    assert table["features.17.conv.8.running_var"] == "block17_project_bn/moving_variance"
    assert table["conv.0.weight"] == "head_conv/kernel"
    assert table["classifier.1.weight"] == "predictions/kernel"


# ----------------------------------------------------------------------------------------------
# naming variants


def test_coordatt_py_names_and_module_prefix_are_accepted():
    original = state_dict("mbv2_ca_w0.5")
    renamed = {
        "module." + k.replace(".conv2.", ".conv_h.").replace(".conv3.", ".conv_w."): v
        for k, v in original.items()
    }
    a = MobileNetV2CA(alpha=0.5, weights=None, input_shape=(32, 32, 3))
    b = MobileNetV2CA(alpha=0.5, weights=None, input_shape=(32, 32, 3))
    load_torch_state_dict(a, original)
    load_torch_state_dict(b, renamed)
    for x, y in zip(numpy_weights(a), numpy_weights(b), strict=True):
        np.testing.assert_array_equal(x, y)
    # the H gate really comes from conv2 (H first in the concatenation), transposed to HWIO
    kernel = a.get_layer("block2_ca").conv_h.kernel
    expected = original["features.2.conv.6.conv2.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(kernel.numpy(), expected)


def test_depthwise_and_dense_layouts():
    arrays = state_dict("dli14_mobilenetv2_w0.35")
    model = MobileNetV2(alpha=0.35, weights=None, input_shape=(32, 32, 3))
    load_torch_state_dict(model, arrays)
    dw = model.get_layer("block2_dw").kernel.numpy()
    np.testing.assert_array_equal(dw, arrays["features.2.conv.3.weight"].transpose(2, 3, 0, 1))
    dense = model.get_layer("predictions").kernel.numpy()
    np.testing.assert_array_equal(dense, arrays["classifier.weight"].T)
    bn = model.get_layer("stem_bn")
    np.testing.assert_array_equal(bn.moving_variance.numpy(), arrays["features.0.1.running_var"])


# ----------------------------------------------------------------------------------------------
# mismatches


def assert_untouched(model, before):
    for x, y in zip(numpy_weights(model), before, strict=True):
        np.testing.assert_array_equal(x, y)


def test_ca_checkpoint_into_plain_mobilenet_v2_is_refused():
    model = MobileNetV2(alpha=0.5, weights=None, input_shape=(32, 32, 3))
    before = numpy_weights(model)
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(model, state_dict("mbv2_ca_w0.5"))
    message = str(info.value)
    assert "unused keys" in message and "features.2.conv.6.conv1.weight" in message
    assert "shape mismatches" in message and "features.2.conv.7.weight" in message
    assert "missing keys" in message and "features.2.conv.6.weight" in message
    assert "attention='ca'" in message
    assert_untouched(model, before)


def test_plain_checkpoint_into_ca_model_is_refused():
    model = MobileNetV2CA(alpha=0.35, weights=None, input_shape=(32, 32, 3))
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(model, state_dict("dli14_mobilenetv2_w0.35"))
    message = str(info.value)
    assert "features.2.conv.6.conv1.weight" in message  # missing CA tensors
    assert "attention=None" in message


def test_wrong_width_is_refused():
    model = MobileNetV2CA(alpha=1.0, weights=None, input_shape=(32, 32, 3))
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(model, state_dict("mbv2_ca_w0.5"))
    message = str(info.value)
    assert "features.0.0.weight: checkpoint (16, 3, 3, 3), model expects (32, 3, 3, 3)" in message
    assert "alpha" in message


def test_wrong_family_is_refused():
    model = MobileNeXt(alpha=0.5, weights=None, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"features\.1\.conv\.\d"):
        load_torch_state_dict(model, state_dict("mbv2_ca_w0.5"))
    ca_model = MobileNeXtCA(alpha=0.5, weights=None, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="does not match"):
        load_torch_state_dict(ca_model, state_dict("yitu_mobilenext_i2rnetv3_w0.5"))


def test_classes_mismatch_is_refused():
    model = MobileNetV2CA(alpha=0.5, weights=None, classes=10, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="1000 classes but the model has 10"):
        load_torch_state_dict(model, state_dict("mbv2_ca_w0.5"))


def test_every_tensor_must_be_used_or_present():
    arrays = state_dict("yitu_mobilenext_i2rnetv3_w0.5")
    model = MobileNeXt(alpha=0.5, weights=None, input_shape=(32, 32, 3))
    extra = dict(arrays, **{"features.99.conv.0.weight": np.zeros((1,), "float32")})
    with pytest.raises(ValueError, match=r"unused keys.*\n\s+features\.99\.conv\.0\.weight"):
        load_torch_state_dict(model, extra)
    partial = dict(arrays)
    del partial["features.20.conv.9.running_mean"]
    with pytest.raises(ValueError, match=r"missing keys.*\n\s+features\.20\.conv\.9\.running_mean"):
        load_torch_state_dict(model, partial)
    # num_batches_tracked is optional; strict=False reports instead of raising
    no_counters = {k: v for k, v in arrays.items() if not k.endswith("num_batches_tracked")}
    assert load_torch_state_dict(model, no_counters).loaded == len(model.weights)
    report = load_torch_state_dict(model, partial, strict=False)
    assert report.missing == ["features.20.conv.9.running_mean"]
    report = load_torch_state_dict(model, extra, strict=False)
    assert report.unused == ["features.99.conv.0.weight"]


def test_shape_mismatch_raises_even_when_not_strict():
    arrays = state_dict("dli14_mobilenetv2_w0.35")
    arrays["features.1.conv.3.weight"] = np.zeros((8, 16, 3, 3), "float32")
    model = MobileNetV2(alpha=0.35, weights=None, input_shape=(32, 32, 3))
    message = r"features\.1\.conv\.3\.weight: checkpoint \(8, 16, 3, 3\)"
    with pytest.raises(ValueError, match=message):
        load_torch_state_dict(model, arrays, strict=False)
