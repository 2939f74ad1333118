"""Latency benchmark of the networks side by side with the alternatives (``keras-coordatt
benchmark``), and the timing harness shared by the scripts in ``benchmarks/``.

Contenders are timed **interleaved in one process**: every trial runs each contender in turn
(round robin, starting at a different contender each trial), a trial of one contender times
many consecutive calls, and the reported value is the median over trials of the mean call time.
Noise that hits the machine for a while (other processes) is spread over all contenders
instead of biasing the ones that happened to run then, so ratios from one run are comparable.

Runtimes (each one at ``threads`` threads, default 2):

* ``keras``: ``model.predict_on_batch`` (TensorFlow backend);
* ``keras_xla``: ``tf.function(jit_compile=True)`` of ``model(x, training=False)``;
* ``litert_f32`` / ``litert_int8``: the model exported with
  :func:`keras_coordatt.export.export_tflite` (float32 / full-integer post-training int8 with
  float I/O), run by ``ai_edge_litert.interpreter.Interpreter`` (XNNPACK delegate);
* ``torch`` / ``onnxruntime``: the PyTorch reference of the original code
  (``benchmarks/torch_reference.py`` in a source checkout) in eager mode, and exported with
  ``torch.onnx.export(dynamo=True)`` to ONNX Runtime (CPU, ``intra_op_num_threads``). Optional:
  skipped with a note when torch / onnxruntime / onnx(script) or the reference file is missing.

Heavy imports (TensorFlow, LiteRT, torch, onnxruntime) happen inside the functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Benchmark model names (Keras builders / their PyTorch references).
MODELS = (
    "MobileNetV2CA",
    "MobileNetV2",
    "keras.applications.MobileNetV2",
    "MobileNeXt",
    "MobileNeXtCA",
)
QUICK_MODELS = ("MobileNetV2CA", "MobileNetV2", "keras.applications.MobileNetV2")
#: Inference runtimes, in table column order.
RUNTIMES = ("keras", "keras_xla", "litert_f32", "litert_int8", "torch", "onnxruntime")
RUNTIME_LABELS = {
    "keras": "Keras predict_on_batch",
    "keras_xla": "Keras XLA (jit_compile)",
    "litert_f32": "LiteRT float32",
    "litert_int8": "LiteRT int8",
    "torch": "PyTorch eager",
    "onnxruntime": "ONNX Runtime",
}
#: Which PyTorch reference network stands for a Keras model (None: no PyTorch counterpart).
TORCH_COUNTERPART = {
    "MobileNetV2CA": "MBV2_CA (houqb mbv2_ca.py)",
    "MobileNetV2": "MobileNetV2 (d-li14)",
    "keras.applications.MobileNetV2": None,
    "MobileNeXt": "i2rnetv3 (official MobileNeXt)",
    "MobileNeXtCA": "i2rnetv3 + CA (our placement)",
}
TORCH_RUNTIMES = ("torch", "onnxruntime")


# ------------------------------------------------------------------------------------------
# Environment
# ------------------------------------------------------------------------------------------


def configure_threads(threads: int) -> None:
    """Pins TensorFlow (intra-op ``threads``, inter-op 1) and, if imported later, torch/OpenMP.

    Call before TensorFlow runs its first op.
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised: keep what it has
        pass


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


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # noqa: BLE001 - any failure means "not installed"
        return "not installed"


def machine_info() -> dict[str, str]:
    """CPU model, core count, Python and library versions."""
    cpu = platform.processor() or "unknown"
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        if match:
            cpu = match.group(1).strip()
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "tensorflow": _version("tensorflow"),
        "keras": _version("keras"),
        "ai-edge-litert": _version("ai-edge-litert"),
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"),
        "onnx": _version("onnx"),
        "onnxscript": _version("onnxscript"),
        "keras-coordatt": _version("keras-coordatt"),
    }


def load_average() -> tuple[float, float, float] | None:
    """The 1 / 5 / 15-minute load averages, or None where unknown."""
    try:
        return os.getloadavg()
    except OSError:
        return None


def wait_for_quiet(
    threshold: float, minutes: float, log: Callable[[str], None] | None = print
) -> str:
    """Polls the 1-minute load average every minute until it is below ``threshold`` (at most
    ``minutes``); returns a sentence saying what happened, for the report."""
    deadline = time.time() + minutes * 60
    while True:
        load = load_average()
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


# ------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Contender:
    """One timed thing: ``fn()`` runs one call (one batch)."""

    model: str
    runtime: str
    batch: int
    fn: Callable[[], Any]

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.model, self.runtime, self.batch)


@dataclasses.dataclass
class Timing:
    """Per-call seconds: median, quartiles over trials, calls per trial, trial count."""

    median: float
    q1: float
    q3: float
    calls: int
    trials: int

    @property
    def spread(self) -> float:
        """Half the inter-quartile range relative to the median."""
        return (self.q3 - self.q1) / 2 / self.median if self.median else 0.0


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, statistics.median(values), q3


def measure(
    contenders: Sequence[Contender],
    *,
    trials: int = 7,
    trial_seconds: float = 0.5,
    warmup: int = 2,
    settle_seconds: float = 0.05,
    log: Callable[[str], None] | None = print,
) -> dict[tuple[str, str, int], Timing]:
    """Times ``contenders`` interleaved; returns :class:`Timing` by ``contender.key``.

    Each contender is warmed up with ``warmup`` calls; the calls per trial are chosen from the
    warm-up time so a trial lasts about ``trial_seconds`` (at least one call). Then ``trials``
    rounds run every contender once each, rotating the start; ``settle_seconds`` of sleep before
    each block lets the previous runtime's spinning worker threads go idle.
    """
    calls: dict[tuple, int] = {}
    for contender in contenders:
        for _ in range(warmup):
            contender.fn()
        start = time.perf_counter()
        contender.fn()
        once = max(time.perf_counter() - start, 1e-6)
        calls[contender.key] = max(1, math.ceil(trial_seconds / once))
        if log:
            log(f"  warm {contender.model} / {contender.runtime} / batch {contender.batch}: "
                f"{once * 1e3:.1f} ms, {calls[contender.key]} calls per trial")
    samples: dict[tuple, list[float]] = {c.key: [] for c in contenders}
    count = len(contenders)
    for trial in range(trials):
        for offset in range(count):
            contender = contenders[(trial + offset) % count]
            n = calls[contender.key]
            time.sleep(settle_seconds)
            start = time.perf_counter()
            for _ in range(n):
                contender.fn()
            samples[contender.key].append((time.perf_counter() - start) / n)
        if log:
            log(f"  trial {trial + 1}/{trials} done")
    result = {}
    for key, values in samples.items():
        q1, median, q3 = _quartiles(values)
        result[key] = Timing(median, q1, q3, calls[key], len(values))
    return result


# ------------------------------------------------------------------------------------------
# Keras / LiteRT
# ------------------------------------------------------------------------------------------


def calibrate_batchnorm(model, images: np.ndarray):
    """Sets every BatchNormalization's moving statistics (nested ones too, e.g. CA's ``bn1``)
    to the batch statistics of its input on ``images``, like a trained network.

    Freshly initialised networks (BN gamma 1, beta 0, moving mean 0 / variance 1) shrink the
    activations block after block into float32 denormals, which slows some runtimes several-fold
    (PyTorch eager on x86 does not flush denormals) and makes latency numbers meaningless. One
    training-mode forward with momentum 0 gives each BN the statistics of its actual input.
    """
    import keras

    norms = [
        layer for layer in model._flatten_layers(include_self=False, recursive=True)  # noqa: SLF001
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    try:
        model(images, training=True)
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
    return model


def build_keras_model(
    name: str, alpha: float = 1.0, input_size: int = 224, calibration: np.ndarray | None = None
):
    """A random-weight model by benchmark name, logits output (no softmax); with
    ``calibration`` images its BN statistics are set from them (:func:`calibrate_batchnorm`)."""
    import keras

    shape = (input_size, input_size, 3)
    if name == "keras.applications.MobileNetV2":
        model = keras.applications.MobileNetV2(
            input_shape=shape, alpha=alpha, weights=None, classifier_activation=None
        )
    else:
        from keras_coordatt import applications

        builder = getattr(applications, name)
        model = builder(input_shape=shape, alpha=alpha, weights=None, classifier_activation=None)
    if calibration is not None:
        calibrate_batchnorm(model, calibration)
    return model


def keras_predict_runner(model, images: np.ndarray) -> Callable[[], Any]:
    """``model.predict_on_batch(images)``."""
    return lambda: model.predict_on_batch(images)


def keras_xla_runner(model, images: np.ndarray) -> Callable[[], Any]:
    """An XLA-compiled ``model(images, training=False)`` (compiled on the first call)."""
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), jit_compile=True)
    tensor = tf.constant(images)
    return lambda: forward(tensor).numpy()


def calibration_images(count: int = 8, size: int = 224) -> np.ndarray:
    """Preprocessed images for int8 calibration: ``tests/data/imagenet_small`` in a source
    checkout (centre crop, resized), else a fixed-seed random field."""
    from keras_coordatt.applications import preprocess_input

    folder = Path(__file__).resolve().parents[1] / "tests" / "data" / "imagenet_small"
    images = []
    try:
        from PIL import Image

        for path in sorted(folder.glob("*.jpg"))[:count]:
            with Image.open(path) as image:
                image = image.convert("RGB")
                side = min(image.size)
                left, top = (image.width - side) // 2, (image.height - side) // 2
                image = image.crop((left, top, left + side, top + side)).resize((size, size))
                images.append(np.asarray(image, dtype=np.float32))
    except ImportError:
        images = []
    if not images:
        rng = np.random.RandomState(0)
        return rng.standard_normal((count, size, size, 3)).astype(np.float32)
    return preprocess_input(np.stack(images)).astype(np.float32)


def export_litert(model, path: str | os.PathLike, mode: str, calibration: np.ndarray) -> str:
    """``export_tflite`` with a dynamic batch: ``mode`` "float32" or "int8" (float I/O)."""
    from keras_coordatt.export import export_tflite

    if mode == "int8":
        return export_tflite(model, path, mode="int8", representative_dataset=calibration)
    return export_tflite(model, path, mode=mode)


def litert_interpreter(path: str, batch: int, threads: int):
    """A LiteRT interpreter (default delegates: XNNPACK) resized to ``batch``."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    detail = interpreter.get_input_details()[0]
    if int(detail["shape"][0]) != batch:
        interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
    interpreter.allocate_tensors()
    return interpreter


def litert_runner(path: str, images: np.ndarray, threads: int) -> Callable[[], Any]:
    """set_tensor -> invoke -> get_tensor on a float-input .tflite."""
    interpreter = litert_interpreter(path, len(images), threads)
    index = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]["index"]

    def run():
        interpreter.set_tensor(index, images)
        interpreter.invoke()
        return interpreter.get_tensor(output)

    return run


# ------------------------------------------------------------------------------------------
# PyTorch / ONNX Runtime
# ------------------------------------------------------------------------------------------


def torch_reference_path() -> Path:
    """``benchmarks/torch_reference.py`` of the source checkout this package lives in."""
    return Path(__file__).resolve().parents[1] / "benchmarks" / "torch_reference.py"


def load_torch_reference():
    """The PyTorch reference module, or a string saying why it is unavailable."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install torch)"
    path = torch_reference_path()
    if not path.is_file():
        return f"the PyTorch reference {path} is missing (it ships with the source checkout)"
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


# ------------------------------------------------------------------------------------------
# Setting up the contenders
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Suite:
    """The contenders of one run plus what was skipped and why."""

    contenders: list[Contender]
    notes: list[str]
    artifacts: dict[tuple[str, str], str]


def benchmark_inputs(batch: int, input_size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-seed NHWC float32 images and the same data in NCHW."""
    rng = np.random.RandomState(batch)
    nhwc = rng.standard_normal((batch, input_size, input_size, 3)).astype(np.float32)
    return nhwc, np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))


def build_suite(
    models: Iterable[str],
    runtimes: Iterable[str],
    batches: Iterable[int],
    *,
    alpha: float = 1.0,
    input_size: int = 224,
    threads: int = 2,
    workdir: str | os.PathLike,
    log: Callable[[str], None] | None = print,
    keras_models: dict[str, Any] | None = None,
) -> Suite:
    """Builds, exports and wraps every (model, runtime, batch) into a :class:`Contender`.

    Exports go to ``workdir`` (reused when already there). ``keras_models`` may pass prebuilt
    Keras models by name.
    """
    models, runtimes, batches = list(models), list(runtimes), list(batches)
    log = log or (lambda _message: None)
    notes: list[str] = []
    artifacts: dict[tuple[str, str], str] = {}
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    inputs = {batch: benchmark_inputs(batch, input_size) for batch in batches}
    keras_models = dict(keras_models or {})
    contenders: list[Contender] = []

    keras_runtimes = [r for r in runtimes if r not in TORCH_RUNTIMES]
    calibration = calibration_images(size=input_size)
    for name in models if keras_runtimes else []:
        if name not in keras_models:
            log(f"building Keras {name} (alpha {alpha}), BN statistics calibrated")
            keras_models[name] = build_keras_model(name, alpha, input_size, calibration)
        model = keras_models[name]
        for runtime in keras_runtimes:
            if runtime.startswith("litert"):
                mode = "float32" if runtime == "litert_f32" else "int8"
                path = workdir / f"{model.name}_{alpha}_{input_size}_{mode}.tflite"
                if not path.is_file():
                    log(f"exporting {name} to LiteRT {mode}")
                    start = time.perf_counter()
                    export_litert(model, path, mode, calibration)
                    log(f"  {time.perf_counter() - start:.0f} s")
                artifacts[(name, runtime)] = str(path)
            for batch in batches:
                images = inputs[batch][0]
                if runtime == "keras":
                    fn = keras_predict_runner(model, images)
                elif runtime == "keras_xla":
                    fn = keras_xla_runner(model, images)
                else:
                    fn = litert_runner(artifacts[(name, runtime)], images, threads)
                contenders.append(Contender(name, runtime, batch, fn))

    torch_runtimes = [r for r in runtimes if r in TORCH_RUNTIMES]
    reference = load_torch_reference() if torch_runtimes else None
    if isinstance(reference, str):
        notes.append(f"PyTorch / ONNX Runtime columns skipped: {reference}.")
        torch_runtimes = []
    if "onnxruntime" in torch_runtimes and onnx_missing():
        notes.append(f"ONNX Runtime column skipped: {onnx_missing()}.")
        torch_runtimes.remove("onnxruntime")
    if torch_runtimes:
        configure_torch_threads(threads)
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
            artifacts[(name, "onnxruntime")] = str(path)
        for runtime in torch_runtimes:
            for batch in batches:
                images = inputs[batch][1]
                if runtime == "torch":
                    fn = torch_runner(module, images)
                else:
                    fn = ort_runner(artifacts[(name, runtime)], images, threads)
                contenders.append(Contender(name, runtime, batch, fn))
    return Suite(contenders, notes, artifacts)


# ------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------


def _cell(timing: Timing | None) -> str:
    if timing is None:
        return "—"
    return f"{timing.median * 1e3:.2f} (±{timing.spread * 100:.0f}%)"


def latency_table(
    timings: dict[tuple[str, str, int], Timing],
    models: Sequence[str],
    runtimes: Sequence[str],
    batch: int,
) -> str:
    """Markdown: one row per model, one column per runtime, median ms per batch (± half IQR)."""
    present = [r for r in runtimes if any(k[1] == r and k[2] == batch for k in timings)]
    labels = " | ".join(RUNTIME_LABELS[r] for r in present)
    header = f"| model (batch {batch}, ms per batch) | {labels} |"
    lines = [header, "|---" * (len(present) + 1) + "|"]
    for model in models:
        cells = [_cell(timings.get((model, r, batch))) for r in present]
        if all(c == "—" for c in cells):
            continue
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclasses.dataclass
class Goal:
    """A ratio of two measurements and its threshold (``ratio <= limit``, or ``>=`` if
    ``at_least``)."""

    label: str
    ratio: float | None
    limit: float
    at_least: bool = False
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.ratio is None:
            return None
        return self.ratio >= self.limit if self.at_least else self.ratio <= self.limit

    def line(self) -> str:
        sign = ">=" if self.at_least else "<="
        if self.ratio is None:
            text = f"- {self.label}: not measured (goal {sign} {self.limit:g}x)"
            return f"{text}. {self.note}" if self.note else text
        verdict = "MET" if self.met else "NOT MET"
        text = f"- {self.label}: **{self.ratio:.3f}x** (goal {sign} {self.limit:g}x) — {verdict}"
        return f"{text}. {self.note}" if self.note else text


def ratio(
    timings: dict[tuple[str, str, int], Timing],
    numerator: tuple[str, str, int],
    denominator: tuple[str, str, int],
) -> float | None:
    """``timings[numerator].median / timings[denominator].median`` (None if either missing)."""
    if numerator in timings and denominator in timings:
        return timings[numerator].median / timings[denominator].median
    return None


def latency_goals(timings: dict[tuple[str, str, int], Timing], batch: int = 1) -> list[Goal]:
    """The inference goals of the benchmark issue, as ratios of this run's medians."""
    ca, v2, ka = "MobileNetV2CA", "MobileNetV2", "keras.applications.MobileNetV2"
    goals = [
        Goal(f"LiteRT float32 MobileNetV2CA / MobileNetV2 (batch {batch})",
             ratio(timings, (ca, "litert_f32", batch), (v2, "litert_f32", batch)), 1.10),
        Goal(f"LiteRT int8 MobileNetV2CA / MobileNetV2 (batch {batch})",
             ratio(timings, (ca, "litert_int8", batch), (v2, "litert_int8", batch)), 1.15),
    ]
    for runtime in ("keras", "keras_xla", "litert_f32", "litert_int8"):
        goals.append(Goal(
            f"our MobileNetV2 / keras.applications.MobileNetV2, {RUNTIME_LABELS[runtime]} "
            f"(batch {batch})",
            ratio(timings, (v2, runtime, batch), (ka, runtime, batch)), 1.03,
        ))
    goals += [
        Goal(f"LiteRT float32 MobileNetV2CA / PyTorch eager MBV2_CA (batch {batch})",
             ratio(timings, (ca, "litert_f32", batch), (ca, "torch", batch)), 0.25),
        Goal(f"LiteRT float32 MobileNetV2CA / ONNX Runtime MBV2_CA (batch {batch})",
             ratio(timings, (ca, "litert_f32", batch), (ca, "onnxruntime", batch)), 0.6),
    ]
    for model in MODELS:
        value = ratio(timings, (model, "litert_int8", batch), (model, "litert_f32", batch))
        if value is not None:
            goals.append(Goal(f"LiteRT int8 / float32, {model} (batch {batch})", value, 0.5))
    return goals


def info_lines(info: dict[str, str]) -> list[str]:
    """Machine / version lines for a report."""
    versions = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("cpu", "cores"))
    return [f"- CPU: {info['cpu']}, {info['cores']} cores", f"- versions: {versions}"]


# ------------------------------------------------------------------------------------------
# CLI: keras-coordatt benchmark (the quick version)
# ------------------------------------------------------------------------------------------


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models", nargs="+", default=list(QUICK_MODELS), choices=MODELS, metavar="MODEL",
        help=f"models to time (default: {' '.join(QUICK_MODELS)}; choices: {', '.join(MODELS)})",
    )
    parser.add_argument(
        "--runtimes", nargs="+", default=["keras", "litert_f32", "litert_int8", "torch",
                                          "onnxruntime"],
        choices=RUNTIMES, metavar="RUNTIME",
        help=f"runtimes (default: all but keras_xla; choices: {', '.join(RUNTIMES)})",
    )
    parser.add_argument("--alpha", type=float, default=1.0, help="width multiplier (1.0)")
    parser.add_argument("--input-size", type=int, default=224, help="image side (224)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (1)")
    parser.add_argument("--threads", type=int, default=2, help="threads per runtime (2)")
    parser.add_argument("--trials", type=int, default=5, help="interleaved trials (5)")
    parser.add_argument(
        "--trial-seconds", type=float, default=0.25, help="time per contender per trial (0.25)"
    )
    parser.add_argument("--workdir", default=None, help="keep exported models here (temp dir)")
    parser.add_argument("--output", default=None, help="also write the Markdown report here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def run_quick(args: argparse.Namespace) -> int:
    """The ``keras-coordatt benchmark`` command: prints a Markdown table and goal lines."""
    from keras_coordatt.cli import CliError

    if args.batch < 1 or args.threads < 1 or args.trials < 1 or args.input_size < 32:
        raise CliError("--batch, --threads and --trials must be >= 1, --input-size >= 32")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise CliError(
            f"the benchmark needs KERAS_BACKEND=tensorflow, not {keras.backend.backend()!r}"
        )
    configure_threads(args.threads)
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        suite = build_suite(
            args.models, args.runtimes, [args.batch], alpha=args.alpha,
            input_size=args.input_size, threads=args.threads, workdir=args.workdir or tmp,
            log=log,
        )
        for note in suite.notes:
            print(f"note: {note}", file=sys.stderr)
        log(f"timing {len(suite.contenders)} contenders, {args.trials} interleaved trials")
        timings = measure(
            suite.contenders, trials=args.trials, trial_seconds=args.trial_seconds, log=log
        )
    lines = [
        f"# keras-coordatt benchmark (quick): alpha {args.alpha:g}, {args.input_size}x"
        f"{args.input_size}, {args.threads} threads",
        "",
        *info_lines(machine_info()),
        f"- load average at the end: {load_average()}",
        f"- {args.trials} interleaved trials; cells: median ms per batch (± half IQR / median)",
        *[f"- note: {note}" for note in suite.notes],
        "",
        latency_table(timings, args.models, RUNTIMES, args.batch),
        "",
        "Goals (ratios of this run):",
        *[goal.line() for goal in latency_goals(timings, args.batch) if goal.ratio is not None],
        "",
        f"(total {time.perf_counter() - started:.0f} s; the full suite is "
        "benchmarks/run_benchmarks.py in the source checkout)",
    ]
    report = "\n".join(lines)
    print(report)
    if args.output:
        Path(args.output).write_text(report + "\n")
    return 0


def _register() -> None:
    from keras_coordatt.cli import register_command, registered_commands

    if "benchmark" in registered_commands():
        return
    register_command(
        "benchmark",
        help="quick latency benchmark: Keras, LiteRT (float32/int8), PyTorch, ONNX Runtime",
        description=(
            "Times MobileNetV2CA, MobileNetV2 and keras.applications.MobileNetV2 (random "
            "weights, BN statistics calibrated on a few images) interleaved at batch 1 in "
            "Keras, LiteRT float32 / int8 (XNNPACK) and, "
            "when installed, the original PyTorch code eagerly and in ONNX Runtime; prints a "
            "Markdown table and the goal ratios. The full suite is benchmarks/run_benchmarks.py."
        ),
        add_arguments=_add_arguments,
        run=run_quick,
    )


_register()
