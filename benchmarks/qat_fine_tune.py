"""A short real fine-tune, then QAT, then the int8 export, at 224x224; the int8 file's argmax
must agree with the QAT Keras model's on real held-out images.

For each ``--alphas`` value, in a child process: ``{builder}(alpha, classes=10)`` trained from
scratch on the real CIFAR-10 images bundled with the package
(``keras_coordatt.datasets.load_cifar10_subset``, upsampled in ``tf.data``) for ``--epochs``
epochs at ``--train-size`` (cheaper than 224 on a CPU; no ImageNet weights offline), its weights
moved into the 224x224 model, then ``quantize_model(calibration_data=...)`` and QAT ``fit`` at
224 for ``--qat-images`` images, then ``export_tflite(mode="int8")``; ``--eval`` held-out test
images at 224 are classified by the float model, the QAT Keras model and the int8 file.

    python benchmarks/qat_fine_tune.py --model MobileNeXtCA --alphas 0.35 0.5 1.0 \\
        --output benchmarks/results/<date>-qat-fine-tune.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE = 224


def _dataset(images, labels, batch_size, shuffle_seed=None, size=SIZE):
    import tensorflow as tf

    from keras_coordatt.applications import preprocess_input

    data = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle_seed is not None:
        data = data.shuffle(len(images), seed=shuffle_seed)

    def prepare(image, label):
        image = tf.image.resize(tf.cast(image, tf.float32), (size, size))
        if shuffle_seed is not None:
            image = tf.image.random_flip_left_right(image)
        return preprocess_input(image), label

    return data.batch(batch_size).map(prepare).prefetch(2)


def _low_variance_channels(model, relative: float, tf_keras) -> int:
    """How many BatchNormalization channels of ``model`` have a moving variance below
    ``relative`` times their layer's median (dead inputs: the channels whose folded gain
    ``quantize_model``'s ``bn_variance_floor`` bounds; see
    results/2026-12-02-qat-alpha035-gap-2core-amd-epyc.md). Counts only, changes nothing."""
    count = 0
    for layer in model.submodules:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            variance = layer.moving_variance.numpy()
            count += int(np.sum(variance < relative * float(np.median(variance))))
    return count


def run(model_name: str, alpha: float, float_images: int, qat_images: int, evaluate: int,
        seed: int = 0, train_size: int = 96, epochs: int = 6,
        class_names: list[str] | None = None, qat_epochs: int = 1,
        data_dir: Path | None = None, bn_variance_floor: float | None = None) -> dict:
    import keras

    from keras_coordatt import applications
    from keras_coordatt.datasets import load_cifar10_subset, load_image_folder
    from keras_coordatt.export import LiteRTModel, export_tflite, float_ops, inspect_tflite
    from keras_coordatt.quantization import quantize_model
    from keras_coordatt.quantization._deps import import_qat_stack
    from keras_coordatt.training import build_for_fit

    _, tf_keras, _ = import_qat_stack()
    keras.utils.set_random_seed(seed)
    if data_dir is not None:  # the full CIFAR-10 as JPEG folders (5,000 train images a class)
        from keras_coordatt.datasets import CIFAR10_CLASSES

        class_names = class_names or list(CIFAR10_CLASSES)
        train_x, train_y, _ = load_image_folder(data_dir / "train", class_names)
        test_x, test_y, _ = load_image_folder(data_dir / "test", class_names)
    else:
        train_x, train_y = load_cifar10_subset("train")
        test_x, test_y = load_cifar10_subset("test")
    if class_names and data_dir is None:  # a subset of the ten classes, relabelled 0..K-1
        from keras_coordatt.datasets import CIFAR10_CLASSES

        wanted = [CIFAR10_CLASSES.index(name) for name in class_names]
        keep, keep_test = np.isin(train_y, wanted), np.isin(test_y, wanted)
        relabel = {old: new for new, old in enumerate(wanted)}
        train_x, train_y = train_x[keep], np.array([relabel[y] for y in train_y[keep]])
        test_x, test_y = test_x[keep_test], np.array([relabel[y] for y in test_y[keep_test]])
    classes = len(class_names) if class_names else 10
    rng = np.random.default_rng(seed)  # the bundled subset is sorted by class
    train = rng.permutation(len(train_x))[:float_images]
    held_out = rng.permutation(len(test_x))[:evaluate]
    train_x, train_y = train_x[train], train_y[train]
    test = _dataset(test_x[held_out], test_y[held_out], 20)
    result = {"model": model_name, "alpha": alpha, "size": SIZE, "classes": classes,
              "float_images": len(train_x), "epochs": epochs, "train_size": train_size,
              "qat_images": min(qat_images, len(train_x)), "qat_epochs": qat_epochs,
              "eval_images": len(held_out)}

    # Float training from scratch at train_size (fully convolutional: the same weights run at
    # 224), then the weights move into the 224x224 model that QAT fine-tunes and exports.
    start = time.perf_counter()
    builder = getattr(applications, model_name)
    small = builder(input_shape=(train_size, train_size, 3), alpha=alpha, classes=classes,
                    weights=None)
    steps = epochs * (len(train_x) // 32)
    small.compile(
        optimizer=keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(0.05, steps), momentum=0.9),
        loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    build_for_fit(small, train_y)  # traces the train step once, not twice
    small.fit(_dataset(train_x, train_y, 32, seed, train_size), epochs=epochs, verbose=2)
    model = builder(input_shape=(SIZE, SIZE, 3), alpha=alpha, classes=classes, weights=None)
    model.set_weights(small.get_weights())
    result["float_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    calibration = np.concatenate([x for x, _ in _dataset(train_x[:64], train_y[:64], 32)])
    floor = {} if bn_variance_floor is None else {"bn_variance_floor": bn_variance_floor}
    qat = quantize_model(model, calibration_data=calibration, **floor)
    result["bn_variance_floor"] = floor.get("bn_variance_floor", "library default")
    result["bn_channels_low_variance"] = _low_variance_channels(qat, 0.01, tf_keras)
    qat_steps = qat_epochs * -(-min(qat_images, len(train_x)) // 32)
    qat.compile(optimizer=tf_keras.optimizers.SGD(  # cosine to 0: ends on a settled network
        tf_keras.optimizers.schedules.CosineDecay(0.005, qat_steps), momentum=0.9),
                loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    build_for_fit(qat, train_y)
    qat.fit(_dataset(train_x[:qat_images], train_y[:qat_images], 32, seed + 1),
            epochs=qat_epochs, verbose=2)  # at 224: also adapts the network to the larger objects
    # fit moves a dead channel's variance back towards 0; the floor's epsilon stays
    result["bn_channels_low_variance_after_fit"] = _low_variance_channels(qat, 0.01, tf_keras)
    result["qat_seconds"] = time.perf_counter() - start

    path = Path(export_tflite(qat, Path(tempfile.mkdtemp()) / "qat.tflite", mode="int8"))
    qat.save(path.with_suffix(".h5"))  # kept (with the .tflite) for a layer-by-layer look
    result["files"] = str(path.parent)
    result["float_ops"] = [op.name for op in float_ops(inspect_tflite(path))]
    images = np.concatenate([x for x, _ in test])
    labels = np.concatenate([y for _, y in test])
    float_pred = model.predict(images, verbose=0).argmax(-1)
    qat_probs = qat.predict(images, verbose=0)
    qat_pred = qat_probs.argmax(-1)
    runner = LiteRTModel(path)
    int8_probs = np.concatenate([runner(images[i : i + 1]) for i in range(len(images))])
    int8_pred = int8_probs.argmax(-1)
    # The same file on LiteRT's reference int8 kernels (no XNNPACK delegate): how much of the
    # difference is the runtime's own rounding.
    reference = LiteRTModel(path, reference_kernels=True)
    reference_pred = np.concatenate(
        [reference(images[i : i + 1]) for i in range(len(images))]).argmax(-1)
    result["reference_kernels_vs_qat_argmax"] = float(np.mean(reference_pred == qat_pred))
    result["reference_kernels_vs_xnnpack_argmax"] = float(np.mean(reference_pred == int8_pred))
    # The QAT model's own sensitivity: its argmax on the same images with +-0.5 grey level of
    # uniform noise (below the input's int8 step of 1 grey level), i.e. how often a perturbation
    # smaller than one rounding flips its decision. int8 rounding differs from the float
    # simulation by such perturbations, so this is the floor the int8 agreement can reach.
    noise = np.random.default_rng(seed + 2).uniform(-0.5, 0.5, images.shape) / 127.5
    noisy_pred = qat.predict((images + noise).astype("float32"), verbose=0).argmax(-1)
    result["qat_vs_itself_under_noise"] = float(np.mean(noisy_pred == qat_pred))
    top2 = np.sort(qat_probs, axis=-1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]  # QAT model's top-1 minus top-2 probability
    decisive = margin > 2.0 / 256  # more than two steps of the int8 softmax output (1/256)
    result.update(
        max_prob_diff=float(np.abs(int8_probs - qat_probs).max()),
        mean_prob_diff=float(np.abs(int8_probs - qat_probs).mean()),
        median_margin=float(np.median(margin)),
        decisive_share=float(decisive.mean()),
        agreement_where_decisive=float(np.mean(int8_pred[decisive] == qat_pred[decisive]))
        if decisive.any() else None,
    )
    result.update(
        float_top1=float(np.mean(float_pred == labels)),
        qat_top1=float(np.mean(qat_pred == labels)),
        int8_top1=float(np.mean(int8_pred == labels)),
        int8_vs_qat_argmax=float(np.mean(int8_pred == qat_pred)),
        size_kb=os.path.getsize(path) / 1024,
    )
    return result


def _markdown(results, command, full_cifar: bool) -> str:
    import tensorflow as tf

    lines = [
        "# Short real fine-tune -> QAT -> int8 TFLite at 224x224", "",
        f"Command: `{command}`", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"TensorFlow {tf.__version__}. Seed 0.", "",
        "Real CIFAR-10 images ("
        + ("the full set as JPEG folders, `--data-dir`" if full_cifar
           else "the subset bundled with the package")
        + ") upsampled to 224x224; "
        "trained from scratch (no ImageNet weights offline), so top-1 is low: the point is "
        "that the int8 file computes what the QAT Keras model computes.", "",
        "| model | alpha | float training | QAT imgs (224) x epochs | eval imgs (224) | "
        "float top-1 | QAT top-1 | int8 top-1 | int8 vs QAT argmax | median QAT margin | "
        "agreement where margin > 2/256 (share) | QAT vs itself, +-0.5 grey noise | "
        "max / mean prob diff | float ops | int8 KB | minutes |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['alpha']} | ERROR {r['error']} |")
            continue
        lines.append(
            f"| {r['model']} (BN floor {r.get('bn_variance_floor', 0)}) | {r['alpha']} | "
            f"{r['classes']} classes, {r['epochs']} x "
            f"{r['float_images']} imgs at "
            f"{r['train_size']} | {r['qat_images']} x {r.get('qat_epochs', 1)} | "
            f"{r['eval_images']} | {r['float_top1']:.1%} | {r['qat_top1']:.1%} | "
            f"{r['int8_top1']:.1%} | **{r['int8_vs_qat_argmax']:.1%}** | "
            f"{r['median_margin']:.3f} | {r['agreement_where_decisive'] or 0:.1%} "
            f"({r['decisive_share']:.0%}) | "
            f"{r.get('qat_vs_itself_under_noise', float('nan')):.1%} | "
            f"{r['max_prob_diff']:.3f} / "
            f"{r['mean_prob_diff']:.4f} | {len(r['float_ops'])} | {r['size_kb']:.0f} | "
            f"{(r['float_seconds'] + r['qat_seconds']) / 60:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="MobileNeXtCA")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.35, 0.5, 1.0])
    parser.add_argument("--float-images", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=6, help="float epochs at --train-size")
    parser.add_argument("--train-size", type=int, default=96)
    parser.add_argument("--qat-images", type=int, default=1000)
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--classes", help="comma-separated CIFAR-10 class names (default: all)")
    parser.add_argument("--data-dir", type=Path,
                        help="CIFAR-10 as <dir>/{train,test}/<class>/*.jpg (default: the "
                             "bundled subset, 400 train images a class)")
    parser.add_argument("--bn-variance-floor", type=float, default=None,
                        help="quantize_model's bn_variance_floor (default: the library's, "
                             "0.01; 0 disables it, for comparison)")
    parser.add_argument("--json", type=Path, help="run one alpha here, write its result")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    if args.json:
        result = run(args.model, args.alphas[0], args.float_images, args.qat_images, args.eval,
                     train_size=args.train_size, epochs=args.epochs,
                     class_names=args.classes.split(",") if args.classes else None,
                     qat_epochs=args.qat_epochs, data_dir=args.data_dir,
                     bn_variance_floor=args.bn_variance_floor)
        args.json.write_text(json.dumps(result, indent=1))
        return 0
    results = []
    for alpha in args.alphas:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "result.json"
            done = subprocess.run(
                [sys.executable, __file__, "--model", args.model, "--alphas", str(alpha),
                 "--float-images", str(args.float_images), "--qat-images",
                 str(args.qat_images), "--eval", str(args.eval), "--epochs", str(args.epochs),
                 "--train-size", str(args.train_size), "--json", str(path),
                 "--qat-epochs", str(args.qat_epochs),
                 *(["--bn-variance-floor", str(args.bn_variance_floor)]
                   if args.bn_variance_floor is not None else []),
                 *(["--data-dir", str(args.data_dir)] if args.data_dir else []),
                 *(["--classes", args.classes] if args.classes else [])],
                check=False,
            )
            result = (json.loads(path.read_text()) if done.returncode == 0 and path.exists()
                      else {"model": args.model, "alpha": alpha,
                            "error": f"exit status {done.returncode}"})
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.output:
        words = list(argv or sys.argv[1:])
        if args.data_dir:  # no machine paths in committed results
            words = [("--data-dir=<cifar10-jpeg-dir>" if w.startswith("--data-dir=") else w)
                     for w in words]
            if "--data-dir" in words:
                words[words.index("--data-dir") + 1] = "<cifar10-jpeg-dir>"
        command = "python benchmarks/qat_fine_tune.py " + " ".join(words)
        args.output.write_text(_markdown(results, command, args.data_dir is not None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
