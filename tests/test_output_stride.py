"""``output_stride`` 8 / 16 / 32 of the four builders, and the pyramid levels it leaves.

The oracle of the "a trous" network (``_blocks`` module docstring). Take a 3x3 conv of stride 2
with one pixel of zero padding on each side: ``y[i] = sum_k w[k] x[2i + k - 1]``. The same conv
at stride 1 (same rate 1, same padding) gives ``z[j] = sum_k w[k] x[j + k - 1]``, so
``y = z[::2]`` exactly, borders included (both read the same zero at index -1; the last output
of ``y`` reads at most index ``2i + 1``, inside or padded in both). A later stride-1 conv of
the strided network, ``u[i] = sum_k w[k] y[i + k - 1]`` with one zero a side, equals the
dilated conv ``v[j] = sum_k w[k] z[j + 2(k - 1)]`` (two zeros a side) at ``j = 2i``: it reads
``z[2(i + k - 1)] = y[i + k - 1]``, and where ``y`` is padded (index -1 or ``len(y)``) ``z`` is
padded too (index -2 or ``2 len(y) >= len(z)``). 1x1 convs, BatchNorm, ReLU6 and residual adds
act per pixel, so they commute with the subsampling; by induction the dilated network's output
taken every ``32 / output_stride`` pixels from the top-left one *is* the strided network's,
for odd and even sizes alike. It needs the DeepLab rule (the conv that loses its stride keeps
the previous rate): giving it the new rate, as torchvision's dilated MobileNetV3 does, reads
``x[2i + 2(k - 1)]`` instead and breaks the identity (checked below, so the oracle can tell
the two apart). It does not hold with attention (CA / SE / CBAM pool over the whole, denser
map) or with global pooling, so the oracle uses attention=None and pooling=None.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_coordatt.applications import (
    MobileNetV2,
    MobileNetV2CA,
    MobileNeXt,
    MobileNeXtCA,
    ModelSpec,
    _blocks,
    feature_extractor,
    feature_strides,
    model_spec,
)
from keras_coordatt.applications.features import feature_layers

from helpers import CHECKPOINTS_DIR, randomize_batchnorm

FAMILIES = {"mobilenet_v2": MobileNetV2, "mobilenext": MobileNeXt}
EXPECTED_STRIDES = {
    32: {"P1": 2, "P2": 4, "P3": 8, "P4": 16, "P5": 32},
    16: {"P1": 2, "P2": 4, "P3": 8, "P4": 16, "P5": 16},
    8: {"P1": 2, "P2": 4, "P3": 8, "P4": 8, "P5": 8},
}
# The pyramid layers of the strided networks (test_applications checks them at 32): they stay
# the same at every output stride.
LEVELS = {
    "mobilenet_v2": {"P1": "block1_project_bn", "P2": "block3_add", "P3": "block6_add",
                     "P4": "block13_add", "P5": "head_relu"},
    "mobilenext": {"P1": "stem_relu", "P2": "block2_dw2_bn", "P3": "block5_add",
                   "P4": "block12_add", "P5": "block20_dw2_bn"},
}


def run(model, x):
    out = model(x, training=False)
    if isinstance(out, dict):
        return {key: np.asarray(ops.convert_to_numpy(value)) for key, value in out.items()}
    return np.asarray(ops.convert_to_numpy(out))


def images(height, width, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, height, width, 3)).astype("float32")


def ceil_div(size, stride):
    return -(-size // stride)


def backbone_pair(family, output_stride):
    """(strided, dilated) backbones (no attention, no pooling), same non-trivial weights."""
    builder = FAMILIES[family]
    strided = builder(alpha=0.35, weights=None, include_top=False, input_shape=(None, None, 3))
    randomize_batchnorm(strided, seed=1)
    dilated = builder(alpha=0.35, weights=None, include_top=False, input_shape=(None, None, 3),
                      output_stride=output_stride)
    dilated.set_weights(strided.get_weights())
    return strided, dilated


def assert_a_trous(strided_out: dict, dilated_out: dict, strides: dict) -> None:
    """Every level of the dilated pyramid, taken every (nominal / true stride) pixels, is the
    strided pyramid's level."""
    for key, stride in strides.items():
        step = EXPECTED_STRIDES[32][key] // stride
        reference = strided_out[key]
        sampled = dilated_out[key][:, ::step, ::step]
        assert sampled.shape == reference.shape, (key, sampled.shape, reference.shape)
        scale = np.abs(reference).max()
        assert scale > 0.1 and np.std(reference) > 0.01, key  # not a dead map
        np.testing.assert_allclose(sampled, reference, rtol=0, atol=2e-5 * scale, err_msg=key)


# ----------------------------------------------------------------------------------------------
# (a) the oracle: dilated network subsampled == strided network (no attention, no pooling)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("output_stride", [16, 8])
def test_dilated_network_subsampled_is_the_strided_network(family, output_stride):
    strided, dilated = backbone_pair(family, output_stride)
    strides = feature_strides(dilated)
    assert strides == EXPECTED_STRIDES[output_stride]
    strided, dilated = feature_extractor(strided), feature_extractor(dilated)
    for height, width in ((67, 45), (64, 96), (32, 32)):  # odd, even, the smallest input
        x = images(height, width)
        strided_out, dilated_out = run(strided, x), run(dilated, x)
        assert_a_trous(strided_out, dilated_out, strides)
        last = dilated_out["P5"].shape[1:3]
        assert last == (ceil_div(height, output_stride), ceil_div(width, output_stride))


def test_oracle_rejects_the_other_dilation_convention(monkeypatch):
    """With the new rate already on the conv that loses its stride (torchvision's dilated
    MobileNetV3), the subsampled output is not the strided one: the oracle has teeth."""

    def new_rate_first(self, stride):
        if self._stride == self.output_stride:
            self._rate *= stride
            return 1, self._rate
        self._stride *= stride
        return stride, 1

    strided, _ = backbone_pair("mobilenet_v2", 16)
    monkeypatch.setattr(_blocks.Blocks, "_atrous", new_rate_first)
    other = MobileNetV2(alpha=0.35, weights=None, include_top=False, output_stride=16)
    other.set_weights(strided.get_weights())
    x = images(64, 64)
    reference, sampled = run(strided, x), run(other, x)[:, ::2, ::2]
    assert reference.shape == sampled.shape and np.abs(reference).max() > 0.1
    assert np.abs(sampled - reference).max() > 1e-2 * np.abs(reference).max()


# The DeepLab rule, written out per family. The 3x3 convs of stride 2 at output stride 32, then
# (layer, stride, dilation rate) of every 3x3 conv that differs from them (all others: as at
# 32, rate 1).
STRIDE_TWO = {
    "mobilenet_v2": {"stem_conv", "block2_dw", "block4_dw", "block7_dw", "block14_dw"},
    "mobilenext": {"stem_conv", "block1_dw2", "block3_dw2", "block6_dw2", "block13_dw2"},
}


def _rates(names, rate):
    return {name: (1, rate) for name in names}


def _mbv2_dw(first, last):
    return [f"block{i}_dw" for i in range(first, last + 1)]


def _mnxt_dw(first, last):
    names = []
    for i in range(first, last + 1):
        if i not in (3, 6, 9, 13, 17):  # cases B / C: no dw1
            names.append(f"block{i}_dw1")
        if i not in (9, 17):  # case B: no dw2
            names.append(f"block{i}_dw2")
    return names


CONVENTION = {
    ("mobilenet_v2", 16): {**_rates(["block14_dw"], 1), **_rates(_mbv2_dw(15, 17), 2)},
    ("mobilenet_v2", 8): {**_rates(["block7_dw"], 1), **_rates(_mbv2_dw(8, 14), 2),
                          **_rates(_mbv2_dw(15, 17), 4)},
    ("mobilenext", 16): {**_rates(["block13_dw2"], 1), **_rates(_mnxt_dw(14, 20), 2)},
    ("mobilenext", 8): {**_rates(["block6_dw2"], 1),
                        **_rates(_mnxt_dw(7, 12) + ["block13_dw2"], 2),
                        **_rates(_mnxt_dw(14, 20), 4)},
}


def assert_deeplab_rule(model, family, output_stride):
    """Strides, rates and paddings of every 3x3 conv as :data:`CONVENTION` says."""
    changed = CONVENTION[family, output_stride]
    stride_two = STRIDE_TWO[family]
    seen = set()
    for layer in model.layers:
        if not isinstance(layer, keras.layers.DepthwiseConv2D | keras.layers.Conv2D):
            continue
        if layer.kernel_size[0] == 1:
            assert (layer.strides[0], layer.dilation_rate[0]) == (1, 1), layer.name
            continue
        seen.add(layer.name)
        expected = changed.get(layer.name, (2 if layer.name in stride_two else 1, 1))
        assert (layer.strides[0], layer.dilation_rate[0]) == expected, layer.name
        assert layer.padding == ("same" if expected[0] == 1 else "valid"), layer.name
    assert set(changed) <= seen and stride_two <= seen
    # the explicit ZeroPadding2D of the stride-2 convs, none for those that lost their stride
    pads = {layer.name for layer in model.layers if isinstance(layer, keras.layers.ZeroPadding2D)}
    kept = {name for name in stride_two if name not in changed}
    assert len(kept) == {16: 4, 8: 3}[output_stride]
    assert pads == {"stem_pad" if name == "stem_conv" else f"{name}_pad" for name in kept}


# ----------------------------------------------------------------------------------------------
# (b) strides and sizes of every builder x attention


BUILDS = [
    (MobileNetV2, None), (MobileNetV2, "se"), (MobileNetV2, "cbam"), (MobileNetV2CA, None),
    (MobileNeXt, None), (MobileNeXt, "se"), (MobileNeXt, "cbam"), (MobileNeXtCA, None),
]


@pytest.mark.parametrize("builder, attention", BUILDS,
                         ids=[f"{b.__name__}-{a}" for b, a in BUILDS])
@pytest.mark.parametrize("output_stride", [16, 8])
def test_feature_strides_sizes_and_rates(builder, attention, output_stride):
    kwargs = {} if attention is None else {"attention": attention}
    model = builder(alpha=0.35, weights=None, include_top=False, input_shape=(45, 33, 3),
                    output_stride=output_stride, **kwargs)
    family = model_spec(model).family
    assert_deeplab_rule(model, family, output_stride)
    strides = feature_strides(model)
    assert strides == EXPECTED_STRIDES[output_stride]
    assert feature_layers(model) == LEVELS[family]
    assert model_spec(model).output_stride == output_stride
    assert model.name.endswith(f"_0.35_os{output_stride}")
    outputs = feature_extractor(model).output  # shapes by Keras; run in the oracle tests
    for key, stride in strides.items():
        assert tuple(outputs[key].shape[1:3]) == (ceil_div(45, stride), ceil_div(33, stride))
    assert model.output_shape[1:3] == (ceil_div(45, output_stride), ceil_div(33, output_stride))


def test_output_stride_32_is_the_default_network():
    default = MobileNeXtCA(alpha=0.35, include_top=False, input_shape=(32, 32, 3))
    explicit = MobileNeXtCA(alpha=0.35, include_top=False, input_shape=(32, 32, 3),
                            output_stride=32)
    assert default.name == explicit.name == "mobilenext_ca_0.35"
    assert default.get_config()["layers"] == explicit.get_config()["layers"]
    assert model_spec(default) == model_spec(explicit) and model_spec(default).output_stride == 32
    assert feature_strides(default) == EXPECTED_STRIDES[32]


@pytest.mark.parametrize("bad", [4, 64, 16.0, "16", True, None])
@pytest.mark.parametrize("builder", [MobileNetV2, MobileNetV2CA, MobileNeXt, MobileNeXtCA])
def test_bad_output_stride_names_the_accepted_values(builder, bad):
    with pytest.raises(ValueError, match=r"`output_stride` must be one of \(8, 16, 32\)"):
        builder(alpha=0.35, weights=None, include_top=False, output_stride=bad)


def test_output_stride_with_top_pools_the_denser_map():
    """include_top is allowed below 32: same weights, the classifier pools the denser map."""
    model = MobileNetV2(alpha=0.35, weights=None, input_shape=(64, 64, 3), classes=3,
                        output_stride=16)
    assert model.output_shape == (None, 3)
    assert model.get_layer("head_relu").output.shape[1:3] == (4, 4)


# ----------------------------------------------------------------------------------------------
# (c) the spec survives save / load; feature_strides read from the layers


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # keras' saver
def test_output_stride_survives_save_load(tmp_path):
    model = MobileNetV2CA(alpha=0.35, weights=None, include_top=False, output_stride=16)
    path = tmp_path / "os16.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert model_spec(loaded) == model_spec(model) == ModelSpec(
        family="mobilenet_v2", attention="ca", alpha=0.35, reduction=32,
        input_shape=(None, None, 3), include_top=False, pooling=None, classes=1000,
        output_stride=16,
    )
    assert loaded.name == "mobilenet_v2_ca_0.35_os16"
    assert feature_strides(loaded) == EXPECTED_STRIDES[16]
    assert feature_layers(loaded) == LEVELS["mobilenet_v2"]
    x = images(40, 56, batch=1)
    np.testing.assert_array_equal(run(loaded, x), run(model, x))
    # a clone has no spec; the levels still come from its strides and dilation rates
    clone = keras.models.clone_model(model)
    assert model_spec(clone) is None and feature_strides(clone) == EXPECTED_STRIDES[16]


def test_spec_config_without_output_stride_reads_as_32():
    spec = ModelSpec("mobilenext", "ca", 0.5, 32, (None, None, 3), False, None, 1000, 8)
    config = spec.to_config()
    assert config["output_stride"] == 8 and ModelSpec.from_config(config) == spec
    del config["output_stride"]  # a spec saved before output_stride existed
    assert ModelSpec.from_config(config).output_stride == 32
    with pytest.raises(ValueError, match="output_stride"):
        ModelSpec("mobilenext", "ca", 0.5, 32, (None, None, 3), False, None, 1000, 4)


# ----------------------------------------------------------------------------------------------
# pretrained weights load unchanged (dilation has no parameters)


@pytest.mark.parametrize(
    "family, checkpoint, output_stride",
    [("mobilenet_v2", "dli14_mobilenetv2_w0.35_legacy.pth", 16),
     ("mobilenext", "yitu_mobilenext_i2rnetv3_w0.5_timm_legacy.pth.tar", 8)],
)
def test_pretrained_weights_load_below_32(family, checkpoint, output_stride, tmp_path):
    """The same checkpoint (PyTorch file, then a Keras ``.weights.h5`` saved from the strided
    network) gives the dilated network the very same weights."""
    builder, alpha = FAMILIES[family], (0.35 if family == "mobilenet_v2" else 0.5)
    path = str(CHECKPOINTS_DIR / checkpoint)
    strided = builder(alpha=alpha, include_top=False, weights=path, input_shape=(None, None, 3))
    keras_file = str(tmp_path / "backbone.weights.h5")
    strided.save_weights(keras_file)
    dilated = {}
    for source in (path, keras_file):
        dilated[source] = builder(alpha=alpha, include_top=False, weights=source,
                                  output_stride=output_stride, input_shape=(None, None, 3))
        for ours, reference in zip(dilated[source].weights, strided.weights, strict=True):
            assert ours.path == reference.path
            np.testing.assert_array_equal(ops.convert_to_numpy(ours),
                                          ops.convert_to_numpy(reference))
    # and the pretrained network is still the strided one, subsampled
    x = images(64, 64, batch=1)
    model = dilated[keras_file]
    assert_a_trous(run(feature_extractor(strided), x), run(feature_extractor(model), x),
                   feature_strides(model))


# ----------------------------------------------------------------------------------------------
# (d) the real input size


@pytest.mark.parametrize(
    "builder, output_stride, sizes",
    [(MobileNetV2CA, 16, (112, 56, 28, 14, 14)), (MobileNeXtCA, 8, (112, 56, 28, 28, 28))],
)
def test_224_input(builder, output_stride, sizes):
    model = builder(alpha=0.35, weights=None, include_top=False, input_shape=(224, 224, 3),
                    output_stride=output_stride)
    outputs = run(feature_extractor(model), images(224, 224, batch=1))
    assert [outputs[f"P{k}"].shape[1:3] for k in range(1, 6)] == [(s, s) for s in sizes]
    assert all(np.isfinite(value).all() for value in outputs.values())
    assert model.output_shape == (None, sizes[-1], sizes[-1], 1280)
