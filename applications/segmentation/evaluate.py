"""Evaluate a trained segmenter (.keras from train.py): mIoU and per-class IoU on a split.

Examples:
    python applications/segmentation/evaluate.py --model runs/voc_ca/model.keras \\
        --source voc --data-dir VOCdevkit/VOC2012 --val-split val --eval-size 512
    python applications/segmentation/evaluate.py --model runs/pf/model.keras \\
        --source pennfudan --data-dir ../shared/data/pennfudan --eval-size 224

The image is resized so its longer side is --eval-size and padded square (padding is ignored,
as VOC's 255 border); the scores are computed at that resolution.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from train import add_data_arguments, finish_data_arguments, load_split  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="a .keras file written by train.py")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", help="also write the scores to this JSON file")
    add_data_arguments(parser)
    return finish_data_arguments(parser.parse_args(argv))


def format_scores(scores: dict, class_names) -> str:
    lines = [f"mIoU {100 * scores['mean_iou']:.2f} %  pixel accuracy "
             f"{100 * scores['pixel_accuracy']:.2f} %  ({scores['pixels']:,} labelled pixels)"]
    lines += [f"  IoU {name:>14}: {100 * iou:6.2f} %"
              for name, iou in zip(class_names, scores["iou"], strict=True)]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras

    import keras_coordatt  # noqa: F401 - registers the attention layers
    from keras_coordatt.tasks import segmentation_data as sd

    model = keras.saving.load_model(args.model, compile=False)
    raw, class_names = load_split(args, args.val_split)
    num_classes = model.output_shape[-1]
    class_names = list(class_names or [str(i) for i in range(num_classes)])
    data = sd.eval_pipeline(raw, args.eval_size, args.batch_size, num_classes=num_classes)
    scores = sd.segmentation_scores(lambda x: model.predict_on_batch(x), data, num_classes)
    print(f"{model.name} on {args.source} {args.val_split} at {args.eval_size}px")
    print(format_scores(scores, class_names))
    if args.json:
        scores["class_names"] = class_names
        with open(args.json, "w") as f:
            json.dump(scores, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
