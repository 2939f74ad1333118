"""applications/segmentation: train -> evaluate -> export, each a real subprocess, on the 8
Penn-Fudan photos of tests/data/pennfudan_instances (tiny model, 3 steps: the plumbing, not the
accuracy)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import DATA_DIR

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "applications" / "segmentation"
DATA = ["--source", "pennfudan", "--data-dir", str(DATA_DIR / "pennfudan_instances"),
        "--num-val", "2", "--eval-size", "64"]  # 6 train / 2 val


def run(script: str, *args: str, timeout: int = 600) -> str:
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, str(RECIPE / script), *args], env=env,
                            capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n" \
                                   f"{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "export.py", "compare.py"])
def test_help(script):
    text = run(script, "--help", timeout=120)
    assert text.startswith("usage:")
    if script == "train.py":  # the paper's setting as defaults
        for default in ("--output-stride {8,16,32}", "(default: 16)", "(default: 0.9)",
                        "(default: 4e-05)", "(default: 0.007)", "default 512 (768 for cityscapes)"):
            assert default in " ".join(text.split()), default


@pytest.mark.slow  # about 2 minutes on 2 cores: three processes that each trace a model
@pytest.mark.tflite
def test_train_evaluate_export(tmp_path):
    out = tmp_path / "run"
    text = run("train.py", *DATA, "--crop-size", "64", "--base-size", "72", "--alpha", "0.35",
               "--weights", "none", "--batch-size", "2", "--epochs", "1", "--attention", "ca",
               "--output-dir", str(out), "--verbose", "2")
    for name in ("model.keras", "checkpoints/last.keras", "checkpoints/best.keras",
                 "train_log.csv", "metrics.json"):
        assert (out / name).is_file(), name
    assert list((out / "logs").rglob("events.out.tfevents.*")), "no TensorBoard events"
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["mean_iou"] <= 1 and set(metrics["iou"]) == {"background", "person"}
    assert metrics["params"] > 0 and metrics["madds"] > 0
    assert f"held-out mIoU {metrics['mean_iou']:.4f}" in text

    text = run("evaluate.py", "--model", str(out / "model.keras"), *DATA,
               "--json", str(tmp_path / "eval.json"))
    scores = json.loads((tmp_path / "eval.json").read_text())
    shown = float(re.search(r"mIoU ([\d.]+) %", text).group(1))
    assert shown == pytest.approx(100 * scores["mean_iou"], abs=0.006)
    assert scores["mean_iou"] == pytest.approx(metrics["mean_iou"], abs=1e-6)  # same split
    assert re.search(r"IoU +person: +[\d.]+ %", text)

    # (QAT: the same code path with --modes qat; too slow for this test on 2 cores; the
    # fixed-size rebuild it needs is tests/test_deeplab.py::test_at_input_size_*)
    text = run("export.py", "--model", str(out / "model.keras"), *DATA, "--batch-size", "2",
               "--calibration-images", "4", "--modes", "float32", "ptq",
               "--output-dir", str(tmp_path / "tflite"))
    report = json.loads((tmp_path / "tflite" / "report.json").read_text())
    assert set(report) == {"keras", "float32", "ptq"}
    for mode in ("float32", "ptq"):
        assert Path(report[mode]["file"]).is_file()
        assert 0 <= report[mode]["mean_iou"] <= 1 and 0 <= report[mode]["agreement"] <= 1
        assert re.search(rf"^ *{mode} \| +[\d.]+ \| +[\d.]+ \|", text, re.M)
    assert report["ptq"]["float_ops"] == []
    assert report["float32"]["agreement"] >= 0.995
    assert report["keras"]["mean_iou"] == pytest.approx(metrics["mean_iou"], abs=1e-6)
