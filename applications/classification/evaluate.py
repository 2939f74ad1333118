"""Evaluate a classifier: top-1 / top-5 of ported weights or of a model trained by train.py.

The original evaluation: shorter side resized to 256, centre crop 224, ImageNet mean / std.

Examples:
    # the ported MobileNetV2 + CA weights on the ImageNet validation set (TFDS or folders)
    python applications/classification/evaluate.py --model MobileNetV2CA --weights imagenet \\
        --tfds-name imagenet2012 --tfds-data-dir ~/tensorflow_datasets
    python applications/classification/evaluate.py --model MobileNetV2CA \\
        --val-dir ILSVRC2012/val          # val/<synset>/*.JPEG
    # a model written by train.py
    python applications/classification/evaluate.py --checkpoint runs/mbv2_ca/model.keras \\
        --tfds-name imagenette --val-split validation
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from train import (  # noqa: E402  (after the backend is chosen)
    add_data_arguments,
    add_model_arguments,
    check_model_arguments,
    load_split,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", default=None,
                        help="a .keras file from train.py (instead of --model / --weights); "
                             "checked against its .sha256")
    add_model_arguments(parser, training=False)
    add_data_arguments(parser, training=False)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--json", default=None, help="also write the scores to this file")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    args = parser.parse_args(argv)
    check_model_arguments(parser, args)
    return args


def load_classifier(args):
    """The model to score: the checkpoint, or the builder with --weights (its own top)."""
    from keras_coordatt import applications, training

    if args.checkpoint:
        return training.load_model(args.checkpoint, compile=False)
    builder = getattr(applications, args.model)
    options = {} if args.attention is None else {
        "attention": None if args.attention == "none" else args.attention}
    return builder(input_shape=(args.image_size, args.image_size, 3), alpha=args.alpha,
                   weights=args.weights, **options)


def top_k_counts(model, data, total: int, verbose: int) -> tuple[int, int, int]:
    """(top-1 hits, top-5 hits, images) of ``model`` over ``data`` (batches of images, labels):
    probabilities or logits alike, the ranking is what counts."""
    import keras
    import numpy as np

    top1 = top5 = seen = 0
    bar = keras.utils.Progbar(total, verbose=verbose, unit_name="image")
    for images, labels in data:
        scores = np.asarray(model.predict_on_batch(images.numpy()))
        labels = labels.numpy()
        ranked = np.argsort(-scores, axis=-1, kind="stable")[:, :5]
        top1 += int(np.sum(ranked[:, 0] == labels))
        top5 += int(np.sum(np.any(ranked == labels[:, None], axis=-1)))
        seen += len(labels)
        bar.update(seen)
    return top1, top5, seen


def main(argv=None) -> int:
    args = parse_args(argv)
    from keras_coordatt.training import classification_data as cd

    model = load_classifier(args)
    source = load_split(args, train=False)
    size = model.input_shape[1] or args.image_size
    data = cd.eval_batches(source, args.batch_size, size, args.resize_size)
    total = source.num_examples
    if args.limit:
        data = data.unbatch().take(args.limit).batch(args.batch_size)
        total = min(total, args.limit)
    top1, top5, count = top_k_counts(model, data, total, args.verbose)
    scores = {"top1": top1 / count, "top5": top5 / count, "images": count,
              "model": model.name, "input_size": size}
    print(f"{model.name} at {size}x{size}: top-1 {100 * scores['top1']:.2f} %  "
          f"top-5 {100 * scores['top5']:.2f} %  ({count:,} images)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(scores, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
