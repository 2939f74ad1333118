"""Where an int8 detector parts from its Keras model, and how stable the Keras model is.

For a trained detector (``.keras`` from applications/detection/train.py) and an int8 file of
it (export.py's ``detector_ptq.tflite``), on the Penn-Fudan held-out photos:

1. the Keras model against itself on the same photos with uniform +-0.5 grey-level noise (less
   than one int8 input step): the share of its detections above 0.5 found again with
   IoU >= 0.9, the agreement a perfect int8 file could at best be expected to reach;
2. block by block, the relative RMS difference ``rms(int8 - keras) / rms(keras)`` of the
   int8 file's dequantized tensors (LiteRT, every tensor kept) against the Keras layer outputs
   of the same name: how the int8 error grows with depth.

    python benchmarks/detection_int8_drift.py --model runs/pf_ca/model.keras \\
        --tflite runs/pf_ca/tflite/detector_ptq.tflite --data-dir ../shared/data/pennfudan
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: The Keras layers compared: block outputs, the extra levels and the predictors.
LAYERS = re.compile(r"^(block\d+_(project_bn|ca)|head_relu|extra\d+_project_bn|"
                    r"(box|class)_head\d+_conv)$")


def held_out_images(data_dir: str, size: int, num_val: int, split_seed: int) -> np.ndarray:
    from keras_coordatt.tasks import detection_data as dd

    source = dd.detection_source("pennfudan", "val", data_dir=[data_dir], num_val=num_val,
                                 split_seed=split_seed)
    return np.concatenate([np.asarray(images) for images, _ in dd.coco_batches(source, size, 8)])


def noise_agreement(model, images: np.ndarray, seed: int = 0) -> dict:
    """The model against itself with +-0.5 grey-level noise on its (rounded) input pixels."""
    from keras_coordatt.applications import preprocess_input
    from keras_coordatt.applications.imagenet_utils import pixels_from_preprocessed
    from keras_coordatt.tasks.detection_metrics import detection_agreement, relative_detections

    rng = np.random.default_rng(seed)
    size, fmt = model.image_size[0], model.bounding_box_format
    reference, noisy = [], []
    for start in range(0, len(images), 8):
        pixels = pixels_from_preprocessed(images[start:start + 8]).astype("float32")
        shaken = pixels + rng.uniform(-0.5, 0.5, pixels.shape).astype("float32")
        for target, batch in ((reference, pixels), (noisy, shaken)):
            target.append(relative_detections(model.predict_on_batch(preprocess_input(batch)),
                                              fmt, size))
    return detection_agreement(reference, noisy, min_score=0.5, min_iou=0.9)


def _tensors_by_layer(interpreter) -> dict[str, list[dict]]:
    """Tensor details keyed by the Keras layer name their first name part carries."""
    found: dict[str, list[dict]] = {}
    for op in interpreter._get_ops_details():
        for index in op["outputs"]:
            details = interpreter._get_tensor_details(index, 0)
            match = re.search(r"/([A-Za-z0-9_]+?)_\d+/", details["name"].split(";")[0])
            if match:
                found.setdefault(match.group(1), []).append(details)
    return found


def layer_drift(model, tflite: str, images: np.ndarray) -> list[tuple[str, float]]:
    """``(layer, mean relative RMS difference over images)`` in network order."""
    import keras

    from keras_coordatt.export import tflite as tflite_lib
    from keras_coordatt.export.litert import _quantize

    names = [layer.name for layer in model.layers if LAYERS.match(layer.name)]
    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in names])
    expected = probe.predict(images, verbose=0)
    interpreter_class, _ = tflite_lib._litert_interpreter_class()
    with warnings.catch_warnings():  # "intended for debugging purposes only": it is
        warnings.simplefilter("ignore", UserWarning)
        interpreter = interpreter_class(model_path=tflite,
                                        experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    tensors = _tensors_by_layer(interpreter)
    source = interpreter.get_input_details()[0]
    errors: dict[str, list[float]] = {name: [] for name in names}
    for b in range(len(images)):
        interpreter.set_tensor(source["index"], _quantize(images[b:b + 1], source))
        interpreter.invoke()
        for name, keras_out in zip(names, expected, strict=True):
            candidates = [t for t in tensors.get(name, [])
                          if tuple(t["shape"][1:]) == keras_out.shape[1:]]
            if not candidates:
                continue
            details = candidates[-1]  # a CA block: its last op (the second gate product)
            scale, zero = details["quantization"]
            value = interpreter.get_tensor(details["index"])[0].astype("float32")
            value = (value - zero) * scale if scale else value
            reference = keras_out[b]
            errors[name].append(float(np.sqrt(np.mean((value - reference) ** 2))
                                      / (np.sqrt(np.mean(reference ** 2)) + 1e-12)))
    return [(name, float(np.mean(values))) for name, values in errors.items() if values]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--tflite", required=True, help="an int8 detector file (float input)")
    parser.add_argument("--data-dir", required=True, help="the Penn-Fudan folder")
    parser.add_argument("--num-val", type=int, default=50)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=8, help="images for the layer table")
    args = parser.parse_args(argv)
    import keras

    import keras_coordatt.tasks  # noqa: F401 - registers the detector

    model = keras.saving.load_model(args.model, compile=False)
    images = held_out_images(args.data_dir, model.image_size[0], args.num_val, args.split_seed)
    stable = noise_agreement(model, images)
    print(f"Keras vs itself, +-0.5 grey-level noise, {len(images)} held-out images: "
          f"{100 * stable['matched_share']:.1f} % of {stable['compared']} detections >= 0.5 "
          f"found with IoU >= 0.9 (mean IoU {stable['mean_iou']:.3f})")
    print(f"\n| layer | relative RMS difference, int8 vs Keras ({args.images} images) |")
    print("|---|---:|")
    for name, error in layer_drift(model, args.tflite, images[:args.images]):
        print(f"| {name} | {error:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
