"""Train DeepLabV3 on a keras_coordatt backbone (the CA paper's VOC / Cityscapes recipe).

Defaults are the paper's setting (DeepLabV3 on MobileNetV2, Pascal VOC 2012): output stride 16,
batch 16, SGD momentum 0.9, learning rate 0.007 with the poly schedule (power 0.9), weight decay
4e-5, random scale 0.5-2.0 and horizontal flips, crop 512 (768 for Cityscapes: the paper's
513 / 769 are TF DeepLab's align-corners sizes; this DeepLabV3 upsamples by whole factors, so
crops are multiples of the output stride).

Examples:
    python applications/segmentation/train.py --source voc --data-dir VOCdevkit/VOC2012 \\
        --attention ca --weights imagenet --epochs 50 --output-dir runs/voc_ca
    python applications/segmentation/train.py --source tfds --tfds-name oxford_iiit_pet \\
        --attention ca --crop-size 256 --epochs 5 --output-dir runs/pets_ca
    python applications/segmentation/train.py --source pennfudan \\
        --data-dir ../shared/data/pennfudan --attention ca --weights none --alpha 0.5 \\
        --base-size 192 --crop-size 160 --eval-size 224 --batch-size 8 --epochs 10

Writes to --output-dir: model.keras (final), checkpoints/last.keras and best.keras, backup/
(BackupAndRestore: rerun the same command to resume an interrupted run), logs/ (TensorBoard),
train_log.csv, metrics.json (held-out mIoU, per-class IoU, params, MAdds, wall time).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # tf.data pipelines, TFLite export
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BACKBONES = ("mobilenetv2", "mobilenext")
ATTENTIONS = ("none", "se", "cbam", "ca")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The data options of train.py, evaluate.py and export.py."""
    data = parser.add_argument_group("data")
    data.add_argument("--source", choices=("voc", "pennfudan", "tfds"), default="voc",
                      help="VOC-layout folder, Penn-Fudan folder, or tensorflow-datasets")
    data.add_argument("--data-dir", help="dataset folder (voc / pennfudan) or TFDS data_dir")
    data.add_argument("--tfds-name", default="oxford_iiit_pet",
                      help="TFDS set for --source tfds (presets: oxford_iiit_pet, cityscapes)")
    data.add_argument("--train-split", default="train")
    data.add_argument("--val-split", default="val")
    data.add_argument("--num-val", type=int, default=50,
                      help="Penn-Fudan: images held out for validation")
    data.add_argument("--split-seed", type=int, default=0, help="Penn-Fudan: split seed")
    data.add_argument("--crop-size", type=int, default=None,
                      help="training crop, a multiple of the output stride; default 512 "
                           "(768 for cityscapes): the paper's 513 / 769 are TF DeepLab's "
                           "align-corners sizes, 16k + 1")
    data.add_argument("--eval-size", type=int, default=None,
                      help="evaluation: longer side resized to this, padded square; "
                           "default the crop size")
    data.add_argument("--base-size", type=int, default=None,
                      help="resize the shorter side to this before augmenting (small budgets; "
                           "the paper augments full-resolution images)")
    data.add_argument("--scale-min", type=float, default=0.5, help="random scale, lowest")
    data.add_argument("--scale-max", type=float, default=2.0, help="random scale, highest")
    data.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    data.add_argument("--cache", action="store_true", help="cache decoded images in memory")


def finish_data_arguments(args: argparse.Namespace) -> argparse.Namespace:
    if args.crop_size is None:
        args.crop_size = 768 if args.tfds_name == "cityscapes" and args.source == "tfds" else 512
    args.eval_size = args.eval_size or args.crop_size
    return args


def load_split(args: argparse.Namespace, split: str):
    """(dataset of (image, mask), class names) of one split of the chosen source."""
    from keras_coordatt.tasks import segmentation_data

    return segmentation_data.segmentation_source(
        args.source, split, data_dir=args.data_dir, tfds_name=args.tfds_name,
        num_val=args.num_val, split_seed=args.split_seed,
    )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_data_arguments(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--backbone", choices=BACKBONES, default="mobilenetv2")
    model.add_argument("--attention", choices=ATTENTIONS, default="ca")
    model.add_argument("--alpha", type=float, default=1.0, help="width multiplier")
    model.add_argument("--weights", default="imagenet",
                       help="backbone weights: imagenet, a preset, a .pth / .weights.h5 file, "
                            "or none")
    model.add_argument("--output-stride", type=int, choices=(8, 16, 32), default=16,
                       help="backbone output stride (ASPP rates 6/12/18 at 16, doubled at 8)")
    model.add_argument("--decoder", action="store_true", help="DeepLabV3+ decoder")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=50,
                       help="VOC aug, batch 16: 50 epochs ~ 33k steps")
    train.add_argument("--steps-per-epoch", type=int, default=None,
                       help="default: one pass over the training set")
    train.add_argument("--batch-size", type=int, default=16, help="images per step")
    train.add_argument("--learning-rate", type=float, default=0.007, help="initial SGD rate")
    train.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    train.add_argument("--poly-power", type=float, default=0.9,
                       help="poly schedule: lr * (1 - step / steps) ** power")
    train.add_argument("--weight-decay", type=float, default=4e-5,
                       help="SGD's decoupled decay (= an L2 penalty of this size for SGD)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--output-dir", default="runs/segmentation")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                       help="Keras fit verbosity (1: progress bars)")
    args = parser.parse_args(argv)
    finish_data_arguments(args)
    if args.weights.lower() == "none":
        args.weights = None
    return args


def build_model(args, num_classes: int):
    from keras_coordatt import applications
    from keras_coordatt.tasks import DeepLabV3

    builder = applications.MobileNetV2 if args.backbone == "mobilenetv2" else (
        applications.MobileNeXt)
    backbone = builder(
        input_shape=(None, None, 3), alpha=args.alpha, include_top=False, weights=args.weights,
        attention=None if args.attention == "none" else args.attention,
        output_stride=args.output_stride,
    )
    return DeepLabV3(backbone, num_classes, decoder=args.decoder)


def count_items(dataset) -> int:
    count = int(dataset.cardinality())
    if count < 0:  # unknown (TFDS after filtering): count once
        count = sum(1 for _ in dataset)
    return count


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras
    import numpy as np

    from keras_coordatt.applications import profile
    from keras_coordatt.tasks import segmentation_data as sd
    from keras_coordatt.training import build_for_fit

    keras.utils.set_random_seed(args.seed)
    train_raw, class_names = load_split(args, args.train_split)
    val_raw, _ = load_split(args, args.val_split)
    num_train = count_items(train_raw)
    num_classes = len(class_names)
    train = sd.train_pipeline(
        train_raw, args.crop_size, args.batch_size, scale_range=(args.scale_min, args.scale_max),
        flip=not args.no_flip, base_size=args.base_size, num_classes=num_classes,
        cache=args.cache, seed=args.seed, drop_remainder=num_train >= args.batch_size,
    )
    val = sd.eval_pipeline(val_raw, args.eval_size, args.batch_size, num_classes=num_classes,
                           cache=args.cache)
    steps = args.steps_per_epoch or max(num_train // args.batch_size, 1)
    train = train.repeat()

    model = build_model(args, num_classes)
    schedule = keras.optimizers.schedules.PolynomialDecay(
        args.learning_rate, decay_steps=steps * args.epochs, end_learning_rate=0.0,
        power=args.poly_power,
    )
    optimizer = keras.optimizers.SGD(schedule, momentum=args.momentum,
                                     weight_decay=args.weight_decay or None)
    model.compile(optimizer=optimizer)  # sparse CE ignoring 255, MeanIoU (model defaults)

    out = args.output_dir
    os.makedirs(os.path.join(out, "checkpoints"), exist_ok=True)
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(out, "backup")),
        keras.callbacks.ModelCheckpoint(os.path.join(out, "checkpoints", "last.keras")),
        keras.callbacks.ModelCheckpoint(os.path.join(out, "checkpoints", "best.keras"),
                                        monitor="val_mean_iou", mode="max",
                                        save_best_only=True),
        keras.callbacks.CSVLogger(os.path.join(out, "train_log.csv"), append=True),
    ]
    if importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(out, "logs")))
    else:
        print("TensorBoard is not installed (pip install tensorboard): no logs/ written.")
    print(f"{model.name}: {num_train} training images, {steps} steps x {args.epochs} epochs, "
          f"crop {args.crop_size}, batch {args.batch_size}, classes {list(class_names)}",
          flush=True)
    build_for_fit(model, train)  # the train step is then traced once, not twice
    start = time.time()
    model.fit(train, epochs=args.epochs, steps_per_epoch=steps, validation_data=val,
              callbacks=callbacks, verbose=args.verbose)
    train_seconds = time.time() - start
    model.save(os.path.join(out, "model.keras"))

    scores = sd.segmentation_scores(lambda x: model.predict_on_batch(x), val, num_classes)
    size = args.eval_size
    counts = profile(build_profile_model(args, num_classes, size))
    metrics = {
        "model": model.name,
        "mean_iou": scores["mean_iou"],
        "iou": dict(zip(class_names, scores["iou"], strict=True)),
        "pixel_accuracy": scores["pixel_accuracy"],
        "params": counts["params"],
        "madds": counts["madds"],
        "madds_input": size,
        "train_seconds": round(train_seconds, 1),
        "num_train": num_train,
        "args": vars(args),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1, default=float)
    print(f"held-out mIoU {scores['mean_iou']:.4f}; per class: "
          + ", ".join(f"{n} {v:.4f}"
                      for n, v in zip(class_names, np.asarray(scores["iou"]), strict=True))
          + f"; params {counts['params']:,}, MAdds {counts['madds'] / 1e9:.3f} G at "
            f"{size}x{size}; trained in {train_seconds:.0f} s", flush=True)
    return 0


def build_profile_model(args, num_classes: int, size: int):
    """The same segmenter at a fixed input size (MAdds need known spatial shapes)."""
    from keras_coordatt import applications
    from keras_coordatt.tasks import DeepLabV3

    builder = applications.MobileNetV2 if args.backbone == "mobilenetv2" else (
        applications.MobileNeXt)
    backbone = builder(
        input_shape=(size, size, 3), alpha=args.alpha, include_top=False, weights=None,
        attention=None if args.attention == "none" else args.attention,
        output_stride=args.output_stride,
    )
    return DeepLabV3(backbone, num_classes, decoder=args.decoder)


if __name__ == "__main__":
    sys.exit(main())
