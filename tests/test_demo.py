"""The README's main job, `keras-coordatt demo`, runs end to end on the bundled real images, in
the small-image configuration, and its console shows only the demo's own lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from keras_coordatt.datasets import load_cifar10_subset
from keras_coordatt.export import evaluate_tflite, inspect_tflite
from keras_coordatt.export.tflite import float_ops

from helpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.qat, pytest.mark.tflite]

#: The test's budget: 2 epochs on the 4,000 training images, 1 QAT epoch on 512 of them, at
#: width 0.35 (the demo's code path at two thirds of the default width's training time).
EPOCHS = 2
#: Chance is 10 %; on 1,000 test images its standard deviation is 0.95 points, so 14 % is four
#: standard deviations above chance (the budget reached about 20 % when this was written).
MIN_FLOAT_TOP1 = 0.14

#: Every console line the demo itself prints (anything else is a library's log or warning).
DEMO_LINE = re.compile(
    r"$|\[\d/6\] |  \S|\||Artifacts in |Seconds: "
    # an epoch line of Keras 3 (float training) or tf_keras (QAT): steps, time, loss, accuracy
    r"|\d+/\d+ - \d+m?s - (?=.*loss: )[\w/ .:-]+$"
)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("TF_USE_LEGACY_KERAS", "TF_CPP_MIN_LOG_LEVEL")}
    completed = subprocess.run(
        [sys.executable, "-m", "keras_coordatt.cli", "demo", "--output", str(out),
         "--epochs", str(EPOCHS), "--qat-epochs", "1", "--qat-images", "512", "--alpha", "0.35"],
        cwd=ROOT, capture_output=True, text=True, env=environment, timeout=2400,
    )
    return completed, out


def test_demo_console_is_clean(demo_run):
    completed, _ = demo_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    # Nothing on stderr: no TensorFlow / absl start-up lines, converter prints or warnings.
    assert completed.stderr == ""
    lines = completed.stdout.splitlines()
    foreign = [line for line in lines if not DEMO_LINE.match(line)]
    assert foreign == []
    # stdout is a pipe here: one line per training epoch, no progress-bar redraws.
    epoch_lines = [line for line in lines if re.match(r"\d+/\d+ - ", line)]
    assert len(epoch_lines) == EPOCHS + 1
    assert "\r" not in completed.stdout and "\b" not in completed.stdout


def test_demo_results(demo_run):
    completed, out = demo_run
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "| QAT int8 TFLite |" in completed.stdout and "LiteRT latency" in completed.stdout
    results = json.loads((out / "results.json").read_text())
    rows = {row["model"]: row for row in results["models"]}
    assert set(rows) == {
        "float Keras", "QAT Keras (fake-quant)", "float32 TFLite", "PTQ int8 TFLite",
        "QAT int8 TFLite",
    }
    assert rows["float Keras"]["top1"] >= MIN_FLOAT_TOP1
    phases = results["phase_seconds"]  # the time line: every phase, adding up to the total
    assert list(phases) == ["data", "training", "export", "QAT", "LiteRT evaluation", "latency"]
    assert all(seconds > 0 for seconds in phases.values())
    assert sum(phases.values()) == pytest.approx(results["seconds"])
    assert f"Seconds: data {phases['data']:.0f}, training " in completed.stdout
    for name in ("float32 TFLite", "PTQ int8 TFLite", "QAT int8 TFLite"):
        assert (out / rows[name]["file"]).exists()
        assert rows[name]["latency_ms"] > 0
    assert rows["PTQ int8 TFLite"]["size_kb"] < 0.5 * rows["float32 TFLite"]["size_kb"]
    # The int8 exports are truly int8 inside, and the reported accuracies are what LiteRT gives.
    for name in ("PTQ int8 TFLite", "QAT int8 TFLite"):
        assert float_ops(inspect_tflite(out / rows[name]["file"])) == []
    x_test, y_test = load_cifar10_subset("test")
    from keras_coordatt.demo import preprocess_images

    float_file = out / rows["float32 TFLite"]["file"]
    again = evaluate_tflite(float_file, (preprocess_images(x_test), y_test), progress=False)
    assert again["accuracy"] == pytest.approx(rows["float32 TFLite"]["top1"])
    assert np.isclose(rows["float32 TFLite"]["top1"], rows["float Keras"]["top1"], atol=0.01)
    # the small-image configuration: a 4x4 last feature map at 32x32
    import keras

    model = keras.saving.load_model(out / "mobilenetv2_ca.keras")
    assert tuple(model.get_layer("head_relu").output.shape[1:3]) == (4, 4)
