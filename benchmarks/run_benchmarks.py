"""The full benchmark suite: latency, training throughput and peak memory, in one run.

1. Proof: the PyTorch reference (``torch_reference.py``) reproduces the fixture logits of the
   original code (<= 1e-4), so its columns stand for the original implementations.
2. Inference latency at batch 1 and 32 (224x224, ``--threads`` threads, random weights):
   Keras ``predict_on_batch`` and XLA (``tf.function(jit_compile=True)``), LiteRT float32 and
   int8 (XNNPACK) for MobileNetV2CA, MobileNetV2, keras.applications.MobileNetV2, MobileNeXt,
   MobileNeXtCA; PyTorch eager and ONNX Runtime for the reference networks. Interleaved
   round-robin trials, median over trials (see ``keras_coordatt.benchmark.measure``).
3. Training throughput (images/s, batch 32): Keras (TensorFlow backend) ``train_on_batch`` with
   ``jit_compile=True`` (and, for reference, ``False``: what Keras' ``"auto"`` picks on a
   CPU-only machine) vs PyTorch eager (same net, SGD momentum 0.9, cross-entropy, train mode).
4. Peak memory of each inference path, each in a fresh process (``memory_probe.py``).

Prints Markdown (tables + goal lines); ``--output FILE`` writes the same report.
Usage: ``python benchmarks/run_benchmarks.py --output benchmarks/results/<date>-<machine>.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import full_suite  # noqa: E402
import goal_ratios  # noqa: E402

from keras_coordatt import benchmark as bench  # noqa: E402

TRAIN_LABELS = {
    "keras_train_xla": "Keras train_on_batch, jit_compile=True",
    "keras_train_graph": "Keras train_on_batch, jit_compile=False",
    "torch_train": "PyTorch eager train step",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------


def training_contenders(models, runtimes, alpha: float, threads: int, batch: int = 32):
    """``Contender``s running one training step each (batch ``batch``, 224x224)."""
    import keras
    import numpy as np

    rng = np.random.RandomState(7)
    images = rng.standard_normal((batch, 224, 224, 3)).astype(np.float32)
    labels = rng.randint(0, 1000, size=batch)
    calibration = full_suite.calibration_images()
    contenders = []
    reference = None
    for name in models:
        for runtime in runtimes:
            if runtime.startswith("keras"):
                model = bench.build_keras_model(name, alpha, calibration=calibration)
                model.compile(
                    optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    jit_compile=runtime == "keras_train_xla",
                )
                fn = (lambda m: lambda: m.train_on_batch(images, labels))(model)
            else:
                if reference is None:
                    reference = full_suite.load_torch_reference()
                    if isinstance(reference, str):
                        log(f"PyTorch training skipped: {reference}")
                        break
                    full_suite.configure_torch_threads(threads)
                import torch

                module = reference.build(
                    name, alpha, calibration=calibration.transpose(0, 3, 1, 2)
                ).train()
                optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
                loss_fn = torch.nn.CrossEntropyLoss()
                x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
                y = torch.from_numpy(labels)

                def fn(module=module, optimizer=optimizer, loss_fn=loss_fn, x=x, y=y):
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(module(x), y)
                    loss.backward()
                    optimizer.step()
                    return float(loss)

            contenders.append(bench.Contender(name, runtime, batch, fn))
    return contenders


def training_table(timings, models, runtimes, batch: int = 32) -> str:
    present = [r for r in runtimes if any(k[1] == r for k in timings)]
    lines = [
        f"| model (batch {batch}, images/s) | " + " | ".join(TRAIN_LABELS[r] for r in present)
        + " |",
        "|---" * (len(present) + 1) + "|",
    ]
    for model in models:
        cells = []
        for runtime in present:
            timing = timings.get((model, runtime, batch))
            cells.append("—" if timing is None else
                         f"{batch / timing.median:.1f} ({timing.median:.2f} s/step, "
                         f"±{timing.spread * 100:.0f}%)")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Memory
# ------------------------------------------------------------------------------------------


def probe_memory(runtime, model, batch, artifact, args) -> dict | None:
    command = [
        sys.executable, str(HERE / "memory_probe.py"), runtime, model, "--batch", str(batch),
        "--alpha", str(args.alpha), "--threads", str(args.threads),
    ]
    if artifact:
        command += ["--artifact", artifact]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    for line in reversed(result.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    log(f"memory probe failed for {runtime} {model} {batch}: {result.stderr[-500:]}")
    return None


def memory_table(rows: list[dict], batches) -> str:
    lines = [
        "| path | model | runtime import RSS (MiB) | "
        + " | ".join(f"peak RSS delta, batch {b} (MiB)" for b in batches) + " |",
        "|---" * (3 + len(batches)) + "|",
    ]
    keyed: dict[tuple, dict] = {}
    for row in rows:
        keyed.setdefault((row["runtime"], row["model"]), {})[row["batch"]] = row
    for (runtime, model), by_batch in keyed.items():
        first = next(iter(by_batch.values()))
        cells = [
            f"{by_batch[b]['peak_delta_mb']:.0f}" if b in by_batch and
            by_batch[b]["peak_delta_mb"] is not None else "—" for b in batches
        ]
        label = full_suite.RUNTIME_LABELS[runtime]
        lines.append(f"| {label} | {model} | {first['import_mb']:.0f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(bench.MODELS), choices=bench.MODELS)
    parser.add_argument("--runtimes", nargs="+", default=list(full_suite.RUNTIMES),
                        choices=full_suite.RUNTIMES)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trials", type=int, default=7, help="interleaved latency trials")
    parser.add_argument("--trial-seconds", type=float, default=0.5)
    parser.add_argument("--train-models", nargs="*", default=["MobileNetV2CA", "MobileNetV2"],
                        choices=[m for m in bench.MODELS if full_suite.TORCH_COUNTERPART[m]])
    parser.add_argument("--train-runtimes", nargs="*", default=list(TRAIN_LABELS),
                        choices=list(TRAIN_LABELS))
    parser.add_argument("--train-trials", type=int, default=5)
    parser.add_argument("--memory-batches", nargs="*", type=int, default=[1, 32],
                        help="batches for the memory probes (none: skip memory)")
    parser.add_argument("--wait-load", type=float, default=1.3,
                        help="wait until the 1-minute load average is below this (0: no wait)")
    parser.add_argument("--wait-minutes", type=float, default=40)
    parser.add_argument("--workdir", default=None, help="keep exported models here")
    parser.add_argument("--output", default=None, help="also write the Markdown report here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv)
    command = "python benchmarks/run_benchmarks.py " + " ".join(shlex.quote(a) for a in raw_argv)
    started = time.perf_counter()
    bench.configure_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    workdir = Path(args.workdir or tmp.name)
    report: list[str] = []
    notes: list[str] = []

    # 1. proof of the PyTorch reference
    proof = None
    reference = full_suite.load_torch_reference()
    if isinstance(reference, str):
        notes.append(f"PyTorch reference unavailable: {reference}")
    else:
        full_suite.configure_torch_threads(args.threads)
        log("proving the PyTorch reference against the fixture logits")
        proof = reference.proof_markdown(reference.verify_against_fixtures())

    # 2. set up every contender (exports, compilation) before waiting for a quiet machine
    suites = {}
    keras_models: dict = {}
    for batch in args.batches:
        suites[batch] = full_suite.build_suite(
            args.models, args.runtimes, [batch], alpha=args.alpha, threads=args.threads,
            workdir=workdir, log=log, keras_models=keras_models,
        )
        notes += [n for n in suites[batch].notes if n not in notes]
    log("warming every inference contender once (XLA compiles here)")
    for suite in suites.values():
        for contender in suite.contenders:
            contender.fn()
    train = training_contenders(args.train_models, args.train_runtimes, args.alpha, args.threads)
    log("compiling / warming the training steps")
    for contender in train:
        contender.fn()

    quiet = "no wait requested"
    if args.wait_load > 0:
        quiet = full_suite.wait_for_quiet(args.wait_load, args.wait_minutes, log)
    load_start = bench.load_average()
    log(quiet)

    timings = {}
    for batch, suite in suites.items():
        log(f"latency, batch {batch}: {len(suite.contenders)} contenders x {args.trials} trials")
        timings.update(bench.measure(suite.contenders, trials=args.trials,
                                     trial_seconds=args.trial_seconds, log=log))
    train_timings = {}
    if train:
        log(f"training: {len(train)} contenders x {args.train_trials} trials")
        train_timings = bench.measure(train, trials=args.train_trials, trial_seconds=0.1,
                                      warmup=1, settle_seconds=0.2, log=log)
    load_end = bench.load_average()

    memory_rows = []
    artifacts = {}
    for suite in suites.values():
        artifacts.update(suite.artifacts)
    for runtime in args.runtimes if args.memory_batches else []:
        for model in args.models:
            torch_runtime = runtime in full_suite.TORCH_RUNTIMES
            if torch_runtime and not full_suite.TORCH_COUNTERPART.get(model):
                continue
            if runtime in full_suite.TORCH_RUNTIMES and isinstance(reference, str):
                continue
            artifact = artifacts.get((model, runtime))
            if runtime in ("litert_f32", "litert_int8", "onnxruntime") and not artifact:
                continue
            for batch in args.memory_batches:
                log(f"memory: {runtime} {model} batch {batch}")
                row = probe_memory(runtime, model, batch, artifact, args)
                if row:
                    memory_rows.append(row)

    # ---- report
    info = bench.machine_info()
    today = datetime.date.today().isoformat()
    report += [
        f"# Benchmark results, {today}",
        "",
        *bench.info_lines(info),
        f"- command: `{command}`",
        f"- {args.threads} threads everywhere (TF intra-op {args.threads} / inter-op 1; "
        f"LiteRT num_threads={args.threads} with XNNPACK; torch.set_num_threads({args.threads}); "
        f"ONNX Runtime intra-op {args.threads}, inter-op 1), alpha {args.alpha:g}, 224x224, "
        "random weights (upstream init), float32 inputs",
        f"- machine load: {quiet}; load averages (1/5/15 min) at the start of timing "
        f"{_load(load_start)}, at the end {_load(load_end)}",
        f"- latency: {args.trials} interleaved trials per batch size, each trial >= "
        f"{args.trial_seconds:g} s of consecutive calls per contender; cells are the median "
        "over trials of ms per call (one call = one batch), ± half the inter-quartile range",
        f"- total wall time {time.perf_counter() - started:.0f} s",
        *[f"- note: {note}" for note in notes],
        "",
    ]
    if proof:
        report += ["## PyTorch reference vs the original code's fixture logits", "", proof, ""]
    for batch in args.batches:
        report += [f"## Inference latency, batch {batch}", "",
                   full_suite.latency_table(timings, args.models, batch), ""]
    report += ["## Goals (ratios of medians from this run)", ""]
    goals = goal_ratios.latency_goals(timings, 1)
    report += [goal.line() for goal in goals]
    if 32 in args.batches:
        report += ["", "Same ratios at batch 32 (information):", ""]
        report += [g.line() for g in goal_ratios.latency_goals(timings, 32)
                   if g.ratio is not None]
    report.append("")
    if train_timings:
        report += ["## Training throughput (batch 32, 224x224, SGD momentum 0.9, cross-entropy)",
                   "", training_table(train_timings, args.train_models, args.train_runtimes), ""]
        for model in args.train_models:
            value = bench.ratio(train_timings, (model, "torch_train", 32),
                                (model, "keras_train_xla", 32))
            report.append(goal_ratios.Goal(
                f"Keras (jit_compile=True) / PyTorch eager training throughput, {model}",
                value, 1.0, at_least=True).line())
            value = bench.ratio(train_timings, (model, "torch_train", 32),
                                (model, "keras_train_graph", 32))
            if value is not None:
                report.append(f"- (information) Keras jit_compile=False / PyTorch eager, "
                              f"{model}: {value:.2f}x")
        report.append("")
    if memory_rows:
        report += [
            "## Peak memory per inference path",
            "",
            "Each (path, model, batch) in a fresh process (`memory_probe.py`): import only "
            "that runtime (the RSS it adds is the 'runtime import' column), create the input, "
            "read VmRSS, reset the peak counter (`echo 5 > /proc/self/clear_refs`), build or "
            "load the model, run 7 calls, read VmHWM. Delta = peak minus that baseline "
            "(weights, graph / arena, activations, XLA compilation, allocator caches; not the "
            "input batch).",
            "",
            memory_table(memory_rows, args.memory_batches),
            "",
        ]
    text = "\n".join(report)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    tmp.cleanup()
    return 0


def _load(load) -> str:
    return "unknown" if load is None else " / ".join(f"{v:.2f}" for v in load)


if __name__ == "__main__":
    sys.exit(main())
