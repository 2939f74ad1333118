"""Export a trained segmenter (.keras from train.py) to TFLite: float32, PTQ int8, QAT int8.

For each file: the per-pixel agreement of its argmax with the Keras model's on the held-out
split (labelled pixels, padding excluded) and its mIoU next to the Keras model's.

* float32: ``export_tflite(mode="float32")``;
* ptq: post-training int8, calibrated on training images (``--calibration-images``);
* qat: ``quantize_model`` (ranges calibrated on the same images), fine-tuned
  ``--qat-steps`` steps at ``--qat-learning-rate`` on augmented training crops, then int8.

Example:
    python applications/segmentation/export.py --model runs/pf/model.keras --source pennfudan \\
        --data-dir ../shared/data/pennfudan --eval-size 224 --output-dir runs/pf/tflite
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from train import add_data_arguments, finish_data_arguments, load_split  # noqa: E402

MODES = ("float32", "ptq", "qat")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="a .keras file written by train.py")
    parser.add_argument("--output-dir", default="runs/segmentation/tflite")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--calibration-images", type=int, default=64,
                        help="training images for PTQ calibration and QAT's initial ranges")
    parser.add_argument("--qat-steps", type=int, default=100)
    parser.add_argument("--qat-learning-rate", type=float, default=1e-3)
    parser.add_argument("--json", help="write the report to this JSON file "
                                       "(default <output-dir>/report.json)")
    add_data_arguments(parser)
    args = finish_data_arguments(parser.parse_args(argv))
    args.size = args.eval_size
    return args


def fine_tune_qat(qat, args, num_classes: int):
    import tf_keras

    from keras_coordatt.tasks import segmentation_data as sd
    from keras_coordatt.training import build_for_fit

    raw, _ = load_split(args, args.train_split)
    data = sd.train_pipeline(raw, args.size, args.batch_size, base_size=args.base_size,
                             scale_range=(args.scale_min, args.scale_max),
                             num_classes=num_classes, seed=0).repeat()
    qat.compile(
        optimizer=tf_keras.optimizers.SGD(args.qat_learning_rate, momentum=0.9),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255),
    )
    build_for_fit(qat, data)
    qat.fit(data, epochs=1, steps_per_epoch=args.qat_steps, verbose=2)
    return qat


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras
    import numpy as np

    import keras_coordatt  # noqa: F401 - registers the attention layers
    from keras_coordatt.export import LiteRTModel, export_tflite, float_ops, inspect_tflite
    from keras_coordatt.tasks import at_input_size
    from keras_coordatt.tasks import segmentation_data as sd

    model = at_input_size(keras.saving.load_model(args.model, compile=False), args.size)
    num_classes = model.output_shape[-1]
    raw_val, class_names = load_split(args, args.val_split)
    class_names = list(class_names or [str(i) for i in range(num_classes)])
    val = sd.eval_pipeline(raw_val, args.size, args.batch_size, num_classes=num_classes,
                           cache=True)
    raw_train, _ = load_split(args, args.train_split)
    calibration = np.concatenate([
        images for images, _ in sd.eval_pipeline(raw_train, args.size, args.batch_size)
        .unbatch().batch(args.calibration_images).take(1)
    ])
    os.makedirs(args.output_dir, exist_ok=True)

    def keras_predict(images):
        return model.predict_on_batch(images)

    report = {"keras": sd.segmentation_scores(keras_predict, val, num_classes)}
    report["keras"].update(agreement=1.0, file=args.model)
    failed = {}
    for mode in args.modes:
        path = os.path.join(args.output_dir, f"segmenter_{mode}.tflite")
        try:
            if mode == "float32":
                export_tflite(model, path, mode="float32")
            elif mode == "ptq":
                export_tflite(model, path, mode="int8", representative_dataset=calibration)
            else:
                from keras_coordatt.quantization import quantize_model

                qat = quantize_model(model, calibration_data=calibration)
                if args.qat_steps:
                    fine_tune_qat(qat, args, num_classes)
                export_tflite(qat, path, mode="int8")
        except ValueError as error:  # e.g. the strict all-int8 check: report, go on
            print(f"{mode}: export failed: {error}", flush=True)
            failed[mode] = str(error)
            continue
        tflite = LiteRTModel(path)
        scores = sd.segmentation_scores(tflite, val, num_classes, reference=keras_predict)
        scores.update(file=path, size_bytes=os.path.getsize(path),
                      float_ops=[op.name for op in float_ops(inspect_tflite(path))])
        report[mode] = scores
        if mode == "qat":  # QAT fine-tuned the model: its file's oracle is the QAT model
            def qat_predict(images, qat=qat):
                return qat.predict_on_batch(images)

            qat_scores = sd.segmentation_scores(qat_predict, val, num_classes)
            scores["agreement_with_qat_model"] = sd.segmentation_scores(
                tflite, val, num_classes, reference=qat_predict)["agreement"]
            qat_scores.update(agreement=float("nan"), file="(QAT Keras model, tf_keras)")
            report["qat_keras"] = qat_scores
    print(f"{'model':>8} | {'mIoU %':>7} | {'agreement with Keras %':>22} | "
          + " | ".join(f"IoU {name}" for name in class_names) + " | file")
    for name, scores in report.items():
        print(f"{name:>8} | {100 * scores['mean_iou']:7.2f} | {100 * scores['agreement']:22.2f} | "
              + " | ".join(f"{100 * v:.2f}" for v in scores["iou"]) + f" | {scores['file']}")
    if "agreement_with_qat_model" in report.get("qat", {}):
        print(f"qat file vs the QAT Keras model: "
              f"{100 * report['qat']['agreement_with_qat_model']:.2f} % of pixels agree")
    for scores in report.values():
        scores.pop("confusion")
    report.update({mode: {"error": message} for mode, message in failed.items()})
    with open(args.json or os.path.join(args.output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
