"""Pretrain a MobileNetV2 backbone on some CIFAR-10 classes, for finetune_compare.py.

With no ImageNet download here, this makes the "pretrained network" of the comparison: a
``keras_coordatt.applications.MobileNetV2`` (no attention) trained from scratch on the classes
given by ``--classes`` (default: the five vehicles and animals airplane, automobile, bird, cat,
deer), with augmentation (flips, 4-pixel shifts at 32x32, then resized to ``--size``). It saves
the backbone without its head (``include_top=False``) as a ``.weights.h5`` that
``finetune_compare.py --weights`` loads; fine-tuning then runs on the *other* classes.

Example (the committed comparison, ``results/``)::

    python applications/attention_anywhere/pretrain_backbone.py --data-dir <cifar10-jpeg-dir> \\
        --size 64 --epochs 10 --output pretrained/mobilenetv2_0.35_cifar5.weights.h5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from finetune_compare import classifier, preprocess  # noqa: E402

PRETRAIN_CLASSES = ("airplane", "automobile", "bird", "cat", "deer")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="CIFAR-10 JPEG folders (train/, test/)")
    parser.add_argument("--classes", default=",".join(PRETRAIN_CLASSES),
                        help="comma-separated class folders to pretrain on")
    parser.add_argument("--per-class", type=int, default=None, help="images per class (all)")
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True, help="the backbone's .weights.h5")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import keras

    from keras_coordatt.applications import MobileNetV2
    from keras_coordatt.datasets import load_image_folder
    from keras_coordatt.demo import augment
    from keras_coordatt.training import build_for_fit

    classes = args.classes.split(",")
    root = Path(args.data_dir)
    x, y, _ = load_image_folder(root / "train", classes, args.per_class)
    xt, yt, _ = load_image_folder(root / "test", classes)
    test_inputs = preprocess(xt, args.size, "mobilenet_v2")
    keras.utils.set_random_seed(args.seed)
    backbone = MobileNetV2(input_shape=(args.size, args.size, 3), alpha=args.alpha,
                           include_top=False, weights=None)
    model = classifier(backbone, args.seed, len(classes))
    steps = args.epochs * -(-len(x) // args.batch_size)
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(args.lr, steps)),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    build_for_fit(model, y)
    rng = np.random.default_rng(args.seed)
    start = time.time()
    for epoch in range(args.epochs):
        inputs = preprocess(augment(x, rng), args.size, "mobilenet_v2")
        print(f"epoch {epoch + 1}/{args.epochs}", flush=True)
        model.fit(inputs, y, batch_size=args.batch_size, epochs=1, verbose=2)
    _, accuracy = model.evaluate(test_inputs, yt, batch_size=100, verbose=0)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    backbone.save_weights(output)
    record = {"classes": classes, "train_images": len(x), "test_images": len(xt),
              "test_accuracy": float(accuracy), "train_seconds": round(time.time() - start, 1),
              "alpha": args.alpha, "size": args.size, "epochs": args.epochs}
    output.with_name(output.name.replace(".weights.h5", ".json")).write_text(
        json.dumps(record, indent=1) + "\n")
    print(json.dumps(record), flush=True)
    return record


if __name__ == "__main__":
    main()
