"""QAT bridge: Keras 3 -> tf_keras twin, tfmot QuantizeConfigs, calibration, save / load."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow_model_optimization as _tfmot  # noqa: F401 - [qat] is part of [dev]
import tf_keras as _tf_keras  # noqa: F401

from keras_coordatt import CBAM, CoordAttention, SqueezeExcite

from helpers import randomize_batchnorm, run_python

pytestmark = pytest.mark.qat

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def Q():
    import keras_coordatt.quantization as quantization

    return quantization


@pytest.fixture(scope="module")
def tfmot():
    import tensorflow_model_optimization as module

    return module


@pytest.fixture(scope="module")
def tf_keras():
    import tf_keras as module

    return module


def _builder_model(kind: str, **kwargs) -> keras.Model:
    from keras_coordatt import applications

    builders = {
        "MobileNetV2CA": (applications.MobileNetV2CA, {}),
        "MobileNeXtCA": (applications.MobileNeXtCA, {}),
        "MobileNetV2-se": (applications.MobileNetV2, {"attention": "se"}),
        "MobileNeXt-cbam": (applications.MobileNeXt, {"attention": "cbam"}),
    }
    builder, extra = builders[kind]
    keras.utils.set_random_seed(1)
    return builder(
        input_shape=(64, 64, 3), alpha=0.35, weights=None, classes=10,
        classifier_activation=None, **extra, **kwargs,
    )


# ---------------------------------------------------------------------------------------------
# Package boundaries
# ---------------------------------------------------------------------------------------------


def test_import_boundaries_and_environment():
    """``import keras_coordatt`` never loads tfmot / tf_keras; importing the quantization package
    does, and leaves ``TF_USE_LEGACY_KERAS`` as it found it (tfmot sets it to 1)."""
    code = (
        "import os, sys, keras_coordatt, keras_coordatt.export\n"
        "bad = [m for m in ('tensorflow_model_optimization', 'tf_keras') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "import keras_coordatt.quantization\n"
        "assert 'tensorflow_model_optimization' in sys.modules\n"
        "assert os.environ.get('TF_USE_LEGACY_KERAS') is None, os.environ['TF_USE_LEGACY_KERAS']\n"
    )
    result = run_python(code, TF_CPP_MIN_LOG_LEVEL="3")
    assert result.returncode == 0, result.stderr[-2000:]


def test_missing_extra_message_names_the_extra(Q):
    assert "pip install 'keras-coordatt[qat]'" in Q.QAT_EXTRA_HINT
    assert "tf-keras" in Q.QAT_EXTRA_HINT and "tensorflow-model-optimization" in Q.QAT_EXTRA_HINT


# ---------------------------------------------------------------------------------------------
# tf_keras twins
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["MobileNetV2CA", "MobileNeXtCA", "MobileNetV2-se",
                                  "MobileNeXt-cbam"])
def test_to_tf_keras_matches_keras3(Q, kind):
    model = _builder_model(kind)
    randomize_batchnorm(model)
    twin = Q.to_tf_keras(model)
    assert [layer.name for layer in twin.layers] == [layer.name for layer in model.layers]
    images = RNG.normal(size=(4, 64, 64, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(twin.predict(images, verbose=0), expected, atol=1e-5, rtol=0)
    assert np.abs(expected).max() > 0.05  # not a degenerate comparison


@pytest.mark.parametrize(
    "layer_cls, kwargs",
    [
        (CoordAttention, {"reduction": 4}),
        (CoordAttention, {"reduction": 4, "directions": "h"}),
        (CoordAttention, {"reduction": 4, "directions": "w"}),
        (SqueezeExcite, {"reduction": 4}),
        (CBAM, {"reduction": 4}),
    ],
)
def test_twin_layer_matches_in_inference_and_training(Q, layer_cls, kwargs):
    """Odd, non-square input; training=True checks CA's joint BN statistics over H + W."""
    inputs = keras.Input((9, 13, 32))
    model = keras.Model(inputs, layer_cls(name="attention", **kwargs)(inputs))
    randomize_batchnorm(model, seed=3)
    twin = Q.to_tf_keras(model)
    images = RNG.normal(size=(3, 9, 13, 32)).astype("float32")
    for training in (False, True):
        expected = np.asarray(model(images, training=training))
        actual = np.asarray(twin(images, training=training))
        np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0, err_msg=str(training))


@pytest.mark.parametrize("layer_cls", [CoordAttention, SqueezeExcite, CBAM])
def test_twin_reads_the_same_spec(Q, layer_cls):
    import inspect

    twin_cls = getattr(Q, layer_cls.__name__)
    assert twin_cls.SPEC is layer_cls.SPEC
    expected = {n: p.default for n, p in inspect.signature(layer_cls).parameters.items()}
    assert {n: p.default for n, p in inspect.signature(twin_cls).parameters.items()} == expected
    twin, layer = twin_cls(3, name="t"), layer_cls(3, name="k")  # positional reduction too
    twin.build((None, 9, 11, 32))
    layer.build((None, 9, 11, 32))
    keys = set(layer_cls.SPEC.argument_names)
    twin_config, config = twin.get_config(), layer.get_config()
    assert {k: twin_config[k] for k in keys} == {k: config[k] for k in keys}
    assert twin_cls.from_config(twin_config).get_config() == twin_config
    for name in layer_cls.SPEC.sublayer_names:
        ours, theirs = getattr(twin, name), getattr(layer, name)
        assert [tuple(w.shape) for w in ours.weights] == [tuple(w.shape) for w in theirs.weights]
        for attribute in ("epsilon", "momentum", "use_bias", "padding", "kernel_size"):
            assert getattr(ours, attribute, None) == getattr(theirs, attribute, None), attribute
    with pytest.raises(TypeError, match="multiple values"):
        twin_cls(4, reduction=4)


def test_quantizers_moved_to_configs_stay_importable(Q):
    from keras_coordatt.quantization import configs, tf_keras_layers

    for name in ("KernelQuantizer", "ActivationQuantizer", "PassThroughQuantizer",
                 "SigmoidOutputQuantizer", "AttentionQuantizeConfig", "OutputQuantizeConfig"):
        assert getattr(tf_keras_layers, name) is getattr(configs, name)
        assert tf_keras_layers.custom_objects()[name] is getattr(configs, name)


def test_twin_rejects_channels_first(Q):
    with pytest.raises(ValueError, match="channels_last"):
        Q.CoordAttention(data_format="channels_first")


def test_to_tf_keras_unsupported_layer_names_layer_and_type(Q):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 1, name="conv")(inputs)
    x = keras.layers.LayerNormalization(name="odd_norm")(x)
    model = keras.Model(inputs, x)
    with pytest.raises(ValueError, match=r"'odd_norm' of type LayerNormalization"):
        Q.to_tf_keras(model)
    with pytest.raises(ValueError, match=r"'odd_norm' of type LayerNormalization"):
        Q.quantize_model(model)


def test_to_tf_keras_unsupported_activation(Q):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Activation("hard_silu", name="hs")(inputs))
    with pytest.raises(ValueError, match=r"'hs' of type Activation.*hard_silu"):
        Q.to_tf_keras(model)


def test_to_tf_keras_rejects_subclassed_and_foreign_models(Q):
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional"):
        Q.to_tf_keras(Sub())
    with pytest.raises(ValueError, match="Keras 3"):
        Q.to_tf_keras(object())


def test_quantize_model_needs_fixed_input_shape(Q):
    from keras_coordatt.applications import MobileNetV2CA

    model = MobileNetV2CA(input_shape=(None, None, 3), alpha=0.35, weights=None, classes=10)
    with pytest.raises(ValueError, match=r"QAT needs a fixed input shape; rebuild with "
                                         r"input_shape=\(224, 224, 3\)"):
        Q.quantize_model(model)


# ---------------------------------------------------------------------------------------------
# tfmot integration of the tf_keras layers (the tf_keras user's path)
# ---------------------------------------------------------------------------------------------


def _tf_keras_user_model(Q, tf_keras, tfmot):
    annotate = tfmot.quantization.keras.quantize_annotate_layer
    inputs = tf_keras.Input((16, 16, 8))
    x = tf_keras.layers.Conv2D(16, 1, use_bias=False)(inputs)
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.ReLU(6.0)(x)
    x = annotate(Q.CoordAttention(reduction=4, name="ca"), Q.AttentionQuantizeConfig())(x)
    x = annotate(Q.SqueezeExcite(reduction=4, name="se"), Q.AttentionQuantizeConfig())(x)
    x = annotate(Q.CBAM(reduction=4, name="cbam"), Q.AttentionQuantizeConfig())(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(3)(x))


def test_tf_keras_layers_with_tfmot_quantize_model_save_and_load(Q, tf_keras, tfmot, tmp_path):
    model = _tf_keras_user_model(Q, tf_keras, tfmot)
    with Q.quantize_scope():
        qat = tfmot.quantization.keras.quantize_model(model)
    wrapper_types = {type(layer).__name__ for layer in qat.layers}
    assert "QuantizeWrapperV2" in wrapper_types
    images = RNG.normal(size=(8, 16, 16, 8)).astype("float32")
    Q.calibrate(qat, images)
    expected = qat.predict(images, verbose=0)
    for path in (tmp_path / "qat.h5", tmp_path / "qat_savedmodel"):
        qat.save(path)
        with Q.quantize_scope():
            loaded = tf_keras.models.load_model(path)
        np.testing.assert_array_equal(loaded.predict(images, verbose=0), expected)


def test_attention_quantize_config_rejects_other_layers(Q, tf_keras):
    config = Q.AttentionQuantizeConfig()
    with pytest.raises(ValueError, match="CoordAttention, SqueezeExcite and CBAM"):
        config.get_weights_and_quantizers(tf_keras.layers.Dense(3))


def _small_ca_model() -> keras.Model:
    keras.utils.set_random_seed(2)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, use_bias=False)(x)
    x = keras.layers.BatchNormalization(epsilon=1e-5)(x)
    x = keras.layers.ReLU(6.0)(x)
    x = CoordAttention(reduction=4)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    randomize_batchnorm(model, seed=5)
    return model


def test_calibrate_sets_ranges_and_qat_model_tracks_float_model(Q):
    """tfmot's ranges start at [-6, 6] (inputs [0, 0]); calibration sets them from data, after
    which the QAT model differs from the float model by 8-bit noise only."""
    model = _small_ca_model()
    images = RNG.normal(size=(32, 32, 32, 3)).astype("float32")
    qat = Q.quantize_model(model)
    maxima = [w for w in qat.weights if w.name.endswith("_max:0")]
    assert maxima and all(float(np.max(np.abs(w.numpy()))) in (0.0, 6.0) for w in maxima)
    Q.calibrate(qat, images, batch_size=8)
    assert all(float(np.max(np.abs(w.numpy()))) not in (0.0, 6.0) for w in maxima)
    expected = model.predict(images, verbose=0)
    spread = expected.max() - expected.min()
    assert np.abs(qat.predict(images, verbose=0) - expected).max() < 0.05 * spread


def test_quantize_model_builder_calibrates_every_range(Q):
    model = _builder_model("MobileNetV2CA")
    randomize_batchnorm(model)
    qat = Q.quantize_model(model, RNG.normal(size=(8, 64, 64, 3)).astype("float32"))
    from keras_coordatt.export._ranges import range_pairs

    pairs = range_pairs(qat.weights)  # tfmot starts every range at [-6, 6]
    unchanged = [name for name, low, high in pairs
                 if np.all(low.numpy() == -6.0) and np.all(high.numpy() == 6.0)]
    assert len(pairs) > 100 and len(unchanged) <= 0.05 * len(pairs), unchanged
    ca_wrappers = [layer for layer in qat.layers if layer.name.endswith("_ca")]
    assert ca_wrappers and all(
        isinstance(layer.layer, Q.CoordAttention) for layer in ca_wrappers
    )


def test_calibrate_errors(Q, tf_keras):
    inputs = tf_keras.Input((4,))
    plain = tf_keras.Model(inputs, tf_keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="QAT model"):
        Q.calibrate(plain, np.zeros((2, 4), "float32"))


def test_quantize_model_accepts_tf_keras_model(Q, tf_keras):
    inputs = tf_keras.Input((16, 16, 8))
    x = Q.CoordAttention(reduction=4)(inputs)
    x = tf_keras.layers.Multiply()([x, x])
    model = tf_keras.Model(inputs, tf_keras.layers.GlobalAveragePooling2D()(x))
    qat = Q.quantize_model(model, RNG.normal(size=(4, 16, 16, 8)).astype("float32"))
    assert {"QuantizeWrapperV2", "QuantizeLayer"} <= {type(lay).__name__ for lay in qat.layers}


def _two_depthwise_patterns() -> keras.Model:
    """The two depthwise patterns of the builders, (N, 32, 32, 3) -> (N, 10): depthwise + BN +
    ReLU6 (an inverted residual's middle) and depthwise + BN with no activation (MobileNeXt's
    sandglass ends). Channel c of each depthwise kernel is scaled by 10**-u, u in [0, 2], so a
    single per-tensor scale would leave most channels a few int8 levels."""
    layers = keras.layers
    keras.utils.set_random_seed(3)
    inputs = keras.Input((32, 32, 3))
    x = layers.ReLU(6.0)(layers.BatchNormalization()(
        layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inputs)))
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw_act")(x)
    y = layers.ReLU(6.0)(layers.BatchNormalization()(y))
    y = layers.BatchNormalization()(layers.Conv2D(16, 1, use_bias=False)(y))
    x = layers.Add()([x, y])
    x = layers.BatchNormalization()(
        layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw_linear")(x))
    model = keras.Model(inputs, layers.Dense(10)(layers.GlobalAveragePooling2D()(x)))
    for name in ("dw_act", "dw_linear"):
        kernel = model.get_layer(name).kernel
        spread = 10.0 ** -RNG.uniform(0.0, 2.0, (1, 1, kernel.shape[2], 1))
        kernel.assign(kernel.numpy() * spread.astype("float32"))
    randomize_batchnorm(model)
    return model


def test_depthwise_kernels_are_quantized_per_channel(Q, tf_keras, tmp_path):
    """tfmot's default quantizes a depthwise kernel (kh, kw, C, 1) along its last axis: one
    scale for all C channels. Ours keeps one range per channel (the NumPy per-channel maximum
    of the kernel's absolute value), so the int8 file uses the full int8 range in every
    depthwise channel."""
    from ai_edge_litert.interpreter import Interpreter

    from keras_coordatt.export import export_tflite

    model = _two_depthwise_patterns()
    images = RNG.normal(size=(8, 32, 32, 3)).astype("float32")
    qat = Q.quantize_model(model, images)
    for name in ("dw_act", "dw_linear"):
        wrapper = qat.get_layer("quant_" + name)
        kernel = model.get_layer(name).kernel.numpy()  # (3, 3, C, 1)
        ranges = {w.name.rsplit("/", 1)[-1]: w.numpy() for w in wrapper.non_trainable_weights
                  if "depthwise_kernel_m" in w.name}
        channels = kernel.shape[2]
        assert {name: value.shape for name, value in ranges.items()} == {
            "depthwise_kernel_min:0": (channels,), "depthwise_kernel_max:0": (channels,)}
        peak = np.abs(kernel).max(axis=(0, 1, 3))  # symmetric: [-max |w|, max |w|] per channel
        np.testing.assert_allclose(ranges["depthwise_kernel_min:0"], -peak)
        np.testing.assert_allclose(ranges["depthwise_kernel_max:0"], peak)

    expected = qat.predict(images, verbose=0)
    qat.save(tmp_path / "qat.h5")
    with Q.quantize_scope():
        loaded = tf_keras.models.load_model(tmp_path / "qat.h5")
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), expected)

    path = export_tflite(qat, tmp_path / "qat.tflite", mode="int8")
    interpreter = Interpreter(str(path))
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    filters = [interpreter.get_tensor(tensors[op["inputs"][1]]["index"])
               for op in interpreter._get_ops_details() if op["op_name"] == "DEPTHWISE_CONV_2D"]
    assert len(filters) == 2
    for values in filters:  # (1, kh, kw, C): each channel spans the int8 range
        peak = np.abs(values.astype(np.int32)).reshape(-1, values.shape[-1]).max(axis=0)
        assert np.all(peak == 127), peak
