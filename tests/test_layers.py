"""CoordAttention, SqueezeExcite and CBAM: parity with the paper's code, NumPy oracles,
serialization, backends, XLA, mixed precision and input validation.

This module is re-run once per Keras backend in CI (KERAS_BACKEND=tensorflow|jax|torch).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_coordatt import CBAM, CoordAttention, SqueezeExcite

import numpy_reference as ref
from conftest import DATA_DIR

pytestmark = pytest.mark.backends

FIXTURES = DATA_DIR / "fixtures"
RNG = np.random.default_rng(0)


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def randomize(layer: keras.layers.Layer, seed: int = 0) -> None:
    """Gives every weight random values (BN variances positive), so no sub-layer is an identity."""
    rng = np.random.default_rng(seed)
    values = []
    for weight in layer.weights:
        shape = tuple(weight.shape)
        if weight.path.endswith("moving_variance"):
            values.append(rng.uniform(0.5, 2.0, shape))
        else:
            values.append(rng.normal(0.0, 0.5, shape))
    for weight, value in zip(layer.weights, values, strict=True):
        weight.assign(value.astype(weight.dtype))


def ca_weights(layer: CoordAttention) -> dict:
    w = {
        "conv1_kernel": to_numpy(layer.conv1.kernel), "conv1_bias": to_numpy(layer.conv1.bias),
        "bn_gamma": to_numpy(layer.bn1.gamma), "bn_beta": to_numpy(layer.bn1.beta),
        "bn_mean": to_numpy(layer.bn1.moving_mean), "bn_var": to_numpy(layer.bn1.moving_variance),
    }
    for key in layer.directions:
        conv = getattr(layer, f"conv_{key}")
        w[f"conv_{key}_kernel"], w[f"conv_{key}_bias"] = to_numpy(conv.kernel), to_numpy(conv.bias)
    return w


# --------------------------------------------------------------------------------------------
# Parity with houqb/CoordAttention's coordatt.py (fixture outputs of the original code)


def load_fixture_layer(data_format: str) -> CoordAttention:
    from keras_coordatt.weights.torch_checkpoint import load_torch_checkpoint

    state = load_torch_checkpoint(DATA_DIR / "checkpoints" / "coordatt_c64_r32.pth")
    layer = CoordAttention(reduction=32, data_format=data_format)
    shape = (None, 17, 23, 64) if data_format == "channels_last" else (None, 64, 17, 23)
    layer.build(shape)
    hwio = (2, 3, 1, 0)  # PyTorch OIHW -> Keras HWIO
    layer.conv1.set_weights([state["conv1.weight"].transpose(hwio), state["conv1.bias"]])
    layer.bn1.set_weights(
        [state[f"bn1.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
    )
    layer.conv_h.set_weights([state["conv_h.weight"].transpose(hwio), state["conv_h.bias"]])
    layer.conv_w.set_weights([state["conv_w.weight"].transpose(hwio), state["conv_w.bias"]])
    return layer


@pytest.mark.parametrize(
    "data_format,suffix", [("channels_last", "nhwc"), ("channels_first", "nchw")]
)
def test_coord_attention_matches_original_code(data_format, suffix):
    layer = load_fixture_layer(data_format)
    assert layer.mip == 8
    x = np.load(FIXTURES / f"coordatt_c64_r32_input_{suffix}.npy")
    expected = np.load(FIXTURES / f"coordatt_c64_r32_output_{suffix}.npy")
    got = to_numpy(layer(x, training=False))
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_fixture_parity_detects_swapped_gates():
    """The odd, non-square fixture must catch a layer that swaps the H and W gates."""
    layer = load_fixture_layer("channels_last")
    kh, kw = layer.conv_h.get_weights(), layer.conv_w.get_weights()
    layer.conv_h.set_weights(kw)
    layer.conv_w.set_weights(kh)
    x = np.load(FIXTURES / "coordatt_c64_r32_input_nhwc.npy")
    expected = np.load(FIXTURES / "coordatt_c64_r32_output_nhwc.npy")
    assert np.abs(to_numpy(layer(x)) - expected).max() > 1e-3


# --------------------------------------------------------------------------------------------
# NumPy oracles


@pytest.mark.parametrize("directions", ["hw", "h", "w"])
@pytest.mark.parametrize("shape", [(1, 7, 5, 48), (3, 12, 12, 96), (2, 1, 9, 16)])
def test_coord_attention_matches_numpy(directions, shape):
    x = RNG.normal(size=shape).astype("float32")
    layer = CoordAttention(directions=directions)
    layer.build(shape)
    randomize(layer)
    expected = ref.coord_attention(x, ca_weights(layer), directions=directions)
    np.testing.assert_allclose(to_numpy(layer(x)), expected, atol=2e-5, rtol=1e-5)


def test_coord_attention_training_uses_joint_batch_statistics():
    x = RNG.normal(size=(4, 9, 13, 32)).astype("float32")
    layer = CoordAttention()
    layer.build(x.shape)
    randomize(layer)
    expected = ref.coord_attention(x, ca_weights(layer), training=True)
    mean_before = to_numpy(layer.bn1.moving_mean)
    np.testing.assert_allclose(to_numpy(layer(x, training=True)), expected, atol=2e-5, rtol=1e-4)
    assert not np.allclose(to_numpy(layer.bn1.moving_mean), mean_before)


@pytest.mark.parametrize(
    "channels,reduction,min_channels,expected_mip",
    [(64, 32, 8, 8), (288, 32, 8, 9), (960, 32, 8, 30), (96, 4, 8, 24), (16, 32, 1, 1)],
)
def test_mip(channels, reduction, min_channels, expected_mip):
    layer = CoordAttention(reduction=reduction, min_channels=min_channels)
    layer.build((None, 5, 5, channels))
    assert layer.mip == expected_mip
    assert tuple(layer.conv1.kernel.shape) == (1, 1, channels, expected_mip)
    # docs/reference_networks.md §a.1
    params = 3 * channels * expected_mip + 3 * expected_mip + 2 * channels
    trainable = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
    assert trainable == params


def test_squeeze_excite_matches_numpy():
    x = RNG.normal(size=(2, 6, 10, 64)).astype("float32")
    layer = SqueezeExcite(reduction=16)
    layer.build(x.shape)
    randomize(layer)
    w = {
        "reduce_kernel": to_numpy(layer.conv_reduce.kernel),
        "reduce_bias": to_numpy(layer.conv_reduce.bias),
        "expand_kernel": to_numpy(layer.conv_expand.kernel),
        "expand_bias": to_numpy(layer.conv_expand.bias),
    }
    assert layer.hidden == 8
    np.testing.assert_allclose(to_numpy(layer(x)), ref.squeeze_excite(x, w), atol=2e-5, rtol=1e-5)


def test_cbam_matches_numpy():
    x = RNG.normal(size=(2, 9, 11, 48)).astype("float32")
    layer = CBAM(reduction=4)
    layer.build(x.shape)
    randomize(layer)
    w = {
        "reduce_kernel": to_numpy(layer.mlp_reduce.kernel),
        "reduce_bias": to_numpy(layer.mlp_reduce.bias),
        "expand_kernel": to_numpy(layer.mlp_expand.kernel),
        "expand_bias": to_numpy(layer.mlp_expand.bias),
        "spatial_kernel": to_numpy(layer.spatial_conv.kernel),
        "bn_gamma": to_numpy(layer.spatial_bn.gamma),
        "bn_beta": to_numpy(layer.spatial_bn.beta),
        "bn_mean": to_numpy(layer.spatial_bn.moving_mean),
        "bn_var": to_numpy(layer.spatial_bn.moving_variance),
    }
    assert layer.hidden == 12
    np.testing.assert_allclose(to_numpy(layer(x)), ref.cbam(x, w), atol=3e-5, rtol=1e-5)


@pytest.mark.parametrize("layer_cls", [CoordAttention, SqueezeExcite, CBAM])
def test_channels_first_equals_channels_last(layer_cls):
    x = RNG.normal(size=(2, 7, 10, 32)).astype("float32")
    last = layer_cls(data_format="channels_last")
    last.build(x.shape)
    randomize(last)
    first = layer_cls(data_format="channels_first")
    first.build((2, 32, 7, 10))
    first.set_weights(last.get_weights())
    got = to_numpy(first(np.transpose(x, (0, 3, 1, 2))))
    np.testing.assert_allclose(np.transpose(got, (0, 2, 3, 1)), to_numpy(last(x)), atol=2e-5)


# --------------------------------------------------------------------------------------------
# Models: any spatial size, serialization, XLA, mixed precision


def attention_model(channels: int = 16, spatial=(None, None)) -> keras.Model:
    inputs = keras.Input((*spatial, channels))
    x = keras.layers.Conv2D(channels, 3, padding="same", name="conv")(inputs)
    x = CoordAttention(reduction=4, name="ca")(x)
    x = SqueezeExcite(reduction=4, name="se")(x)
    x = CBAM(reduction=4, name="cbam")(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs)


def randomized_model(**kwargs) -> keras.Model:
    model = attention_model(**kwargs)
    for name in ("ca", "se", "cbam"):
        randomize(model.get_layer(name), seed=len(name))
    return model


@pytest.mark.parametrize("size", [(1, 1), (1, 8), (5, 3), (31, 17), (64, 64)])
def test_dynamic_spatial_sizes_and_batch_one(size):
    model = randomized_model()
    ca = model.get_layer("ca")
    x = RNG.normal(size=(1, *size, 16)).astype("float32")
    features = to_numpy(model.get_layer("conv")(x))
    expected = ref.coord_attention(features, ca_weights(ca))
    np.testing.assert_allclose(to_numpy(ca(features)), expected, atol=2e-5, rtol=1e-5)
    assert model(x).shape == (1, 16)


def test_keras_file_round_trip_safe_mode(tmp_path):
    model = randomized_model()
    x = RNG.normal(size=(2, 13, 9, 16)).astype("float32")
    path = tmp_path / "attention.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(to_numpy(restored(x)), to_numpy(model(x)))
    for name, cls in (("ca", CoordAttention), ("se", SqueezeExcite), ("cbam", CBAM)):
        layer = restored.get_layer(name)
        assert isinstance(layer, cls)
        assert layer.get_config() == model.get_layer(name).get_config()


def test_weights_h5_round_trip(tmp_path):
    model = randomized_model()
    x = RNG.normal(size=(2, 8, 8, 16)).astype("float32")
    path = tmp_path / "attention.weights.h5"
    model.save_weights(path)
    fresh = attention_model()
    assert not np.allclose(to_numpy(fresh(x)), to_numpy(model(x)))
    fresh.load_weights(path)
    np.testing.assert_array_equal(to_numpy(fresh(x)), to_numpy(model(x)))


@pytest.mark.parametrize("layer_cls", [CoordAttention, SqueezeExcite, CBAM])
def test_config_round_trip(layer_cls):
    layer = layer_cls(reduction=7, min_channels=3, data_format="channels_first", name="attn")
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    assert keras.saving.get_registered_name(layer_cls) == f"keras_coordatt>{layer_cls.__name__}"
    assert config["reduction"] == 7 and config["min_channels"] == 3
    assert config["data_format"] == "channels_first"


def test_jit_compiled_inference_and_training_step():
    model = randomized_model(spatial=(12, 10))
    x = RNG.normal(size=(4, 12, 10, 16)).astype("float32")
    y = RNG.normal(size=(4, 16)).astype("float32")
    eager = to_numpy(model(x, training=False))
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    np.testing.assert_allclose(model.predict_on_batch(x), eager, atol=1e-5)
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)


@pytest.mark.parametrize("policy,atol", [("mixed_float16", 2e-2), ("mixed_bfloat16", 8e-2)])
@pytest.mark.parametrize("layer_cls", [CoordAttention, SqueezeExcite, CBAM])
def test_mixed_precision(layer_cls, policy, atol):
    """Output is in the compute dtype, finite, and within ``atol`` of the float32 layer."""
    x = RNG.normal(size=(2, 9, 7, 32)).astype("float32")
    reference = layer_cls()
    reference.build(x.shape)
    randomize(reference)
    mixed = layer_cls(dtype=policy)
    mixed.build(x.shape)
    mixed.set_weights(reference.get_weights())
    out = mixed(x)
    assert keras.backend.standardize_dtype(out.dtype) == policy.split("_")[1]
    out = to_numpy(out).astype("float32")
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, to_numpy(reference(x)), atol=atol, rtol=0)


# --------------------------------------------------------------------------------------------
# Bad input: one test per documented error


@pytest.mark.parametrize("layer_cls", [CoordAttention, SqueezeExcite, CBAM])
def test_rejects_non_4d_input(layer_cls):
    with pytest.raises(ValueError, match="expects a 4-D input"):
        layer_cls()(np.zeros((2, 8, 16), "float32"))


@pytest.mark.parametrize("layer_cls", [CoordAttention, SqueezeExcite, CBAM])
def test_rejects_unknown_channels(layer_cls):
    with pytest.raises(ValueError, match="known channel dimension"):
        layer_cls()(keras.Input((8, 8, None)))


@pytest.mark.parametrize("layer_cls", [CoordAttention, SqueezeExcite, CBAM])
@pytest.mark.parametrize("arg", ["reduction", "min_channels"])
@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_rejects_bad_reduction_and_min_channels(layer_cls, arg, value):
    with pytest.raises(ValueError, match=f"`{arg}` must be an integer >= 1"):
        layer_cls(**{arg: value})


def test_rejects_unknown_directions():
    with pytest.raises(ValueError, match="Unknown directions 'xy'"):
        CoordAttention(directions="xy")


@pytest.mark.parametrize("layer_cls", [CoordAttention, SqueezeExcite, CBAM])
def test_rejects_unknown_data_format(layer_cls):
    with pytest.raises(ValueError, match="Unknown data_format 'NHWC'"):
        layer_cls(data_format="NHWC")


def test_cbam_rejects_even_spatial_kernel():
    with pytest.raises(ValueError, match="must be odd"):
        CBAM(spatial_kernel_size=4)
