"""The keras.applications-style builders: block plans, parameter / MAdds counts against the
PyTorch originals (docs/reference_networks.md), shapes at any input size, top options, layer
names, serialization, the spec a model carries, the feature pyramid, ImageNet utilities and
argument errors."""

from __future__ import annotations

import dataclasses
import inspect

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
    ModelWithSpec,
    count_madds,
    count_params,
    decode_predictions,
    feature_extractor,
    markdown_table,
    model_spec,
    preprocess_input,
    profile,
    profiling,
)
from keras_coordatt.applications.features import feature_layers
from keras_coordatt.layers import CBAM, CoordAttention, SqueezeExcite

from conftest import DATA_DIR

CHECKPOINT = DATA_DIR / "checkpoints" / "mbv2_ca_w0.5.pth"
ODD = (97, 131)  # odd, non-square: stride-2 rounding and swapped H/W fail loudly


def run(model, x):
    return np.asarray(ops.convert_to_numpy(model(x, training=False)))


def tiny_input(height=ODD[0], width=ODD[1], batch=1, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, height, width, 3)).astype("float32")


# ----------------------------------------------------------------------------------------------
# parameter counts: PyTorch's sum(p.numel() for p in parameters()) of the originals

# docs/reference_networks.md §b.2 (d-li14 MobileNetV2 and MBV2_CA, every upstream width).
MBV2_PARAMS = {
    0.1: (1_356_696, 1_378_920),
    0.25: (1_519_112, 1_566_920),
    0.35: (1_677_128, 1_750_970),
    0.5: (1_968_680, 2_095_568),
    0.75: (2_636_424, 2_891_631),
    1.0: (3_504_872, 3_950_648),
    1.4: (6_108_776, 6_958_700),
}
# Official i2rnetv3: 0.35 / 0.5 / 1.0 from docs/reference_networks.md §d; the others measured on
# the same PyTorch code (0.75 -> 2.77 M, 1.4 -> 6.13 M in docs/reference_networks.md §d.3).
MOBILENEXT_PARAMS = {
    0.1: 1_627_316,
    0.25: 1_764_336,
    0.35: 1_913_976,
    0.5: 2_152_304,
    0.75: 2_766_168,
    1.0: 3_535_416,
    1.4: 6_126_168,
}


@pytest.mark.parametrize("alpha", sorted(MBV2_PARAMS))
def test_mobilenet_v2_params_match_originals(alpha):
    plain, with_ca = MBV2_PARAMS[alpha]
    assert count_params(MobileNetV2(alpha=alpha, weights=None, input_shape=(32, 32, 3))) == plain
    assert count_params(
        MobileNetV2CA(alpha=alpha, weights=None, input_shape=(32, 32, 3))
    ) == with_ca


@pytest.mark.parametrize("alpha", sorted(MOBILENEXT_PARAMS))
def test_mobilenext_params_match_original(alpha):
    model = MobileNeXt(alpha=alpha, weights=None, input_shape=(32, 32, 3))
    assert count_params(model) == MOBILENEXT_PARAMS[alpha]


def test_count_params_excludes_only_bn_statistics():
    model = MobileNetV2(alpha=0.35, weights=None, input_shape=(32, 32, 3))
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert count_params(model) == trainable == 1_677_128
    assert model.count_params() > trainable  # Keras also counts the moving statistics


@pytest.mark.parametrize(
    "attention, expected",
    [("se", 3_890_136), ("cbam", 3_891_736)],  # paper: 3.89 M with r = 24
)
def test_mobilenet_v2_se_cbam_default_reduction_gives_paper_params(attention, expected):
    model = MobileNetV2(alpha=1.0, weights=None, attention=attention, input_shape=(32, 32, 3))
    assert count_params(model) == expected
    layer = model.get_layer(f"block2_{attention}")
    assert layer.reduction == 24


def test_mobilenext_ca_params_and_default_reduction():
    model = MobileNeXtCA(weights=None, input_shape=(32, 32, 3))
    assert count_params(model) == 4_120_369
    assert model.get_layer("block4_ca").reduction == 32


@pytest.mark.parametrize(
    "builder, alpha, params, madds",
    [
        (MobileNetV2CA, 1.0, 3_950_648, 306.67e6),
        (MobileNetV2, 1.0, 3_504_872, 300.77e6),
        (MobileNeXt, 1.0, 3_535_416, 311.34e6),
        (MobileNetV2CA, 0.5, 2_095_568, 99.00e6),
    ],
)
def test_profile_matches_measured_madds(builder, alpha, params, madds):
    stats = profile(builder(alpha=alpha, weights=None, input_shape=(224, 224, 3)))
    assert stats["params"] == params
    assert stats["madds"] == pytest.approx(madds, abs=0.01e6)


def test_profile_needs_a_fixed_size():
    model = MobileNetV2(alpha=0.35, weights=None, include_top=False)
    with pytest.raises(ValueError, match="fixed input size"):
        count_madds(model)


def test_markdown_table_from_rows():
    rows = [
        {"paper": "MobileNetV2 + CA", "model": "`MobileNetV2CA()`", "params": 3_950_648,
         "madds": 306_666_368},
    ]
    table = markdown_table(rows=rows)
    assert "| MobileNetV2 + CA | `MobileNetV2CA()` | 3.951 M | 306.7 M | 3.95 M | 310 M |" in table
    assert set(profiling.PAPER) >= {r[0] for r in profiling._variants()}


# ----------------------------------------------------------------------------------------------
# block plans and layer names


def test_mobilenet_v2_layer_names_follow_upstream_indices():
    model = MobileNetV2CA(alpha=0.35, weights=None, input_shape=(64, 64, 3))
    names = {layer.name for layer in model.layers}
    for name in ("stem_pad", "stem_conv", "stem_bn", "stem_relu", "block1_dw", "block1_dw_bn",
                 "block1_dw_relu", "block1_project", "block1_project_bn", "block2_expand",
                 "block2_expand_bn", "block2_expand_relu", "block2_dw_pad", "block2_dw",
                 "block2_dw_bn", "block2_dw_relu", "block2_ca", "block2_project",
                 "block2_project_bn", "block3_add", "block17_ca", "block17_project_bn",
                 "head_conv", "head_bn", "head_relu", "avg_pool", "dropout", "predictions"):
        assert name in names, name
    # No attention in the t = 1 block; stride-1 dw convs use 'same' (no pad layer).
    assert "block1_ca" not in names and "block3_dw_pad" not in names
    assert "block18_expand" not in names
    ca_blocks = [n for n in names if n.endswith("_ca")]
    assert len(ca_blocks) == 16
    assert model.get_layer("block2_dw").strides == (2, 2)
    assert model.get_layer("block2_dw").padding == "valid"
    assert model.get_layer("block3_dw").padding == "same"
    assert model.get_layer("stem_conv").padding == "valid"
    residual = sorted(int(n[5:-4]) for n in names if n.endswith("_add"))
    assert residual == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    assert model.get_layer("dropout").rate == 0.1


def test_layers_follow_original_conventions():
    model = MobileNeXtCA(alpha=0.5, weights=None, input_shape=(64, 64, 3))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.epsilon == 1e-5 and layer.momentum == 0.9, layer.name
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            assert not layer.use_bias, layer.name
        if isinstance(layer, keras.layers.ReLU):
            assert layer.max_value == 6.0, layer.name
    assert model.get_layer("dropout").rate == 0.2
    init = model.get_layer("predictions").kernel_initializer
    assert isinstance(init, keras.initializers.RandomNormal) and init.stddev == 0.01


def test_mobilenext_blocks_cases_and_attention_placement():
    model = MobileNeXtCA(alpha=1.0, weights=None, input_shape=(64, 64, 3))
    names = [layer.name for layer in model.layers]
    for i in (3, 6, 13):  # case C: no first dw, CA after the expanding 1x1 conv, stride-2 dw2
        assert f"block{i}_dw1" not in names and f"block{i}_dw2_pad" in names
        assert names.index(f"block{i}_ca") == names.index(f"block{i}_expand_relu") + 1
    for i in (9, 17):  # case B: no depthwise conv at all
        assert f"block{i}_dw1" not in names and f"block{i}_dw2" not in names
        assert names.index(f"block{i}_ca") == names.index(f"block{i}_expand_relu") + 1
    for i in (1, 2, 4, 20):  # cases A and D: CA right after dw1 + BN + ReLU6
        assert names.index(f"block{i}_ca") == names.index(f"block{i}_dw1_relu") + 1
    assert "block1_dw2_pad" in names  # case A: stride 2 on the last dw
    residual = sorted(int(n[5:-4]) for n in names if n.endswith("_add"))
    assert residual == [4, 5, 7, 8, 10, 11, 12, 14, 15, 16, 18, 19]
    assert not any(n.startswith("head_") for n in names)
    assert model.get_layer("block2_reduce").filters == 32
    assert model.get_layer("block20_reduce").filters == 208
    assert model.get_layer("block20_dw2").kernel.shape == (3, 3, 1280, 1)
    assert len([n for n in names if n.endswith("_ca")]) == 20


def test_block_plans_are_typed():
    from keras_coordatt.applications import mobilenet_v2, mobilenext

    v2 = mobilenet_v2.block_plan(1.0)
    assert v2.stem.filters == 32 and v2.head.in_channels == 320 and v2.head.filters == 1280
    assert [b.index for b in v2.blocks] == list(range(1, 18))
    first, second = v2.blocks[:2]
    assert (first.expansion, first.hidden, first.out_channels) == (1, 32, 16)
    assert (second.expansion, second.hidden, second.stride, second.residual) == (6, 96, 2, False)
    nx = mobilenext.block_plan(1.0)
    assert nx.stem.filters == 32 and nx.head is None and len(nx.blocks) == 20
    assert [b.case for b in nx.blocks[:3]] == ["A", "D", "C"]
    assert (nx.blocks[0].reduction, nx.blocks[1].reduction, nx.blocks[19].hidden) == (2, 6, 208)
    with pytest.raises(dataclasses.FrozenInstanceError):
        nx.blocks[0].stride = 1


def test_mobilenext_keeps_1280_below_alpha_one():
    for alpha, width in ((0.5, 1280), (1.4, 1792)):
        model = MobileNeXt(alpha=alpha, weights=None, include_top=False, input_shape=(32, 32, 3))
        assert model.output_shape[-1] == width


def test_mobilenet_v2_head_width_rule_and_divisor_four():
    small = MobileNetV2(alpha=0.1, weights=None, include_top=False, input_shape=(32, 32, 3))
    assert small.get_layer("stem_conv").filters == 4  # divisor 4 only at alpha == 0.1
    assert small.output_shape[-1] == 1280
    wide = MobileNetV2(alpha=1.4, weights=None, include_top=False, input_shape=(32, 32, 3))
    assert wide.output_shape[-1] == 1792


@pytest.mark.parametrize("attention", [None, "se", "cbam"])
def test_attention_types_in_mobilenext_and_mobilenet_v2(attention):
    layer_type = {None: None, "se": SqueezeExcite, "cbam": CBAM}[attention]
    for builder in (MobileNetV2, MobileNeXt):
        model = builder(alpha=0.35, weights=None, attention=attention, include_top=False,
                        input_shape=(None, None, 3))
        found = [layer for layer in model.layers
                 if isinstance(layer, (CoordAttention, SqueezeExcite, CBAM))]
        if attention is None:
            assert not found
        else:
            assert found and all(isinstance(layer, layer_type) for layer in found)
            assert all(layer.name.endswith(f"_{attention}") for layer in found)
        out = run(model, tiny_input(33, 47))
        assert out.shape[:3] == (1, 2, 2) and np.all(np.isfinite(out))


# ----------------------------------------------------------------------------------------------
# shapes, input sizes and top options


@pytest.mark.parametrize(
    "builder, alpha, channels",
    [
        (MobileNetV2CA, 0.35, 1280),
        (MobileNetV2, 0.5, 1280),
        (MobileNeXtCA, 0.35, 1280),
        (MobileNeXt, 0.75, 1280),
    ],
)
def test_dynamic_input_odd_non_square(builder, alpha, channels):
    model = builder(alpha=alpha, weights=None, include_top=False, input_shape=(None, None, 3))
    assert model.input_shape == (None, None, None, 3)
    out = run(model, tiny_input())
    assert out.shape == (1, 4, 5, channels)  # ceil(97 / 32), ceil(131 / 32)


def test_include_top_on_dynamic_input_and_default_shapes():
    model = MobileNetV2CA(alpha=0.35, weights=None, input_shape=(None, None, 3))
    probs = run(model, tiny_input(batch=2))
    assert probs.shape == (2, 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert MobileNeXtCA(alpha=0.35).input_shape == (None, 224, 224, 3)
    assert MobileNeXtCA(alpha=0.35, include_top=False).input_shape == (None, None, None, 3)


def test_pooling_classes_and_logits():
    x = tiny_input(64, 64, batch=2)
    avg = MobileNetV2(alpha=0.35, weights=None, include_top=False, pooling="avg",
                      input_shape=(64, 64, 3))
    assert avg.output_shape == (None, 1280) and avg.layers[-1].name == "avg_pool"
    mx = MobileNeXt(alpha=0.35, weights=None, include_top=False, pooling="max",
                    input_shape=(64, 64, 3))
    assert mx.output_shape == (None, 1280) and mx.layers[-1].name == "max_pool"
    logits_model = MobileNeXtCA(alpha=0.35, classes=7, classifier_activation=None,
                                input_shape=(64, 64, 3))
    logits = run(logits_model, x)
    assert logits.shape == (2, 7)
    assert logits_model.get_layer("predictions").activation is keras.activations.linear
    # pooling is ignored with include_top=True, as in keras.applications
    top = MobileNetV2(alpha=0.35, weights=None, pooling="max", classes=3, input_shape=(64, 64, 3))
    assert top.output_shape == (None, 3)


def test_input_tensor_and_name():
    tensor = keras.Input((48, 64, 3))
    model = MobileNetV2CA(alpha=0.35, weights=None, input_tensor=tensor, include_top=False,
                          name="backbone")
    assert model.name == "backbone" and model.input_shape == (None, 48, 64, 3)
    assert model.output_shape == (None, 2, 2, 1280)
    assert MobileNetV2(alpha=0.5, weights=None).name == "mobilenet_v2_0.50"
    assert MobileNeXtCA(alpha=1.0).name == "mobilenext_ca_1.00"
    # a compatible input_shape with unknown sizes is accepted
    ok = MobileNeXt(alpha=0.35, weights=None, input_tensor=keras.Input((48, 64, 3)),
                    input_shape=(None, None, 3), include_top=False)
    assert ok.input_shape == (None, 48, 64, 3)


def test_default_weights_follow_upstream_checkpoints():
    defaults = {
        builder: inspect.signature(builder).parameters["weights"].default
        for builder in (MobileNetV2, MobileNetV2CA, MobileNeXt, MobileNeXtCA)
    }
    assert defaults == {MobileNetV2: "imagenet", MobileNetV2CA: "imagenet",
                        MobileNeXt: "imagenet", MobileNeXtCA: None}
    for builder in defaults:
        params = list(inspect.signature(builder).parameters)
        assert params[:9] == ["input_shape", "alpha", "include_top", "weights", "input_tensor",
                              "pooling", "classes", "classifier_activation", "name"]


def test_local_checkpoint_through_weights_argument():
    from keras_coordatt.weights.convert import load_torch_state_dict
    from keras_coordatt.weights.torch_checkpoint import load_torch_checkpoint

    model = MobileNetV2CA(alpha=0.5, weights=str(CHECKPOINT), input_shape=(64, 64, 3))
    reference = MobileNetV2CA(alpha=0.5, weights=None, input_shape=(64, 64, 3))
    load_torch_state_dict(reference, load_torch_checkpoint(CHECKPOINT))
    for got, want in zip(model.weights, reference.weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


# ----------------------------------------------------------------------------------------------
# serialization


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # keras' saver
@pytest.mark.parametrize("builder", [MobileNetV2CA, MobileNeXtCA])
def test_keras_save_load_safe_mode(builder, tmp_path):
    model = builder(alpha=0.35, weights=None, input_shape=(48, 56, 3), classes=10)
    # Non-trivial BN statistics so a wrong restore would show.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(np.linspace(-0.1, 0.1, n).astype("float32"))
            layer.moving_variance.assign(np.linspace(0.5, 1.5, n).astype("float32"))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = tiny_input(48, 56, batch=2)
    np.testing.assert_array_equal(run(loaded, x), run(model, x))
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert model_spec(loaded) == model_spec(model) and model_spec(model) is not None


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # keras' saver
def test_model_spec_survives_save_load_with_custom_name(tmp_path):
    model = MobileNeXt(alpha=0.5, weights=None, include_top=False, pooling="max",
                       attention="se", name="my backbone")
    path = tmp_path / "backbone.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.name == "my backbone" and type(loaded) is ModelWithSpec
    assert model_spec(loaded) == ModelSpec(
        family="mobilenext", attention="se", alpha=0.5, reduction=24,
        input_shape=(None, None, 3), include_top=False, pooling="max", classes=1000,
    )
    # still a plain functional graph: a new model can be built on its tensors
    assert len(loaded.inputs) == 1 and loaded.get_layer("block20_dw2_bn") is not None


def test_model_with_spec_stays_a_functional_model():
    model = MobileNetV2(alpha=0.35, weights=None, attention="cbam", input_shape=(32, 40, 3),
                        classes=5)
    clone = keras.models.clone_model(model)
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    clone.set_weights(model.get_weights())
    x = tiny_input(32, 40)
    np.testing.assert_array_equal(run(clone, x), run(model, x))
    assert model_spec(clone) is None  # documented: Keras clones through (inputs, outputs, name)
    config = model.get_config()
    assert {"layers", "input_layers", "output_layers"} <= set(config)
    assert config["spec"] == model_spec(model).to_config()
    rebuilt = ModelWithSpec.from_config(config)
    assert model_spec(rebuilt) == model_spec(model) and rebuilt.output_shape == (None, 5)


# ----------------------------------------------------------------------------------------------
# the spec a built model carries


@pytest.mark.parametrize(
    "builder, kwargs, family, attention, reduction",
    [
        (MobileNetV2, {}, "mobilenet_v2", None, None),
        (MobileNetV2, {"attention": "se"}, "mobilenet_v2", "se", 24),
        (MobileNetV2, {"attention": "CBAM", "reduction": 8}, "mobilenet_v2", "cbam", 8),
        (MobileNetV2CA, {}, "mobilenet_v2", "ca", 32),
        (MobileNeXt, {}, "mobilenext", None, None),
        (MobileNeXt, {"attention": "cbam"}, "mobilenext", "cbam", 24),
        (MobileNeXt, {"attention": "se", "reduction": 4}, "mobilenext", "se", 4),
        (MobileNeXtCA, {"reduction": 16}, "mobilenext", "ca", 16),
    ],
)
def test_model_spec_of_each_builder(builder, kwargs, family, attention, reduction):
    model = builder(alpha=0.35, weights=None, input_shape=(48, 56, 3), classes=7, **kwargs)
    assert model_spec(model) == ModelSpec(
        family=family, attention=attention, alpha=0.35, reduction=reduction,
        input_shape=(48, 56, 3), include_top=True, pooling=None, classes=7,
    )
    assert isinstance(model, ModelWithSpec)


def test_model_spec_ignores_name_and_records_top_options():
    named = MobileNetV2CA(alpha=0.5, weights=None, include_top=False, pooling="avg",
                          name="mobilenext_0.75")
    assert named.name == "mobilenext_0.75"
    assert model_spec(named) == ModelSpec(
        family="mobilenet_v2", attention="ca", alpha=0.5, reduction=32,
        input_shape=(None, None, 3), include_top=False, pooling="avg", classes=1000,
    )
    tensor = keras.Input((64, 48, 3))
    from_tensor = MobileNeXt(alpha=1, weights=None, input_tensor=tensor, include_top=False)
    assert model_spec(from_tensor).input_shape == (64, 48, 3)
    assert model_spec(from_tensor).alpha == 1.0 and isinstance(model_spec(from_tensor).alpha, float)


def test_model_spec_is_none_for_other_models():
    model = MobileNeXtCA(alpha=0.35, include_top=False, input_shape=(32, 32, 3))
    assert model_spec(keras.Model(model.inputs, model.outputs)) is None
    assert model_spec(feature_extractor(model)) is None
    assert model_spec(keras.Sequential([keras.layers.Dense(2)])) is None
    assert model_spec(None) is None and model_spec("mobilenet_v2_ca_1.00") is None


def test_model_spec_config_round_trip_and_checks():
    spec = ModelSpec("mobilenext", "ca", 0.5, 32, (None, None, 3), False, "max", 1000)
    assert ModelSpec.from_config(spec.to_config()) == spec
    assert spec.to_config()["input_shape"] == [None, None, 3]
    with pytest.raises(ValueError, match="exactly the keys"):
        ModelSpec.from_config({"family": "mobilenext"})
    with pytest.raises(ValueError, match="family"):
        ModelSpec("resnet", None, 1.0, None, (224, 224, 3), True, None, 1000)
    with pytest.raises(ValueError, match="reduction"):
        ModelSpec("mobilenext", None, 1.0, 32, (224, 224, 3), True, None, 1000)


# ----------------------------------------------------------------------------------------------
# feature pyramid

PYRAMID_CHANNELS = {
    # alpha 1.0 (feature_extractor's docstring table)
    MobileNetV2CA: {"P1": 16, "P2": 24, "P3": 32, "P4": 96, "P5": 1280},
    MobileNeXtCA: {"P1": 32, "P2": 144, "P3": 192, "P4": 384, "P5": 1280},
}


@pytest.mark.parametrize("builder", [MobileNetV2CA, MobileNeXtCA])
def test_feature_extractor_channels_at_alpha_one(builder):
    model = builder(alpha=1.0, weights=None, include_top=False, input_shape=(None, None, 3))
    features = feature_extractor(model)
    assert {k: v.shape[-1] for k, v in features.output.items()} == PYRAMID_CHANNELS[builder]


@pytest.mark.parametrize(
    "builder, layers",
    [
        (MobileNetV2, {"P1": "block1_project_bn", "P2": "block3_add", "P3": "block6_add",
                       "P4": "block13_add", "P5": "head_relu"}),
        (MobileNeXt, {"P1": "stem_relu", "P2": "block2_dw2_bn", "P3": "block5_add",
                      "P4": "block12_add", "P5": "block20_dw2_bn"}),
    ],
)
def test_feature_extractor_strides_on_odd_input(builder, layers):
    model = builder(alpha=0.35, weights=None, input_shape=(None, None, 3))  # with top
    assert feature_layers(model) == layers
    features = feature_extractor(model)
    outputs = features(tiny_input(), training=False)
    assert sorted(outputs) == ["P1", "P2", "P3", "P4", "P5"]
    for level in range(1, 6):
        stride = 2**level
        shape = tuple(outputs[f"P{level}"].shape)
        assert shape[1:3] == (-(-ODD[0] // stride), -(-ODD[1] // stride)), (level, shape)
        assert shape[3] == model.get_layer(layers[f"P{level}"]).output.shape[-1]


def test_feature_extractor_rejects_foreign_models():
    inputs = keras.Input((32, 32, 3))
    foreign = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs))
    with pytest.raises(ValueError, match="stem_"):
        feature_extractor(foreign)


# ----------------------------------------------------------------------------------------------
# ImageNet utilities


def test_preprocess_input_matches_numpy():
    x = np.random.default_rng(1).uniform(0, 255, (2, 5, 7, 3)).astype("float32")
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    expected = (x / 255.0 - mean) / std
    got = preprocess_input(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)
    chw = preprocess_input(x.transpose(0, 3, 1, 2), data_format="channels_first")
    np.testing.assert_allclose(chw, expected.transpose(0, 3, 1, 2), atol=1e-5)
    tensor = preprocess_input(ops.convert_to_tensor(x))
    np.testing.assert_allclose(ops.convert_to_numpy(tensor), expected, atol=1e-5)
    uint8 = preprocess_input(x.astype("uint8"))
    np.testing.assert_allclose(uint8, (x.astype("uint8") / 255.0 - mean) / std, atol=1e-5)
    with pytest.raises(ValueError, match="3"):
        preprocess_input(np.zeros((1, 4, 4, 4)))


def test_decode_predictions_one_hot():
    preds = np.zeros((2, 1000), "float32")
    preds[0, 1] = 1.0
    preds[1, 999] = 0.7
    preds[1, 0] = 0.3
    decoded = decode_predictions(preds, top=2)
    assert decoded[0][0] == ("n01443537", "goldfish", 1.0)
    assert decoded[1][0][:2] == ("n15075141", "toilet_tissue")
    assert decoded[1][0][2] == pytest.approx(0.7)
    assert decoded[1][1][:2] == ("n01440764", "tench")
    assert len(decode_predictions(preds)[0]) == 5
    with pytest.raises(ValueError, match="1000"):
        decode_predictions(np.zeros((1, 10)))


# ----------------------------------------------------------------------------------------------
# argument errors


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"attention": "eca"}, "Unknown attention"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": -0.5}, "alpha"),
        ({"alpha": True}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"input_shape": (31, 64, 3)}, "at least 32"),
        ({"input_shape": (64, 64, None)}, "channel count"),
        ({"input_shape": (64, 64)}, "3 entries"),
        ({"input_shape": (64, 64, 1), "weights": str(CHECKPOINT)}, "3 input channels"),
        ({"pooling": "mean", "include_top": False}, "Unknown pooling"),
        ({"classes": 0}, "classes"),
        ({"classes": 2.5}, "classes"),
        ({"reduction": 0, "attention": "ca"}, "reduction"),
        ({"reduction": 16}, "attention"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"input_tensor": np.zeros((64, 64, 3))}, "4-D"),
        ({"input_tensor": keras.Input((64, 64, 3)), "input_shape": (96, 96, 3)}, "incompatible"),
        ({"classifier_activation": "relu", "weights": str(CHECKPOINT)}, "classifier_activation"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    builder_kwargs = {"weights": None, "alpha": 0.35}
    builder_kwargs.update(kwargs)
    with pytest.raises(ValueError, match=message):
        MobileNetV2(**builder_kwargs)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: MobileNetV2(classes=10), "1000"),  # imagenet top needs 1000 classes
        (lambda: MobileNeXtCA(weights="imagenet"), "No ImageNet weights"),
        (lambda: MobileNetV2(attention="se"), "No ImageNet weights"),
        (lambda: MobileNetV2CA(reduction=16), "reduction"),
    ],
)
def test_weights_argument_is_checked_before_building(build, message):
    # keras_coordatt.weights.check_weights_argument runs first: nothing is built or downloaded.
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_arguments_raise_for_mobilenext_too():
    with pytest.raises(ValueError, match="Unknown attention"):
        MobileNeXt(weights=None, attention="ECA")
    with pytest.raises(ValueError, match="alpha"):
        MobileNeXtCA(alpha=-1)
    with pytest.raises(ValueError, match="at least 32"):
        MobileNeXtCA(alpha=0.35, input_shape=(64, 16, 3))
    # attention names are case-insensitive
    model = MobileNeXt(weights=None, attention="SE", alpha=0.35, input_shape=(32, 32, 3))
    assert model.get_layer("block4_se")
