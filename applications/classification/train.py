"""Train a keras_coordatt classifier (the CA paper's ImageNet recipe), on one device or many.

Defaults are the paper's setting: SGD momentum 0.9, weight decay 4e-5 (added to the gradient,
as PyTorch's SGD), cosine schedule with a linear warm-up, 200 epochs, global batch 256, no label
smoothing, random-resized crop + horizontal flip; evaluation resizes to 256 and centre-crops 224.
The learning rate defaults to 0.05 per 256 images (d-li14's MobileNetV2 recipe, the CA
baseline's code), scaled linearly with --batch-size; the warm-up length is our choice.

Examples (applications/classification/README.md has the multi-GPU, multi-machine, TPU and JAX
commands):
    python applications/classification/train.py --tfds-name imagenet2012 \\
        --model MobileNetV2CA --output-dir runs/mbv2_ca
    python applications/classification/train.py --train-dir flowers/train \\
        --val-dir flowers/val --model MobileNetV2CA --weights imagenet --epochs 30 \\
        --learning-rate 0.01 --warmup-epochs 1 --output-dir runs/flowers   # fine-tuning

Writes to --output-dir (the chief only): model.keras (final; EMA weights with --ema),
checkpoints/last.keras and best.keras (each with a .sha256), backup/ (rerun the same command to
resume an interrupted run after its last finished epoch), logs/ (TensorBoard), train_log.csv.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODELS = ("MobileNetV2", "MobileNetV2CA", "MobileNeXt", "MobileNeXtCA")
ATTENTIONS = ("none", "se", "cbam", "ca")


def add_data_arguments(parser: argparse.ArgumentParser, training: bool) -> None:
    """The data options of train.py and evaluate.py."""
    data = parser.add_argument_group("data (a TFDS set or image folders)")
    data.add_argument("--tfds-name", default=None,
                      help="tensorflow-datasets set (imagenet2012, imagenette, cifar10, ...)")
    data.add_argument("--tfds-data-dir", default=None, help="TFDS data_dir")
    if training:
        data.add_argument("--train-split", default="train", help="TFDS training split")
        data.add_argument("--train-dir", default=None,
                          help="training images, one sub-folder per class")
    data.add_argument("--val-split", default="validation", help="TFDS evaluation split")
    data.add_argument("--val-dir", default=None,
                      help="evaluation images, one sub-folder per class")
    data.add_argument("--image-size", type=int, default=224, help="training / evaluation crop")
    data.add_argument("--resize-size", type=int, default=None,
                      help="evaluation: shorter side resized to this before the centre crop; "
                           "default image-size / 0.875 (256 for 224)")


def load_split(args: argparse.Namespace, train: bool, required: bool = True):
    """The :class:`~keras_coordatt.training.classification_data.Source` of the training or
    evaluation split; None when there is none and it is not ``required``."""
    from keras_coordatt.training import classification_data as cd

    folder = args.train_dir if train else args.val_dir
    if folder:
        return cd.folder_source(folder)
    if args.tfds_name:
        split = args.train_split if train else args.val_split
        return cd.tfds_source(args.tfds_name, split, data_dir=args.tfds_data_dir)
    if required:
        raise SystemExit("error: give --tfds-name or an image folder ("
                         + ("--train-dir" if train else "--val-dir") + ")")
    return None


def check_model_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--weights none -> None; --attention only where the builder takes it."""
    if args.weights is not None and args.weights.lower() == "none":
        args.weights = None
    if args.model.endswith("CA") and args.attention not in (None, "ca"):
        parser.error(f"--model {args.model} has CA; for --attention {args.attention} use "
                     f"--model {args.model[:-2]}")
    if args.model.endswith("CA"):
        args.attention = None  # the CA builders take no attention argument


def add_model_arguments(parser: argparse.ArgumentParser, training: bool) -> None:
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=MODELS, default="MobileNetV2CA",
                       help="builder of keras_coordatt.applications")
    model.add_argument("--attention", choices=ATTENTIONS, default=None,
                       help="attention of the blocks (default: the builder's)")
    model.add_argument("--alpha", type=float, default=1.0, help="width multiplier")
    model.add_argument("--weights", default=None if training else "imagenet",
                       help="imagenet, a preset name or a .pth / .weights.h5 file"
                            + (": fine-tune those features under a new head" if training
                               else ""))
    if training:
        model.add_argument("--dropout", type=float, default=0.1, help="before the classifier")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_arguments(parser, training=True)
    add_model_arguments(parser, training=True)
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=200, help="the paper: 200")
    train.add_argument("--batch-size", type=int, default=256, help="global batch, all replicas")
    train.add_argument("--learning-rate", type=float, default=None,
                       help="peak rate; default 0.05 * batch-size / 256")
    train.add_argument("--warmup-epochs", type=float, default=5.0,
                       help="linear warm-up from 0, then cosine decay to 0")
    train.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    train.add_argument("--weight-decay", type=float, default=4e-5,
                       help="L2 added to the gradients (PyTorch SGD's weight_decay)")
    train.add_argument("--ema", action="store_true",
                       help="keep an exponential moving average of the weights (the optimizer's "
                            "use_ema); the final model gets the averaged weights")
    train.add_argument("--ema-momentum", type=float, default=0.9999, help="EMA decay per step")
    train.add_argument("--mixed-precision", choices=("float32", "float16", "bfloat16"),
                       default="float32", help="float16 on GPUs, bfloat16 on TPUs")
    train.add_argument("--steps-per-epoch", type=int, default=None,
                       help="cap on steps per epoch (default: every full batch)")
    train.add_argument("--seed", type=int, default=0, help="weights, data order, crops")
    train.add_argument("--deterministic", action="store_true",
                       help="op determinism (TensorFlow): reruns and resumed runs give the "
                            "same bits; slower on GPUs")
    train.add_argument("--output-dir", default="runs/classification")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                       help="Keras fit verbosity (1: progress bars, 2: one line per epoch)")
    dist = parser.add_argument_group("distribution")
    dist.add_argument("--distribute", default="none",
                      choices=("none", "mirrored", "multiworker", "tpu", "data_parallel"),
                      help="mirrored: local GPUs; multiworker: machines in TF_CONFIG; tpu; "
                           "data_parallel: JAX (KERAS_BACKEND=jax) over every device")
    dist.add_argument("--devices", default=None,
                      help="comma-separated devices for mirrored / data_parallel")
    dist.add_argument("--tpu", default=None, help="TPU name or address (default: local)")
    dist.add_argument("--sync-batchnorm", action=argparse.BooleanOptionalAction, default=None,
                      help="BatchNorm statistics over the global batch (tf.distribute); default "
                           "on for mirrored / multiworker / tpu with several replicas (Keras 3 "
                           "keeps per-replica moving averages apart otherwise)")
    args = parser.parse_args(argv)
    check_model_arguments(parser, args)
    if args.learning_rate is None:
        args.learning_rate = 0.05 * args.batch_size / 256
    return args


def build_model(args, num_classes: int):
    """The builder's network with a ``num_classes`` logits top: from scratch, or (``--weights``)
    the pretrained features under a new head."""
    import keras

    from keras_coordatt import applications

    builder = getattr(applications, args.model)
    options = dict(input_shape=(args.image_size, args.image_size, 3), alpha=args.alpha,
                   dropout_rate=args.dropout)
    if args.attention is not None:
        options["attention"] = None if args.attention == "none" else args.attention
    if args.weights is None:
        model = builder(weights=None, classes=num_classes, classifier_activation=None, **options)
    else:
        backbone = builder(weights=args.weights, include_top=False, pooling="avg", **options)
        x = keras.layers.Dropout(args.dropout, name="dropout")(backbone.output)
        logits = keras.layers.Dense(num_classes, name="predictions")(x)
        model = keras.Model(backbone.input, logits, name=f"{backbone.name}_finetune")
    if keras.mixed_precision.global_policy().compute_dtype == "float32":
        return model
    # mixed precision: the loss and metrics read float32 logits
    logits = keras.layers.Activation("linear", dtype="float32", name="logits_float32")(
        model.output)
    return keras.Model(model.input, logits, name=model.name)


def compile_model(model, args, steps: int) -> None:
    import keras

    from keras_coordatt.training import CoupledSGD, warmup_cosine

    total = steps * args.epochs
    schedule = warmup_cosine(args.learning_rate, total, round(args.warmup_epochs * steps))
    optimizer = CoupledSGD(schedule, momentum=args.momentum, l2=args.weight_decay,
                           use_ema=args.ema, ema_momentum=args.ema_momentum)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # no label smoothing
    model.compile(optimizer=optimizer, loss=loss, metrics=[
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
        keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
    ])


def make_callbacks(args, is_chief: bool, validation: bool) -> list:
    """:func:`keras_coordatt.training.checkpoints.recipe_callbacks` in ``--output-dir``
    (``best.keras`` on ``val_accuracy`` when there is a validation split)."""
    from keras_coordatt.training.checkpoints import recipe_callbacks

    return recipe_callbacks(args.output_dir, is_chief,
                            best_monitor="val_accuracy" if validation else None, best_mode="max")


def main(argv=None) -> int:
    args = parse_args(argv)
    from keras_coordatt import training
    from keras_coordatt.training import classification_data as cd

    devices = args.devices.split(",") if args.devices else None
    dist = training.choose_distribution(args.distribute, devices=devices, tpu=args.tpu)
    training.set_determinism(args.seed, args.deterministic)
    training.set_mixed_precision(args.mixed_precision)
    dist.check_batch_size(args.batch_size)

    train_source = load_split(args, train=True)
    val_source = load_split(args, train=False, required=False)
    steps = min(cd.steps_per_epoch(train_source, args.batch_size),
                args.steps_per_epoch or sys.maxsize)
    start = training.backup_epoch(os.path.join(args.output_dir, "backup"))
    if start:
        print(f"Resuming from the backup after epoch {start}.", flush=True)
    train = cd.train_batches(train_source, args.batch_size, args.epochs, start_epoch=start,
                             image_size=args.image_size, seed=args.seed)
    val = None if val_source is None else cd.eval_batches(
        val_source, args.batch_size, args.image_size, args.resize_size)

    if args.sync_batchnorm is None:
        args.sync_batchnorm = dist.strategy is not None and dist.num_replicas > 1
    with dist.scope():
        model = build_model(args, train_source.num_classes)
        if args.sync_batchnorm:
            training.synchronize_batchnorm(model)
        compile_model(model, args, steps)
    print(f"{model.name}: {train_source.num_examples} training images, "
          f"{train_source.num_classes} classes, {steps} steps x {args.epochs} epochs, global "
          f"batch {args.batch_size} on {dist.num_replicas} replica(s) ({args.distribute}"
          f"{', synchronized BatchNorm' if args.sync_batchnorm else ''}), "
          f"peak learning rate {args.learning_rate:g}", flush=True)
    if args.distribute == "none":  # (a strategy builds them itself) traced once, not twice
        training.build_for_fit(model, train)
    began = time.time()
    model.fit(train, epochs=args.epochs, steps_per_epoch=steps, validation_data=val,
              callbacks=make_callbacks(args, dist.is_chief, val is not None),
              verbose=args.verbose,
              shuffle=False)  # the stream is shuffled per epoch
    if args.sync_batchnorm:
        training.synchronize_batchnorm(model, False)  # loadable on any backend
    training.save_model(model, os.path.join(args.output_dir, "model.keras"), dist.is_chief)
    print(f"Trained in {time.time() - began:.0f} s; weights sha256 "
          f"{training.weights_fingerprint(model)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
