"""Peak memory of one inference path, measured in a fresh process (used by run_benchmarks.py).

Method (Linux): import only the runtime of the path (TensorFlow + Keras, LiteRT, torch or ONNX
Runtime; ``import_mb`` is the resident set size (``VmRSS``) it added), create the input batch,
read ``VmRSS`` as the baseline and reset the peak RSS counter (``echo 5 >
/proc/self/clear_refs`` resets ``VmHWM``); build / load the model, run ``2 + calls`` inferences
of one batch, then read the peak (``VmHWM``). Printed as one JSON line: ``import_mb``,
``peak_delta_mb`` (peak RSS above the baseline: weights, graph / arena, activations,
compilation, allocator caches) and ``peak_mb`` (absolute peak).

Usage: ``python benchmarks/memory_probe.py RUNTIME MODEL --batch 1 [--artifact FILE]``; RUNTIME
is one of keras, keras_xla, litert_f32, litert_int8, torch, onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _status(field: str) -> float:
    """``field`` of /proc/self/status in MiB."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE).group(1)) / 1024


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runtime")
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--artifact", default=None, help=".tflite / .onnx file")
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import numpy as np

    before_import = _status("VmRSS")
    runtime = args.runtime
    if runtime in ("keras", "keras_xla"):
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        from keras_coordatt import benchmark as bench

        bench.configure_threads(args.threads)
    elif runtime.startswith("litert"):
        from ai_edge_litert.interpreter import Interpreter
    elif runtime == "torch":
        import torch

        torch.set_num_threads(args.threads)
        sys.path.insert(0, str(HERE))
        import torch_reference
    elif runtime == "onnxruntime":
        import onnxruntime as ort
    else:
        parser.error(f"unknown runtime {runtime!r}")

    imported = _status("VmRSS")
    rng = np.random.RandomState(args.batch)
    size = args.input_size
    nhwc = rng.standard_normal((args.batch, size, size, 3)).astype(np.float32)
    nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
    baseline = _status("VmRSS")
    reset = _reset_peak()

    if runtime in ("keras", "keras_xla"):
        model = bench.build_keras_model(args.model, args.alpha, size)
        fn = (bench.keras_predict_runner if runtime == "keras" else bench.keras_xla_runner)(
            model, nhwc
        )
    elif runtime.startswith("litert"):
        interpreter = Interpreter(model_path=args.artifact, num_threads=args.threads)
        detail = interpreter.get_input_details()[0]
        if int(detail["shape"][0]) != args.batch:
            interpreter.resize_tensor_input(detail["index"], list(nhwc.shape))
        interpreter.allocate_tensors()
        index = interpreter.get_input_details()[0]["index"]

        def fn():
            interpreter.set_tensor(index, nhwc)
            interpreter.invoke()

    elif runtime == "torch":
        module = torch_reference.build(args.model, args.alpha)
        tensor = torch.from_numpy(nchw)

        def fn():
            with torch.inference_mode():
                module(tensor)

    else:
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(args.artifact, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def fn():
            session.run(None, {name: nchw})

    for _ in range(2 + args.calls):
        fn()
    peak = _status("VmHWM")
    print(json.dumps({
        "runtime": runtime,
        "model": args.model,
        "batch": args.batch,
        "import_mb": round(imported - before_import, 1),
        "peak_mb": round(peak, 1),
        "peak_delta_mb": round(peak - baseline, 1) if reset else None,
        "peak_reset": reset,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
