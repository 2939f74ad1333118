"""Layer by layer: where does an int8 TFLite file part from the QAT Keras model it came from?

Runs the QAT model (``qat.h5``, as ``qat_fine_tune.py`` keeps it) and its int8 file
(``qat.tflite``, LiteRT reference kernels, every tensor kept) on the same images; for every
quantized layer of the QAT model it finds the int8 tensor of the same shape whose name contains the
layer's name, dequantizes it and prints the difference in units of that tensor's int8 step
(mean |diff| / scale, and the share of values more than one step apart): the difference
carried from the input. A second table runs each segment between two quantized tensors in Keras
on the int8 file's own input to that segment: the difference that segment adds by itself.

    python benchmarks/qat_layer_diff.py --files <folder with qat.h5, qat.tflite> \\
        --data-dir <cifar10-jpeg-dir> --classes airplane,frog --images 20
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np


def _images(data_dir: Path, class_names: list[str], count: int, seed: int = 0) -> np.ndarray:
    """The held-out test images ``qat_fine_tune.py`` evaluates on (its first ``count``)."""
    import tensorflow as tf

    from keras_coordatt.applications import preprocess_input
    from keras_coordatt.datasets import load_image_folder

    test_x, _, _ = load_image_folder(data_dir / "test", class_names)
    rng = np.random.default_rng(seed)  # qat_fine_tune draws the training permutation first
    rng.permutation(sum(len(list((data_dir / "train" / name).glob("*.jpg")))
                        for name in class_names))
    held_out = rng.permutation(len(test_x))[:count]
    images = tf.image.resize(tf.cast(test_x[held_out], tf.float32), (224, 224))
    return np.asarray(preprocess_input(images), dtype=np.float32)


def _tflite_tensors(path: Path, images: np.ndarray) -> dict:
    """``name -> (dequantized values over the images, scale)`` of every int8 tensor."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(path), experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    scale, zero = detail["quantization"]
    found: dict[str, list] = {}
    scales = {}
    for image in images:
        value = image[None]
        if scale:
            value = np.clip(np.round(value / scale) + zero, -128, 127).astype(np.int8)
        interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
        for tensor in interpreter.get_tensor_details():
            t_scale, t_zero = tensor["quantization"]
            if tensor["dtype"] != np.int8 or not t_scale:
                continue
            try:
                raw = interpreter.get_tensor(tensor["index"])
            except ValueError:
                continue
            if raw.ndim != 4 and raw.ndim != 2:
                continue
            if tensor["shape"][0] != 1:  # weights
                continue
            found.setdefault(tensor["name"], []).append((raw.astype(np.float32) - t_zero) * t_scale)
            scales[tensor["name"]] = t_scale
    return {name: (np.concatenate(values), scales[name]) for name, values in found.items()}


def compare(files: Path, images: np.ndarray):
    from keras_coordatt.quantization import quantize_scope
    from keras_coordatt.quantization._deps import import_qat_stack

    _, tf_keras, _ = import_qat_stack()
    with quantize_scope():
        qat = tf_keras.models.load_model(files / "qat.h5", compile=False)
    layers = [layer for layer in qat.layers[1:] if not isinstance(layer.output, list)]
    probe = tf_keras.Model(qat.inputs, [layer.output for layer in layers])
    outputs = probe.predict(images, batch_size=10, verbose=0)
    tensors = _tflite_tensors(files / "qat.tflite", images)
    rows = []
    for layer, value in zip(layers, outputs, strict=True):
        key = re.sub(r"^quant_", "", layer.name)
        candidates = [
            (name, t) for name, t in tensors.items()
            if t[0].shape == value.shape and re.search(rf"(^|[/;_]){re.escape(key)}[/;:]", name)
        ]
        if not candidates:
            continue
        best = min(candidates, key=lambda c: np.abs(c[1][0] - value).mean())
        name, (int8, scale) = best
        diff = np.abs(int8 - value)
        rows.append({"layer": layer.name, "tensor": name[:70], "scale": scale,
                     "mean_steps": float(diff.mean() / scale),
                     "over_1_step": float(np.mean(diff > 1.01 * scale)),
                     "max_steps": float(diff.max() / scale), "int8": int8})
    return qat, rows


QUANTIZED = ("relu", "_ca", "reduce_bn", "dw2_bn", "_add", "_pad", "quantize_layer", "avg_pool",
             "predictions")


def local_errors(qat, rows) -> list[dict]:
    """Each segment between two quantized tensors run in Keras on the int8 file's input to it:
    the error that segment adds, in int8 steps of its output."""
    import tensorflow as tf

    int8 = {row["layer"]: row for row in rows if row["layer"].endswith(QUANTIZED)}
    local = {}
    result = []
    for layer in qat.layers[1:]:
        inbound = layer.inbound_nodes[0].inbound_layers
        inbound = inbound if isinstance(inbound, list) else [inbound]
        inputs = [int8[i.name]["int8"] if i.name in int8 else local.get(i.name) for i in inbound]
        if any(x is None for x in inputs):
            continue
        args = inputs[0] if len(inputs) == 1 else inputs
        local[layer.name] = np.asarray(layer(tf.constant(args) if len(inputs) == 1 else
                                             [tf.constant(x) for x in args], training=False))
        if layer.name in int8:
            row = int8[layer.name]
            diff = np.abs(local[layer.name] - row["int8"])
            result.append({"layer": layer.name, "mean_steps": float(diff.mean() / row["scale"]),
                           "over_1_step": float(np.mean(diff > 1.01 * row["scale"])),
                           "max_steps": float(diff.max() / row["scale"])})
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--classes", default="airplane,frog")
    parser.add_argument("--images", type=int, default=20)
    args = parser.parse_args(argv)
    images = _images(args.data_dir, args.classes.split(","), args.images)
    qat, rows = compare(args.files, images)
    print("== the whole network (error carried from the input) ==")
    for row in rows:
        if not row["layer"].endswith(QUANTIZED):
            continue
        print(f"{row['layer'][:34]:34s} mean {row['mean_steps']:7.3f} steps, "
              f">1 step {row['over_1_step']:6.1%}, max {row['max_steps']:7.1f}  "
              f"scale {row['scale']:.4g}  {row['tensor']}")
    print("== each segment on the int8 file's input (error it adds) ==")
    for row in local_errors(qat, rows):
        print(f"{row['layer'][:34]:34s} mean {row['mean_steps']:7.3f} steps, "
              f">1 step {row['over_1_step']:6.1%}, max {row['max_steps']:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
