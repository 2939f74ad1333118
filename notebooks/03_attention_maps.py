# The source of 03_attention_maps.ipynb, in jupytext's percent format: edit it, then run
# `python notebooks/build_notebooks.py` and commit both (see notebooks/README.md).
# Notebook style: imports where a cell first needs them; zip over figure axes and
# batches that may be shorter than the grid (smoke mode).
# ruff: noqa: E402, B905

# %% [markdown]
# # What Coordinate Attention looks at
#
# {{COLAB_BADGE}}
#
# A Coordinate Attention (CA) block pools its input `x` (height H, width W, C
# channels) along each direction separately and turns the two pooled descriptors into
# two gates: `a_h` of shape (H, 1, C), one weight per *row*, and `a_w` of shape
# (1, W, C), one weight per *column*. Its output is `x * a_h * a_w`, so for every
# channel the effective gate is the outer product `a_h ⊗ a_w`: large where both the
# row and the column matter. Unlike Squeeze-and-Excitation (SE), which gives one
# weight per channel and no position at all, CA keeps positional information.
#
# This notebook draws those gates over real ImageNet photos, for blocks at several
# depths of an ImageNet-pretrained MobileNetV2-CA, and then compares CA with SE and
# CBAM trained the same way, in the spirit of the paper's visualisations.
# `CoordAttention.gates(x)` returns `(a_h, a_w)`; `SqueezeExcite.gates(x)` the
# channel gate; `CBAM.gates(x)` its channel and spatial gates.

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
    WEIGHTS_LABEL = "random-init test checkpoint (smoke mode): no learned attention"
    BATCH_SIZE, EPOCHS = 16, 1
else:
    ALPHA, WEIGHTS, IMAGE_SIZE = 1.0, "imagenet", 224
    WEIGHTS_LABEL = "ImageNet-pretrained MobileNetV2-CA"
    BATCH_SIZE, EPOCHS = 32, 3
print(f"smoke mode: {SMOKE}; MobileNetV2CA alpha={ALPHA}, weights={WEIGHTS!r}, "
      f"{IMAGE_SIZE}x{IMAGE_SIZE} inputs; outputs in {OUT}")

# %% [markdown]
# ## Six ImageNet photos
#
# They come from the repository's test data (`tests/data/imagenet_small`), read from
# the clone when there is one and downloaded otherwise. Each is resized and
# centre-cropped to the model's input size.

# %%
import csv

import keras
import matplotlib.pyplot as plt
import numpy as np
from keras import ops
from PIL import Image, ImageOps

EXAMPLES = Path("../tests/data/imagenet_small")  # in a clone of the repository
EXAMPLES_URL = "{{RAW_URL}}/tests/data/imagenet_small"
CHOSEN = ("house_finch", "tree_frog", "brown_bear", "hamster", "bell_pepper",
          "mushroom")


def example_file(name):
    """A file of tests/data/imagenet_small: from the clone, else downloaded."""
    if (EXAMPLES / name).exists():
        return EXAMPLES / name
    url = f"{EXAMPLES_URL}/{name}"
    return Path(keras.utils.get_file(name, url, cache_subdir="keras_coordatt_examples"))


def load_image(path):
    """RGB uint8, resized and centre-cropped to IMAGE_SIZE x IMAGE_SIZE."""
    with Image.open(path) as image:
        size = (IMAGE_SIZE, IMAGE_SIZE)
        return np.asarray(ImageOps.fit(image.convert("RGB"), size, Image.BICUBIC))


with open(example_file("labels.csv"), newline="") as f:
    rows = [row for row in csv.DictReader(f) if row["name"] in CHOSEN]
images = np.stack([load_image(example_file(row["file"])) for row in rows])
names = [row["name"] for row in rows]
print(images.shape, names)

# %% [markdown]
# ## The pretrained model and its predictions
#
# With its ImageNet classifier, so we can see what it recognises.

# %%
from keras_coordatt import CBAM, CoordAttention, SqueezeExcite
from keras_coordatt.applications import (
    MobileNetV2CA,
    decode_predictions,
    preprocess_input,
)
from keras_coordatt.training import build_for_fit

model = MobileNetV2CA(
    input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), alpha=ALPHA, weights=WEIGHTS
)
inputs = preprocess_input(images)
top1 = decode_predictions(model.predict(inputs, verbose=0), top=1)
predicted = [top[0][1] for top in top1]
for name, guess in zip(names, predicted):
    print(f"{name:>12}: predicted {guess}")

# %% [markdown]
# ## CA gates at four depths
#
# MobileNetV2-CA has a CA block in each of its inverted-residual blocks 2-17, right
# after the depthwise convolution. We take the last block at each stride (4, 8, 16
# and 32 pixels per feature-map cell): a small model returns the input of these four
# blocks, and each block's `gates` method turns that input into `(a_h, a_w)`. To
# draw one map per block we average `a_h ⊗ a_w` over the channels; every map is
# min-max scaled for display, so compare shapes, not colours across panels.

# %%
STAGES = {
    "stride 4": "block3_ca",
    "stride 8": "block6_ca",
    "stride 16": "block13_ca",
    "stride 32": "block17_ca",
}
probe = keras.Model(
    model.input, [model.get_layer(name).input for name in STAGES.values()]
)
block_inputs = dict(zip(STAGES, probe(inputs)))


def ca_map(layer, x):
    """The channel mean of a CA block's gate a_h ⊗ a_w: (N, H, W)."""
    a_h, a_w = layer.gates(x)  # (N, H, 1, C) and (N, 1, W, C)
    return ops.convert_to_numpy(ops.mean(a_h * a_w, axis=-1))


def overlay(ax, image, attention, title=""):
    """Draws `attention` (any H x W, min-max scaled) over `image`."""
    attention = (attention - attention.min()) / (np.ptp(attention) + 1e-8)
    height, width = image.shape[:2]
    ax.imshow(image)
    ax.imshow(attention, cmap="jet", alpha=0.5, interpolation="bilinear",
              extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    ax.set_title(title, fontsize=9)
    ax.axis("off")


maps = {stage: ca_map(model.get_layer(name), block_inputs[stage])
        for stage, name in STAGES.items()}

# %%
fig, axes = plt.subplots(len(images), 1 + len(STAGES), figsize=(12, 2.5 * len(images)))
for row, (image, name, guess) in enumerate(zip(images, names, predicted)):
    axes[row, 0].imshow(image)
    axes[row, 0].set_title(f"{name}\n(predicted: {guess})", fontsize=9)
    axes[row, 0].axis("off")
    for col, stage in enumerate(STAGES, start=1):
        size = "x".join(map(str, maps[stage].shape[1:]))
        title = f"{STAGES[stage]}: {stage}, {size}"
        overlay(axes[row, col], image, maps[stage][row], title)
fig.suptitle(
    f"Coordinate Attention gates: channel mean of a_h ⊗ a_w\n{WEIGHTS_LABEL}"
)
fig.tight_layout()
fig.savefig(OUT / "ca_gates_by_stage.png", dpi=72, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## One gate up close
#
# The channel average hides how each channel's gate is built. Below, for the first
# image and the block at stride 16, are the four channels whose gate varies most over
# the image: the curve on top is `a_w` (one value per column), the curve on the left
# `a_h` (one value per row), and the map is their product `a_h ⊗ a_w`. Being the
# product of a row profile and a column profile, each map is brightest where a
# selected row meets a selected column, with fainter bands along them: that is how CA
# encodes position with two 1-D gates instead of one 2-D map.

# %%
from mpl_toolkits.axes_grid1 import make_axes_locatable

layer = model.get_layer(STAGES["stride 16"])
gates = layer.gates(block_inputs["stride 16"][:1])  # the first image only
a_h, a_w = (ops.convert_to_numpy(gate)[0] for gate in gates)
a_h, a_w = a_h[:, 0, :], a_w[0]  # (H, C) and (W, C)
product = a_h[:, None, :] * a_w[None, :, :]  # (H, W, C)
channels = np.argsort(product.reshape(-1, product.shape[-1]).std(axis=0))[::-1][:4]

fig, axes = plt.subplots(1, 5, figsize=(17, 3.8))
axes[0].imshow(images[0])
axes[0].set_title(names[0])
axes[0].axis("off")
for ax, channel in zip(axes[1:], channels):
    ax.imshow(product[:, :, channel], cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"channel {channel}: a_h ⊗ a_w")
    divider = make_axes_locatable(ax)
    top = divider.append_axes("top", size="25%", pad=0.05, sharex=ax)
    top.plot(a_w[:, channel], color="tab:red")
    top.set(ylim=(0, 1), xticks=[], ylabel="a_w")
    left = divider.append_axes("left", size="25%", pad=0.05, sharey=ax)
    left.plot(a_h[:, channel], np.arange(len(a_h)), color="tab:blue")
    left.set(xlim=(1, 0), yticks=[], xlabel="a_h")
fig.suptitle(f"Per-channel CA gates of {STAGES['stride 16']}\n{WEIGHTS_LABEL}")
fig.savefig(OUT / "ca_gate_anatomy.png", dpi=72, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## SE and CBAM for comparison
#
# No ImageNet checkpoints of MobileNetV2 with SE or CBAM come with the paper. For a
# like-for-like comparison we keep the pretrained backbone above, replace each of its
# 16 CA blocks by a *fresh* SE, CBAM or CA block, freeze everything else, and train
# the new blocks with a new classifier on `tf_flowers` for a few epochs. Only the
# attention type differs between the three models.
#
# `keras.models.clone_model` rebuilds the functional graph layer by layer; our
# `clone_function` returns a new attention block in place of each `CoordAttention`
# layer and the *same* (frozen) layer object for everything else, so the three models
# share the pretrained weights.

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
import tensorflow as tf


def resize(image, label):
    return tf.image.resize(image, (IMAGE_SIZE, IMAGE_SIZE)), label


def make_dataset(raw, training):
    ds = raw.map(resize)
    if training:
        ds = ds.shuffle(1000, seed=0)
        ds = ds.map(lambda x, y: (tf.image.random_flip_left_right(x), y))
    ds = ds.batch(BATCH_SIZE).map(lambda x, y: (preprocess_input(x), y))
    return ds.prefetch(tf.data.AUTOTUNE)


train_ds = make_dataset(train_raw, training=True)
val_ds = make_dataset(val_raw, training=False)

# %%
backbone = keras.Model(model.input, model.get_layer("avg_pool").output, name="backbone")
for layer in backbone.layers:
    layer.trainable = False

NEW_BLOCK = {
    "SE": lambda name: SqueezeExcite(reduction=24, name=name.replace("_ca", "_se")),
    "CBAM": lambda name: CBAM(reduction=24, name=name.replace("_ca", "_cbam")),
    "CA": lambda name: CoordAttention(reduction=32, name=name),
}


def with_new_attention(kind):
    """The frozen backbone, a fresh `kind` block for each CA block, a new head."""

    def swap(layer):  # called by clone_model for every layer of `backbone`
        if isinstance(layer, CoordAttention):
            return NEW_BLOCK[kind](layer.name)
        return layer  # shared, frozen

    body = keras.models.clone_model(backbone, clone_function=swap)
    outputs = keras.layers.Dense(NUM_CLASSES, name="flowers")(body.output)
    return keras.Model(body.input, outputs, name=f"mobilenetv2_{kind.lower()}_flowers")


variants = {}
for kind in NEW_BLOCK:
    variant = with_new_attention(kind)
    variant.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    build_for_fit(variant, train_ds)  # optimizer state made now: fit traces its step once
    history = variant.fit(train_ds, epochs=EPOCHS, verbose=0)
    print(f"{kind:>4}: training accuracy {history.history['accuracy'][-1]:.1%}")
    variants[kind] = variant

# %% [markdown]
# Now the block at stride 16 (`block13`) of each model, on four validation flowers:
#
# * **SE** has no spatial map: its gate is one number per channel (sorted bar chart).
#   The map next to it is the energy (L2 norm over channels) of the SE-gated
#   features: whatever spatial structure it shows comes from the features, not from
#   the attention.
# * **CBAM**'s spatial gate is a full H x W map, computed by a 7x7 convolution over
#   the channel-wise max and mean of the features: local evidence only.
# * **CA**'s map is the channel mean of `a_h ⊗ a_w`, built from whole rows and whole
#   columns: long-range context along one direction, exact position along the other.

# %%
flowers, _ = next(iter(val_raw.map(resize).batch(4)))
flowers = flowers.numpy().astype("uint8")
flower_inputs = preprocess_input(flowers)


def block_input(variant, name):
    """The input of layer `name` of `variant` for the four flowers."""
    probe = keras.Model(variant.input, variant.get_layer(name).input)
    return ops.convert_to_numpy(probe(flower_inputs))


se_x = block_input(variants["SE"], "block13_se")
se_gate = ops.convert_to_numpy(variants["SE"].get_layer("block13_se").gates(se_x))
se_gate = se_gate[:, 0, 0, :]  # (N, C): one weight per channel
se_energy = np.linalg.norm(se_x * se_gate[:, None, None, :], axis=-1)  # (N, H, W)

cbam_x = block_input(variants["CBAM"], "block13_cbam")
_, cbam_spatial = variants["CBAM"].get_layer("block13_cbam").gates(cbam_x)
cbam_map = ops.convert_to_numpy(cbam_spatial)[..., 0]  # (N, H, W)

ca_x = block_input(variants["CA"], "block13_ca")
ca_flower_map = ca_map(variants["CA"].get_layer("block13_ca"), ca_x)  # (N, H, W)

# %%
columns = ["image", "SE: channel gate", "SE: gated feature energy",
           "CBAM: spatial gate", "CA: a_h ⊗ a_w"]
fig, axes = plt.subplots(len(flowers), 5, figsize=(15, 2.9 * len(flowers)))
for row, image in enumerate(flowers):
    axes[row, 0].imshow(image)
    axes[row, 0].axis("off")
    gate = np.sort(se_gate[row])[::-1]
    axes[row, 1].bar(np.arange(len(gate)), gate, width=1.0, color="tab:orange")
    axes[row, 1].set(ylim=(0, 1), xlabel="channels, sorted", ylabel="gate")
    overlay(axes[row, 2], image, se_energy[row])
    overlay(axes[row, 3], image, cbam_map[row])
    overlay(axes[row, 4], image, ca_flower_map[row])
for ax, column in zip(axes[0], columns):
    ax.set_title(column, fontsize=10)
fig.suptitle(f"block13 of MobileNetV2 with fresh SE / CBAM / CA blocks trained on "
             f"tf_flowers\nbackbone: {WEIGHTS_LABEL}")
fig.tight_layout()
fig.savefig(OUT / "se_cbam_ca.png", dpi=72, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## What to look for
#
# * **Across depths** (first figure): the gates go from fine (stride 4) to coarse
#   (stride 32) grids. Compare where each depth puts its weight: on the object or
#   on the background, on its outline or on its whole extent.
# * **Per channel** (second figure): each channel picks its own rows and columns, so
#   one channel can select a horizontal band, another a vertical band, another the
#   box where the two meet. The channel mean of these rank-1 maps can take any shape.
# * **SE vs CBAM vs CA** (last figure): SE only says *which* channels matter, the same
#   everywhere; CBAM says *where*, from a local 7x7 window; CA says where from whole
#   rows and columns, the positional information the paper credits for its gains,
#   largest on detection and segmentation.
#
# With the smoke-mode checkpoint the weights are random, so the maps show no learned
# attention at all; run the notebook with the ImageNet weights to see the real thing.
