"""Running a .tflite model with the LiteRT interpreter (``ai_edge_litert``) over a dataset."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from keras_coordatt.export._data import DataLike, iter_batches
from keras_coordatt.export.tflite import _litert_interpreter_class


def _quantize(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return values.astype(dtype)
    if not scale and dtype == np.uint8:  # a uint8 image input: the file normalises the pixels
        return np.clip(np.round(values), 0, 255).astype(dtype)
    if not scale:
        raise ValueError(f"Input tensor {detail['name']!r} is {dtype.name} without a scale.")
    info = np.iinfo(dtype)
    quantized = np.round(values / scale) + zero_point
    return np.clip(quantized, info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).kind == "f" or not scale:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero_point) * scale


class LiteRTModel:
    """A single-input, single-output .tflite model run by the LiteRT interpreter.

    ``model(images)`` takes float inputs (preprocessed like the Keras model's), quantizes them
    when the model has int8 / uint8 inputs, runs batch by batch (resizing a dynamic batch, or
    image by image for a fixed batch of 1) and returns float outputs (dequantized if needed).
    """

    def __init__(self, path: str | os.PathLike, num_threads: int = 2,
                 reference_kernels: bool = False):
        """``reference_kernels=True`` runs LiteRT's builtin kernels without the default
        XNNPACK delegate (whose int8 kernels round some values differently)."""
        interpreter_class, resolver = _litert_interpreter_class()
        self.path = os.fspath(path)
        options = ({"experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
                   if reference_kernels else {})
        self.interpreter = interpreter_class(model_path=self.path, num_threads=num_threads,
                                             **options)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"{self.path} has {len(inputs)} inputs and {len(outputs)} outputs; "
                "LiteRTModel runs single-input, single-output models."
            )
        self.input_detail = inputs[0]
        signature = self.input_detail.get("shape_signature", self.input_detail["shape"])
        self.dynamic_batch = int(signature[0]) == -1
        self.batch_size = int(self.input_detail["shape"][0])
        self.interpreter.allocate_tensors()

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self.input_detail["dtype"])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.dynamic_batch and batch.shape[0] != self.batch_size:
            self.interpreter.resize_tensor_input(self.input_detail["index"], batch.shape)
            self.interpreter.allocate_tensors()
            self.batch_size = batch.shape[0]
            self.input_detail = self.interpreter.get_input_details()[0]
        self.interpreter.set_tensor(self.input_detail["index"], _quantize(batch, self.input_detail))
        self.interpreter.invoke()
        output = self.interpreter.get_output_details()[0]
        return _dequantize(self.interpreter.get_tensor(output["index"]), output)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if self.dynamic_batch:
            return self._run(images)
        size = self.batch_size
        if len(images) % size:
            raise ValueError(
                f"{self.path} has a fixed batch of {size}; got {len(images)} images."
            )
        batches = [self._run(images[i : i + size]) for i in range(0, len(images), size)]
        return np.concatenate(batches)


def evaluate_tflite(
    path: str | os.PathLike,
    dataset: DataLike,
    num_threads: int = 2,
    progress: bool = True,
    *,
    batch_size: int = 32,
    steps: int | None = None,
) -> dict[str, Any]:
    """Runs a .tflite classifier over ``dataset`` with the LiteRT interpreter.

    Args:
        path: the .tflite file (float or int8, float or int8 I/O; int8 inputs are quantized with
            the input's scale / zero point and outputs dequantized).
        dataset: ``(images, labels)`` arrays, images only, or an iterable of such batches
            (e.g. a ``tf.data.Dataset``); images preprocessed like the model's inputs; labels
            sparse class ids or one-hot.
        num_threads: interpreter threads.
        progress: show a ``keras.utils.Progbar``.
        batch_size: batch size when ``dataset`` is arrays.
        steps: stop after this many batches.

    Returns:
        ``{"predictions": float array (N, ...), "labels": array or None, "accuracy": top-1 or
        None, "num_examples": N, "seconds": wall time of the inference calls}``.
    """
    model = LiteRTModel(path, num_threads=num_threads)
    total = None
    if isinstance(dataset, np.ndarray):
        total = len(dataset)
    elif isinstance(dataset, tuple) and len(dataset) == 2 and hasattr(dataset[0], "shape"):
        total = len(dataset[0])
    bar = None
    if progress:
        import keras

        bar = keras.utils.Progbar(total, unit_name="image")
    predictions, labels, seconds, seen = [], [], 0.0, 0
    for images, batch_labels in iter_batches(dataset, batch_size=batch_size, limit=steps):
        start = time.perf_counter()
        predictions.append(model(images))
        seconds += time.perf_counter() - start
        if batch_labels is not None:
            labels.append(np.asarray(batch_labels))
        seen += len(images)
        if bar is not None:
            bar.update(seen)
    if not predictions:
        raise ValueError("evaluate_tflite() got an empty dataset.")
    outputs = np.concatenate(predictions)
    result: dict[str, Any] = {
        "predictions": outputs,
        "labels": None,
        "accuracy": None,
        "num_examples": int(len(outputs)),
        "seconds": seconds,
    }
    if labels:
        if len(labels) != len(predictions):
            raise ValueError("Some batches of the dataset have labels and some do not.")
        label_array = np.concatenate(labels)
        if label_array.ndim == outputs.ndim and label_array.shape[-1] == outputs.shape[-1] > 1:
            label_array = label_array.argmax(axis=-1)
        label_array = label_array.reshape(len(outputs)).astype(np.int64)
        result["labels"] = label_array
        result["accuracy"] = float(np.mean(outputs.argmax(axis=-1) == label_array))
    return result
