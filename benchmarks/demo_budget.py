"""The demo's float training budget: top-1 and wall time of training settings, one run each.

``keras-coordatt demo`` has about 4 minutes on 2 cores for everything (training, QAT, three
TFLite exports, LiteRT evaluation and latency). This script trains the demo's network
(``keras_coordatt.demo.build_classifier``: MobileNetV2CA, 32x32, output stride 8) with
``keras_coordatt.demo.fit_classifier`` on the bundled 4,000 training images for each setting
given, and reports the float top-1 on the 1,000 bundled test images and the training seconds,
so the demo's defaults are chosen from measurements. A setting is ``key=value`` pairs joined by
commas (keys: alpha, batch, lr, epochs, warmup, wd, seed), e.g.
``alpha=0.35,batch=128,lr=5e-3,epochs=16,warmup=1``. One JSON line per run is appended to
``--log`` as it finishes (rerunning skips settings already there); ``--output`` writes the
table as Markdown with the machine.

    python benchmarks/demo_budget.py --log runs/demo_budget.jsonl \\
        --output benchmarks/results/<date>-demo-budget-<machine>.md \\
        alpha=0.5,batch=64,lr=3e-3,epochs=12 alpha=0.35,batch=128,lr=5e-3,epochs=16,warmup=1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULTS = {"alpha": 0.5, "batch": 64, "lr": 3e-3, "epochs": 12, "warmup": 0.0, "wd": 0.0,
            "seed": 0}


def parse_setting(text: str) -> dict:
    """``"alpha=0.35,batch=128"`` -> the full setting (DEFAULTS for the keys not given)."""
    setting = dict(DEFAULTS)
    for pair in filter(None, text.split(",")):
        key, _, value = pair.partition("=")
        if key not in DEFAULTS or not value:
            raise ValueError(f"Bad setting item {pair!r}: use key=value with keys "
                             f"{', '.join(DEFAULTS)}.")
        setting[key] = type(DEFAULTS[key])(float(value)) if key in ("batch", "epochs", "seed") \
            else float(value)
    return setting


def run_setting(setting: dict, data) -> dict:
    """Trains one setting; returns it with ``top1`` and ``train_seconds``."""
    import keras
    import numpy as np

    from keras_coordatt.demo import build_classifier, fit_classifier, keras_accuracy

    x_train, y_train, test_inputs, y_test = data
    keras.utils.set_random_seed(setting["seed"])
    model = build_classifier(setting["alpha"], None)
    start = time.perf_counter()
    fit_classifier(model, x_train, y_train, epochs=setting["epochs"],
                   batch_size=setting["batch"], learning_rate=setting["lr"],
                   seed=setting["seed"], warmup_epochs=setting["warmup"],
                   weight_decay=setting["wd"] or None)
    seconds = time.perf_counter() - start
    top1 = keras_accuracy(model, test_inputs, y_test)
    del model
    keras.backend.clear_session()
    return {**setting, "top1": float(np.round(top1, 4)), "train_seconds": round(seconds, 1)}


def table(runs: list[dict], argv: list[str]) -> str:
    from keras_coordatt.benchmark import info_lines, machine_info

    lines = ["# The demo's float training: top-1 on the 1,000 bundled test images vs time", "",
             "Command: `python benchmarks/demo_budget.py " + " ".join(argv) + "`", "",
             *info_lines(machine_info()), "",
             "| alpha | batch | lr | epochs | warm-up epochs | weight decay | seed | top-1 (%) "
             "| train s | images / s |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        speed = 4000 * run["epochs"] / run["train_seconds"]
        lines.append(f"| {run['alpha']} | {run['batch']} | {run['lr']:g} | {run['epochs']} | "
                     f"{run['warmup']:g} | {run['wd']:g} | {run['seed']} | "
                     f"{100 * run['top1']:.1f} | {run['train_seconds']:.0f} | {speed:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="+", help="key=value,... (module docstring)")
    parser.add_argument("--log", type=Path, required=True, help="JSON lines, one per run")
    parser.add_argument("--output", type=Path, help="write the Markdown table here")
    args = parser.parse_args(argv)
    settings = [parse_setting(text) for text in args.settings]

    from keras_coordatt.demo import _load_data, preprocess_images

    x_train, y_train, x_test, y_test = _load_data(None, 0)
    data = (x_train, y_train, preprocess_images(x_test), y_test)
    done = ([json.loads(line) for line in args.log.read_text().splitlines() if line.strip()]
            if args.log.exists() else [])
    args.log.parent.mkdir(parents=True, exist_ok=True)
    for setting in settings:
        if any(all(run[k] == v for k, v in setting.items()) for run in done):
            continue
        print(f"== {setting}", flush=True)
        result = run_setting(setting, data)
        print(f"   top-1 {100 * result['top1']:.1f} % in {result['train_seconds']:.0f} s",
              flush=True)
        done.append(result)
        with args.log.open("a") as f:
            f.write(json.dumps(result) + "\n")
    runs = [run for run in done if any(all(run[k] == v for k, v in s.items()) for s in settings)]
    report = table(runs, argv if argv is not None else sys.argv[1:])
    print(report)
    if args.output:
        args.output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
