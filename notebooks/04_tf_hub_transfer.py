# The source of 04_tf_hub_transfer.ipynb, in jupytext's percent format: edit it, then run
# `python notebooks/build_notebooks.py` and commit both (see notebooks/README.md).
# Notebook style: imports where a cell first needs them; zip over figure axes and
# batches that may be shorter than the grid (smoke mode).
# ruff: noqa: E402, B905

# %% [markdown]
# # TF-Hub feature vectors: export, reload and fine-tune
#
# {{COLAB_BADGE}}
#
# `keras_coordatt.export.hub.export_hub` writes a model as a *reusable* TF2
# SavedModel in the TF-Hub / Kaggle Models format: it takes float32 RGB images in
# [0, 1] (the ImageNet normalisation is inside), returns the 1280-d pooled features
# (`kind="feature_vector"`) and can be fine-tuned after loading. This notebook
#
# 1. exports an ImageNet-pretrained MobileNetV2-CA feature vector;
# 2. loads it in a tf_keras model with `tensorflow_hub.KerasLayer(trainable=True)`
#    and checks it computes what the Keras model computes;
# 3. loads it in a Keras 3 model with `keras.layers.TFSMLayer`;
# 4. fine-tunes both briefly on `tf_flowers` and plots the loss going down.

# %% include="install" extras="hub,data"

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
    BATCH_SIZE, EPOCHS, TRAIN_IMAGES = 16, 4, 32
else:
    ALPHA, WEIGHTS, IMAGE_SIZE = 1.0, "imagenet", 224
    BATCH_SIZE, EPOCHS, TRAIN_IMAGES = 32, 3, 1024  # a brief fine-tuning
print(f"smoke mode: {SMOKE}; MobileNetV2CA alpha={ALPHA}, weights={WEIGHTS!r}, "
      f"{IMAGE_SIZE}x{IMAGE_SIZE} inputs; outputs in {OUT}")

# %% [markdown]
# ## Export a feature-vector SavedModel
#
# `freeze_batch_norm=True` exports the BatchNormalization layers in inference mode, so
# fine-tuning on small batches cannot disturb their ImageNet statistics (the usual
# choice for transfer learning). `weights` is only recorded in the model card written
# next to the SavedModel.

# %%
import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from keras_coordatt.applications import MobileNetV2CA, preprocess_input
from keras_coordatt.export.hub import export_hub, import_tensorflow_hub
from keras_coordatt.training import build_for_fit

backbone = MobileNetV2CA(
    input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
    alpha=ALPHA,
    weights=WEIGHTS,
    include_top=False,
    pooling="avg",
)
export = export_hub(
    backbone,
    OUT / "mobilenetv2_ca_feature_vector",
    kind="feature_vector",
    weights=WEIGHTS,
    freeze_batch_norm=True,
    overwrite=True,
)
print(export)

# %% [markdown]
# The beginning of the model card:

# %%
print("\n".join(export.model_card.read_text().splitlines()[:30]))

# %% [markdown]
# ## Data: tf_flowers scaled to [0, 1]
#
# The SavedModel normalises its input itself, so the pipeline only resizes and scales
# to [0, 1] (no `preprocess_input`). A subset of `TRAIN_IMAGES` images keeps the
# fine-tuning brief.

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
def to_unit_range(image, label):
    return tf.image.resize(image, (IMAGE_SIZE, IMAGE_SIZE)) / 255.0, label


train_ds = (
    train_raw.take(TRAIN_IMAGES)
    .map(to_unit_range)
    .shuffle(1000, seed=0)
    .map(lambda x, y: (tf.image.random_flip_left_right(x), y))
    .batch(BATCH_SIZE)
    .prefetch(tf.data.AUTOTUNE)
)
images, labels = next(iter(train_ds))

# %% [markdown]
# ## Load it: tf_keras with `hub.KerasLayer`, Keras 3 with `TFSMLayer`
#
# `hub.KerasLayer` is a tf_keras (Keras 2) layer; `import_tensorflow_hub()` is
# `import tensorflow_hub` plus a fix for tensorflow-hub 0.16.1 under setuptools >= 82
# (which removed the `pkg_resources` module it imports). In Keras 3,
# `keras.layers.TFSMLayer` calls the `serve` endpoint for inference and
# `serve_training` in training. Both must give the features of the original Keras
# backbone, which takes normalised images: `preprocess_input(255 * images)`.

# %%
import tf_keras

hub = import_tensorflow_hub()
hub_layer = hub.KerasLayer(str(export.path), trainable=True)
tfsm_layer = keras.layers.TFSMLayer(
    export.path,
    call_endpoint="serve",
    call_training_endpoint="serve_training",
    trainable=True,
)

reference = backbone.predict(preprocess_input(255.0 * images), verbose=0)
for name, layer in [("hub.KerasLayer", hub_layer), ("TFSMLayer", tfsm_layer)]:
    features = np.asarray(layer(images))
    np.testing.assert_allclose(features, reference, rtol=1e-3, atol=1e-3)
    print(f"{name}: features {features.shape} match the Keras model")

# %% [markdown]
# ## Fine-tune in tf_keras
#
# The hub layer sits in a tf_keras `Sequential` model with a new classifier; with
# `trainable=True` its weights are fine-tuned along with the head.

# %%
hub_model = tf_keras.Sequential(
    [
        tf_keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
        hub_layer,
        tf_keras.layers.Dense(NUM_CLASSES),
    ]
)
hub_model.compile(
    optimizer=tf_keras.optimizers.Adam(1e-4),
    loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
build_for_fit(hub_model, train_ds)  # optimizer state made now: fit traces its step once
hub_history = hub_model.fit(train_ds, epochs=EPOCHS, verbose=2)

# %% [markdown]
# ## Fine-tune in Keras 3
#
# The same with `TFSMLayer`. One Keras 3.15 limitation: the variables of a
# `TFSMLayer` keep TensorFlow names ending in `:0`, which optimizers that keep a state
# per variable (Adam, SGD with momentum) cannot use to name that state, so `fit` fails
# with "is not a valid scope name". Plain SGD keeps no state and works; gradient
# clipping keeps its first steps on the whole backbone stable.

# %%
keras_model = keras.Sequential(
    [
        keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 3)),
        tfsm_layer,
        keras.layers.Dense(NUM_CLASSES),
    ]
)
keras_model.compile(
    optimizer=keras.optimizers.SGD(learning_rate=0.005, clipnorm=1.0),  # no momentum
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)
build_for_fit(keras_model, train_ds)  # optimizer state made now: fit traces its step once
keras_history = keras_model.fit(train_ds, epochs=EPOCHS, verbose=2)

# %% [markdown]
# ## The loss goes down

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for name, history in [("tf_keras + hub.KerasLayer", hub_history),
                      ("Keras 3 + TFSMLayer", keras_history)]:
    losses = history.history["loss"]
    ax.plot(np.arange(1, len(losses) + 1), losses, "o-", label=name)
    print(f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
ax.set(xlabel="epoch", ylabel="training loss", title="Fine-tuning the SavedModel",
       xticks=np.arange(1, EPOCHS + 1))
ax.legend()
fig.savefig(OUT / "hub_fine_tuning_loss.png", dpi=80, bbox_inches="tight")
plt.show()

# %% [markdown]
# To publish the export, upload the directory (with its `MODEL_CARD.md`) to Kaggle
# Models; `keras-coordatt export-hub --help` does the same export from the command
# line.
