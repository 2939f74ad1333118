"""XLA:CPU and depthwise convolutions: the native op vs the same conv as 9 shifted multiply-adds.

XLA:CPU runs ``DepthwiseConv2D`` (a convolution with ``feature_group_count = C``) through a
slow generic path (about 40 ms for one 3x3 depthwise conv on 112x112x96 at 2 threads, where
TensorFlow's graph kernel takes 0.5 ms), so every MobileNet is several times slower under
``jit_compile=True`` than under ``predict_on_batch``. :class:`ShiftDepthwiseConv2D` computes the
same conv as ``sum_ij shift_ij(pad(x)) * k_ij`` (plain slices, multiplies and adds that XLA
fuses into one loop). This script puts it into MobileNetV2CA (same weights; outputs compared)
and times Keras XLA inference and XLA training steps with both.

It is a *proposal* for the builders (``applications/_blocks.py``), not something the package
does: TFLite export must keep the native op (DEPTHWISE_CONV_2D), so the shifted form would have
to be opt-in or XLA-only.

Usage: ``python benchmarks/xla_depthwise.py [--output FILE]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from keras_coordatt import benchmark as bench  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import full_suite  # noqa: E402


class ShiftDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """``DepthwiseConv2D`` (channels_last, depth multiplier 1, no dilation) as shifted
    multiply-adds; same variables, same outputs up to float rounding."""

    def call(self, inputs):
        kh, kw = self.kernel_size
        sh, sw = self.strides
        x = inputs
        if self.padding == "same":
            rows, cols = x.shape[1], x.shape[2]
            pad_h = max((-(-rows // sh) - 1) * sh + kh - rows, 0)
            pad_w = max((-(-cols // sw) - 1) * sw + kw - cols, 0)
            x = ops.pad(x, [[0, 0], [pad_h // 2, pad_h - pad_h // 2],
                            [pad_w // 2, pad_w - pad_w // 2], [0, 0]])
        out_h = (x.shape[1] - kh) // sh + 1
        out_w = (x.shape[2] - kw) // sw + 1
        total = None
        for i in range(kh):
            for j in range(kw):
                patch = x[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw]
                term = patch * self.kernel[i, j, :, 0]
                total = term if total is None else total + term
        if self.use_bias:
            total = total + self.bias
        return total if self.activation is None else self.activation(total)


def with_shift_depthwise(model: keras.Model) -> keras.Model:
    """A copy of ``model`` with every DepthwiseConv2D replaced, same weights."""

    def clone(layer):
        config = layer.get_config()
        if type(layer) is keras.layers.DepthwiseConv2D:
            return ShiftDepthwiseConv2D.from_config(config)
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="MobileNetV2CA", choices=bench.MODELS[:2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--train-trials", type=int, default=3)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    bench.configure_threads(args.threads)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    calibration = full_suite.calibration_images()
    native = bench.build_keras_model(args.model, calibration=calibration)
    shifted = with_shift_depthwise(native)
    diff = float(np.max(np.abs(native.predict_on_batch(calibration[:2])
                               - shifted.predict_on_batch(calibration[:2]))))
    models = {"native DepthwiseConv2D": native, "shifted multiply-adds": shifted}

    contenders = []
    for batch in (1, 32):
        images = bench.benchmark_inputs(batch)[0]
        for name, model in models.items():
            contenders.append(bench.Contender(name, "keras_xla", batch,
                                              bench.keras_xla_runner(model, images)))
        contenders.append(bench.Contender("native DepthwiseConv2D", "keras", batch,
                                          bench.keras_predict_runner(native, images)))
    log("compiling")
    for contender in contenders:
        contender.fn()
    timings = bench.measure(contenders, trials=args.trials, log=log)

    rng = np.random.RandomState(7)
    images = rng.standard_normal((32, 224, 224, 3)).astype(np.float32)
    labels = rng.randint(0, 1000, size=32)
    train = []
    for name, model in models.items():
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=True)
        train.append(bench.Contender(name, "train_xla", 32,
                                     (lambda m: lambda: m.train_on_batch(images, labels))(model)))
    log("compiling the training steps")
    for contender in train:
        contender.fn()
    timings.update(bench.measure(train, trials=args.train_trials, trial_seconds=0.1, warmup=1,
                                 log=log))

    lines = [
        f"# XLA:CPU depthwise convolution: native vs shifted multiply-adds ({args.model}, "
        f"alpha 1, 224, {args.threads} threads)",
        "",
        *bench.info_lines(bench.machine_info()),
        f"- max abs difference of the logits (2 images): {diff:.1e}",
        f"- load average at the end: {bench.load_average()}",
        "",
        "| what | native DepthwiseConv2D | shifted multiply-adds | speed-up |",
        "|---|---|---|---|",
    ]
    for runtime, batch, label, scale in (
        ("keras_xla", 1, "Keras XLA inference, batch 1 (ms)", 1e3),
        ("keras_xla", 32, "Keras XLA inference, batch 32 (ms)", 1e3),
        ("train_xla", 32, "XLA train step, batch 32 (s)", 1.0),
    ):
        a = timings[("native DepthwiseConv2D", runtime, batch)].median
        b = timings[("shifted multiply-adds", runtime, batch)].median
        lines.append(f"| {label} | {a * scale:.2f} | {b * scale:.2f} | {a / b:.2f}x |")
    for batch in (1, 32):
        value = timings[("native DepthwiseConv2D", "keras", batch)].median * 1e3
        lines.append(f"| (for comparison) predict_on_batch, batch {batch} (ms) | {value:.2f} | "
                     "— | — |")
    text = "\n".join(lines)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
