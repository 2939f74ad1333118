"""Issue 15: a BatchNormalization channel with ~0 moving variance (a dead input) must not give
the int8 file a requantization multiplier above 1; ``quantize_model``'s ``bn_variance_floor``
bounds its folded gain through ``fit`` and the export without changing the healthy channels."""

from __future__ import annotations

import keras
import numpy as np
import pytest

pytestmark = [pytest.mark.qat, pytest.mark.tflite]

RNG = np.random.default_rng(15)
SIZE, DEAD, CONSTANT = 12, 3, 15.0  # input channel DEAD is CONSTANT in every image


@pytest.fixture(scope="module")
def Q():
    import keras_coordatt.quantization as quantization

    return quantization


@pytest.fixture(scope="module")
def tf_keras():
    import tf_keras

    return tf_keras


def _images(count: int) -> np.ndarray:
    images = RNG.uniform(0.0, 60.0, (count, SIZE, SIZE, 4)).astype("float32")
    images[..., DEAD] = CONSTANT
    return images


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return _images(32)


@pytest.fixture(scope="module")
def dead_model(images) -> keras.Model:
    """Depthwise conv -> BN -> ReLU6 -> pool -> dense; the conv's channel DEAD sees a constant
    input, so its BN moving variance is exactly 0 (set from the data's own statistics)."""
    inputs = keras.Input((SIZE, SIZE, 4))
    x = keras.layers.DepthwiseConv2D(3, padding="valid", use_bias=False, name="dw")(inputs)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.ReLU(6.0, name="dw_relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="head")(x))
    dw = model.get_layer("dw")
    dw.kernel.assign(RNG.uniform(-1.0, 1.0, dw.kernel.shape))
    head = model.get_layer("head")
    head.set_weights([RNG.normal(size=(4, 2)), np.zeros(2)])
    features = keras.Model(inputs, dw.output).predict(images, verbose=0).astype("float64")
    mean, variance = features.mean(axis=(0, 1, 2)), features.var(axis=(0, 1, 2))
    variance[DEAD] = 0.0  # exactly, as a trained BN ends for a constant input
    bn = model.get_layer("dw_bn")
    bn.set_weights([np.ones(4), np.full(4, 0.5), mean, variance])
    return model


def _depthwise_scales(path) -> tuple:
    """``(s_in, s_w[c], s_out)`` of the file's only DEPTHWISE_CONV_2D (BN folded, ReLU6 fused)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path))
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    (op,) = [op for op in interpreter._get_ops_details()  # noqa: SLF001
             if op["op_name"] == "DEPTHWISE_CONV_2D"]
    s_in, s_w, s_out = (tensors[i]["quantization_parameters"]["scales"]
                        for i in (*op["inputs"][:2], op["outputs"][0]))
    return s_in[0], s_w, s_out[0]


def _qat_run(Q, tf_keras, model, images, floor: float | None, folder) -> dict:
    """The README's recipe: quantize_model (calibrated), compile, a short fit, int8 export."""
    from keras_coordatt.export import export_tflite, float_ops, inspect_tflite

    qat = Q.quantize_model(model, images,
                           **({} if floor is None else {"bn_variance_floor": floor}))
    relu = tf_keras.Model(qat.inputs, qat.get_layer("quant_dw_relu").output)
    run = {"relu": relu.predict(images, verbose=0)}
    qat.compile(tf_keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    qat.fit(images, np.arange(len(images)) % 2, batch_size=16, epochs=1, verbose=0)
    (bn,) = [m for m in qat.submodules if isinstance(m, tf_keras.layers.BatchNormalization)]
    wrapper = qat.get_layer("quant_dw")
    (peak,) = [w.numpy() for w in wrapper.non_trainable_weights if "kernel_max" in w.name]
    gain = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    path = export_tflite(qat, folder / f"floor{floor}.tflite", mode="int8")
    s_in, s_w, s_out = _depthwise_scales(path)
    run.update(epsilon=bn.epsilon, variance=bn.moving_variance.numpy(), filter_scale=s_w,
               folded_scale=peak * np.abs(gain) / 127.0,  # what the file's filter must hold
               float_ops=float_ops(inspect_tflite(path)), multipliers=s_in * s_w / s_out)
    return run


@pytest.fixture(scope="module")
def runs(Q, tf_keras, dead_model, images, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("bn_floor")
    return {floor: _qat_run(Q, tf_keras, dead_model, images, floor, folder)
            for floor in (None, 0.0)}  # None: the default


def test_dead_channel_multiplier_stays_below_one_through_fit_and_export(runs):
    default, off = runs[None], runs[0.0]
    for run in (default, off):
        assert run["float_ops"] == []
        # the converter folds gamma / sqrt(var + epsilon) with the layer's (raised) epsilon
        np.testing.assert_allclose(run["filter_scale"], run["folded_scale"], rtol=1e-3)
    # fit took the dead channel's variance back to ~0; the raised epsilon still bounds it
    assert default["variance"][DEAD] < 1e-6 and off["variance"][DEAD] < 1e-6
    assert default["epsilon"] > 100 * off["epsilon"]
    assert default["multipliers"].max() <= 1.0, default["multipliers"]
    assert off["multipliers"][DEAD] > 2.0, off["multipliers"]  # what the floor prevents
    healthy = np.arange(4) != DEAD
    np.testing.assert_allclose(default["multipliers"][healthy], off["multipliers"][healthy],
                               rtol=1e-3)


def test_floor_keeps_healthy_channels_and_follows_the_float_model(runs, dead_model, images):
    default, off = runs[None], runs[0.0]
    step = default["relu"].max() / 255  # one step of the ReLU6 output's int8 grid
    healthy = np.arange(4) != DEAD
    difference = np.abs(default["relu"][..., healthy] - off["relu"][..., healthy])
    assert difference.max() <= step * 1.001, difference.max() / step  # at most one step
    assert np.mean(difference == 0) > 0.999
    # the dead channel's output is beta plus its kernel's rounding error times its gain: with
    # the floor's ~30 times smaller gain the QAT model follows the float model (an independent
    # oracle) on it again, without it the channel is off by tens of steps
    relu = dead_model.get_layer("dw_relu").output
    reference = keras.Model(dead_model.inputs, relu).predict(images, verbose=0)[..., DEAD]
    assert np.abs(default["relu"][..., DEAD] - reference).max() <= 2 * step
    assert np.abs(off["relu"][..., DEAD] - reference).max() > 10 * step


def test_floor_layer_against_numpy(tf_keras):
    from keras_coordatt.quantization._bn_floor import floor_layer

    gamma, beta = np.array([1.0, -2.0, 3.0, 0.5]), np.array([0.1, 0.0, -0.3, 0.2])
    mean, variance = np.array([0.5, -1.0, 2.0, 0.0]), np.array([4.0, 1.0, 0.0, 1e-3])
    layer = tf_keras.layers.BatchNormalization(epsilon=1e-3)
    layer.build((None, 4))
    layer.set_weights([gamma, beta, mean, variance])
    assert floor_layer(layer, 0.1) == 2  # median 0.5005: channels 2 and 3 are below 0.05005
    floor = 0.1 * np.median(variance)
    assert layer.epsilon == pytest.approx(1e-3 + floor)
    x = RNG.normal(size=(16, 4)).astype("float32") * 3
    expected = gamma * (x - mean) / np.sqrt(np.maximum(variance, floor) + 1e-3) + beta
    np.testing.assert_allclose(layer(x, training=False).numpy(), expected, rtol=1e-5,
                               atol=1e-5)
    fresh = tf_keras.layers.BatchNormalization()
    fresh.build((None, 4))  # still at its initial statistics: nothing to go by
    assert floor_layer(fresh, 0.1) == 0 and fresh.epsilon == 1e-3


@pytest.mark.parametrize("value", [-0.01, 1.5, float("nan"), float("inf"), "0.01", True])
def test_bad_floor_is_refused(Q, dead_model, value):
    with pytest.raises(ValueError, match=r"bn_variance_floor must be a number in \[0, 1\]"):
        Q.quantize_model(dead_model, bn_variance_floor=value)


def test_the_given_tf_keras_model_is_not_modified(Q, dead_model, images):
    twin = Q.to_tf_keras(dead_model)
    bn = twin.get_layer("dw_bn")
    gamma = bn.gamma.numpy().copy()
    qat = Q.quantize_model(twin, images[:8])
    (floored,) = [m for m in qat.submodules if type(m).__name__ == "BatchNormalization"]
    assert floored is not bn and floored.epsilon > 100 * bn.epsilon
    assert bn.epsilon == pytest.approx(1e-3) and np.array_equal(bn.gamma.numpy(), gamma)
