"""benchmarks/suite_profile.py: the grouping of a py-spy raw profile, on a hand-written one."""

from __future__ import annotations

import pytest

from helpers import ROOT, load_script

profile = load_script(ROOT / "benchmarks" / "suite_profile.py", "suite_profile")

WORKER = 'process 1:"python -m pytest";process 2:"python -u -c exec";thread (0x1)'
RAW = "\n".join([
    # 30 samples in a worker's test, 10 of them tracing inside quantize_model
    f"{WORKER};test_a (test_demo.py:10);quantize_model (keras_coordatt/quantization/qat.py:1) 20",
    f"{WORKER};test_a (test_demo.py:10);quantize_model (keras_coordatt/quantization/qat.py:1);"
    "func_graph_from_py_func (func_graph.py:3) 10",
    # a notebook kernel: 8 samples running a cell, 50 in its idle heartbeat thread
    'process 3:"python -m ipykernel_launcher -f k.json";run_cell (shell.py:1);'
    "TensorFlowTrainer.fit (trainer.py:2) 8",
    'process 3:"python -m ipykernel_launcher -f k.json";Heartbeat.run (heartbeat.py:9) 50',
    # a child of the QAT matrix test, 2 samples importing
    'process 4:"python benchmarks/qat_matrix.py --cases a:b";_find_and_load (<frozen>:1) 2',
    "a malformed line without a count",
])


def test_parts_and_activities(tmp_path):
    raw = tmp_path / "suite.raw"
    raw.write_text(RAW + "\n")
    text = profile.tables(str(raw), rate=2.0, top=2)
    # 40 counted samples at 2 per second (the heartbeat's 50 are idle, not counted)
    assert text.startswith("Sampled CPU: 20 s in all.")
    assert "| in a pytest worker: test_demo.py | 15 | 75.0 % |" in text
    assert "| notebook kernels (test_notebooks.py, 6 notebooks) | 4 | 20.0 % |" in text
    assert "| 1 other parts | 1 | 5.0 % |" in text  # the QAT matrix child, past --top
    assert "| keras_coordatt quantize_model | 15 | 75.0 % |" in text
    assert "| tf.function tracing (func_graph_from_py_func) | 5 | 25.0 % |" in text
    assert "| Keras 3 fit | 4 | 20.0 % |" in text
    assert "| Python imports (_find_and_load) | 1 | 5.0 % |" in text


def test_an_empty_profile_is_an_error(tmp_path):
    raw = tmp_path / "empty.raw"
    raw.write_text("")
    with pytest.raises(SystemExit, match="no py-spy samples"):
        profile.tables(str(raw), rate=20.0, top=5)
