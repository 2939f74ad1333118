"""``keras-coordatt benchmark``: a quick latency table from the installed package.

Uses :mod:`keras_coordatt.benchmark` (Keras and LiteRT, random weights with BN statistics
calibrated on the bundled images) and prints a Markdown table and the ratios of the run. The
PyTorch / ONNX Runtime columns and the full suite are ``benchmarks/run_benchmarks.py`` in the
source checkout.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from keras_coordatt.cli.base import CliError, Command

#: Runtimes of the full suite only: they need the PyTorch reference of the source checkout.
SOURCE_ONLY_RUNTIMES = ("torch", "onnxruntime")
DEFAULT_RUNTIMES = ("keras", "litert_f32", "litert_int8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``benchmark`` arguments to ``parser``."""
    from keras_coordatt.benchmark import MODELS, QUICK_MODELS, RUNTIMES

    parser.add_argument(
        "--models", nargs="+", default=list(QUICK_MODELS), choices=MODELS, metavar="MODEL",
        help=f"models to time (default: {' '.join(QUICK_MODELS)}; choices: {', '.join(MODELS)})",
    )
    parser.add_argument(
        "--runtimes", nargs="+", default=list(DEFAULT_RUNTIMES),
        choices=RUNTIMES + SOURCE_ONLY_RUNTIMES, metavar="RUNTIME",
        help=f"runtimes (default: {' '.join(DEFAULT_RUNTIMES)}; choices: {', '.join(RUNTIMES)}; "
        "torch and onnxruntime: benchmarks/run_benchmarks.py in the source checkout)",
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


def _check(args: argparse.Namespace) -> None:
    if args.batch < 1 or args.threads < 1 or args.trials < 1 or args.input_size < 32:
        raise CliError("--batch, --threads and --trials must be >= 1, --input-size >= 32")
    source_only = [r for r in args.runtimes if r in SOURCE_ONLY_RUNTIMES]
    if source_only:
        raise CliError(
            f"--runtimes {' '.join(source_only)}: the PyTorch / ONNX Runtime columns need the "
            "PyTorch reference, which is not part of the package; run "
            "benchmarks/run_benchmarks.py from a source checkout"
        )
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise CliError(
            f"the benchmark needs KERAS_BACKEND=tensorflow, not {keras.backend.backend()!r}"
        )


def run(args: argparse.Namespace) -> int:
    """Times the contenders and prints the Markdown report."""
    _check(args)
    from keras_coordatt import benchmark as bench

    bench.configure_threads(args.threads)
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        suite = bench.build_suite(
            args.models, args.runtimes, [args.batch], alpha=args.alpha,
            input_size=args.input_size, threads=args.threads, workdir=args.workdir or tmp,
            log=log,
        )
        log(f"timing {len(suite.contenders)} contenders, {args.trials} interleaved trials")
        timings = bench.measure(
            suite.contenders, trials=args.trials, trial_seconds=args.trial_seconds, log=log
        )
    lines = [
        f"# keras-coordatt benchmark (quick): alpha {args.alpha:g}, {args.input_size}x"
        f"{args.input_size}, {args.threads} threads",
        "",
        *bench.info_lines(bench.machine_info()),
        f"- load average at the end: {bench.load_average()}",
        f"- {args.trials} interleaved trials; cells: median ms per batch (± half IQR / median)",
        "",
        bench.latency_table(timings, args.models, bench.RUNTIMES, args.batch),
        "",
        "Ratios of this run:",
        *bench.ratio_lines(timings, bench.RUNTIMES, args.batch),
        "",
        f"(total {time.perf_counter() - started:.0f} s; PyTorch / ONNX Runtime columns and the "
        "full suite: benchmarks/run_benchmarks.py in the source checkout)",
    ]
    report = "\n".join(lines)
    print(report)
    if args.output:
        Path(args.output).write_text(report + "\n")
    return 0


COMMAND = Command(
    "benchmark",
    help="quick latency benchmark: Keras and LiteRT (float32/int8)",
    description=(
        "Times MobileNetV2CA, MobileNetV2 and keras.applications.MobileNetV2 (random weights, "
        "BN statistics calibrated on a few bundled images) interleaved at batch 1 in Keras and "
        "LiteRT float32 / int8 (XNNPACK); prints a Markdown table and the latency ratios of "
        "the run. The PyTorch / ONNX Runtime columns and the full suite are "
        "benchmarks/run_benchmarks.py in the source checkout."
    ),
    add_arguments=add_arguments,
    run=run,
)
