"""Issue 15: degenerate ranges, NaN weights and converter crashes never give a wrong or float
int8 model, nor end the caller's process."""

from __future__ import annotations

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_coordatt.export import ConversionError, export_tflite, float_ops
from keras_coordatt.export import tflite as tflite_module
from keras_coordatt.export._ranges import MIN_RANGE_WIDTH, range_pairs, widen_range
from keras_coordatt.export._request import conversion_request
from keras_coordatt.export.tflite import inspect_tflite

from helpers import ROOT, infer, load_script

pytestmark = [pytest.mark.qat, pytest.mark.tflite]

sys.path.insert(0, str(ROOT / "benchmarks"))

import qat_matrix  # noqa: E402

CIFAR_DIR = ROOT / "tests" / "data" / "cifar10_small" / "test"
SIZE = 64
DEAD_BLOCK = 4  # MobileNetV2CA block whose CoordAttention input is made all zeros


@pytest.fixture(scope="module")
def Q():
    import keras_coordatt.quantization as quantization

    return quantization


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """32 real CIFAR-10 test photos, 64x64, preprocessed like ImageNet inputs."""
    from keras_coordatt.applications import preprocess_input

    files = sorted(CIFAR_DIR.rglob("*.jpg"))[::6][:32]
    batch = [tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(str(f)), 3), (SIZE, SIZE))
             for f in files]
    return preprocess_input(np.stack(batch).astype("float32"))


def test_widen_range_against_hand_values():
    w = MIN_RANGE_WIDTH
    cases = [((0.0, 0.0), (0.0, w)), ((-1e-5, 0.0), (-w, 0.0)), ((-0.5, 0.4), (-0.5, 0.4)),
             ((2e-4, 3e-4), (0.0, w)), ((-2e-4, 1e-4), (-2e-4 - (w - 3e-4), 1e-4))]
    for (low, high), expected in cases:
        np.testing.assert_allclose(widen_range(low, high), expected, rtol=1e-9, atol=1e-12)
    low, high = widen_range(np.array([-1e-4, -1.0, 0.0]), np.array([1e-4, 1.0, 0.0]))
    np.testing.assert_allclose(low, [-w / 2, -1.0, 0.0])  # symmetric kernel ranges stay so
    np.testing.assert_allclose(high, [w / 2, 1.0, w])


def _dead_block_network() -> keras.Model:
    """MobileNetV2CA 0.35 with units that never fire on any input: block 4's depthwise ReLU6
    is always 0 (BN beta -1000), so its CoordAttention descriptors, gated output and
    projection input are constant (degenerate ranges) and its gates constant; and half of
    block 6's expansion channels have BN gamma 0 (their folded filters are all zeros)."""
    from keras_coordatt.applications import MobileNetV2CA

    model = MobileNetV2CA(input_shape=(SIZE, SIZE, 3), alpha=0.35, classes=10, weights=None,
                          classifier_activation=None)
    bn = model.get_layer(f"block{DEAD_BLOCK}_dw_bn")
    gamma, beta, mean, variance = bn.get_weights()
    bn.set_weights([gamma, np.full_like(beta, -1000.0), mean, variance])
    bn = model.get_layer("block6_expand_bn")
    gamma, beta, mean, variance = bn.get_weights()
    gamma[::2] = 0.0
    bn.set_weights([gamma, beta, mean, variance])
    return model


def _dead_block_ranges(qat) -> dict:
    prefix = f"quant_block{DEAD_BLOCK}_ca/"
    return {name: (float(np.min(lo)), float(np.max(hi)))
            for name, lo, hi in range_pairs(qat.weights) if name.startswith(prefix)}


def _steps(path, reference, images) -> dict:
    """``qat_matrix.compare``: int8 vs reference logits in output quantization steps; the file
    must be all int8 and run in LiteRT (with XNNPACK)."""
    report = qat_matrix.compare(str(path), reference, images)
    assert report["float_ops"] == [], report
    return report


@pytest.fixture(scope="module")
def dead_network(Q, images):
    """``(model, qat)``: the dead-unit network and its QAT model calibrated on ``images`` (one
    ``quantize_model`` for the tests below; a test that recalibrates it restores it)."""
    model = _dead_block_network()
    return model, Q.quantize_model(model, calibration_data=images)


@pytest.mark.slow
def test_dead_units_keep_every_op_int8(dead_network, images, tmp_path):
    model, qat = dead_network
    ranges = _dead_block_ranges(qat)
    assert ranges["quant_block4_ca/pool_h_q"] == pytest.approx((0.0, MIN_RANGE_WIDTH))
    assert all(high - low >= MIN_RANGE_WIDTH * 0.999 for low, high in ranges.values()), ranges
    qat_path = export_tflite(qat, tmp_path / "qat.tflite", mode="int8")
    assert _steps(qat_path, infer(qat, images), images)["max_steps"] <= 3
    ptq_path = export_tflite(model, tmp_path / "ptq.tflite", mode="int8",
                             representative_dataset=images)
    assert _steps(ptq_path, infer(model, images), images)["mean_steps"] <= 1.5


def _smallest_scale(path, name_part: str) -> float:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    return min(float(np.min(t["quantization_parameters"]["scales"]))
               for t in interpreter.get_tensor_details()
               if name_part in t["name"] and len(t["quantization_parameters"]["scales"])
               and np.dtype(t["dtype"]) == np.int8)


@pytest.mark.slow
def test_degenerate_ranges_would_break_the_export_without_the_floor(Q, dead_network, images,
                                                                     tmp_path):
    """The oracle can fail: converted as they are, the [0, 0] ranges give block 4 int8 scales
    near 1e-8 (XNNPACK refuses such a model) and the zero gammas a float conv; export_tflite
    converts them widened (without changing the model): all int8, sane scales, and it runs."""
    _, qat = dead_network
    Q.calibrate(qat, images, min_width=0.0)
    try:
        _check_the_floor(qat, images, tmp_path)
    finally:
        Q.calibrate(qat, images)  # as the fixture made it


def _check_the_floor(qat, images, tmp_path) -> None:
    assert _dead_block_ranges(qat)["quant_block4_ca/pool_h_q"] == (0.0, 0.0)
    graph_def, input_name, outputs = tflite_module._frozen_graph(tf, qat, (SIZE, SIZE, 3), None)
    request = conversion_request("int8", True, input_name, outputs)
    raw = tmp_path / "raw.tflite"
    raw.write_bytes(tflite_module._run_converter(request, graph_def, None, isolate=True))
    bad = float_ops(inspect_tflite(raw))
    assert any("block6_expand" in name for op in bad for name in op.output_names), bad
    assert _smallest_scale(raw, "block4_ca") < 1e-7
    fixed = export_tflite(qat, tmp_path / "widened.tflite", mode="int8")  # strict: all int8
    assert _smallest_scale(fixed, "block4_ca") >= MIN_RANGE_WIDTH / 256 * 0.99
    assert _steps(fixed, infer(qat, images), images)["max_steps"] <= 3
    assert _dead_block_ranges(qat)["quant_block4_ca/pool_h_q"] == (0.0, 0.0)  # unchanged


def _repro_module():
    return load_script(ROOT / "benchmarks" / "repro" / "converter_segfault_nan_weights.py",
                       "converter_segfault_nan_weights")


def _nan_block():
    qat = _repro_module().quantized_block()
    for variable in qat.trainable_weights:
        variable.assign(tf.fill(variable.shape, float("nan")))
    return qat


def test_nan_weights_are_refused_before_conversion(tmp_path):
    qat = _nan_block()
    with pytest.raises(ValueError, match=r"hold NaN or infinity, e\.g\. .*ca/conv1"):
        export_tflite(qat, tmp_path / "nan.tflite", mode="int8")
    assert not (tmp_path / "nan.tflite").exists()


def test_real_converter_crash_becomes_conversion_error(tmp_path):
    """The converter segfaults on this graph (benchmarks/repro); in its child process that is
    a ConversionError here, and this process goes on converting. The converter child is kept
    from one conversion to the next, and replaced after a crash."""
    from keras_coordatt.export._converter_process import CONVERTER

    healthy = _repro_module().quantized_block()
    export_tflite(healthy, tmp_path / "first.tflite", mode="int8")
    first_child = CONVERTER._child.pid
    qat = _nan_block()
    graph_def, input_name, outputs = tflite_module._frozen_graph(tf, qat, (16, 16, 16), None)
    request = conversion_request("int8", True, input_name, outputs)
    with pytest.raises(ConversionError, match="crashed \\(SIGSEGV\\)"):
        tflite_module._run_converter(request, graph_def, None, isolate=True)
    export_tflite(healthy, tmp_path / "ok.tflite", mode="int8")
    assert not float_ops(inspect_tflite(tmp_path / "ok.tflite"))
    second_child = CONVERTER._child.pid
    export_tflite(healthy, tmp_path / "again.tflite", mode="int8")
    assert second_child != first_child and CONVERTER._child.pid == second_child
    assert (tmp_path / "again.tflite").read_bytes() == (tmp_path / "ok.tflite").read_bytes()


def test_float_ops_error_names_layers_and_tensors(Q, tmp_path):
    from keras_coordatt.quantization._deps import import_qat_stack

    _, tf_keras, tfmot = import_qat_stack()
    inputs = tf_keras.Input((8, 8, 3))
    x = tfmot.quantization.keras.quantize_annotate_layer(
        tf_keras.layers.Conv2D(4, 3, padding="same", name="quantized_conv"))(inputs)
    outputs = tf_keras.layers.Conv2D(4, 1, name="plain_conv")(x)  # left out of QAT
    qat = tfmot.quantization.keras.quantize_apply(tf_keras.Model(inputs, outputs))
    Q.calibrate(qat, np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"CONV_2D\. Layers: .*plain_conv.*\. Float tensors: .*"
                                         r"plain_conv"):
        export_tflite(qat, tmp_path / "mixed.tflite", mode="int8")
    assert not (tmp_path / "mixed.tflite").exists()
