"""PTQ and QAT int8 export at 224x224 for every family x attention (issue 15's CI matrix).

Each case runs ``benchmarks/qat_matrix.py --case ...`` in a child process of its own (two at a
time), so a converter crash or a hang fails that case's test and nothing else. The oracle is
the Keras model: the float model for PTQ, the QAT model for QAT, compared with the int8 TFLite
logits on real ImageNet photos, in output quantization steps.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import qat_matrix  # noqa: E402

pytestmark = [pytest.mark.qat, pytest.mark.tflite, pytest.mark.slow]

ALPHA = 0.35
CASES = [f"{family}:{attention}" for family in qat_matrix.FAMILIES
         for attention in qat_matrix.ATTENTIONS]
IMAGES = ROOT / "tests" / "data" / "imagenet_small"

# Largest / mean |int8 - Keras| logit difference in output quantization steps, of the 255 steps
# the logits of these images span: at most 10 % / 2 % of that range. Measured on these fresh
# networks (benchmarks/results/2026-12-01-qat-matrix-2core-amd-epyc.md): max 17 steps and mean
# 3.6 for MobileNeXt without attention (the worst), at most 6.6 / 1.3 with attention.
MAX_STEPS = 25.5
MEAN_STEPS = 5.1


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("qat_matrix")
    images = folder / "images.npy"  # decoded once here, not in each of the eight children
    np.save(images, qat_matrix.load_images(IMAGES))

    def run(case: str) -> dict:
        path = folder / (case.replace(":", "_") + ".json")
        return qat_matrix.run_in_child(case, ALPHA, str(images), path, timeout=900)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(CASES, pool.map(run, CASES), strict=True))


@pytest.mark.parametrize("case", CASES)
def test_ptq_and_qat_int8_at_224(matrix, case):
    result = matrix[case]
    assert "error" not in result, json.dumps(result, indent=1)
    assert result["size"] == 224 and result["alpha"] == ALPHA
    for kind in ("ptq", "qat"):
        report = result[kind]
        assert report["float_ops"] == [], (kind, report)
        assert report["max_steps"] <= MAX_STEPS, (kind, report)
        assert report["mean_steps"] <= MEAN_STEPS, (kind, report)
    assert result["qat"]["finite_weights"], result["qat"]
