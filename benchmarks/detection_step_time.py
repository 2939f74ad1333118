"""Seconds per SSDLite training step (and per input batch) on this machine.

Builds the detector train.py builds (``--backbone``, ``--attention``, ``--alpha``,
``--image-size``), compiles it as ``--config`` does, takes real augmented batches of
``--batch-size`` from a Penn-Fudan folder through ``detection_data.train_batches``, runs
``--warmup`` steps (the trace) and then times ``--steps`` steps of ``train_on_batch`` on
batches already in memory (the model alone) and, separately, the input pipeline producing
``--steps`` batches. Prints one JSON line.

Example:
    python benchmarks/detection_step_time.py --data-dir ../shared/data/pennfudan \\
        --attention ca --image-size 320 --batch-size 8
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="a Penn-Fudan folder")
    parser.add_argument("--config", choices=("coco", "voc"), default="coco")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--attention", default="ca")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)

    path = os.path.join(HERE, "..", "applications", "detection", "train.py")
    spec = importlib.util.spec_from_file_location("detection_recipe_train", path)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    from keras_coordatt.tasks import detection_data as dd

    train_args = recipe.parse_args([
        "--config", args.config, "--source", "pennfudan", "--data-dir", args.data_dir,
        "--backbone", args.backbone, "--attention", args.attention, "--alpha", str(args.alpha),
        "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
        "--weights", "none"])
    source = recipe.load_split(train_args, True)
    batches = dd.train_batches(source, args.image_size, args.batch_size, 1000,
                               max_boxes=train_args.max_boxes)
    began = time.perf_counter()
    data = list(batches.take(args.warmup + args.steps))
    data_seconds = (time.perf_counter() - began) / len(data)
    model = recipe.build_model(train_args, source.num_classes)
    recipe.compile_model(model, train_args, 1000)
    began = time.perf_counter()
    for x, y in data[:args.warmup]:
        model.train_on_batch(x, y)
    warmup_seconds = time.perf_counter() - began
    times = []
    for x, y in data[args.warmup:]:
        began = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - began)
    print(json.dumps({
        "model": model.name, "image_size": args.image_size, "batch_size": args.batch_size,
        "loss": train_args.loss, "seconds_per_step_median": round(statistics.median(times), 3),
        "seconds_per_step": [round(t, 3) for t in times],
        "warmup_seconds": round(warmup_seconds, 1),
        "input_seconds_per_batch": round(data_seconds, 3),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": os.getloadavg(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
