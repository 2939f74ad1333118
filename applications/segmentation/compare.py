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

import os
import statistics
import sys

from keras_coordatt.training.comparison import compare_main, mean_std

HERE = os.path.dirname(os.path.abspath(__file__))


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
    return compare_main(argv, script=os.path.join(HERE, "train.py"),
                        description=__doc__.split("\n\n")[0], default_output_dir="runs/compare",
                        table=table, describe=lambda m: f"mIoU {m['mean_iou']:.4f}")


if __name__ == "__main__":
    sys.exit(main())
