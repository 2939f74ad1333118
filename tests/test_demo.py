"""The README's main job, `keras-coordatt demo`, runs end to end on the bundled real images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from keras_coordatt.cli import main
from keras_coordatt.datasets import load_cifar10_subset
from keras_coordatt.export import evaluate_tflite, inspect_tflite
from keras_coordatt.export.tflite import float_ops

pytestmark = [pytest.mark.slow, pytest.mark.qat, pytest.mark.tflite]


def test_demo_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main([
        "demo", "--output", str(out), "--epochs", "1", "--qat-epochs", "1",
        "--train-images", "640", "--alpha", "0.35",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| QAT int8 TFLite |" in printed and "LiteRT latency" in printed

    results = json.loads((out / "results.json").read_text())
    rows = {row["model"]: row for row in results["models"]}
    assert set(rows) == {
        "float Keras", "QAT Keras (fake-quant)", "float32 TFLite", "PTQ int8 TFLite",
        "QAT int8 TFLite",
    }
    for name in ("float32 TFLite", "PTQ int8 TFLite", "QAT int8 TFLite"):
        assert (out / rows[name]["file"]).exists()
        assert rows[name]["latency_ms"] > 0
    assert rows["PTQ int8 TFLite"]["size_kb"] < 0.5 * rows["float32 TFLite"]["size_kb"]
    # The int8 exports are truly int8 inside, and the reported accuracies are what LiteRT gives.
    for name in ("PTQ int8 TFLite", "QAT int8 TFLite"):
        path = out / rows[name]["file"]
        assert float_ops(inspect_tflite(path)) == []
    x_test, y_test = load_cifar10_subset("test")
    from keras_coordatt.demo import preprocess_images

    float_file = out / rows["float32 TFLite"]["file"]
    again = evaluate_tflite(float_file, (preprocess_images(x_test), y_test), progress=False)
    assert again["accuracy"] == pytest.approx(rows["float32 TFLite"]["top1"])
    assert np.isclose(rows["float32 TFLite"]["top1"], rows["float Keras"]["top1"], atol=0.01)
