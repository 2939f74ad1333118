"""PTQ and QAT int8 export at 224x224 for every family x attention (issue 15's CI matrix).

The cases run in two child processes at a time (``benchmarks/qat_matrix.py --cases ...``, four
cases each, one after another): a converter crash or a hang fails that case's test and a new
child runs the cases after it. Each child's first case (MobileNeXt with CA, with CBAM: the two
that crashed or kept float ops when issue 15 was filed) runs in a fresh process. The oracle is
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


#: The two children's cases, in order.
CHAINS = (
    ["mobilenext:ca", "mobilenet_v2:none", "mobilenext:se", "mobilenet_v2:cbam"],
    ["mobilenext:cbam", "mobilenet_v2:ca", "mobilenext:none", "mobilenet_v2:se"],
)


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("qat_matrix")
    images = folder / "images.npy"  # decoded once here, not in each child
    np.save(images, qat_matrix.load_images(IMAGES))

    def run(chain: list[str]) -> dict:
        return qat_matrix.run_in_children(chain, ALPHA, str(images), folder, timeout=900)

    with ThreadPoolExecutor(max_workers=len(CHAINS)) as pool:
        found = {case: result for part in pool.map(run, CHAINS) for case, result in part.items()}
    assert sorted(found) == sorted(CASES)
    return found


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


FAKE_CHILD = """
import json, os, sys, time
args = sys.argv[1:]
cases = args[args.index("--cases") + 1 : args.index("--alphas")]
folder = args[args.index("--json-dir") + 1]
for case in cases:
    if case == "crash:here":
        os.abort()
    if case == "hang:here":
        time.sleep(60)
    with open(os.path.join(folder, case.replace(":", "_") + ".json"), "w") as handle:
        json.dump({"case": case, "pid": os.getpid()}, handle)
"""


def test_a_crash_or_a_hang_fails_one_case_and_a_new_child_runs_the_rest(tmp_path):
    """The orchestration of ``run_in_children``, with a stand-in child that aborts or hangs."""
    script = tmp_path / "stand_in_child"
    script.write_text(FAKE_CHILD)
    cases = ["a:1", "crash:here", "b:2", "hang:here", "c:3"]
    found = qat_matrix.run_in_children(cases, ALPHA, "unused.npy", tmp_path, timeout=2,
                                       child=[sys.executable, str(script)])
    assert sorted(found) == sorted(cases)
    assert found["crash:here"]["error"] == "exit status -6"  # SIGABRT
    assert found["hang:here"]["error"].startswith("timed out")
    pids = {case: found[case]["pid"] for case in ("a:1", "b:2", "c:3")}
    assert pids["a:1"] != pids["b:2"] != pids["c:3"]  # a new child after each failure
    assert all("error" not in found[case] for case in pids)
