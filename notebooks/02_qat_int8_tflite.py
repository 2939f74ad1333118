# The source of 02_qat_int8_tflite.ipynb, in jupytext's percent format: edit it, then run
# `python notebooks/build_notebooks.py` and commit both (see notebooks/README.md).
# Notebook style: imports where a cell first needs them; zip over figure axes and
# batches that may be shorter than the grid (smoke mode).
# ruff: noqa: E402, B905

# %% [markdown]
# # Quantization-aware training and int8 TFLite export
#
# {{COLAB_BADGE}}
#
# Phones and microcontrollers run neural networks fastest in 8-bit integers. This
# notebook turns the flower classifier of `01_fine_tune_tf_flowers.ipynb` into a
# **full-integer** TFLite model (every op in int8, Coordinate Attention included) in
# two ways, and compares them:
#
# * **post-training quantization (PTQ)**: convert the float model, measuring the
#   ranges of its activations on a few calibration images;
# * **quantization-aware training (QAT)**: fine-tune a copy of the model that
#   simulates int8 rounding (`keras_coordatt.quantization.quantize_model`, built on
#   the TensorFlow Model Optimization toolkit), then convert it.
#
# The table at the end gives accuracy, file size and latency (LiteRT interpreter,
# batch 1) of the float32, PTQ int8 and QAT int8 models, and a check that the int8
# models predict what the float model predicts.

# %% include="install" extras="qat,litert,data"

# %% [markdown] include="smoke_mode"

# %%
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # tf.data, TFLite and SavedModels need it
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # fewer TensorFlow start-up messages

SMOKE = os.environ.get("KERAS_COORDATT_SMOKE") == "1"
OUT = Path(os.environ.get("KERAS_COORDATT_NOTEBOOK_OUT", "outputs"))
OUT.mkdir(parents=True, exist_ok=True)

if SMOKE:  # CI: offline, tiny and fast (see above)
    ALPHA, WEIGHTS, IMAGE_SIZE = 0.5, "../tests/data/checkpoints/mbv2_ca_w0.5.pth", 96
    BATCH_SIZE, FLOAT_EPOCHS, QAT_EPOCHS, CALIBRATION_BATCHES = 16, 1, 1, 1
    # Random weights on noise images give nearly tied logits, so int8 rounding flips many
    # top-1 classes: smoke mode does not check the agreement, only prints it.
    MIN_AGREEMENT = 0.0
else:
    ALPHA, WEIGHTS, IMAGE_SIZE = 1.0, "imagenet", 224
    BATCH_SIZE, FLOAT_EPOCHS, QAT_EPOCHS, CALIBRATION_BATCHES = 32, 5, 2, 8
    MIN_AGREEMENT = 0.9  # int8 and float top-1 must agree on >= 90 % of the images
print(f"smoke mode: {SMOKE}; MobileNetV2CA alpha={ALPHA}, weights={WEIGHTS!r}, "
      f"{IMAGE_SIZE}x{IMAGE_SIZE} inputs; outputs in {OUT}")

# %% [markdown]
# ## Data: tf_flowers, as in notebook 01

# %%
import contextlib

import tensorflow_datasets as tfds

# Smoke mode: tfds serves random images with the real tf_flowers metadata (no download).
data_source = tfds.testing.mock_data(num_examples=32) if SMOKE else contextlib.nullcontext()
with data_source:
    (train_raw, val_raw), info = tfds.load(
        "tf_flowers",
        split=["train[:85%]", "train[85%:]"],  # tf_flowers has a single split
        as_supervised=True,  # (image, label) pairs
        with_info=True,
    )
CLASS_NAMES = info.features["label"].names
NUM_CLASSES = len(CLASS_NAMES)
print(CLASS_NAMES)

# %%
import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from keras_coordatt.applications import MobileNetV2CA, preprocess_input
from keras_coordatt.training import build_for_fit

AUTOTUNE = tf.data.AUTOTUNE


def make_dataset(raw, training):
    ds = raw.map(lambda x, y: (tf.image.resize(x, (IMAGE_SIZE, IMAGE_SIZE)), y))
    if training:
        ds = ds.shuffle(1000, seed=0)
        ds = ds.map(lambda x, y: (tf.image.random_flip_left_right(x), y))
    ds = ds.batch(BATCH_SIZE).map(lambda x, y: (preprocess_input(x), y))
    return ds.prefetch(AUTOTUNE)


train_ds = make_dataset(train_raw, training=True)
val_ds = make_dataset(val_raw, training=False)
# Calibration images (PTQ, and QAT's initial ranges): training images, not augmented.
calibration_ds = make_dataset(train_raw, training=False).take(CALIBRATION_BATCHES)

# %% [markdown]
# ## The float model
#
# If notebook 01 saved its fine-tuned model in `OUT`, we use it. Otherwise (notebooks
# run independently, e.g. each in its own Colab runtime) we make a quick stand-in the
# same way: a new head trained on the frozen pretrained backbone.

# %%
FINE_TUNED = OUT / "flowers_mobilenetv2_ca.keras"  # written by notebook 01
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

if FINE_TUNED.exists():
    model = keras.models.load_model(FINE_TUNED, compile=False)
    print(f"loaded {FINE_TUNED}")
else:
    backbone = MobileNetV2CA(
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
        alpha=ALPHA,
        weights=WEIGHTS,
        include_top=False,
        pooling="avg",
    )
    backbone.trainable = False
    x = keras.layers.Dropout(0.2, name="dropout")(backbone.output)
    outputs = keras.layers.Dense(NUM_CLASSES, name="flowers")(x)
    model = keras.Model(backbone.input, outputs, name="flowers_mobilenetv2_ca")
    model.compile(keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
    build_for_fit(model, train_ds)  # optimizer state made now: fit traces its step once
    model.fit(train_ds, epochs=FLOAT_EPOCHS, verbose=2)

# %% [markdown]
# ## Float32 and post-training-quantized int8 exports
#
# `export_tflite` converts with built-in TFLite ops only. `mode="int8"` on a float
# model is full-integer PTQ: the converter runs the calibration images through the
# model to pick a scale for every tensor, and (by default, `strict=True`) the export
# fails if any op would still compute in float. Inputs and outputs stay float32, so
# the TFLite models take the same preprocessed images as the Keras model.

# %%
from keras_coordatt.export import export_tflite

paths = {
    "float32": export_tflite(model, OUT / "flowers_float32.tflite"),
    "PTQ int8": export_tflite(
        model,
        OUT / "flowers_ptq_int8.tflite",
        mode="int8",
        representative_dataset=calibration_ds,
    ),
}

# %% [markdown]
# ## Quantization-aware training
#
# `quantize_model` rebuilds the Keras 3 model in tf_keras (what the TensorFlow Model
# Optimization toolkit works with), copies the weights and inserts fake-quantization
# ops that round weights and activations to int8 in the forward pass. With
# `calibration_data` the activation ranges start from the float model's real ranges
# (otherwise they need thousands of steps to settle). The QAT model is a tf_keras
# model: compile it with `tf_keras` optimizers and losses.
#
# QAT fine-tunes every layer with a small learning rate, except the
# BatchNormalization layers, which stay frozen (and keep their statistics) as in
# notebook 01.

# %%
import tf_keras

from keras_coordatt.quantization import quantize_model

for layer in model.layers:
    layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)

qat_model = quantize_model(model, calibration_data=calibration_ds)
qat_model.compile(
    optimizer=tf_keras.optimizers.Adam(1e-5),
    loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
build_for_fit(qat_model, train_ds)  # optimizer state made now: fit traces its step once
qat_history = qat_model.fit(train_ds, epochs=QAT_EPOCHS, verbose=2)

# %% [markdown]
# A QAT model already carries its int8 ranges, so its export needs no calibration
# data. Every op of the result works on int8 tensors; only the first `QUANTIZE` and the
# last `DEQUANTIZE` touch the float input and output:

# %%
from collections import Counter

from keras_coordatt.export import float_ops, inspect_tflite

paths["QAT int8"] = export_tflite(
    qat_model, OUT / "flowers_qat_int8.tflite", mode="int8"
)

ops = inspect_tflite(paths["QAT int8"])
print(dict(Counter(op.name for op in ops)))
print("ops computing in float:", float_ops(ops) or "none")

# %% [markdown]
# ## Accuracy, size and latency
#
# `evaluate_tflite` runs a `.tflite` file over the validation set with the LiteRT
# interpreter; `tflite_latency_ms` is the median time of one batch-1 inference (after
# warm-up). Latency depends on the machine: compare the rows, not the absolute values.

# %%
from IPython.display import Markdown, display

from keras_coordatt.demo import tflite_latency_ms
from keras_coordatt.export import evaluate_tflite

float_logits = model.predict(val_ds, verbose=0)
val_labels = np.concatenate([labels for _, labels in val_ds])
float_accuracy = np.mean(float_logits.argmax(axis=-1) == val_labels)

results = {}
for name, path in paths.items():
    evaluation = evaluate_tflite(path, val_ds, progress=False)
    results[name] = {
        "logits": evaluation["predictions"],
        "accuracy": evaluation["accuracy"],
        "size_mb": os.path.getsize(path) / 2**20,
        "latency_ms": tflite_latency_ms(path),
    }

rows = [
    "| model | top-1 (validation) | file size (MB) | LiteRT latency, batch 1 (ms) |",
    "|---|---|---|---|",
    f"| Keras float (reference) | {float_accuracy:.1%} | - | - |",
]
for name, r in results.items():
    rows.append(
        f"| TFLite {name} | {r['accuracy']:.1%} | {r['size_mb']:.2f} "
        f"| {r['latency_ms']:.2f} |"
    )
display(Markdown("\n".join(rows)))

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
for ax, (key, label) in zip(
    axes,
    [("accuracy", "top-1 accuracy"), ("size_mb", "file size (MB)"),
     ("latency_ms", "latency, batch 1 (ms)")],
):
    values = [r[key] for r in results.values()]
    ax.bar(list(results), values, color=["tab:gray", "tab:orange", "tab:green"])
    ax.set_title(label)
    for i, value in enumerate(values):
        ax.annotate(f"{value:.3g}", (i, value), ha="center", va="bottom")
fig.suptitle("float32 vs int8 TFLite models", y=1.04)
fig.savefig(OUT / "tflite_comparison.png", dpi=80, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## Do the int8 models predict what the float model predicts?
#
# The float32 TFLite model must reproduce the Keras logits (up to float rounding). The
# int8 models cannot be exact, but they should pick the same class as the float model
# for almost every image.

# %%
np.testing.assert_allclose(
    results["float32"]["logits"], float_logits, rtol=1e-3, atol=1e-3
)
print("float32 TFLite: same logits as the Keras model (within 1e-3)")

for name in ("PTQ int8", "QAT int8"):
    agreement = np.mean(results[name]["logits"].argmax(-1) == float_logits.argmax(-1))
    print(f"{name}: same top-1 class as the float model for {agreement:.1%}")
    assert agreement >= MIN_AGREEMENT, f"{name} disagrees with the float model"

# %% [markdown]
# The `.tflite` files in `OUT` are ready for the LiteRT runtime on Android, iOS or
# embedded Linux (`ai_edge_litert.interpreter.Interpreter` in Python).
