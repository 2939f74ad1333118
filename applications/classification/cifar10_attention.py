"""CIFAR-10 attention comparison: MobileNetV2 with none / SE / CBAM / CA / CA-h / CA-w.

Trains every variant with the same budget and seeds on a CIFAR-10 image folder
(``--data-dir`` with ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``), in the small-image
configuration (``output_stride=8``: 32x32 inputs end on a 4x4 map, so CA has coordinates to
attend to; see CIFAR10.md), and evaluates on the whole test split (10,000 images). CA-h / CA-w
are the paper's one-direction ablations (``CoordAttention(directions="h" / "w")`` in every CA
block). Writes, under ``--output-dir``: one JSON per run (``--resume`` reuses them), a results
Markdown (top-1 mean ± std over seeds, params, MAdds, wall time, the exact command) and a plot.

    python applications/classification/cifar10_attention.py --data-dir DATA/cifar10 \\
        --output-dir applications/classification/results/cifar10_attention
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

#: Variant -> (builder attention, CoordAttention directions or None).
VARIANTS = {
    "none": (None, None),
    "se": ("se", None),
    "cbam": ("cbam", None),
    "ca": ("ca", None),
    "ca-h": ("ca", "h"),
    "ca-w": ("ca", "w"),
}


RESULTS_FILE = "results.md"  # the table, written into --output-dir


def load_folder(data_dir: Path, split: str, limit: int | None = None, seed: int = 0):
    """``(images uint8 (N, H, W, 3), labels int64 (N,), class names)`` of ``data_dir/split``.

    Classes are the sorted sub-folder names; ``limit`` keeps a seeded random subset.
    """
    from PIL import Image

    root = Path(data_dir) / split
    if not root.is_dir():
        raise ValueError(
            f"{root} is not a folder: --data-dir must hold train/<class>/*.jpg and "
            "test/<class>/*.jpg (the CIFAR-10 JPEG layout)."
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(path, label) for label, name in enumerate(classes)
             for path in sorted((root / name).glob("*.jpg"))]
    if not files:
        raise ValueError(f"No <class>/*.jpg images under {root}.")
    if limit is not None and limit < len(files):
        keep = np.random.default_rng(seed).permutation(len(files))[:limit]
        files = [files[i] for i in sorted(keep)]
    images = np.stack([np.asarray(Image.open(path).convert("RGB")) for path, _ in files])
    labels = np.asarray([label for _, label in files], dtype="int64")
    return images, labels, classes


def build_variant(variant: str, *, alpha: float, output_stride: int, classes: int, size: int):
    """The logits MobileNetV2 of ``variant`` (a key of :data:`VARIANTS`) for ``size``² inputs."""
    import keras

    from keras_coordatt.applications import MobileNetV2
    from keras_coordatt.layers import CoordAttention

    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}: use one of {', '.join(VARIANTS)}.")
    attention, directions = VARIANTS[variant]
    model = MobileNetV2(
        input_shape=(size, size, 3), alpha=alpha, weights=None, classes=classes,
        classifier_activation=None, attention=attention, output_stride=output_stride,
        name=f"mobilenet_v2_{variant.replace('-', '_')}",
    )
    if directions is None:
        return model

    def one_direction(layer):
        config = layer.get_config()
        if isinstance(layer, CoordAttention):
            config["directions"] = directions
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=one_direction)


def train_and_evaluate(variant: str, seed: int, data: tuple, args: argparse.Namespace) -> dict:
    """One run: builds ``variant``, trains it ``args.epochs`` epochs with ``seed``, returns its
    metrics (test top-1, params, MAdds, seconds)."""
    import keras

    from keras_coordatt.applications import profile
    from keras_coordatt.demo import fit_classifier, keras_accuracy, preprocess_images

    x_train, y_train, x_test, y_test, classes = data
    keras.utils.set_random_seed(seed)
    model = build_variant(variant, alpha=args.alpha, output_stride=args.output_stride,
                          classes=len(classes), size=x_train.shape[1])
    started = time.perf_counter()
    if args.epochs > 0:  # 0: the untrained network (a plumbing check)
        fit_classifier(model, x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                       learning_rate=args.learning_rate, seed=seed)
    train_seconds = time.perf_counter() - started
    top1 = keras_accuracy(model, preprocess_images(x_test), y_test)
    return {"variant": variant, "seed": seed, "top1": top1, "train_seconds": train_seconds,
            "test_images": int(len(x_test)), "train_images": int(len(x_train)),
            **profile(model)}


def mean_std(values: list[float]) -> str:
    """``"m ± s"`` in percent (sample std), or the single value."""
    if len(values) < 2:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def summarize(runs: list[dict]) -> list[dict]:
    """One row per variant (in :data:`VARIANTS` order): mean / std of top-1 over its seeds."""
    rows = []
    for variant in VARIANTS:
        mine = [run for run in runs if run["variant"] == variant]
        if not mine:
            continue
        top1 = [run["top1"] for run in mine]
        rows.append({
            "variant": variant, "seeds": [run["seed"] for run in mine], "top1": top1,
            "mean": statistics.mean(top1),
            "std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
            "params": mine[0]["params"], "madds": mine[0]["madds"],
            "train_seconds": statistics.mean(run["train_seconds"] for run in mine),
            "train_images": mine[0]["train_images"], "test_images": mine[0]["test_images"],
        })
    return rows


def report(rows: list[dict], args: argparse.Namespace, minutes: float, plot: str | None) -> str:
    """The results Markdown: setting, exact command, table, plot."""
    import keras

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    first = rows[0]
    lines = [
        "# CIFAR-10: MobileNetV2 with none / SE / CBAM / CA / CA-h / CA-w",
        "",
        f"Command: `python {' '.join(['applications/classification/cifar10_attention.py', *sys.argv[1:]])}`",  # noqa: E501
        "",
        f"Machine: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"Keras {keras.__version__} ({keras.backend.backend()}); {minutes:.1f} min in all.",
        "",
        f"MobileNetV2 alpha {args.alpha}, output stride {args.output_stride} (32x32 -> "
        f"{32 // args.output_stride}x{32 // args.output_stride} last map), trained from scratch "
        f"on {first['train_images']:,} training images for {args.epochs} epochs (batch "
        f"{args.batch_size}, Adam lr {args.learning_rate} + cosine decay, flips and 4-pixel "
        f"shifts); top-1 on {first['test_images']:,} test images. Mean ± sample std over the "
        "seeds; MAdds per 32x32 image.",
        "",
        "| variant | seeds | top-1 (%) mean ± std | per seed (%) | params | MAdds (M) | "
        "train time / run |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {', '.join(map(str, row['seeds']))} | {mean_std(row['top1'])} "
            f"| {', '.join(f'{100 * v:.2f}' for v in row['top1'])} | {row['params']:,} | "
            f"{row['madds'] / 1e6:.2f} | {row['train_seconds'] / 60:.1f} min |"
        )
    if plot:
        lines += ["", f"![top-1 vs MAdds]({plot})"]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> str | None:
    """Top-1 (mean ± std) against MAdds, one point per variant; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    figure, axes = plt.subplots(figsize=(6, 4))
    for row in rows:
        axes.errorbar(row["madds"] / 1e6, 100 * row["mean"], yerr=100 * row["std"], fmt="o",
                      capsize=4, label=row["variant"])
    axes.set_xlabel("MAdds (M) per 32x32 image")
    axes.set_ylabel("CIFAR-10 test top-1 (%)")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path.name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="folder with train/<class>/*.jpg and test/<class>/*.jpg")
    parser.add_argument("--output-dir", type=Path, required=True,
                        help="run JSONs, results.md and the plot go here")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--extra-seeds", nargs="+", type=int, default=[],
                        help="more seeds for none / se / ca only")
    parser.add_argument("--epochs", type=int, default=8,
                        help="training epochs per run (0: evaluate untrained networks)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--output-stride", type=int, default=8, choices=(8, 16, 32))
    parser.add_argument("--train-images", type=int, default=None,
                        help="seeded random subset of the training split (default: all)")
    parser.add_argument("--test-images", type=int, default=None,
                        help="seeded random subset of the test split (default: all)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the run JSONs already in --output-dir")
    return parser.parse_args(argv)


def _schedule(args: argparse.Namespace) -> list[tuple[str, int]]:
    """``(variant, seed)`` runs, seed-major so a cut-short run has every variant once."""
    runs = [(variant, seed) for seed in args.seeds for variant in args.variants]
    extra = [v for v in ("none", "se", "ca") if v in args.variants]
    return runs + [(variant, seed) for seed in args.extra_seeds for variant in extra]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    x_train, y_train, classes = load_folder(args.data_dir, "train", args.train_images)
    x_test, y_test, test_classes = load_folder(args.data_dir, "test", args.test_images)
    if classes != test_classes:
        raise ValueError(f"train classes {classes} differ from test classes {test_classes}.")
    data = (x_train, y_train, x_test, y_test, classes)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for variant, seed in _schedule(args):
        path = args.output_dir / f"{variant}_seed{seed}.json"
        if args.resume and path.exists():
            runs.append(json.loads(path.read_text()))
            continue
        print(f"== {variant}, seed {seed} ({(time.perf_counter() - started) / 60:.1f} min)",
              flush=True)
        runs.append(train_and_evaluate(variant, seed, data, args))
        path.write_text(json.dumps(runs[-1], indent=2))
        print(f"   top-1 {100 * runs[-1]['top1']:.2f} %", flush=True)
    rows = summarize(runs)
    picture = plot(rows, args.output_dir / "top1_vs_madds.png")
    text = report(rows, args, (time.perf_counter() - started) / 60, picture)
    (args.output_dir / RESULTS_FILE).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
