"""The request folder that ``_convert_worker.main`` reads: ``request.json``, ``graph.pb`` and,
for post-training int8, ``calibration.npy`` (see ``_convert_worker``'s docstring)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from keras_coordatt.export._ranges import MIN_RANGE_WIDTH


def conversion_request(mode: str, qat: bool, input_name: str, output_names: list[str], *,
                       int8_io: bool = False, uint8_input: bool = False, **extra) -> dict:
    """``request.json``'s content: the frozen graph's input / output tensor names and the
    converter's settings (``extra``: e.g. the detection post-processing)."""
    return {"mode": mode, "qat": qat, "int8_io": int8_io, "input": input_name,
            "outputs": output_names, "min_range_width": MIN_RANGE_WIDTH,
            "uint8_input": uint8_input, **extra}


def write_request(folder: Path, request: dict, graph_def, samples) -> None:
    """Writes the request, the frozen ``GraphDef`` and the calibration ``samples`` (or None)."""
    (folder / "request.json").write_text(json.dumps(request))
    (folder / "graph.pb").write_bytes(graph_def.SerializeToString())
    if samples is not None:
        np.save(folder / "calibration.npy", samples)
