"""Export a trained detector (.keras from train.py) to TFLite with TFLite_Detection_PostProcess.

Modes (``keras_coordatt.export.export_detector_tflite``; float32 image input, fixed batch 1):

* float32: the float network, then the post-processing op;
* ptq: post-training int8, calibrated on ``--calibration-images`` training images;
* qat: ``quantize_model`` (ranges calibrated on the same images), fine-tuned ``--qat-steps``
  steps at ``--qat-learning-rate`` on augmented training batches (the detector's own loss),
  then int8 with ``qat_model=``. train.py writes no QAT checkpoint: this is the QAT path (in
  your own code: ``export_detector_tflite(detector, path, "int8", qat_model=qat)``).

For each file: its op summary (ops by count, float ops of the network before the op) and, on
the held-out split, the agreement with the Keras model (its QAT twin for qat): the share of
the Keras detections above ``--agreement-score`` that the file finds with IoU >= 0.9 (same
class), their mean IoU, and the COCO AP / AP50 of the file next to the Keras model's.

Example:
    python applications/detection/export.py --model runs/pf_ca/model.keras \\
        --source pennfudan --data-dir ../shared/data/pennfudan --output-dir runs/pf_ca/tflite
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import sys

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MODES = ("float32", "ptq", "qat")
MATCH_IOU = 0.9


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
    parser.add_argument("--output-dir", default="runs/detection/tflite")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--calibration-images", type=int, default=64,
                        help="training images for PTQ calibration and QAT's initial ranges")
    parser.add_argument("--qat-steps", type=int, default=100)
    parser.add_argument("--qat-learning-rate", type=float, default=1e-3)
    parser.add_argument("--agreement-score", type=float, default=0.5,
                        help="compare the Keras detections from this score")
    parser.add_argument("--mediapipe", action="store_true",
                        help="also write a PTQ int8 file taking uint8 pixels, with TFLite "
                             "metadata, and run it in MediaPipe's ObjectDetector on the "
                             "held-out images (needs the [mediapipe] extra)")
    parser.add_argument("--json", help="write the report to this JSON file "
                                       "(default <output-dir>/report.json)")
    recipe.add_data_arguments(parser)
    args = recipe.finish_data_arguments(parser.parse_args(argv))
    args.load_split = recipe.load_split
    return args


def fine_tune_qat(qat, detector, batches, steps: int, learning_rate: float) -> float:
    """``steps`` SGD steps of the QAT twin on the detector's own loss; returns the last loss."""
    import tensorflow as tf
    import tf_keras

    optimizer = tf_keras.optimizers.SGD(learning_rate, momentum=0.9)

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = detector.compute_loss(y=labels, y_pred=qat(images, training=True))
        variables = qat.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    loss = float("nan")
    for images, labels in batches.take(steps):
        loss = float(step(images, {"boxes": labels["boxes"], "labels": labels["labels"]}))
    return loss


def op_summary(path: str) -> dict:
    from keras_coordatt.export import inspect_tflite
    from keras_coordatt.export.detection import network_float_ops

    ops = inspect_tflite(path)
    return {"ops": dict(collections.Counter(op.name for op in ops).most_common()),
            "network_float_ops": [op.name for op in network_float_ops(ops)]}


def _convert(mode, model, args, calibration, train_source, path):
    """Writes the file of ``mode``; returns the Keras model it is compared with."""
    from keras_coordatt.export.detection import export_detector_tflite

    if mode == "float32":
        export_detector_tflite(model, path)
        return model
    if mode == "ptq":
        export_detector_tflite(model, path, "int8", calibration)
        return model
    from keras_coordatt.quantization import quantize_model
    from keras_coordatt.tasks import detection_data as dd

    qat = quantize_model(model, calibration_data=calibration)
    if args.qat_steps:
        epochs = -(-args.qat_steps // max(1, dd.steps_per_epoch(train_source, args.batch_size)))
        batches = dd.train_batches(train_source, model.image_size[0], args.batch_size, epochs,
                                   max_boxes=args.max_boxes,
                                   bounding_box_format=model.bounding_box_format)
        loss = fine_tune_qat(qat, model, batches, args.qat_steps, args.qat_learning_rate)
        print(f"qat: {args.qat_steps} fine-tuning steps, last loss {loss:.4f}", flush=True)
    export_detector_tflite(model, path, "int8", qat_model=qat)
    return qat


def mediapipe_detections(path: str, pixels, class_names) -> dict:
    """MediaPipe ``ObjectDetector`` on uint8 images ``(B, S, S, 3)`` -> a detection dict with
    relative ``yxyx`` boxes (``detection_agreement``'s form); labels from category names."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    size = pixels.shape[1]
    options = vision.ObjectDetectorOptions(base_options=BaseOptions(model_asset_path=path))
    found = []
    with vision.ObjectDetector.create_from_options(options) as detector:
        for image in pixels:
            result = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB,
                                              data=np.ascontiguousarray(image)))
            found.append([(box.origin_y / size, box.origin_x / size,
                           (box.origin_y + box.height) / size, (box.origin_x + box.width) / size,
                           list(class_names).index(d.categories[0].category_name),
                           d.categories[0].score)
                          for d in result.detections for box in [d.bounding_box]])
    slots = max([len(f) for f in found] + [1])
    out = {"boxes": np.zeros((len(found), slots, 4)), "labels": np.zeros((len(found), slots)),
           "confidence": np.zeros((len(found), slots)),
           "num_detections": np.array([len(f) for f in found])}
    for b, detections in enumerate(found):
        for k, (*box, label, score) in enumerate(detections):
            out["boxes"][b, k], out["labels"][b, k], out["confidence"][b, k] = box, label, score
    return out


def mediapipe_vs_litert(litert: dict, mediapipe: dict, size: int) -> dict:
    """Detection by detection (both in the op's order): counts, labels, scores, and boxes in
    MediaPipe's pixel convention. MediaPipe reports ``origin`` and ``width`` / ``height`` as
    integers (truncated), moves an origin outside the image to 0 without shrinking the box
    and caps width / height at the image's; the LiteRT boxes are converted the same way, then
    compared in pixels."""
    same_count = bool(np.array_equal(litert["num_detections"], mediapipe["num_detections"]))
    pixel_gaps, score_gaps, same_labels = [], [], True
    for b, count in enumerate(litert["num_detections"]):
        count = min(int(count), int(mediapipe["num_detections"][b]))
        ours = litert["boxes"][b, :count] * size
        origin = np.maximum(np.trunc(ours[:, :2]), 0)
        extent = np.minimum(np.trunc(ours[:, 2:] - ours[:, :2]), size)
        expected = np.concatenate([origin, origin + extent], -1)
        pixel_gaps.append(np.abs(mediapipe["boxes"][b, :count] * size - expected).ravel())
        score_gaps.append(np.abs(mediapipe["confidence"][b, :count]
                                 - litert["confidence"][b, :count]))
        same_labels &= bool(np.array_equal(mediapipe["labels"][b, :count],
                                           litert["labels"][b, :count]))
    pixel_gaps, score_gaps = np.concatenate(pixel_gaps), np.concatenate(score_gaps)
    return {"same_counts": same_count, "same_labels": same_labels,
            "max_box_pixel_gap": float(pixel_gaps.max()) if len(pixel_gaps) else None,
            "max_score_gap": float(score_gaps.max()) if len(score_gaps) else None}


def mediapipe_check(model, calibration, val, class_names, path, min_score) -> dict:
    """The PTQ int8 file with uint8 input and metadata, run by MediaPipe and by LiteRT on the
    held-out images: MediaPipe's detections against LiteRT's (the same file, detection by
    detection) and against the Keras model's (on the same rounded pixels)."""
    from keras_coordatt.applications import preprocess_input
    from keras_coordatt.applications.imagenet_utils import pixels_from_preprocessed
    from keras_coordatt.export.detection import export_detector_tflite, run_detector_tflite
    from keras_coordatt.tasks.detection_metrics import detection_agreement, relative_detections

    export_detector_tflite(model, path, "int8", pixels_from_preprocessed(calibration),
                           input_type="uint8",
                           labels=list(class_names))
    size, fmt = model.image_size[0], model.bounding_box_format
    litert, keras_found, mediapipe = [], [], []
    for images, _ in val:
        pixels = pixels_from_preprocessed(images)
        litert.append(run_detector_tflite(path, pixels))
        keras_found.append(relative_detections(
            model.predict_on_batch(preprocess_input(pixels.astype("float32"))), fmt, size))
        mediapipe.append(mediapipe_detections(path, pixels, class_names))
    per_batch = [mediapipe_vs_litert(lite, mp, size) for lite, mp in zip(litert, mediapipe,
                                                                         strict=True)]
    return {"file": path, "size_bytes": os.path.getsize(path),
            "detections": int(sum(int(np.sum(m["num_detections"])) for m in mediapipe)),
            "vs_litert": {
                "same_counts": all(row["same_counts"] for row in per_batch),
                "same_labels": all(row["same_labels"] for row in per_batch),
                "max_box_pixel_gap": max(row["max_box_pixel_gap"] or 0 for row in per_batch),
                "max_score_gap": max(row["max_score_gap"] or 0 for row in per_batch)},
            "vs_keras": detection_agreement(keras_found, mediapipe, min_score=min_score,
                                            min_iou=MATCH_IOU)}


def print_report(report: dict) -> None:
    print(f"{'model':>8} | {'AP %':>6} | {'AP50 %':>6} | {'IoU >= 0.9 (of n)':>17} | "
          "mean IoU | network float ops | file")
    for name, row in report.items():
        agree = row.get("agreement") or {"matched_share": None, "mean_iou": None}
        share, mean = agree["matched_share"], agree["mean_iou"]
        matched = "-" if share is None else f"{100 * share:.1f} % ({agree['compared']})"
        mean = "-" if mean is None else f"{mean:.3f}"
        floats = row.get("network_float_ops", [])
        floats = "-" if not floats else "all (float file)" if name == "float32" else \
            ", ".join(floats)
        print(f"{name:>8} | {100 * row['AP']:6.2f} | {100 * row['AP50']:6.2f} | {matched:>17} | "
              f"{mean:>8} | {floats} | {row['file']}")
        if "ops" in row:
            print("         ops: " + ", ".join(f"{op} x{n}" for op, n in row["ops"].items()))


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras

    import keras_coordatt.tasks  # noqa: F401 - registers ObjectDetector
    from keras_coordatt.export.detection import run_detector_tflite
    from keras_coordatt.tasks import detection_data as dd
    from keras_coordatt.tasks.detection_metrics import (
        coco_evaluate,
        detection_agreement,
        relative_detections,
    )

    model = keras.saving.load_model(args.model, compile=False)  # safe_mode
    size, fmt = model.image_size[0], model.bounding_box_format
    train_source, val_source = args.load_split(args, True), args.load_split(args, False)
    only_float = args.modes == ["float32"] and not args.mediapipe
    calibration = None if only_float else np.concatenate([
        np.asarray(images) for images, _ in dd.eval_batches(
            train_source, size, args.batch_size, max_boxes=args.max_boxes)
    ])[:args.calibration_images]
    val = list(dd.coco_batches(val_source, size, args.batch_size))
    names = val_source.class_names
    os.makedirs(args.output_dir, exist_ok=True)
    keras_metrics, _, _ = coco_evaluate(model.predict_on_batch, val, names, fmt, size)
    report = {"keras": {"AP": keras_metrics["AP"], "AP50": keras_metrics["AP50"],
                        "file": args.model}}
    failed = {}
    for mode in args.modes:
        path = os.path.join(args.output_dir, f"detector_{mode}.tflite")
        try:
            reference = _convert(mode, model, args, calibration, train_source, path)
        except ValueError as error:  # e.g. the strict all-int8 check: report, go on
            print(f"{mode}: export failed: {error}", flush=True)
            failed[mode] = str(error)
            continue

        def run_file(images, path=path):
            return run_detector_tflite(path, np.asarray(images))

        metrics, _, _ = coco_evaluate(run_file, val, names, "rel_yxyx", size)
        expected = [relative_detections(model.decode_predictions(reference(images,
                                                                           training=False)),
                                        fmt, size) for images, _ in val]
        found = [run_file(images) for images, _ in val]
        report[mode] = {"AP": metrics["AP"], "AP50": metrics["AP50"], "file": path,
                        "size_bytes": os.path.getsize(path), **op_summary(path),
                        "agreement": detection_agreement(
                            expected, found, min_score=args.agreement_score, min_iou=MATCH_IOU),
                        "oracle": "QAT Keras model" if mode == "qat" else "Keras model"}
    print_report(report)
    if args.mediapipe:
        report["mediapipe"] = mediapipe_check(
            model, calibration, val, names, os.path.join(args.output_dir, "detector_uint8.tflite"),
            args.agreement_score)
        print(f"MediaPipe ObjectDetector (PTQ int8, uint8 input, metadata): "
              f"{json.dumps(report['mediapipe'])}", flush=True)
    report.update({mode: {"error": message} for mode, message in failed.items()})
    with open(args.json or os.path.join(args.output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
