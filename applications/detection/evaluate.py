"""Evaluate a trained detector (.keras from train.py) with COCO's metrics (pycocotools).

Prints and (--json) writes AP (IoU 0.50:0.95), AP50, AP75, AP small / medium / large and the
recalls, computed by pycocotools' COCOeval on the original image sizes (boxes predicted at
--image-size are scaled back). VOC "difficult" and COCO "crowd" boxes are passed as iscrowd.

Examples:
    python applications/detection/evaluate.py --model runs/coco_ca/model.keras \\
        --config coco --source tfds --json runs/coco_ca/coco_val.json
    python applications/detection/evaluate.py --model runs/pf_ca/model.keras \\
        --source pennfudan --data-dir ../shared/data/pennfudan
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _train_module():
    """train.py of this folder (its data options), loaded by path under its own name."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
    spec = importlib.util.spec_from_file_location("detection_recipe_train", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv=None) -> argparse.Namespace:
    recipe = _train_module()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", required=True, help="a .keras file written by train.py")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="keep detections from this score (default: the model's, 0.05 as "
                             "the authors' test setting)")
    parser.add_argument("--json", help="also write the metrics to this JSON file")
    parser.add_argument("--detections", help="also write every detection (COCO results "
                                             "format, pixels of the original images) here")
    recipe.add_data_arguments(parser)
    args = recipe.finish_data_arguments(parser.parse_args(argv))
    args.load_split = recipe.load_split
    return args


def detections_json(detections: list[dict]) -> list[dict]:
    """COCO results entries (``image_id`` 1.., ``category_id`` label + 1, ``bbox`` xywh)."""
    entries = []
    for i, item in enumerate(detections):
        for box, label, score in zip(item["boxes"], item["labels"], item["scores"], strict=True):
            y1, x1, y2, x2 = (float(v) for v in box)
            entries.append({"image_id": i + 1, "category_id": int(label) + 1,
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return entries


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras

    import keras_coordatt.tasks  # noqa: F401 - registers ObjectDetector
    from keras_coordatt.tasks import detection_data as dd
    from keras_coordatt.tasks.detection_metrics import coco_evaluate

    model = keras.saving.load_model(args.model, compile=False)
    if args.score_threshold is not None:
        model.score_threshold = args.score_threshold
    size = model.image_size[0]
    if args.image_size != size:
        print(f"The model takes {size}x{size} images: evaluating at that size.")
    source = args.load_split(args, False)
    batches = dd.coco_batches(source, size, args.batch_size)
    scores, _, detections = coco_evaluate(model.predict_on_batch, batches, source.class_names,
                                          model.bounding_box_format, size)
    summary = scores.pop("summary")
    print(f"{model.name} on {args.source} {args.val_split}: {source.num_examples} images, "
          f"classes {list(source.class_names)[:10]}")
    print(summary)
    print(f"AP {100 * scores['AP']:.2f}  AP50 {100 * scores['AP50']:.2f}  "
          f"AP75 {100 * scores['AP75']:.2f}  AP_small {100 * scores['AP_small']:.2f}  "
          f"AP_medium {100 * scores['AP_medium']:.2f}  AP_large {100 * scores['AP_large']:.2f}"
          " (%; -100 where COCOeval has no box of that size)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**scores, "model": args.model, "num_images": source.num_examples,
                       "class_names": list(source.class_names)}, f, indent=1)
    if args.detections:
        with open(args.detections, "w") as f:
            json.dump(detections_json(detections), f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
