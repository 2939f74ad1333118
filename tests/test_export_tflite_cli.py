"""``keras-coordatt export-tflite``: every kind of model source, checked against Keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_coordatt.applications import MobileNetV2CA, preprocess_input
from keras_coordatt.cli import main
from keras_coordatt.export import LiteRTModel, float_ops, inspect_tflite

from helpers import CIFAR_DIR, infer, load_cifar

pytestmark = pytest.mark.tflite

SIZE = 64


def _real_inputs(count: int = 8) -> np.ndarray:
    images, _ = load_cifar(SIZE)
    return np.asarray(preprocess_input(images[:: 200 // count][:count]), dtype="float32")


@pytest.fixture(scope="module")
def trained_weights(tmp_path_factory):
    """A small MobileNetV2CA with BN statistics from real images, saved as .weights.h5."""
    model = MobileNetV2CA(input_shape=(SIZE, SIZE, 3), alpha=0.35, weights=None, classes=10,
                          classifier_activation=None)
    images = _real_inputs(16)
    for _ in range(3):  # move BN statistics off their initial values
        model(images, training=True)
    path = tmp_path_factory.mktemp("weights") / "small.weights.h5"
    model.save_weights(path)
    return model, path


def _run(*args, capsys) -> tuple[int, str, str]:
    code = main(["export-tflite", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_model_with_weights_file_float32_matches_keras(trained_weights, tmp_path, capsys):
    model, weights = trained_weights
    out = tmp_path / "f32.tflite"
    code, printed, err = _run(
        out, "--model", "mobilenet_v2_ca", "--alpha", "0.35", "--weights", weights,
        "--classes", "10", "--input-size", SIZE, capsys=capsys,
    )
    assert code == 0, err
    assert f"wrote float32 TFLite model of {model.name} ({SIZE}x{SIZE} input" in printed
    images = _real_inputs()
    expected = keras.ops.convert_to_numpy(keras.activations.softmax(model(images)))
    np.testing.assert_allclose(LiteRTModel(out)(images), expected, atol=1e-4)


def test_keras_model_int8_calibrated_on_image_folder(trained_weights, tmp_path, capsys):
    model, _ = trained_weights
    saved = tmp_path / "model.keras"
    model.save(saved)
    out = tmp_path / "int8.tflite"
    code, printed, err = _run(
        out, "--keras-model", saved, "--mode", "int8", "--calibration-images", CIFAR_DIR,
        "--calibration-steps", 40, "--int8-io", capsys=capsys,
    )
    assert code == 0, err
    assert "int8 check: no op computes in float (int8 input and output)" in printed
    ops = inspect_tflite(out)
    assert float_ops(ops, allow_float_io=False) == []
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "LOGISTIC"} <= {op.name for op in ops}
    images = _real_inputs()
    agree = LiteRTModel(out)(images).argmax(-1) == keras.ops.convert_to_numpy(
        model(images)).argmax(-1)
    assert agree.mean() >= 0.75  # PTQ of random-weight logits: most classes survive


@pytest.mark.qat
def test_qat_model_file_exports_int8(trained_weights, tmp_path, capsys):
    from keras_coordatt.quantization import quantize_model

    model, _ = trained_weights
    images = _real_inputs(16)
    qat = quantize_model(model, calibration_data=images)
    saved = tmp_path / "qat.h5"
    qat.save(saved)
    out = tmp_path / "qat.tflite"
    code, printed, err = _run(out, "--qat-model", saved, "--mode", "int8", capsys=capsys)
    assert code == 0, err
    assert float_ops(inspect_tflite(out)) == []
    steps = np.abs(LiteRTModel(out)(images) - infer(qat, images))
    scale = LiteRTModel(out).interpreter.get_output_details()[0]["quantization"][0] or 1 / 256
    assert np.median(steps) <= 3 * scale


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "mobilenet_v2_ca", "--weights", "none", "--mode", "int8"],
         "needs --calibration-images"),
        (["--qat-model", "missing.h5", "--mode", "float16"], "exports with --mode int8"),
        (["--model", "mobilenet_v2_ca", "--int8-io"], "--int8-io needs --mode int8"),
        (["--keras-model", "missing.keras"], "does not exist"),
        (["--model", "mobilenet_v2_ca", "--weights", "none", "--mode", "int8",
          "--calibration-images", "no_such_dir"], "is not a directory"),
    ],
)
def test_bad_arguments_give_one_line_errors(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run("out.tflite", "--alpha", "0.35", "--input-size", 32, *args,
                        capsys=capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "out.tflite").exists()


def test_any_size_keras_model_needs_input_size(tmp_path, capsys):
    model = MobileNetV2CA(input_shape=(None, None, 3), alpha=0.35, weights=None)
    model.save(tmp_path / "any.keras")
    code, _, err = _run(tmp_path / "x.tflite", "--keras-model", tmp_path / "any.keras",
                        capsys=capsys)
    assert code == 2 and "--input-size" in err


def test_help_explains_sources_and_modes(capsys):
    assert main(["export-tflite", "--help"]) == 0
    text = capsys.readouterr().out
    for word in ("--model", "--keras-model", "--qat-model", "float16", "dynamic", "int8",
                 "--calibration-images", "SELECT_TF_OPS", "examples:"):
        assert word in text
