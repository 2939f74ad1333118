"""Train the same SSDLite budget for several attentions and seeds; write a markdown table.

Runs ``train.py`` once per (attention, seed), one after the other, each in its own process
with the same arguments (everything after ``--``), then tabulates the held-out COCO AP / AP50 /
AP75 (mean ± sample std over seeds), params, MAdds and training time from each run's
``metrics.json``. ``--skip-done`` resumes an interrupted comparison.

Example (the Penn-Fudan comparison in results/):
    python applications/detection/compare.py --attentions none se cbam ca --seeds 0 1 \\
        --output-dir runs/pennfudan_det --table runs/pennfudan_det.md -- \\
        --config coco --source pennfudan --data-dir ../shared/data/pennfudan --num-val 50 \\
        --split-seed 0 --backbone mobilenet_v2 --alpha 0.5 --weights none --image-size 320 \\
        --batch-size 8 --epochs 20 --validation-freq 10
"""

from __future__ import annotations

import os
import statistics
import sys

from keras_coordatt.training.comparison import compare_main, mean_std

HERE = os.path.dirname(os.path.abspath(__file__))


def table(runs: dict[str, list[dict]]) -> str:
    """Markdown: one row per attention, AP columns in % (COCO's -1 for "no such boxes" kept
    out of the table: Penn-Fudan has no small pedestrians at 320x320)."""
    lines = [
        "| attention | AP (%) | AP50 (%) | AP75 (%) | per-run AP / AP50 (%) | params | MAdds "
        "| train time / run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for attention, metrics in runs.items():
        if not metrics:
            continue
        per_run = ", ".join(f"{100 * m['AP']:.2f} / {100 * m['AP50']:.2f}" for m in metrics)
        first = metrics[0]
        seconds = statistics.mean(m["train_seconds"] for m in metrics)
        lines.append(
            f"| {attention} | {mean_std([m['AP'] for m in metrics])} | "
            f"{mean_std([m['AP50'] for m in metrics])} | "
            f"{mean_std([m['AP75'] for m in metrics])} | {per_run} | {first['params']:,} | "
            f"{first['madds'] / 1e9:.3f} G ({first['image_size']}px) | {seconds:.0f} s |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    return compare_main(argv, script=os.path.join(HERE, "train.py"),
                        description=__doc__.split("\n\n")[0],
                        default_output_dir="runs/compare_detection",
                        table=table, describe=lambda m: f"AP {m['AP']:.4f} AP50 {m['AP50']:.4f}")


if __name__ == "__main__":
    sys.exit(main())
