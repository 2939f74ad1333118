"""Train the same DeepLabV3 budget for several attentions and seeds; write a markdown table.

Runs ``train.py`` once per (attention, seed), one after the other, each in its own process
with the same arguments (everything after ``--``), then tabulates the held-out mIoU
(mean ± sample std over seeds), per-class IoU, params, MAdds and training time from each run's
``metrics.json``.

Example (the Penn-Fudan comparison in results/):
    python applications/segmentation/compare.py --attentions none se cbam ca --seeds 0 1 \\
        --output-dir runs/pennfudan --table results/pennfudan.md -- \\
        --source pennfudan --data-dir ../shared/data/pennfudan --weights none --alpha 0.5 \\
        --base-size 192 --crop-size 160 --eval-size 224 --batch-size 8 --epochs 10 --cache
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--attentions", nargs="+", default=["none", "se", "cbam", "ca"],
                        choices=("none", "se", "cbam", "ca"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--output-dir", default="runs/compare",
                        help="one sub-folder per run: <attention>_seed<seed>")
    parser.add_argument("--table", help="write the markdown table here (default: print only)")
    parser.add_argument("--skip-done", action="store_true",
                        help="reuse runs whose metrics.json exists")
    parser.add_argument("train_args", nargs=argparse.REMAINDER,
                        help="arguments for train.py, after --")
    args = parser.parse_args(argv)
    if args.train_args and args.train_args[0] == "--":
        args.train_args = args.train_args[1:]
    return args


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{100 * values[0]:.2f}" if values else "-"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def table(runs: dict[str, list[dict]]) -> str:
    lines = [
        "| attention | mIoU (%) mean ± std | per-run mIoU (%) | IoU per class (%, mean) | params "
        "| MAdds | train time / run |",
        "|---|---|---|---|---|---|---|",
    ]
    for attention, metrics in runs.items():
        if not metrics:
            continue
        ious = [m["mean_iou"] for m in metrics]
        classes = metrics[0]["iou"].keys()
        per_class = ", ".join(
            f"{name} {100 * statistics.mean(m['iou'][name] for m in metrics):.1f}"
            for name in classes
        )
        first = metrics[0]
        seconds = statistics.mean(m["train_seconds"] for m in metrics)
        lines.append(
            f"| {attention} | {mean_std(ious)} | "
            f"{', '.join(f'{100 * v:.2f}' for v in ious)} | {per_class} | "
            f"{first['params']:,} | {first['madds'] / 1e9:.3f} G ({first['madds_input']}px) | "
            f"{seconds:.0f} s |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    runs: dict[str, list[dict]] = {attention: [] for attention in args.attentions}
    start = time.time()
    for attention in args.attentions:
        for seed in args.seeds:
            out = os.path.join(args.output_dir, f"{attention}_seed{seed}")
            path = os.path.join(out, "metrics.json")
            if not (args.skip_done and os.path.exists(path)):
                command = [sys.executable, os.path.join(HERE, "train.py"), *args.train_args,
                           "--attention", attention, "--seed", str(seed), "--output-dir", out,
                           "--verbose", "2"]
                print("$", " ".join(command), flush=True)
                subprocess.run(command, check=True)
            with open(path) as f:
                runs[attention].append(json.load(f))
            print(f"[{time.time() - start:.0f} s] {attention} seed {seed}: mIoU "
                  f"{runs[attention][-1]['mean_iou']:.4f}", flush=True)
    text = table(runs)
    print(text)
    if args.table:
        with open(args.table, "w") as f:
            f.write(text + "\n")
            f.write(f"\nWall time of the whole comparison: {time.time() - start:.0f} s on "
                    f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs).\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
