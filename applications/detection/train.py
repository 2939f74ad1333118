"""Train SSDLite on a keras_coordatt backbone (the CA paper's COCO / VOC detection recipe).

Defaults are the paper's SSDLite320 setting (the authors' houqb/ssdlite-pytorch-mobilenext
configs): input 320, six levels, SGD momentum 0.9 with PyTorch-style weight decay.
--config coco: focal loss, learning rate 1e-2 with warm-up + cosine, weight decay 4e-5, batch
32, COCO 2017 train -> val. --config voc: hard-negative-mined softmax (3:1), learning rate 1e-3
divided by 10 at 2/3 and 5/6 of the run (the authors' 160k / 200k of 240k steps), batch 24,
weight decay 5e-4 (lufficc/SSD's default), VOC 2007 + 2012 trainval -> VOC 2007 test.
SSD augmentation (photometric, expand, IoU-constrained crop, flip) in both.

Examples:
    python applications/detection/train.py --config coco --source tfds \\
        --attention ca --weights imagenet --output-dir runs/coco_ca
    python applications/detection/train.py --config voc --source voc \\
        --data-dir VOCdevkit/VOC2007 VOCdevkit/VOC2012 --val-data-dir VOCdevkit/VOC2007 \\
        --attention ca --weights imagenet --output-dir runs/voc_ca
    python applications/detection/train.py --source pennfudan \\
        --data-dir ../shared/data/pennfudan --attention ca --weights none --alpha 0.5 \\
        --batch-size 8 --epochs 30 --output-dir runs/pf_ca

Writes to --output-dir (the chief only): model.keras (final), checkpoints/last.keras and
best.keras (lowest validation loss; each with a .sha256), backup/ (rerun the same command to
resume after the last finished epoch), logs/ (TensorBoard), train_log.csv, metrics.json (COCO
AP / AP50 / AP75 / AP by size on the validation split, params, MAdds, wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # tf.data pipelines
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BACKBONES = ("mobilenet_v2", "mobilenext")
ATTENTIONS = ("none", "se", "cbam", "ca")
#: The paper's two settings (module docstring); command-line options override them.
CONFIGS = {
    "coco": {"loss": "focal", "learning_rate": 1e-2, "schedule": "cosine", "batch_size": 32,
             "weight_decay": 4e-5, "epochs": 120, "tfds_names": ["coco/2017"],
             "train_split": "train2017", "val_split": "val2017"},
    "voc": {"loss": "hard_negative", "learning_rate": 1e-3, "schedule": "steps",
            "batch_size": 24, "weight_decay": 5e-4, "epochs": 350,
            "tfds_names": ["voc/2007", "voc/2012"], "train_split": "trainval",
            "val_split": "test"},
}


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The data options of train.py and evaluate.py."""
    data = parser.add_argument_group("data")
    data.add_argument("--config", choices=tuple(CONFIGS), default="coco",
                      help="the paper's COCO or VOC setting (loss, schedule, batch, sets)")
    data.add_argument("--source", choices=("tfds", "voc", "coco", "pennfudan"), default="tfds",
                      help="tensorflow-datasets, folders in VOC XML or COCO JSON layout, or "
                           "Penn-Fudan")
    data.add_argument("--data-dir", nargs="+", default=None,
                      help="dataset folder(s) (voc: several are concatenated) or TFDS data_dir")
    data.add_argument("--val-data-dir", nargs="+", default=None,
                      help="folder(s) of the validation split (default: --data-dir)")
    data.add_argument("--tfds-name", nargs="+", default=None,
                      help="TFDS sets, concatenated (default: coco/2017, or voc/2007 voc/2012; "
                           "validation reads the first)")
    data.add_argument("--train-split", default=None,
                      help="VOC ImageSets/Main list / COCO folder name / TFDS split "
                           "(default per config and source)")
    data.add_argument("--val-split", default=None, help="as --train-split, for validation")
    data.add_argument("--num-val", type=int, default=50,
                      help="Penn-Fudan: images held out for validation")
    data.add_argument("--split-seed", type=int, default=0, help="Penn-Fudan: split seed")
    data.add_argument("--image-size", type=int, default=320, help="square input size")
    data.add_argument("--max-boxes", type=int, default=100, help="box slots per image (M)")


def finish_data_arguments(args: argparse.Namespace) -> argparse.Namespace:
    config = CONFIGS[args.config]
    args.tfds_name = args.tfds_name or config["tfds_names"]
    splits = {"tfds": ("train", "val"), "pennfudan": ("train", "val"),
              "voc": (config["train_split"], config["val_split"]),
              "coco": ("train2017", "val2017")}[args.source]
    args.train_split = args.train_split or splits[0]
    args.val_split = args.val_split or splits[1]
    args.val_data_dir = args.val_data_dir or args.data_dir
    return args


def load_split(args: argparse.Namespace, train: bool):
    """The :class:`~keras_coordatt.tasks.detection_data.DetectionSource` of a split."""
    from keras_coordatt.tasks import detection_data as dd

    names = args.tfds_name if train else args.tfds_name[:1]
    return dd.detection_source(
        args.source, args.train_split if train else args.val_split,
        data_dir=args.data_dir if train else args.val_data_dir, tfds_names=names,
        num_val=args.num_val, split_seed=args.split_seed)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    train = parser.add_argument_group("training (defaults: --config)")
    train.add_argument("--epochs", type=int, default=None,
                       help="coco: 120 (our choice), voc: 350 (~240k steps of 24 on 07+12)")
    train.add_argument("--steps-per-epoch", type=int, default=None,
                       help="cap on steps per epoch (default: every full batch)")
    train.add_argument("--batch-size", type=int, default=None, help="global batch; coco 32, voc 24")
    train.add_argument("--learning-rate", type=float, default=None, help="coco 1e-2, voc 1e-3")
    train.add_argument("--schedule", choices=("cosine", "steps"), default=None,
                       help="cosine (coco) or /10 at 2/3 and 5/6 of the run (voc)")
    train.add_argument("--warmup-epochs", type=float, default=1.0,
                       help="linear warm-up of the cosine schedule")
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--weight-decay", type=float, default=None,
                       help="L2 added to the gradients (PyTorch SGD); coco 4e-5, voc 5e-4")
    train.add_argument("--loss", choices=("focal", "hard_negative"), default=None,
                       help="coco: focal, voc: hard_negative")
    train.add_argument("--no-photometric", action="store_true",
                       help="no photometric distortion")
    train.add_argument("--no-expand", action="store_true", help="no random expand")
    train.add_argument("--validation-freq", type=int, default=1,
                       help="validation loss every N epochs")
    train.add_argument("--skip-coco-eval", action="store_true",
                       help="no COCO evaluation of the final model (no metrics.json)")
    train.add_argument("--seed", type=int, default=0, help="weights, data order, augmentation")
    train.add_argument("--deterministic", action="store_true", help="TensorFlow op determinism")
    train.add_argument("--output-dir", default="runs/detection")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                       help="Keras fit verbosity (1: progress bars)")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_arguments(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--backbone", choices=BACKBONES, default="mobilenet_v2")
    model.add_argument("--attention", choices=ATTENTIONS, default="ca")
    model.add_argument("--alpha", type=float, default=1.0, help="width multiplier")
    model.add_argument("--weights", default="imagenet",
                       help="backbone weights: imagenet, a preset, a .pth / .weights.h5 file, "
                            "or none")
    add_training_arguments(parser)
    dist = parser.add_argument_group("distribution")
    dist.add_argument("--distribute", default="none",
                      choices=("none", "mirrored", "multiworker", "tpu", "data_parallel"),
                      help="as applications/classification/train.py")
    dist.add_argument("--devices", default=None, help="comma-separated devices")
    dist.add_argument("--tpu", default=None, help="TPU name or address")
    dist.add_argument("--sync-batchnorm", action=argparse.BooleanOptionalAction, default=None,
                      help="BatchNorm over the global batch; default on with several replicas")
    args = finish_data_arguments(parser.parse_args(argv))
    config = CONFIGS[args.config]
    for key in ("epochs", "batch_size", "learning_rate", "schedule", "weight_decay", "loss"):
        if getattr(args, key) is None:
            setattr(args, key, config[key])
    if args.weights.lower() == "none":
        args.weights = None
    return args


def build_model(args, num_classes: int, weights=None):
    """Backbone (``--backbone``, ``--attention``, ``--alpha``) + SSDLite at ``--image-size``."""
    from keras_coordatt import applications
    from keras_coordatt.tasks import SSDLite

    builder = applications.MobileNetV2 if args.backbone == "mobilenet_v2" else (
        applications.MobileNeXt)
    backbone = builder(input_shape=(args.image_size, args.image_size, 3), alpha=args.alpha,
                       include_top=False, weights=weights,
                       attention=None if args.attention == "none" else args.attention)
    return SSDLite(backbone, num_classes)


def compile_model(model, args, steps: int) -> None:
    import keras

    from keras_coordatt.training import CoupledSGD, warmup_cosine

    total = steps * args.epochs
    if args.schedule == "cosine":
        schedule = warmup_cosine(args.learning_rate, total,
                                 min(round(args.warmup_epochs * steps), total - 1))
    else:
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
            [round(total * 2 / 3), round(total * 5 / 6)],
            [args.learning_rate, args.learning_rate / 10, args.learning_rate / 100])
    model.compile(CoupledSGD(schedule, momentum=args.momentum, l2=args.weight_decay),
                  loss=args.loss)


def make_callbacks(args, is_chief: bool, validation: bool) -> list:
    """:func:`keras_coordatt.training.checkpoints.recipe_callbacks` in ``--output-dir``
    (``best.keras`` on ``val_loss`` when there is a validation split)."""
    from keras_coordatt.training.checkpoints import recipe_callbacks

    return recipe_callbacks(args.output_dir, is_chief,
                            best_monitor="val_loss" if validation else None, best_mode="min")


def main(argv=None) -> int:
    args = parse_args(argv)
    from keras_coordatt import training
    from keras_coordatt.tasks import check_detection_batch
    from keras_coordatt.tasks import detection_data as dd

    dist = training.choose_distribution(args.distribute, tpu=args.tpu,
                                        devices=args.devices.split(",") if args.devices else None)
    training.set_determinism(args.seed, args.deterministic)
    dist.check_batch_size(args.batch_size)
    train_source, val_source = load_split(args, True), load_split(args, False)
    steps = min(dd.steps_per_epoch(train_source, args.batch_size),
                args.steps_per_epoch or sys.maxsize)
    start = training.backup_epoch(os.path.join(args.output_dir, "backup"))
    if start:
        print(f"Resuming from the backup after epoch {start}.", flush=True)
    options = {"max_boxes": args.max_boxes, "bounding_box_format": "yxyx"}
    train = dd.train_batches(train_source, args.image_size, args.batch_size, args.epochs,
                             start_epoch=start, seed=args.seed, steps=steps,
                             photometric_distort=not args.no_photometric,
                             max_expand=1.0 if args.no_expand else 4.0, **options)
    val = dd.eval_batches(val_source, args.image_size, args.batch_size, **options)
    for _, labels in train.take(1):  # bad labels fail here, not as a silent drop in the loss
        check_detection_batch(labels, train_source.num_classes)

    if args.sync_batchnorm is None:
        args.sync_batchnorm = dist.strategy is not None and dist.num_replicas > 1
    with dist.scope():
        model = build_model(args, train_source.num_classes, args.weights)
        if args.sync_batchnorm:
            training.synchronize_batchnorm(model)
        compile_model(model, args, steps)
    print(f"{model.name}: {train_source.num_examples} training images, classes "
          f"{list(train_source.class_names)[:10]}{'...' if train_source.num_classes > 10 else ''}"
          f", {steps} steps x {args.epochs} epochs, global batch {args.batch_size} on "
          f"{dist.num_replicas} replica(s), {args.loss} loss, {args.schedule} schedule from "
          f"{args.learning_rate:g}", flush=True)
    if args.distribute == "none":
        training.build_for_fit(model, train)
    began = time.time()
    model.fit(train, epochs=args.epochs, steps_per_epoch=steps, validation_data=val,
              validation_freq=args.validation_freq, shuffle=False, verbose=args.verbose,
              callbacks=make_callbacks(args, dist.is_chief, True))
    train_seconds = time.time() - began
    if args.sync_batchnorm:
        training.synchronize_batchnorm(model, False)
    training.save_model(model, os.path.join(args.output_dir, "model.keras"), dist.is_chief)
    if dist.is_chief and not args.skip_coco_eval:
        write_metrics(args, model, val_source, train_source, train_seconds, steps)
    return 0


def write_metrics(args, model, val_source, train_source, train_seconds: float, steps: int):
    """COCO metrics of the final model on the validation split -> metrics.json (and printed)."""
    from keras_coordatt.applications import profile
    from keras_coordatt.tasks import detection_data as dd
    from keras_coordatt.tasks.detection_metrics import coco_evaluate

    batches = dd.coco_batches(val_source, args.image_size, args.batch_size)
    scores, _, _ = coco_evaluate(model.predict_on_batch, batches, val_source.class_names,
                                 model.bounding_box_format, args.image_size)
    counts = profile(model)
    summary = scores.pop("summary")
    metrics = {"model": model.name, **scores, "params": counts["params"],
               "madds": counts["madds"], "image_size": args.image_size,
               "train_seconds": round(train_seconds, 1),
               "seconds_per_step": round(train_seconds / max(steps * args.epochs, 1), 3),
               "num_train": train_source.num_examples, "num_val": val_source.num_examples,
               "args": vars(args),
               "command": " ".join([os.path.basename(sys.executable)] + sys.argv)}
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1, default=str)
    print(summary)
    print(f"held-out AP {scores['AP']:.4f}  AP50 {scores['AP50']:.4f}  AP75 {scores['AP75']:.4f}"
          f"; params {counts['params']:,}, MAdds {counts['madds'] / 1e9:.3f} G at "
          f"{args.image_size}x{args.image_size}; trained in {train_seconds:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
