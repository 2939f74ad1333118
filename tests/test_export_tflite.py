"""TFLite export (float32 / float16 / dynamic / int8 PTQ / int8 QAT) checked with LiteRT.

Real images: the 200 CIFAR-10 test images in tests/data/cifar10_small (20 per class), resized
to 64x64 and preprocessed like ImageNet inputs.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import ai_edge_litert  # noqa: F401 - fail loudly without the [litert] extra
import keras  # noqa: E402
import numpy as np
import pytest
import tensorflow as tf

from keras_coordatt import CoordAttention  # noqa: E402
from keras_coordatt.export import (  # noqa: E402
    LiteRTModel,
    evaluate_tflite,
    export_tflite,
    float_ops,
    inspect_tflite,
)
from keras_coordatt.training import build_for_fit  # noqa: E402

from helpers import calibrate_batchnorm, infer, load_cifar

pytestmark = pytest.mark.tflite

SIZE = 64
BUILDERS = ("MobileNetV2CA", "MobileNeXtCA")
INTEGER_TYPES = {"int8", "int32"}


def _requires_qat():
    import keras_coordatt.quantization as quantization

    return quantization


# ---------------------------------------------------------------------------------------------
# Data and models
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar() -> tuple[np.ndarray, np.ndarray]:
    """(images (200, 64, 64, 3) preprocessed, labels (200,)), classes in alphabetical order."""
    from keras_coordatt.applications import preprocess_input

    images, labels = load_cifar(SIZE)
    assert len(images) == 200 and sorted(Counter(labels.tolist()).values()) == [20] * 10
    return np.asarray(preprocess_input(images)).astype("float32"), labels


def _build(kind: str, images: np.ndarray, input_shape=(SIZE, SIZE, 3)) -> keras.Model:
    from keras_coordatt import applications

    keras.utils.set_random_seed(7)
    model = getattr(applications, kind)(
        input_shape=input_shape, alpha=0.35, weights=None, classes=10,
        classifier_activation=None,
    )
    calibrate_batchnorm(model, images[::4])
    return model


@pytest.fixture(scope="module")
def models(cifar) -> dict:
    images, _ = cifar
    return {kind: _build(kind, images) for kind in BUILDERS}


@pytest.fixture(scope="module")
def qat_models(models, cifar) -> dict:
    """QAT models of both builders, ranges calibrated on 64 real images; MobileNetV2CA is also
    trained a few steps (the model is ready for fit)."""
    import tf_keras

    quantization = _requires_qat()
    images, labels = cifar
    result = {}
    for kind, model in models.items():
        qat = quantization.quantize_model(model, calibration_data=images[:64])
        if kind == "MobileNetV2CA":
            qat.compile(
                tf_keras.optimizers.Adam(1e-4),
                tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                run_eagerly=True,  # 3 steps: tracing the step would cost more than they do
            )  # (the traced QAT fit of MobileNetV2CA runs in the demo test)
            history = qat.fit(images[:48], labels[:48], batch_size=16, epochs=1, verbose=0)
            assert np.isfinite(history.history["loss"]).all()
        result[kind] = qat
    return result


@pytest.fixture(scope="module")
def tflite_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tflite")


def _tiny_keras3_model(input_shape=(16, 16, 3)) -> keras.Model:
    keras.utils.set_random_seed(3)
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = CoordAttention(reduction=4)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _assert_all_integer(path, int8_io: bool) -> list:
    """Every op int8 between the input QUANTIZE and output DEQUANTIZE; with int8 I/O no float
    tensor at all. Returns the op list (name, input dtypes, output dtypes)."""
    ops = inspect_tflite(path)
    assert float_ops(ops, allow_float_io=not int8_io) == []
    tensor_types = {dtype for op in ops for dtype in op.inputs + op.outputs}
    if int8_io:
        assert tensor_types <= INTEGER_TYPES, tensor_types
    else:
        assert ops[0].name == "QUANTIZE" and ops[0].inputs == ("float32",)
        assert ops[-1].name == "DEQUANTIZE" and ops[-1].outputs == ("float32",)
        inner = ops[1:-1]
        assert {dtype for op in inner for dtype in op.inputs + op.outputs} <= INTEGER_TYPES
    names = {op.name for op in ops}
    assert {"MEAN", "HARD_SWISH", "LOGISTIC", "MUL", "CONV_2D", "DEPTHWISE_CONV_2D"} <= names
    assert "DELEGATE" not in names and not any(name.startswith("FLEX") for name in names)
    return ops


def _output_scale(path) -> float:
    """Scale of the int8 tensor the model output is dequantized from (or the int8 output)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    output = interpreter.get_output_details()[0]
    if output["dtype"] == np.int8:
        return float(output["quantization"][0])
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    last = interpreter._get_ops_details()[-1]
    assert last["op_name"] == "DEQUANTIZE"
    return float(details[last["inputs"][0]]["quantization"][0])


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="Unknown mode 'int4'"):
        export_tflite(_tiny_keras3_model(), tmp_path / "m.tflite", mode="int4")


def test_int8_needs_representative_dataset_or_qat(tmp_path):
    with pytest.raises(ValueError, match="representative_dataset"):
        export_tflite(_tiny_keras3_model(), tmp_path / "m.tflite", mode="int8")


def test_int8_io_needs_int8(tmp_path):
    with pytest.raises(ValueError, match="int8_io=True needs mode='int8'"):
        export_tflite(_tiny_keras3_model(), tmp_path / "m.tflite", int8_io=True)


def test_dynamic_input_shape_needs_input_shape(tmp_path):
    model = _tiny_keras3_model(input_shape=(None, None, 3))
    with pytest.raises(ValueError, match=r"fixed input shape.*input_shape=\(224, 224, 3\)"):
        export_tflite(model, tmp_path / "m.tflite")
    with pytest.raises(ValueError, match="does not fit"):
        export_tflite(model, tmp_path / "m.tflite", input_shape=(16, 16, 4))


def test_not_a_model(tmp_path):
    with pytest.raises(ValueError, match="Keras 3 or tf_keras model"):
        export_tflite(object(), tmp_path / "m.tflite")


@pytest.mark.qat
def test_qat_model_exports_as_int8_only(tmp_path):
    quantization = _requires_qat()
    qat = quantization.quantize_model(_tiny_keras3_model())
    with pytest.raises(ValueError, match="QAT model: export it with mode='int8'"):
        export_tflite(qat, tmp_path / "m.tflite", mode="float32")


@pytest.mark.qat
def test_unquantizable_layer_is_a_clear_error(tmp_path):
    quantization = _requires_qat()
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    model = keras.Model(inputs, keras.layers.UnitNormalization(name="unit_norm")(x))
    with pytest.raises(ValueError, match="'unit_norm' of type UnitNormalization"):
        quantization.quantize_model(model)


# ---------------------------------------------------------------------------------------------
# Float exports
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BUILDERS)
def test_float32_matches_keras(models, cifar, tflite_dir, kind):
    images, labels = cifar
    model = models[kind]
    path = export_tflite(model, tflite_dir / f"{kind}_f32.tflite")
    names = {op.name for op in inspect_tflite(path)}
    assert {"HARD_SWISH", "LOGISTIC", "MEAN", "CONV_2D"} <= names and "QUANTIZE" not in names
    expected = infer(model, images[:32])
    result = evaluate_tflite(path, (images[:32], labels[:32]), progress=False, batch_size=16)
    np.testing.assert_allclose(result["predictions"], expected, atol=1e-4, rtol=0)
    assert result["num_examples"] == 32
    assert result["accuracy"] == pytest.approx(np.mean(expected.argmax(-1) == labels[:32]))


def test_dynamic_shape_model_exports_at_given_size(cifar, tflite_dir):
    images, _ = cifar
    model = _build("MobileNetV2CA", images, input_shape=(None, None, 3))
    path = export_tflite(
        model, tflite_dir / "dyn.tflite", input_shape=(SIZE, SIZE, 3), batch_size=1
    )
    runner = LiteRTModel(path)
    assert not runner.dynamic_batch and runner.batch_size == 1
    np.testing.assert_allclose(
        runner(images[:3]), infer(model, images[:3]), atol=1e-4, rtol=0
    )


def _float32_path(models, tflite_dir) -> Path:
    path = tflite_dir / "MobileNetV2CA_f32.tflite"
    if not path.exists():
        export_tflite(models["MobileNetV2CA"], path)
    return path


@pytest.mark.parametrize("mode, tolerance", [("float16", 0.02), ("dynamic", 0.25)])
def test_float16_and_dynamic_range(models, cifar, tflite_dir, mode, tolerance):
    images, _ = cifar
    model = models["MobileNetV2CA"]
    path = export_tflite(model, tflite_dir / f"{mode}.tflite", mode=mode)
    expected = infer(model, images[:16])
    actual = LiteRTModel(path)(images[:16])
    spread = expected.max() - expected.min()
    assert np.abs(actual - expected).max() < tolerance * spread
    float32_size = _float32_path(models, tflite_dir).stat().st_size
    assert Path(path).stat().st_size < 0.75 * float32_size


# ---------------------------------------------------------------------------------------------
# int8: post-training quantization
# ---------------------------------------------------------------------------------------------


# Float-I/O post-training int8 of every family x attention at 224 is tests/test_qat_matrix.py.
@pytest.mark.parametrize("int8_io", [True], ids=["int8_io"])
@pytest.mark.parametrize("kind", BUILDERS)
def test_ptq_int8_is_all_integer(models, cifar, tflite_dir, kind, int8_io):
    images, labels = cifar
    model = models[kind]
    calibration = [images[i : i + 8] for i in range(0, 32, 8)]  # an iterable of batches
    path = export_tflite(
        model, tflite_dir / f"{kind}_ptq_{int8_io}.tflite", "int8", calibration, int8_io=int8_io
    )
    _assert_all_integer(path, int8_io)
    result = evaluate_tflite(path, (images[:32], labels[:32]), progress=False)
    expected = infer(model, images[:32])
    spread = expected.max() - expected.min()
    # Post-training int8 of an untrained network: close to the float model, not identical.
    assert np.abs(result["predictions"] - expected).mean() < 0.1 * spread


# ---------------------------------------------------------------------------------------------
# int8: quantization-aware training
# ---------------------------------------------------------------------------------------------


@pytest.mark.qat
@pytest.mark.parametrize("kind, int8_io", [("MobileNetV2CA", False), ("MobileNeXtCA", False),
                                           ("MobileNeXtCA", True)],
                         ids=["MobileNetV2CA-float_io", "MobileNeXtCA-float_io",
                              "MobileNeXtCA-int8_io"])
def test_qat_int8_is_all_integer(qat_models, cifar, tflite_dir, kind, int8_io):
    images, labels = cifar
    qat = qat_models[kind]
    path = export_tflite(qat, tflite_dir / f"{kind}_qat_{int8_io}.tflite", "int8",
                         int8_io=int8_io)
    _assert_all_integer(path, int8_io)
    result = evaluate_tflite(path, (images, labels), progress=False)
    assert result["predictions"].shape == (200, 10)
    assert result["predictions"].dtype == np.float32


def _ca_block_steps(path, qat, images) -> dict:
    """Per CoordAttention block of a QAT model: feed the block input the int8 model computed to
    the QAT layer and compare with the int8 block output, in output quantization steps."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(path), experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.resize_tensor_input(0, images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
    interpreter.invoke()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()

    def dequantized(index):
        scale, zero_point = details[index]["quantization"]
        return (interpreter.get_tensor(index).astype("float32") - zero_point) * scale

    result = {}
    for layer in qat.layers:
        if not layer.name.endswith("_ca"):
            continue
        block = [op for op in ops if f"/{layer.name}/" in details[op["outputs"][0]]["name"]]
        assert [op["op_name"] for op in block] == [
            "MEAN", "CONV_2D", "HARD_SWISH", "CONV_2D", "LOGISTIC",
        ] * 2 + ["MUL", "MUL"], (layer.name, [op["op_name"] for op in block])
        block_input = dequantized(block[-2]["inputs"][0])
        output = block[-1]["outputs"][0]
        steps = np.abs(
            layer(tf.constant(block_input), training=False).numpy() - dequantized(output)
        ) / details[output]["quantization"][0]
        result[layer.name] = steps
    return result


@pytest.mark.qat
@pytest.mark.parametrize("kind", BUILDERS)
def test_qat_coordattention_blocks_match_int8_model(qat_models, cifar, tflite_dir, kind):
    """Block by block, the int8 CA computes what the QAT CA computes: outputs agree to a few
    output steps, almost all elements exactly. (The remaining differences come from LiteRT's
    int8 MEAN, which rounds about 1 in 10 pooled values differently from TF's fake-quant, and
    from ties elsewhere.)"""
    images, _ = cifar
    path = tflite_dir / f"{kind}_qat_False.tflite"
    if not path.exists():
        export_tflite(qat_models[kind], path, "int8")
    blocks = _ca_block_steps(path, qat_models[kind], images[:16])
    assert len(blocks) >= 10
    for name, steps in blocks.items():
        assert steps.max() <= 10, (name, steps.max())
        assert np.mean(steps > 0.5) < 0.10, (name, np.mean(steps > 0.5))
        assert np.mean(steps > 2.5) < 0.01, (name, np.mean(steps > 2.5))


def _small_ca_network() -> keras.Model:
    keras.utils.set_random_seed(11)
    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.ZeroPadding2D(1)(inputs)
    x = layers.Conv2D(16, 3, strides=2, use_bias=False)(x)
    x = layers.ReLU(6.0)(layers.BatchNormalization(epsilon=1e-5)(x))
    x = layers.ReLU(6.0)(layers.BatchNormalization(epsilon=1e-5)(
        layers.Conv2D(32, 1, use_bias=False)(x)))
    x = layers.ZeroPadding2D(1)(x)
    x = layers.DepthwiseConv2D(3, strides=2, use_bias=False)(x)
    x = layers.ReLU(6.0)(layers.BatchNormalization(epsilon=1e-5)(x))
    x = CoordAttention(reduction=4)(x)
    y = layers.BatchNormalization(epsilon=1e-5)(layers.Conv2D(32, 1, use_bias=False)(x))
    x = layers.GlobalAveragePooling2D()(layers.Add()([x, y]))
    return keras.Model(inputs, layers.Dense(10)(x))


@pytest.fixture(scope="module")
def trained_small_qat(cifar):
    """The small CA network, quantized and QAT-trained 8 epochs on the 200 real images."""
    import tf_keras

    quantization = _requires_qat()
    images, labels = cifar
    model = _small_ca_network()
    calibrate_batchnorm(model, images[::2])
    qat = quantization.quantize_model(model, calibration_data=images)
    qat.compile(
        tf_keras.optimizers.Adam(3e-3),
        tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    build_for_fit(qat, labels)  # one trace of the train step, not two
    history = qat.fit(images, labels, batch_size=25, epochs=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    return qat


@pytest.mark.qat
@pytest.mark.parametrize("int8_io", [False, True], ids=["float_io", "int8_io"])
def test_qat_model_and_its_int8_tflite_agree_end_to_end(trained_small_qat, cifar, tflite_dir,
                                                        int8_io):
    """A QAT-trained CA network and its int8 TFLite: within a couple of output steps, and the
    same class for >= 99 % of the 200 real images."""
    images, labels = cifar
    qat = trained_small_qat
    path = export_tflite(qat, tflite_dir / f"small_qat_{int8_io}.tflite", "int8",
                         int8_io=int8_io)
    assert float_ops(inspect_tflite(path), allow_float_io=not int8_io) == []
    expected = infer(qat, images)
    result = evaluate_tflite(path, (images, labels), progress=False)
    steps = np.abs(result["predictions"] - expected) / _output_scale(path)
    assert steps.max() <= 3, steps.max()
    assert np.mean(result["predictions"].argmax(-1) == expected.argmax(-1)) >= 0.99
    assert result["accuracy"] == pytest.approx(np.mean(expected.argmax(-1) == labels), abs=0.01)
    # LiteRT's reference int8 kernels (no XNNPACK) compute the same within the same steps.
    reference = LiteRTModel(path, reference_kernels=True)(images[:50])
    assert np.abs(reference - expected[:50]).max() / _output_scale(path) <= 3


# ---------------------------------------------------------------------------------------------
# Op lists of single quantized attention blocks
# ---------------------------------------------------------------------------------------------


@pytest.mark.qat
def test_quantized_attention_block_op_lists(tmp_path):
    """The tf_keras layers under AttentionQuantizeConfig convert to all-int8 blocks."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    quantization = _requires_qat()
    expected_ops = {
        "CoordAttention": Counter({"MEAN": 2, "CONV_2D": 4, "HARD_SWISH": 2, "LOGISTIC": 2,
                                   "MUL": 2}),
        "SqueezeExcite": Counter({"MEAN": 1, "CONV_2D": 2, "LOGISTIC": 1, "MUL": 1}),
        "CBAM": Counter({"MEAN": 2, "REDUCE_MAX": 2, "CONV_2D": 5, "ADD": 1, "LOGISTIC": 2,
                         "MUL": 2, "CONCATENATION": 1}),
    }
    images = np.random.default_rng(0).normal(size=(16, 12, 10, 32)).astype("float32")
    for name, ops_expected in expected_ops.items():
        inputs = tf_keras.Input((12, 10, 32))
        layer = getattr(quantization, name)(reduction=4)
        outputs = tfmot.quantization.keras.quantize_annotate_layer(
            layer, quantization.AttentionQuantizeConfig()
        )(inputs)
        with quantization.quantize_scope():
            qat = tfmot.quantization.keras.quantize_apply(tf_keras.Model(inputs, outputs))
        quantization.calibrate(qat, images)
        path = export_tflite(qat, tmp_path / f"{name}.tflite", "int8")
        ops = inspect_tflite(path)
        assert [op.name for op in ops][0] == "QUANTIZE" and ops[-1].name == "DEQUANTIZE"
        counts = Counter(op.name for op in ops[1:-1])
        counts.pop("QUANTIZE", None)  # a requantize (int8 -> int8) is allowed
        assert counts == ops_expected, (name, counts)
        assert float_ops(ops) == []
        # Both outputs lie on the output quantization grid: compare whole steps.
        diff = np.abs(LiteRTModel(path)(images) - infer(qat, images))
        assert np.rint(diff / _output_scale(path)).max() <= 3


# ---------------------------------------------------------------------------------------------
# evaluate_tflite
# ---------------------------------------------------------------------------------------------


def test_evaluate_tflite_inputs(models, cifar, tflite_dir, capsys):
    images, labels = cifar
    path = _float32_path(models, tflite_dir)
    arrays = evaluate_tflite(path, (images[:20], labels[:20]), progress=True, batch_size=8)
    assert "image" in capsys.readouterr().out  # the Progbar
    batches = [(images[i : i + 10], np.eye(10)[labels[i : i + 10]]) for i in range(0, 20, 10)]
    one_hot = evaluate_tflite(path, batches, progress=False)
    dataset = tf.data.Dataset.from_tensor_slices((images[:20], labels[:20])).batch(7)
    from_tf_data = evaluate_tflite(path, dataset, progress=False)
    unlabelled = evaluate_tflite(path, images[:20], progress=False, steps=1, batch_size=5)
    for result in (one_hot, from_tf_data):
        np.testing.assert_allclose(result["predictions"], arrays["predictions"], atol=1e-5)
        assert result["accuracy"] == arrays["accuracy"]
    assert unlabelled["accuracy"] is None and unlabelled["num_examples"] == 5
    with pytest.raises(ValueError, match="empty"):
        evaluate_tflite(path, [], progress=False)


# ---------------------------------------------------------------------------------------------
# The conversion's shortcuts through TensorFlow's private steps
# ---------------------------------------------------------------------------------------------


@pytest.mark.qat
def test_conversion_shortcuts_give_what_the_public_path_gives(tmp_path, monkeypatch):
    """``freeze_variables`` and the worker's converter skip TensorFlow's re-pruning of the
    frozen graph: float32, PTQ int8 and QAT int8 give the GraphDef and the .tflite bytes of
    TensorFlow's public functions (a small CA network: the shortcut does not depend on size)."""
    from keras_coordatt.export import _convert_worker
    from keras_coordatt.export import tflite as tflite_module
    from keras_coordatt.export._request import write_request

    quantization = _requires_qat()
    model = _tiny_keras3_model()
    images = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype("float32")
    qat = quantization.quantize_model(model, calibration_data=images)
    requests = []
    run_converter = tflite_module._run_converter

    def recording(request, graph_def, samples, isolate):
        requests.append((request, graph_def, samples))
        return run_converter(request, graph_def, samples, isolate)

    monkeypatch.setattr(tflite_module, "_run_converter", recording)
    export_tflite(model, tmp_path / "float32.tflite")
    export_tflite(model, tmp_path / "ptq.tflite", "int8", representative_dataset=images)
    export_tflite(qat, tmp_path / "qat.tflite", "int8")
    assert [(r["mode"], r["qat"]) for r, _, _ in requests] == [
        ("float32", False), ("int8", False), ("int8", True)]
    for index, (request, graph_def, samples) in enumerate(requests):
        files = []
        for refreeze in (False, True):
            folder = tmp_path / f"{index}_{refreeze}"
            folder.mkdir()
            write_request(folder, request, graph_def, samples)
            assert _convert_worker.main(str(folder), refreeze=refreeze) == 0
            files.append((folder / "model.tflite").read_bytes())
        assert files[0] == files[1], request["mode"]
        assert files[0] == (tmp_path / ("float32", "ptq", "qat")[index]).with_suffix(
            ".tflite").read_bytes()

    for network in (model, qat):
        spec = tf.TensorSpec((1, 16, 16, 3), tf.float32)
        function = tf.function(lambda x, m=network: m(x, training=False),
                               input_signature=[spec]).get_concrete_function()
        shortcut, public = (tflite_module.freeze_variables(function, public_api=flag)
                            for flag in (False, True))
        assert len(shortcut.node) > 10
        assert (shortcut.SerializeToString(deterministic=True)
                == public.SerializeToString(deterministic=True))
