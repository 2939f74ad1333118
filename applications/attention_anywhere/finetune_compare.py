"""Fine-tune a pretrained network with and without Coordinate Attention added; compare.

The backbone (``--network``) is built without top, with ``--weights`` (a pretrained file) or
random weights; a classifier (global average pooling + dense) goes on top. The "+ CA" variant
is ``keras_coordatt.add_attention(backbone, --where)`` with the identity start, so both
variants begin from the same function (the script checks it on the test images before
training); both then get the same fine-tune (same head initialisation, data order, optimizer,
epochs). Data: CIFAR-10 in JPEG folder layout (``--data-dir`` with ``train/<class>/*.jpg`` and
``test/<class>/*.jpg``) or, by default, the bundled subset (4,000 train / 1,000 test images).

Example (the committed results, ``results/``; the backbone from ``pretrain_backbone.py``)::

    python applications/attention_anywhere/finetune_compare.py \\
        --weights <pretrained>/mobilenetv2_0.35_cifar5.weights.h5 --data-dir <cifar10-jpeg-dir> \\
        --classes dog,frog,horse,ship,truck --train-per-class 400 --test-per-class 200 \\
        --size 64 --epochs 4 --seeds 0 1 2

Prints a markdown table and writes it, with the command and machine, to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
NETWORKS = ("mobilenet_v2", "resnet50", "mobilenet_v3_small", "efficientnet_b0")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--network", choices=NETWORKS, default="mobilenet_v2")
    parser.add_argument("--alpha", type=float, default=0.35, help="width (mobilenet_v2 only)")
    parser.add_argument("--weights", default=None, help="pretrained weights file (default none)")
    parser.add_argument("--where", default="after_depthwise_activation",
                        help="add_attention's where: a rule or comma-separated layer names")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 JPEG folders (train/, test/)")
    parser.add_argument("--classes", default=None,
                        help="comma-separated CIFAR-10 classes to fine-tune on (default all 10)")
    parser.add_argument("--train-per-class", type=int, default=400)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=96, help="input size (images are resized)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one fine-tune of each model per seed (head init, data order)")
    parser.add_argument("--output", default=str(RESULTS / "finetune_pretrained.md"))
    return parser.parse_args(argv)


def class_names(args) -> list[str]:
    from keras_coordatt.datasets import CIFAR10_CLASSES

    if not args.classes:
        return list(CIFAR10_CLASSES)
    names = args.classes.split(",")
    unknown = sorted(set(names) - set(CIFAR10_CLASSES))
    if unknown:
        raise SystemExit(f"--classes: {unknown} not CIFAR-10 classes {list(CIFAR10_CLASSES)}")
    return names


def _folder_split(root: Path, names: list[str], per_class: int):
    from keras_coordatt.datasets import load_image_folder

    images, labels, _ = load_image_folder(root, names, per_class)
    return images, labels


def _take(images, labels, names: list[str], per_class: int):
    """The first ``per_class`` images of each class in ``names``, relabelled 0..len-1."""
    from keras_coordatt.datasets import CIFAR10_CLASSES

    picks = [np.flatnonzero(labels == CIFAR10_CLASSES.index(n))[:per_class] for n in names]
    new_labels = np.concatenate([np.full(len(k), i) for i, k in enumerate(picks)])
    return images[np.concatenate(picks)], new_labels


def load_data(args) -> dict:
    """``{"train": (images uint8, labels), "test": ...}``."""
    names = class_names(args)
    if args.data_dir:
        root = Path(args.data_dir)
        return {"train": _folder_split(root / "train", names, args.train_per_class),
                "test": _folder_split(root / "test", names, args.test_per_class)}
    from keras_coordatt.datasets import load_cifar10_subset

    train = _take(*load_cifar10_subset("train"), names, args.train_per_class)
    test = _take(*load_cifar10_subset("test"), names, args.test_per_class)
    return {"train": train, "test": test}


def preprocess(images: np.ndarray, size: int, network: str) -> np.ndarray:
    import keras

    resized = keras.ops.image.resize(images.astype("float32"), (size, size))
    resized = keras.ops.convert_to_numpy(resized)
    if network == "mobilenet_v2":
        from keras_coordatt.applications import preprocess_input

        return np.asarray(preprocess_input(resized), dtype="float32")
    if network == "resnet50":
        return keras.applications.resnet50.preprocess_input(resized)
    return resized  # MobileNetV3 / EfficientNet rescale inside the model


def backbone(args):
    import keras

    shape = (args.size, args.size, 3)
    if args.network == "mobilenet_v2":
        from keras_coordatt.applications import MobileNetV2

        return MobileNetV2(input_shape=shape, alpha=args.alpha, include_top=False,
                           weights=args.weights)
    build = {"resnet50": keras.applications.ResNet50,
             "mobilenet_v3_small": keras.applications.MobileNetV3Small,
             "efficientnet_b0": keras.applications.EfficientNetB0}[args.network]
    return build(input_shape=shape, include_top=False, weights=args.weights)


def classifier(features, seed: int, classes: int = 10):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(features.input_shape[1:])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(features(inputs))
    outputs = keras.layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs)


def finetune(model, data, args, seed: int) -> dict:
    import keras

    from keras_coordatt.training import build_for_fit

    keras.utils.set_random_seed(seed)
    model.compile(
        keras.optimizers.Adam(args.lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
        jit_compile=False,
    )
    (x, y), (xt, yt) = data["train"], data["test"]
    build_for_fit(model, y)  # the train step is traced once, not twice
    start = time.time()
    history = model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=2,
                        shuffle=True)
    seconds = time.time() - start
    _, accuracy = model.evaluate(xt, yt, batch_size=64, verbose=0)
    return {"test_accuracy": float(accuracy), "train_loss": history.history["loss"],
            "train_seconds": round(seconds, 1), "params": int(model.count_params())}


def run(args) -> dict:
    """``{"seeds": {seed: {"start_relative_difference", "baseline", "ca_added"}}}``."""
    raw = load_data(args)
    data = {k: (preprocess(v[0], args.size, args.network), v[1]) for k, v in raw.items()}
    return {"seeds": {seed: run_seed(args, data, seed) for seed in args.seeds}}


def run_seed(args, data, seed: int) -> dict:
    from keras_coordatt import add_attention
    from keras_coordatt.surgery import RULES

    base = backbone(args)
    with_ca = add_attention(base, args.where if args.where in RULES else args.where.split(","))
    classes = len(class_names(args))
    plain, added = classifier(base, seed, classes), classifier(with_ca, seed, classes)
    probe = data["test"][0][:64]
    before = plain.predict(probe, verbose=0)
    start_gap = float(np.abs(added.predict(probe, verbose=0) - before).max()
                      / np.abs(before).max())
    return {"start_relative_difference": start_gap,
            "baseline": finetune(plain, data, args, seed),
            "ca_added": finetune(added, data, args, seed)}


def _relative_to_repository(path: str) -> str:
    root = Path(__file__).resolve().parents[2]
    resolved = Path(path).resolve()
    if resolved.is_relative_to(root):
        return str(resolved.relative_to(root))
    return "<output>/" + resolved.name


def shown_command(argv: list[str]) -> str:
    """The command line without the machine's paths: the data folder becomes a placeholder, a
    weights file and an output outside the repository their names."""
    shown, previous = [], None
    for arg in argv:
        if previous == "--data-dir":
            arg = "<cifar10-jpeg-dir>"
        elif previous == "--weights" and os.sep in arg:
            arg = "<pretrained>/" + os.path.basename(arg)
        elif previous == "--output":
            arg = _relative_to_repository(arg)
        shown.append(arg)
        previous = arg if arg.startswith("--") else None
    return "python applications/attention_anywhere/finetune_compare.py " + " ".join(shown)


def report(args, results: dict, argv: list[str]) -> str:
    runs = results["seeds"]
    gaps = max(run["start_relative_difference"] for run in runs.values())
    lines = [
        "# Fine-tune with and without Coordinate Attention added",
        "",
        f"Command: `{shown_command(argv)}`",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, run under `nice` next to other jobs.",
        "",
        f"Before training, the CA model's logits differ from the baseline's by at most "
        f"{gaps:.2e} (max, relative to the largest logit): the identity start.",
        "",
        "| model | seed | params | test accuracy | train loss per epoch | train seconds |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for key, label in (("baseline", "baseline"), ("ca_added", "+ CA (add_attention)")):
        for seed, run in runs.items():
            row = run[key]
            losses = ", ".join(f"{v:.3f}" for v in row["train_loss"])
            lines.append(f"| {label} | {seed} | {row['params']:,} | "
                         f"{100 * row['test_accuracy']:.1f} % | {losses} | "
                         f"{row['train_seconds']} |")
    lines += ["", "| model | test accuracy, mean ± sample std over seeds |", "|---|---:|"]
    for key, label in (("baseline", "baseline"), ("ca_added", "+ CA (add_attention)")):
        accuracies = 100 * np.array([run[key]["test_accuracy"] for run in runs.values()])
        spread = accuracies.std(ddof=1) if len(accuracies) > 1 else float("nan")
        lines.append(f"| {label} | {accuracies.mean():.1f} ± {spread:.1f} % |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    results = run(args)
    text = report(args, results, argv)
    print(text)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    output.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
