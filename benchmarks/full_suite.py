"""The full suite's side of the benchmark harness: the PyTorch reference (eager and ONNX
Runtime) next to the package's Keras / LiteRT contenders (:mod:`keras_coordatt.benchmark`),
the calibration images of the source checkout, and waiting for a quiet machine.

Used by ``run_benchmarks.py``, ``ca_graph.py`` and ``xla_depthwise.py``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from keras_coordatt import benchmark as bench

HERE = Path(__file__).resolve().parent
#: The images the recorded results were calibrated on (tests/data of the source checkout).
IMAGENET_SMALL = HERE.parent / "tests" / "data" / "imagenet_small"

#: Every runtime of the full suite, in table column order, and their column labels.
TORCH_RUNTIMES = ("torch", "onnxruntime")
RUNTIMES = bench.RUNTIMES + TORCH_RUNTIMES
RUNTIME_LABELS = {
    **bench.RUNTIME_LABELS,
    "torch": "PyTorch eager",
    "onnxruntime": "ONNX Runtime",
}
MODELS = bench.MODELS
#: Which PyTorch reference network stands for a Keras model (None: no PyTorch counterpart).
TORCH_COUNTERPART = {
    "MobileNetV2CA": "MBV2_CA (houqb mbv2_ca.py)",
    "MobileNetV2": "MobileNetV2 (d-li14)",
    "keras.applications.MobileNetV2": None,
    "MobileNeXt": "i2rnetv3 (official MobileNeXt)",
    "MobileNeXtCA": "i2rnetv3 + CA (our placement)",
}


def calibration_images(count: int = 8, size: int = 224) -> np.ndarray:
    """The calibration images of the recorded results: ``tests/data/imagenet_small``."""
    return bench.calibration_images(count, size, folder=IMAGENET_SMALL)


def latency_table(timings, models, batch: int) -> str:
    """:func:`keras_coordatt.benchmark.latency_table` with the PyTorch / ONNX columns."""
    return bench.latency_table(timings, models, RUNTIMES, batch, labels=RUNTIME_LABELS)


def wait_for_quiet(
    threshold: float, minutes: float, log: Callable[[str], None] | None = print
) -> str:
    """Polls the 1-minute load average every minute until it is below ``threshold`` (at most
    ``minutes``); returns a sentence saying what happened, for the report."""
    deadline = time.time() + minutes * 60
    while True:
        load = bench.load_average()
        if load is None:
            return "load average unknown; did not wait"
        if load[0] < threshold:
            return f"1-minute load average {load[0]:.2f} < {threshold:g} when timing started"
        if time.time() >= deadline:
            return (
                f"the machine never calmed down: 1-minute load average still {load[0]:.2f} "
                f"(>= {threshold:g}) after waiting {minutes:g} minutes; ran anyway"
            )
        if log:
            log(f"load average {load[0]:.2f} >= {threshold:g}; waiting")
        time.sleep(60)


def configure_torch_threads(threads: int) -> Any:
    """Imports torch with ``threads`` intra-op threads and 1 inter-op thread; None if absent."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set / parallel work already started
        pass
    return torch


def load_torch_reference():
    """The PyTorch reference module, or a string saying why it is unavailable."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install torch)"
    path = HERE / "torch_reference.py"
    if "keras_coordatt_torch_reference" in sys.modules:
        return sys.modules["keras_coordatt_torch_reference"]
    spec = importlib.util.spec_from_file_location("keras_coordatt_torch_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def onnx_missing() -> str | None:
    """Why the ONNX Runtime column cannot run, or None."""
    missing = [m for m in ("onnxruntime", "onnx", "onnxscript") if not importlib.util.find_spec(m)]
    if missing:
        return f"{', '.join(missing)} not installed (pip install onnxruntime onnx onnxscript)"
    return None


def torch_runner(module, images_nchw: np.ndarray) -> Callable[[], Any]:
    """Eager ``module(x)`` under ``torch.inference_mode()``."""
    import torch

    tensor = torch.from_numpy(images_nchw)

    def run():
        with torch.inference_mode():
            return module(tensor)

    return run


def export_onnx(module, path: str | os.PathLike, input_size: int = 224) -> str:
    """``torch.onnx.export(dynamo=True)`` with a dynamic batch, weights inside the file.

    (The legacy TorchScript exporter refuses CA's ``AdaptiveAvgPool2d((None, 1))``.)
    """
    import contextlib
    import io
    import warnings

    import torch

    example = torch.zeros(2, 3, input_size, input_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (example,), dynamo=True, input_names=["images"], output_names=["logits"],
            dynamic_shapes=({0: batch},), verbose=False,
        )
    program.save(os.fspath(path), external_data=False)
    return os.fspath(path)


def ort_session(path: str, threads: int):
    """An ONNX Runtime CPU session: ``threads`` intra-op threads, sequential execution."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def ort_runner(path: str, images_nchw: np.ndarray, threads: int) -> Callable[[], Any]:
    """``session.run`` on ``images_nchw``."""
    session = ort_session(path, threads)
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: images_nchw})


def build_suite(
    models: Iterable[str], runtimes: Iterable[str], batches: Iterable[int], **options: Any
) -> bench.Suite:
    """:func:`keras_coordatt.benchmark.build_suite` (same ``options``: ``alpha``,
    ``input_size``, ``threads``, ``workdir``, ``log``, ``keras_models``) plus the PyTorch /
    ONNX Runtime contenders, all calibrated on :func:`calibration_images`."""
    models, runtimes, batches = list(models), list(runtimes), list(batches)
    options.setdefault("log", print)
    calibration = calibration_images(size=options.get("input_size", 224))
    suite = bench.build_suite(
        models, [r for r in runtimes if r not in TORCH_RUNTIMES], batches,
        calibration=calibration, **options,
    )
    torch_suite = _torch_suite(
        models, [r for r in runtimes if r in TORCH_RUNTIMES], batches,
        alpha=options.get("alpha", 1.0), input_size=options.get("input_size", 224),
        threads=options.get("threads", 2), workdir=Path(options["workdir"]),
        log=options["log"] or (lambda _message: None), calibration=calibration,
    )
    suite.contenders += torch_suite.contenders
    suite.notes += torch_suite.notes
    suite.artifacts.update(torch_suite.artifacts)
    return suite


def _torch_suite(models, torch_runtimes, batches, *, alpha, input_size, threads, workdir, log,
                 calibration) -> bench.Suite:
    suite = bench.Suite([], [], {})
    reference = load_torch_reference() if torch_runtimes else None
    if isinstance(reference, str):
        suite.notes.append(f"PyTorch / ONNX Runtime columns skipped: {reference}.")
        torch_runtimes = []
    if "onnxruntime" in torch_runtimes and onnx_missing():
        suite.notes.append(f"ONNX Runtime column skipped: {onnx_missing()}.")
        torch_runtimes.remove("onnxruntime")
    if torch_runtimes:
        configure_torch_threads(threads)
    inputs = {batch: bench.benchmark_inputs(batch, input_size)[1] for batch in batches}
    for name in models if torch_runtimes else []:
        if TORCH_COUNTERPART.get(name) is None:
            continue
        module = reference.build(
            name, alpha, calibration=np.ascontiguousarray(calibration.transpose(0, 3, 1, 2))
        )
        if "onnxruntime" in torch_runtimes:
            path = workdir / f"torch_{name}_{alpha}_{input_size}.onnx"
            if not path.is_file():
                log(f"exporting the PyTorch {name} to ONNX")
                start = time.perf_counter()
                export_onnx(module, path, input_size)
                log(f"  {time.perf_counter() - start:.0f} s")
            suite.artifacts[(name, "onnxruntime")] = str(path)
        for runtime in torch_runtimes:
            for batch in batches:
                if runtime == "torch":
                    fn = torch_runner(module, inputs[batch])
                else:
                    fn = ort_runner(suite.artifacts[(name, runtime)], inputs[batch], threads)
                suite.contenders.append(bench.Contender(name, runtime, batch, fn))
    return suite
