"""Where the default test run's CPU goes: groups a py-spy profile of the whole suite.

Record the suite (py-spy is not a dependency: ``pip install --target /tmp/pyspy py-spy``)::

    CI=true KERAS_BACKEND=tensorflow TF_CPP_MIN_LOG_LEVEL=2 py-spy record --subprocesses \\
        --rate 20 --format raw -o suite.raw -- .venv/bin/python -m pytest -q -n 2 \\
        --dist loadfile --no-loadscope-reorder --durations=0 -p no:cacheprovider

then ``python benchmarks/suite_profile.py suite.raw`` prints two Markdown tables of sampled
CPU seconds (samples / rate): by part of the suite (a test file run in a pytest worker, or the
child processes a test starts), and by activity (inclusive: a sample counts for every activity
on its stack). py-spy samples Python threads that are not idle; a thread blocked in a C call
counts as busy, so the total can exceed cores x wall time by a few percent. The notebook
kernels' I/O threads (heartbeat, iopub, parent poller) are left out: they wait in ``select``.
"""

from __future__ import annotations

import argparse
import collections
import re
from collections.abc import Iterator

#: (label, substring of a stack) for processes a test starts, first match wins.
CHILD_PROCESSES = (
    ("notebook kernels (test_notebooks.py, 6 notebooks)", "ipykernel_launcher"),
    ("QAT matrix children (test_qat_matrix.py)", "qat_matrix.py --cases"),
    ("classification train.py processes (test_classification_recipe.py)",
     "classification/train.py"),
    ("segmentation train / evaluate / export processes (test_segmentation_recipe.py)",
     "applications/segmentation/"),
    ("demo process (test_demo.py)", "keras_coordatt.cli demo"),
    ("TFLite converter children (export_tflite's isolation)", "_convert_worker"),
)

#: (label, frame substring) of the activity table.
ACTIVITIES = (
    ("tf.function tracing (func_graph_from_py_func)", "func_graph_from_py_func ("),
    ("Keras 3 fit", "TensorFlowTrainer.fit ("),
    ("tf_keras fit (QAT models)", "Model.fit (tf_keras"),
    ("keras_coordatt quantize_model", "quantize_model (keras_coordatt"),
    ("  of which tfmot quantize_apply", "quantize_apply ("),
    ("  of which its defensive model copy", "_clone_model_with_weights ("),
    ("keras_coordatt export_tflite (freeze, in the caller)", "export_tflite (keras_coordatt"),
    ("TFLite conversion (the converter worker's main)",
     "main (keras_coordatt/export/_convert_worker.py:"),
    ("Python imports (_find_and_load)", "_find_and_load ("),
)

_IDLE_KERNEL_THREADS = ("Heartbeat.run", "ParentPollerUnix.run", "IOPubThread",
                        "ShellChannelThread.run", "EpollSelector.select")


def samples(path: str) -> Iterator[tuple[str, int]]:
    """(stack, count) of each line of a py-spy ``--format raw`` file."""
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if count.isdigit():
                yield stack, int(count)


def part_of_suite(stack: str) -> str | None:
    """The table row of one sample; ``None`` for an idle notebook-kernel thread."""
    if "ipykernel_launcher" in stack and any(name in stack for name in _IDLE_KERNEL_THREADS):
        return None
    for label, marker in CHILD_PROCESSES:
        if marker in stack:
            return label
    test_file = re.search(r";\w+ \((test_\w+\.py):", stack)
    if test_file:
        return f"in a pytest worker: {test_file.group(1)}"
    return "other (pytest and xdist harness, short-lived helper processes)"


def tables(path: str, rate: float, top: int) -> str:
    parts: collections.Counter = collections.Counter()
    activities: collections.Counter = collections.Counter()
    for stack, count in samples(path):
        part = part_of_suite(stack)
        if part is None:
            continue
        parts[part] += count
        for label, marker in ACTIVITIES:
            if marker in stack:
                activities[label] += count
    total = sum(parts.values())
    if not total:
        raise SystemExit(f"{path}: no py-spy samples")

    def row(label: str, count: int) -> str:
        return f"| {label} | {count / rate:,.0f} | {100 * count / total:.1f} % |"

    lines = [f"Sampled CPU: {total / rate:,.0f} s in all.", "",
             "| part of the suite | CPU s | share |", "|---|---:|---:|"]
    shown = parts.most_common(top)
    lines += [row(label, count) for label, count in shown]
    rest = total - sum(count for _, count in shown)
    if rest:
        lines.append(row(f"{len(parts) - len(shown)} other parts", rest))
    lines += ["", "| activity (inclusive) | CPU s | share |", "|---|---:|---:|"]
    lines += [row(label, activities[label]) for label, _ in ACTIVITIES]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", help="py-spy record --format raw output")
    parser.add_argument("--rate", type=float, default=20.0, help="py-spy --rate (20)")
    parser.add_argument("--top", type=int, default=20, help="rows of the first table (20)")
    args = parser.parse_args(argv)
    print(tables(args.profile, args.rate, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
