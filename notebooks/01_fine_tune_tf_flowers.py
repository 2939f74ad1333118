# The source of 01_fine_tune_tf_flowers.ipynb, in jupytext's percent format: edit it, then run
# `python notebooks/build_notebooks.py` and commit both (see notebooks/README.md).
# Notebook style: imports where a cell first needs them; zip over figure axes and
# batches that may be shorter than the grid (smoke mode).
# ruff: noqa: E402, B905

# %% [markdown]
# # Fine-tune MobileNetV2 with Coordinate Attention on tf_flowers
#
# {{COLAB_BADGE}}
#
# Coordinate Attention (CA; Hou, Zhou & Feng, CVPR 2021) is a light attention block
# for mobile networks: it pools the features along each spatial direction separately,
# so its gates know *where* (which rows and which columns) as well as *what* (which
# channels). `keras_coordatt.applications.MobileNetV2CA` is the paper's MobileNetV2
# with CA, with the authors' ImageNet weights.
#
# This notebook is a standard Keras transfer-learning recipe with it:
#
# 1. load `tf_flowers` (3,670 photos, 5 kinds of flowers) with TensorFlow Datasets;
# 2. build a `tf.data` input pipeline with data augmentation;
# 3. put a new classifier on the ImageNet-pretrained backbone and train it with the
#    backbone frozen;
# 4. unfreeze the top blocks and fine-tune them with a small learning rate;
# 5. plot the training curves and look at predictions on validation images;
# 6. save the model as a `.keras` file and check that the reloaded model gives the same
#    outputs.
#
# In Colab, use a GPU runtime (*Runtime > Change runtime type*).

# %% include="install" extras="tf,data"

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
    BATCH_SIZE, HEAD_EPOCHS, FINE_TUNE_EPOCHS = 16, 2, 1
else:
    ALPHA, WEIGHTS, IMAGE_SIZE = 1.0, "imagenet", 224
    BATCH_SIZE, HEAD_EPOCHS, FINE_TUNE_EPOCHS = 32, 5, 5
print(f"smoke mode: {SMOKE}; MobileNetV2CA alpha={ALPHA}, weights={WEIGHTS!r}, "
      f"{IMAGE_SIZE}x{IMAGE_SIZE} inputs; outputs in {OUT}")

# %% [markdown]
# ## The data
#
# `tf_flowers` has a single `train` split; we keep 85 % for training and 15 % for
# validation. `as_supervised=True` gives `(image, label)` pairs: `uint8` images of
# various sizes and integer labels.

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

# %% [markdown]
# ## The input pipeline
#
# Every image is resized to the model's input size. Training images are then shuffled
# and augmented with Keras preprocessing layers (random flips, rotations and zooms),
# which run inside `tf.data`, in parallel with training. Last comes
# `preprocess_input`, the normalisation the pretrained weights were trained with
# (RGB scaled to [0, 1], then ImageNet mean / std): the model expects normalised
# inputs, so the same function is needed whenever it is used later.

# %%
import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from keras_coordatt.applications import MobileNetV2CA, preprocess_input
from keras_coordatt.training import build_for_fit

AUTOTUNE = tf.data.AUTOTUNE
augment = keras.Sequential(
    [
        keras.layers.RandomFlip("horizontal"),
        keras.layers.RandomRotation(0.1),
        keras.layers.RandomZoom(0.15),
    ],
    name="augment",
)


def resize(image, label):
    return tf.image.resize(image, (IMAGE_SIZE, IMAGE_SIZE)), label  # float, 0-255


def make_dataset(raw, training):
    ds = raw.map(resize, num_parallel_calls=AUTOTUNE)
    if training:
        ds = ds.shuffle(1000, seed=0)
    ds = ds.batch(BATCH_SIZE)
    if training:
        ds = ds.map(
            lambda x, y: (augment(x, training=True), y), num_parallel_calls=AUTOTUNE
        )
    return ds.map(lambda x, y: (preprocess_input(x), y)).prefetch(AUTOTUNE)


train_ds = make_dataset(train_raw, training=True)
val_ds = make_dataset(val_raw, training=False)

# %% [markdown]
# What the augmentation does to one training image:

# %%
image, label = next(iter(train_raw.map(resize)))
variants = augment(tf.repeat(image[None], 8, axis=0), training=True)

fig, axes = plt.subplots(1, 8, figsize=(16, 2.6))
for ax, variant in zip(axes, variants):
    ax.imshow(np.clip(np.asarray(variant), 0, 255).astype("uint8"))
    ax.axis("off")
fig.suptitle(f"Random augmentations of one '{CLASS_NAMES[label]}' image")
fig.savefig(OUT / "augmentation.png", dpi=80, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## The model: pretrained backbone + new head
#
# `include_top=False, pooling="avg"` gives the backbone without its ImageNet
# classifier, ending in the 1280-channel global-average-pooled features. We add
# dropout and a `Dense` layer with one logit per flower class. Building the classifier
# from `backbone.input` and `backbone.output` keeps a single, flat functional model,
# which is what the QAT notebook (`02_qat_int8_tflite.ipynb`) expects.
#
# First the backbone is frozen, so only the new head learns.

# %%
backbone = MobileNetV2CA(
    input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
    alpha=ALPHA,
    weights=WEIGHTS,
    include_top=False,
    pooling="avg",
)
backbone.trainable = False

x = keras.layers.Dropout(0.2, name="dropout")(backbone.output)
outputs = keras.layers.Dense(NUM_CLASSES, name="flowers")(x)  # logits
model = keras.Model(backbone.input, outputs, name="flowers_mobilenetv2_ca")

trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
print(f"{model.count_params():,} parameters, {trainable:,} trainable")

# %% [markdown]
# ## Phase 1: train the head

# %%
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
build_for_fit(model, train_ds)  # optimizer state made now: fit traces its step once
history_head = model.fit(
    train_ds, validation_data=val_ds, epochs=HEAD_EPOCHS, verbose=2
)

# %% [markdown]
# ## Phase 2: fine-tune the top blocks
#
# Now the last stage of the backbone (blocks 14-17, at stride 32, with their CA blocks)
# and the final 1x1 convolution are unfrozen too. The BatchNormalization layers stay
# frozen: a frozen BatchNormalization layer runs in inference mode, so the small
# batches of fine-tuning do not disturb the statistics learnt on ImageNet. The
# learning rate is 10x smaller than before, so that the pretrained features are
# adjusted rather than overwritten. (`compile` again after changing `trainable`.)

# %%
TOP = ("block14_", "block15_", "block16_", "block17_", "head_")
for layer in backbone.layers:
    is_batch_norm = isinstance(layer, keras.layers.BatchNormalization)
    layer.trainable = layer.name.startswith(TOP) and not is_batch_norm
trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
print(f"{trainable:,} trainable parameters")

model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss, metrics=["accuracy"])
build_for_fit(model, train_ds)  # optimizer state made now: fit traces its step once
history_fine = model.fit(
    train_ds,
    validation_data=val_ds,
    epochs=HEAD_EPOCHS + FINE_TUNE_EPOCHS,
    initial_epoch=HEAD_EPOCHS,  # continue the epoch count of phase 1
    verbose=2,
)


# %% [markdown]
# ## Training curves

# %%
def curve(metric):
    return history_head.history[metric] + history_fine.history[metric]


epochs = np.arange(1, len(curve("loss")) + 1)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, metric in zip(axes, ("accuracy", "loss")):
    ax.plot(epochs, curve(metric), "o-", label="training")
    ax.plot(epochs, curve(f"val_{metric}"), "o-", label="validation")
    ax.axvline(HEAD_EPOCHS + 0.5, color="gray", linestyle="--", label="fine-tuning")
    ax.set(xlabel="epoch", xticks=epochs, title=metric)
    ax.legend()
fig.savefig(OUT / "training_curves.png", dpi=80, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## Predictions on validation images
#
# Titles give the predicted class, green when it is right and red when it is wrong.

# %%
images, labels = next(iter(val_raw.map(resize).batch(12)))
predicted = model.predict(preprocess_input(images), verbose=0).argmax(axis=-1)

fig, axes = plt.subplots(3, 4, figsize=(10, 8.5))
for ax, image, label, guess in zip(axes.flat, images, labels.numpy(), predicted):
    ax.imshow(image.numpy().astype("uint8"))
    ax.set_title(
        f"{CLASS_NAMES[guess]}\n(true: {CLASS_NAMES[label]})",
        color="green" if guess == label else "red",
        fontsize=10,
    )
    ax.axis("off")
fig.tight_layout()
fig.savefig(OUT / "validation_predictions.png", dpi=80, bbox_inches="tight")
plt.show()

val_loss, val_accuracy = model.evaluate(val_ds, verbose=0)
print(f"validation accuracy: {val_accuracy:.1%}")

# %% [markdown]
# ## Save and reload
#
# A `.keras` file holds the architecture, the weights and the optimizer state. The
# CoordAttention layers are registered Keras serializables, so `load_model` only needs
# `keras_coordatt` to be installed (importing it registers them); `compile=False`
# because we only need the reloaded model for inference. It must compute exactly what
# the trained one does.

# %%
path = OUT / "flowers_mobilenetv2_ca.keras"
model.save(path)
reloaded = keras.models.load_model(path, compile=False)

batch = next(iter(val_ds))[0]
np.testing.assert_allclose(
    reloaded.predict(batch, verbose=0), model.predict(batch, verbose=0), atol=1e-5
)
print(f"{path} ({path.stat().st_size / 2**20:.1f} MB): same outputs after reloading")

# %% [markdown]
# Next: `02_qat_int8_tflite.ipynb` turns this model into a full-integer (int8) TFLite
# model with quantization-aware training.
