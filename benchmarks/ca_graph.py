"""What Coordinate Attention costs in the exported graph, BEFORE and AFTER, and what else could go.

BEFORE is the original formulation at inference (``concat -> conv1 -> BN -> h-swish -> split ->
transpose``), implemented here as :class:`FaithfulCoordAttention`; AFTER is
``keras_coordatt.layers.CoordAttention`` (no concat / split / transpose at inference). Both are
put into the same MobileNetV2CA (alpha 1.0, 224x224, identical weights; the outputs are
checked to agree), exported to TFLite float32 and int8, and the script prints:

* the TFLite op-type counts of one CA block and of the whole model, and how many XNNPACK
  partitions LiteRT makes of each graph (1 = everything delegated);
* the batch-1 latency of each graph in LiteRT float32 / int8 and Keras (predict_on_batch and
  XLA), timed interleaved with MobileNetV2 (no CA) as the yardstick.

``--variants`` adds candidate graph changes (same outputs, checked) and *diagnostic* graphs
(outputs changed on purpose, only to attribute the cost of CA to its parts):

* ``gate_product``: ``x * (a_h * a_w)`` instead of ``(x * a_w) * a_h``;
* ``hw_order``: ``(x * a_h) * a_w``;
* ``avg_pool``: the directional means as ``AVERAGE_POOL_2D`` (1 x W and H x 1 windows);
* ``diag_no_mul``: the gates are computed but not applied (cost of the two full-size MULs);
* ``diag_relu6``: hard-swish replaced by ReLU6 (cost of the HARD_SWISH ops).

Usage: ``python benchmarks/ca_graph.py [--variants] [--output FILE]``.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from keras_coordatt import benchmark as bench  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import full_suite  # noqa: E402

from keras_coordatt.layers import CoordAttention  # noqa: E402

# ------------------------------------------------------------------------------------------
# CA formulations
# ------------------------------------------------------------------------------------------


class FaithfulCoordAttention(CoordAttention):
    """BEFORE: the original graph at inference too: concat (H part first) along the height
    axis, one conv1 -> bn1 -> hard-swish, split back, transpose the W part."""

    def _shared_transform(self, pooled_h, pooled_w, training):
        if pooled_h is None or pooled_w is None:
            return super()._shared_transform(pooled_h, pooled_w, training)
        height = pooled_h.shape[self._h_axis]
        width = pooled_w.shape[self._w_axis]
        joint = ops.concatenate([pooled_h, self._swap_hw(pooled_w)], axis=self._h_axis)
        joint = ops.hard_silu(self.bn1(self.conv1(joint), training=training))
        if height is not None and width is not None:
            y_h, y_w = ops.split(joint, [height], axis=self._h_axis)
        else:
            dynamic = ops.shape(pooled_h)[self._h_axis]
            y_h = self._slice_h(joint, 0, dynamic)
            y_w = self._slice_h(joint, dynamic, None)
        return y_h, self._swap_hw(y_w)


class GateProductCA(CoordAttention):
    """``x * (a_h * a_w)``."""

    def call(self, inputs, training=None):
        a_h, a_w = self.gates(inputs, training=training)
        return inputs * (a_h * a_w)


class HWOrderCA(CoordAttention):
    """``(x * a_h) * a_w``."""

    def call(self, inputs, training=None):
        a_h, a_w = self.gates(inputs, training=training)
        return inputs * a_h * a_w


class AvgPoolCA(CoordAttention):
    """Directional means as average pooling with (1, W) and (H, 1) windows (static H, W)."""

    def gates(self, inputs, training=None):
        if self.data_format != "channels_last" or None in inputs.shape[1:3]:
            return super().gates(inputs, training=training)
        height, width = inputs.shape[1], inputs.shape[2]
        pooled_h = ops.average_pool(inputs, (1, width), strides=(1, width), padding="valid")
        pooled_w = ops.average_pool(inputs, (height, 1), strides=(height, 1), padding="valid")
        y_h, y_w = self._shared_transform(pooled_h, pooled_w, training)
        return ops.sigmoid(self.conv_h(y_h)), ops.sigmoid(self.conv_w(y_w))


class DiagNoMulCA(CoordAttention):
    """DIAGNOSTIC (changes outputs): gates computed, kept alive by a scalar, not applied."""

    def call(self, inputs, training=None):
        a_h, a_w = self.gates(inputs, training=training)
        return inputs + 0.0 * (ops.mean(a_h) + ops.mean(a_w))


class DiagRelu6CA(CoordAttention):
    """DIAGNOSTIC (changes outputs): ReLU6 instead of hard-swish after bn1."""

    def _shared_transform(self, pooled_h, pooled_w, training):
        return (
            ops.relu6(self.bn1(self.conv1(pooled_h), training=training)),
            ops.relu6(self.bn1(self.conv1(pooled_w), training=training)),
        )


#: name -> (layer class, same outputs as ours?, description)
VARIANTS: dict[str, tuple[type, bool, str]] = {
    "before (faithful)": (FaithfulCoordAttention, True, "concat / split / transpose"),
    "after (ours)": (CoordAttention, True, "keras_coordatt.layers.CoordAttention"),
    "gate_product": (GateProductCA, True, "x * (a_h * a_w)"),
    "hw_order": (HWOrderCA, True, "(x * a_h) * a_w"),
    "avg_pool": (AvgPoolCA, True, "AVERAGE_POOL_2D instead of MEAN"),
    "diag_no_mul": (DiagNoMulCA, False, "DIAGNOSTIC: gates not applied"),
    "diag_relu6": (DiagRelu6CA, False, "DIAGNOSTIC: ReLU6 instead of hard-swish"),
}
BASIC = ("before (faithful)", "after (ours)")


def with_attention_class(model: keras.Model, layer_class: type) -> keras.Model:
    """A copy of ``model`` whose CoordAttention layers are ``layer_class``, same weights."""

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, CoordAttention):
            return layer_class.from_config(config)
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


# ------------------------------------------------------------------------------------------
# Op lists
# ------------------------------------------------------------------------------------------


def op_names(path: str) -> list[tuple[str, str]]:
    """``(op type, first output tensor name)`` for every op of a .tflite, in order."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=path,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    return [
        (op["op_name"], names.get(op["outputs"][0], "") if len(op["outputs"]) else "")
        for op in interpreter._get_ops_details()  # noqa: SLF001 - no public op list
    ]


def xnnpack_partitions(path: str) -> int:
    """How many DELEGATE nodes LiteRT's default XNNPACK delegate makes (1 = all delegated)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())  # noqa: SLF001


def ca_block_counts(ops_list: list[tuple[str, str]]) -> dict[str, collections.Counter]:
    """Op-type counts per CA block, from the ``block{i}_ca`` scope in the tensor names."""
    blocks: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for op, name in ops_list:
        for part in name.replace(";", "/").split("/"):
            if part.startswith("block") and "_ca" in part:
                blocks[part.split("_ca")[0] + "_ca"][op] += 1
                break
    return dict(blocks)


def op_table(columns: dict[str, collections.Counter]) -> str:
    """Markdown: op types as rows, one column per counter, plus a total row."""
    names = sorted({op for counter in columns.values() for op in counter})
    lines = ["| op | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for op in names:
        lines.append(f"| {op} | " + " | ".join(str(c.get(op, 0) or "") for c in columns.values())
                     + " |")
    lines.append("| **total** | " + " | ".join(f"**{sum(c.values())}**" for c in columns.values())
                 + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", action="store_true", help="also time candidate changes")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trials", type=int, default=9)
    parser.add_argument("--trial-seconds", type=float, default=0.5)
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras columns")
    parser.add_argument("--wait-load", type=float, default=0.0,
                        help="before timing, wait until the 1-minute load average is below this")
    parser.add_argument("--wait-minutes", type=float, default=40)
    parser.add_argument("--workdir", default=None, help="keep exports here (default: temp)")
    parser.add_argument("--output", default=None, help="also write the Markdown report here")
    args = parser.parse_args(argv)

    bench.configure_threads(args.threads)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    started = time.perf_counter()
    tmp = tempfile.TemporaryDirectory()
    workdir = Path(args.workdir or tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    names = list(VARIANTS) if args.variants else list(BASIC)
    calibration = full_suite.calibration_images()
    images = bench.benchmark_inputs(1)[0]
    fixture = calibration[:2]

    base = bench.build_keras_model("MobileNetV2CA", args.alpha, calibration=calibration)
    reference_out = np.asarray(base.predict_on_batch(fixture))
    models = {name: with_attention_class(base, VARIANTS[name][0]) for name in names}
    models["MobileNetV2 (no CA)"] = bench.build_keras_model("MobileNetV2", args.alpha,
                                                            calibration=calibration)

    report: list[str] = []
    paths: dict[tuple[str, str], str] = {}
    diffs: dict[str, str] = {}
    for name, model in models.items():
        slug = name.split(" ")[0].replace("(", "").replace(")", "")
        for mode in ("float32", "int8"):
            path = workdir / f"ca_graph_{slug}_{args.alpha}_{mode}.tflite"
            if not path.is_file():
                log(f"exporting {name} {mode}")
                from keras_coordatt.export import export_tflite

                export_tflite(
                    model, path, mode=mode,
                    representative_dataset=calibration if mode == "int8" else None,
                    strict=False,
                )
            paths[(name, mode)] = str(path)
        if name in VARIANTS:
            keras_diff = float(np.max(np.abs(np.asarray(model.predict_on_batch(fixture))
                                             - reference_out)))
            lite = bench.litert_runner(paths[(name, "float32")], fixture, 1)()
            lite_diff = float(np.max(np.abs(lite - reference_out)))
            diffs[name] = f"Keras {keras_diff:.1e}, LiteRT float32 {lite_diff:.1e}"

    # ---- op lists
    report.append(f"# Coordinate Attention graph cost (MobileNetV2CA, alpha {args.alpha:g}, 224)")
    report.append("")
    report += bench.info_lines(bench.machine_info())
    report.append(f"- command: `python benchmarks/ca_graph.py {' '.join(argv or sys.argv[1:])}`")
    report.append("")
    for mode in ("float32", "int8"):
        columns: dict[str, collections.Counter] = {}
        whole: dict[str, collections.Counter] = {}
        partitions = {}
        for name in names:
            ops_list = op_names(paths[(name, mode)])
            blocks = ca_block_counts(ops_list)
            distinct = {tuple(sorted(c.items())) for c in blocks.values()}
            label = "before" if name.startswith("before") else name.split(" ")[0]
            first = next(iter(blocks.values()), collections.Counter())
            note = "" if len(distinct) == 1 else f" ({len(distinct)} kinds)"
            columns[f"{label}: one CA block{note}"] = first
            whole[f"{label}: model"] = collections.Counter(op for op, _ in ops_list)
            partitions[name] = xnnpack_partitions(paths[(name, mode)])
        whole["no CA: model"] = collections.Counter(
            op for op, _ in op_names(paths[("MobileNetV2 (no CA)", mode)])
        )
        partitions["MobileNetV2 (no CA)"] = xnnpack_partitions(paths[("MobileNetV2 (no CA)",
                                                                      mode)])
        report += [f"## TFLite {mode}: ops per CA block", "", op_table(columns), ""]
        report += [f"## TFLite {mode}: ops in the whole model", "", op_table(whole), ""]
        report.append(
            f"XNNPACK partitions ({mode}): "
            + ", ".join(f"{name} {count}" for name, count in partitions.items())
        )
        report.append("")
    report.append("Outputs vs ours (max abs diff on 2 images): "
                  + "; ".join(f"{name}: {diff}" for name, diff in diffs.items()))
    report.append("")

    # ---- latency
    contenders = []
    for name, model in models.items():
        for mode, runtime in (("float32", "litert_f32"), ("int8", "litert_int8")):
            contenders.append(bench.Contender(
                name, runtime, 1, bench.litert_runner(paths[(name, mode)], images, args.threads)
            ))
        if not args.no_keras:
            contenders.append(bench.Contender(name, "keras", 1,
                                              bench.keras_predict_runner(model, images)))
            contenders.append(bench.Contender(name, "keras_xla", 1,
                                              bench.keras_xla_runner(model, images)))
    for contender in contenders:  # compile / allocate before waiting
        contender.fn()
    quiet = "no wait requested"
    if args.wait_load > 0:
        quiet = full_suite.wait_for_quiet(args.wait_load, args.wait_minutes, log)
    log(f"timing {len(contenders)} contenders, {args.trials} trials, load {bench.load_average()}")
    timings = bench.measure(contenders, trials=args.trials, trial_seconds=args.trial_seconds,
                            log=log)
    runtimes = ["litert_f32", "litert_int8"] + ([] if args.no_keras else ["keras", "keras_xla"])
    report.append(f"## Latency, batch 1, {args.threads} threads (median ms, ± half IQR)")
    report.append("")
    report.append("| graph | " + " | ".join(bench.RUNTIME_LABELS[r] for r in runtimes)
                  + " | " + " | ".join(f"vs no CA, {bench.RUNTIME_LABELS[r]}" for r in runtimes)
                  + " |")
    report.append("|---" * (2 * len(runtimes) + 1) + "|")
    for name in models:
        cells = [bench._cell(timings.get((name, r, 1))) for r in runtimes]  # noqa: SLF001
        ratios = [
            bench.ratio(timings, (name, r, 1), ("MobileNetV2 (no CA)", r, 1)) for r in runtimes
        ]
        label = f"{name}: {VARIANTS[name][2]}" if name in VARIANTS else name
        report.append(f"| {label} | " + " | ".join(cells) + " | "
                      + " | ".join(f"{v:.3f}x" if v else "—" for v in ratios) + " |")
    report.append("")
    report.append(f"(machine load: {quiet}; load average at the end: "
                  f"{bench.load_average()}; {time.perf_counter() - started:.0f} s)")
    text = "\n".join(report)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
