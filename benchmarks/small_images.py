"""Which small-image configuration for 32x32 inputs: the options side by side, same budget.

MobileNetV2CA at 32x32 with the default output stride 32 ends on a 1x1 map (block14 onward
sees 1x1, block7-13 2x2): Coordinate Attention has no coordinates to encode there. Each option
below ends on a 4x4 map instead; this script trains each one for the same number of epochs on
the bundled CIFAR-10 subset (4,000 training images, the demo's recipe: Adam + cosine decay, flips
and 4-pixel shifts) and prints top-1 on the 1,000 bundled test images, seconds per epoch,
params and MAdds, in one process, the options interleaved epoch by epoch (so a burst of load
from other processes hits all of them):

* ``os32``: today's network (last map 1x1), the reference;
* ``os8``: ``output_stride=8`` (block7 and block14 run at stride 1, the later depthwise convs
  dilated, DeepLab style): same layers and weights as the ImageNet network, last map 4x4;
* ``stem1``: the usual CIFAR variant (stem and block2 at stride 1, no dilation), a builder
  change the package does not have (built here from the package's block plan);
* ``up128``: inputs upsampled 4x (bilinear, inside the model) to 128x128, output stride 32.

``--options os8:12 stem1:4`` gives an option its own number of epochs (equal compute instead of
equal epochs); each row says its epochs. Seconds per epoch are reported as wall time and as this
process's CPU time (steadier when other processes share the machine).

    python benchmarks/small_images.py --epochs 2 \
        --output benchmarks/results/<date>-small-images-<machine>.md
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

OPTIONS = ("os32", "os8", "stem1", "up128")


def _stem_stride_one(alpha: float, classes: int):
    """MobileNetV2CA with the stem and block2 at stride 1 (32x32 -> 4x4 with no dilation)."""
    import keras

    from keras_coordatt.applications import _blocks, mobilenet_v2

    plan = mobilenet_v2.block_plan(alpha)
    blocks = _blocks.Blocks(keras.config.image_data_format())
    inputs = keras.Input((32, 32, 3))
    x = blocks.stem(inputs, dataclasses.replace(plan.stem, stride=1))
    for block in plan.blocks:
        if block.index == 2:
            block = dataclasses.replace(block, stride=1)
        x = mobilenet_v2._inverted_residual(blocks, x, block, "ca", 32)
    x = blocks.head(x, plan.head)
    x = blocks.top(x, include_top=True, pooling=None, classes=classes, classifier_activation=None,
                   dropout_rate=0.1)
    return keras.Model(inputs, x, name="stem1")


def build_option(option: str, alpha: float, classes: int = 10):
    """The logits classifier of ``option`` (one of :data:`OPTIONS`) for 32x32 inputs."""
    import keras

    from keras_coordatt.applications import MobileNetV2CA

    common = {"alpha": alpha, "weights": None, "classes": classes, "classifier_activation": None}
    if option == "os32":
        return MobileNetV2CA(input_shape=(32, 32, 3), **common)
    if option == "os8":
        return MobileNetV2CA(input_shape=(32, 32, 3), output_stride=8, **common)
    if option == "stem1":
        return _stem_stride_one(alpha, classes)
    if option == "up128":
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.Resizing(128, 128, interpolation="bilinear")(inputs)
        backbone = MobileNetV2CA(input_shape=(128, 128, 3), **common)
        return keras.Model(inputs, backbone(x), name="up128")
    raise ValueError(f"Unknown option {option!r}: use one of {OPTIONS}.")


def last_map_and_madds(option: str, alpha: float) -> tuple[int, int, int]:
    """``(last feature map side, params, MAdds)`` of ``option`` at 32x32 (MAdds of the network
    the option runs, i.e. at 128x128 for ``up128``)."""
    from keras_coordatt.applications import profile

    model = build_option(option, alpha)
    if option == "up128":
        model = model.layers[-1]
    head = model.get_layer("head_relu").output.shape[1]
    counts = profile(model)
    return int(head), counts["params"], counts["madds"]


def _compile(model, learning_rate: float, steps: int):
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def parse_option(text: str, default_epochs: int) -> tuple[str, int]:
    """``"os8"`` -> ``("os8", default_epochs)``; ``"os8:12"`` -> ``("os8", 12)``."""
    name, _, epochs = text.partition(":")
    if name not in OPTIONS or (epochs and not epochs.isdigit()):
        raise argparse.ArgumentTypeError(
            f"Bad option {text!r}: use NAME or NAME:EPOCHS with NAME one of {OPTIONS}."
        )
    return name, int(epochs) if epochs else default_epochs


def _train_interleaved(plan, x_train, y_train, args) -> tuple[dict, dict]:
    """Trains every ``(option, epochs)`` of ``plan`` epoch by epoch, interleaved; returns the
    models and each option's ``(wall, cpu)`` seconds per epoch."""
    import keras

    from keras_coordatt.demo import augment, preprocess_images

    models, rngs, seconds = {}, {}, {}
    for option, epochs in plan:
        keras.utils.set_random_seed(args.seed)
        models[option] = build_option(option, args.alpha)
        _compile(models[option], args.learning_rate,
                 epochs * int(np.ceil(len(x_train) / args.batch_size)))
        rngs[option] = np.random.default_rng(args.seed)
        seconds[option] = []
    for epoch in range(max(epochs for _, epochs in plan)):
        for option, epochs in plan:
            if epoch >= epochs:
                continue
            inputs = preprocess_images(augment(x_train, rngs[option]))
            wall, cpu = time.perf_counter(), time.process_time()
            models[option].fit(inputs, y_train, batch_size=args.batch_size, epochs=1, verbose=0)
            seconds[option].append((time.perf_counter() - wall, time.process_time() - cpu))
            print(f"epoch {epoch + 1}/{epochs} {option}: {seconds[option][-1][0]:.1f} s wall, "
                  f"{seconds[option][-1][1]:.1f} s CPU", flush=True)
    return models, seconds


def run(args: argparse.Namespace) -> list[dict]:
    """Trains every option (interleaved) and returns one result row per option."""
    from keras_coordatt.datasets import load_cifar10_subset
    from keras_coordatt.demo import keras_accuracy, preprocess_images

    x_train, y_train = load_cifar10_subset("train")
    x_test, y_test = load_cifar10_subset("test")
    plan = [parse_option(text, args.epochs) for text in args.options]
    models, seconds = _train_interleaved(plan, x_train, y_train, args)
    rows = []
    for option, epochs in plan:
        side, params, madds = last_map_and_madds(option, args.alpha)
        # the first epoch includes tracing; the median of the others is the steady state
        steady = np.asarray(seconds[option][1:] or seconds[option])
        rows.append({
            "option": option, "epochs": epochs, "last_map": side, "params": params,
            "madds": madds, "epoch_s": float(np.median(steady[:, 0])),
            "epoch_cpu_s": float(np.median(steady[:, 1])),
            "top1": keras_accuracy(models[option], preprocess_images(x_test), y_test),
        })
    return rows


def format_report(args: argparse.Namespace, rows: list[dict], minutes: float) -> str:
    """The Markdown report: machine, exact command, one row per option."""
    import keras

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    load = os.getloadavg()[0]
    lines = [
        "# Small images (32x32): which configuration gives a 4x4 last map best",
        "",
        f"Machine: {cpu}, {os.cpu_count()} cores (1-min load {load:.1f} at the end: shared); "
        f"Python {platform.python_version()}, Keras {keras.__version__} "
        f"({keras.backend.backend()}).",
        "",
        f"Command: `python {' '.join(['benchmarks/small_images.py', *sys.argv[1:]])}`",
        "",
        f"MobileNetV2CA alpha {args.alpha}, trained from scratch on the bundled CIFAR-10 subset "
        "(4,000 images), batch {args.batch_size}, Adam lr "
        f"{args.learning_rate} + cosine decay, seed {args.seed}; top-1 on the 1,000 bundled test "
        f"images. Epoch time: median over epochs 2+, options interleaved; {minutes:.1f} min in "
        "all.",
        "",
        "| option | last map | params | MAdds (M) | epochs | s / epoch (wall) | "
        "s / epoch (CPU) | top-1 (%) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| `{row['option']}` | {row['last_map']}x{row['last_map']} | {row['params']:,} | "
            f"{row['madds'] / 1e6:.1f} | {row['epochs']} | {row['epoch_s']:.1f} | "
            f"{row['epoch_cpu_s']:.1f} | {100 * row['top1']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--options", nargs="+", default=list(OPTIONS),
                        help=f"NAME or NAME:EPOCHS, NAME in {OPTIONS} (default: all four)")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=2, help="epochs of an option without :N")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="write the Markdown report")
    args = parser.parse_args(argv)
    try:
        [parse_option(text, args.epochs) for text in args.options]
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    started = time.perf_counter()
    rows = run(args)
    report = format_report(args, rows, (time.perf_counter() - started) / 60)
    print(report)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
