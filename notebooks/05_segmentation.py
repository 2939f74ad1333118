# The source of 05_segmentation.ipynb, in jupytext's percent format: edit it, then run
# `python notebooks/build_notebooks.py` and commit both (see notebooks/README.md).
# Notebook style: imports where a cell first needs them; zip over figure axes and
# batches that may be shorter than the grid (smoke mode).
# ruff: noqa: E402, B905

# %% [markdown]
# # Semantic segmentation: DeepLabV3 with Coordinate Attention on Oxford-IIIT Pets
#
# {{COLAB_BADGE}}
#
# The CA paper's strongest case is dense prediction: on Pascal VOC, DeepLabV3 with a
# MobileNetV2 + CA backbone beats the same model with SE or CBAM by about 2 mIoU.
# `keras_coordatt.tasks.DeepLabV3` puts that head (ASPP with image pooling, rates from the
# backbone's output stride) on any backbone of the package. This notebook:
#
# 1. loads `oxford_iiit_pet` from TensorFlow Datasets: photos of cats and dogs with a
#    *trimap* per photo (pet / background / border);
# 2. builds the `tf.data` pipeline of `keras_coordatt.tasks.segmentation_data` (random
#    scale, padded crop and flip applied to the photo and its mask together);
# 3. fine-tunes a CA DeepLabV3 (ImageNet-pretrained MobileNetV2CA, output stride 16) with
#    SGD and the poly schedule, as the paper's recipe;
# 4. draws the predicted masks over held-out photos and reports mIoU;
# 5. exports a full-integer (int8) TFLite model and checks, pixel by pixel, that it
#    predicts what the Keras model predicts.
#
# The same steps for Pascal VOC / Cityscapes folders, with checkpoints and float32 / PTQ /
# QAT exports, are the programs in `applications/segmentation/`. Use a GPU runtime.

# %% include="install" extras="tf,litert,data"

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
    ALPHA, WEIGHTS = 0.5, "../tests/data/checkpoints/mbv2_ca_w0.5.pth"
    IMAGE_SIZE, BASE_SIZE = 96, 104
    BATCH_SIZE, EPOCHS, STEPS, VAL_IMAGES, LEARNING_RATE = 4, 1, 2, 4, 0.01
    CALIBRATION_IMAGES = 4
    # A barely trained network has near-tied logits that int8 rounding flips: smoke mode
    # prints the agreement but does not check it.
    MIN_AGREEMENT = 0.0
else:
    ALPHA, WEIGHTS = 1.0, "imagenet"
    IMAGE_SIZE, BASE_SIZE = 256, 288
    BATCH_SIZE, EPOCHS, STEPS, VAL_IMAGES, LEARNING_RATE = 16, 10, None, 512, 0.01
    CALIBRATION_IMAGES = 64
    MIN_AGREEMENT = 0.97  # int8 and Keras argmax must agree on >= 97 % of the pixels
print(f"smoke mode: {SMOKE}; MobileNetV2CA alpha={ALPHA}, weights={WEIGHTS!r}, "
      f"{IMAGE_SIZE}x{IMAGE_SIZE} crops; outputs in {OUT}")

# %% [markdown]
# ## The data
#
# `segmentation_source("tfds", ...)` loads a TFDS set as `(image, mask)` pairs: `uint8`
# photos and `uint8` masks of the same size. For `oxford_iiit_pet` it maps TFDS' trimap
# values 1 / 2 / 3 to the classes 0 *pet*, 1 *background*, 2 *border* (the presets in
# `TFDS_PRESETS` also know `cityscapes`; VOC-layout folders and Penn-Fudan have their own
# sources). `"train"` / `"val"` are the set's `train` / `test` splits.

# %%
import contextlib

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from keras_coordatt.tasks import segmentation_data as sd


def mock_pets(builder, *args, **kwargs):
    """Smoke mode: real Penn-Fudan street photos dressed as pets (person -> 'pet')."""
    folder = Path("../tests/data/pennfudan_instances")
    names = sorted(p.name[: -len("_mask.png")] for p in folder.glob("*_mask.png"))

    def examples():
        for i in range(16):
            name = names[i % len(names)]
            mask = np.asarray(Image.open(folder / f"{name}_mask.png"))
            yield {
                "image": np.asarray(Image.open(folder / f"{name}.png").convert("RGB")),
                "segmentation_mask": np.where(mask > 0, 1, 2).astype(np.uint8)[..., None],
                "label": 0, "species": 0, "file_name": name,
                "head_bbox": np.zeros(4, np.float32),
            }

    features = builder.info.features
    return tf.data.Dataset.from_generator(
        examples, output_types=features.dtype, output_shapes=features.shape
    )


data_source = tfds.testing.mock_data(as_dataset_fn=mock_pets) if SMOKE else (
    contextlib.nullcontext())
with data_source:
    train_raw, CLASS_NAMES = sd.segmentation_source("tfds", "train", tfds_name="oxford_iiit_pet")
    val_raw, _ = sd.segmentation_source("tfds", "val", tfds_name="oxford_iiit_pet")
NUM_CLASSES = len(CLASS_NAMES)
print(CLASS_NAMES)

# %% [markdown]
# ## The input pipeline
#
# Training pairs are resized so their shorter side is `BASE_SIZE`, then augmented as in
# DeepLab: a random scale in [0.5, 2.0] (photo bilinear, mask nearest-neighbour so labels
# stay labels), padding to the crop size (photo with the mean pixel, mask with the ignore
# label 255), a random crop and a horizontal flip, at the same place in both. Validation
# photos are resized (longer side `IMAGE_SIZE`) and padded square; padded pixels are
# labelled 255, so neither the loss nor the mIoU counts them. Both end with
# `preprocess_input`, the backbone's normalisation.

# %%
train_ds = sd.train_pipeline(
    train_raw, IMAGE_SIZE, BATCH_SIZE, base_size=BASE_SIZE, num_classes=NUM_CLASSES, seed=0,
    cache=SMOKE,
).repeat()
val_ds = sd.eval_pipeline(val_raw.take(VAL_IMAGES), IMAGE_SIZE, BATCH_SIZE,
                          num_classes=NUM_CLASSES, cache=True)
steps = STEPS or 3680 // BATCH_SIZE  # 3,680 training photos

# %% [markdown]
# ## The model
#
# `DeepLabV3(backbone, num_classes)` takes a backbone built with `include_top=False`;
# with `output_stride=16` the last stage keeps a stride of 16 and dilates its convolutions
# instead, and ASPP uses the rates 6 / 12 / 18. Its `compile()` defaults are the
# segmentation ones: sparse cross-entropy that skips the ignore label, and `MeanIoU`. We
# pass our optimizer: SGD with momentum 0.9 and the poly schedule.

# %%
import keras

from keras_coordatt.applications import MobileNetV2CA
from keras_coordatt.tasks import DeepLabV3
from keras_coordatt.training import build_for_fit

keras.utils.set_random_seed(0)
backbone = MobileNetV2CA(
    input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), alpha=ALPHA, weights=WEIGHTS,
    include_top=False, output_stride=16,
)
model = DeepLabV3(backbone, NUM_CLASSES)
schedule = keras.optimizers.schedules.PolynomialDecay(
    LEARNING_RATE, decay_steps=steps * EPOCHS, end_learning_rate=0.0, power=0.9
)
model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=4e-5))
build_for_fit(model, train_ds)  # optimizer state made now: fit traces its step once
history = model.fit(train_ds, epochs=EPOCHS, steps_per_epoch=steps, validation_data=val_ds,
                    verbose=2)

# %% [markdown]
# ## Predicted masks over held-out photos
#
# `segmentation_scores` runs a predict function over the validation batches and counts a
# confusion matrix of the labelled pixels: mIoU and the IoU of each class.

# %%
import matplotlib.pyplot as plt

from keras_coordatt.applications.imagenet_utils import IMAGENET_MEAN, IMAGENET_STD


def keras_predict(images):
    return model.predict_on_batch(images)


scores = sd.segmentation_scores(keras_predict, val_ds, NUM_CLASSES)
print(f"Keras model: mIoU {scores['mean_iou']:.1%}; "
      + ", ".join(f"{n} {v:.1%}" for n, v in zip(CLASS_NAMES, scores["iou"])))

images, masks = next(iter(val_ds))
predicted = model.predict_on_batch(images).argmax(-1)
photos = np.clip((images.numpy() * IMAGENET_STD + IMAGENET_MEAN), 0, 1)
colours = np.array([[1.0, 0.5, 0.0], [0.0, 0.0, 0.0], [0.2, 0.6, 1.0]])  # pet, bg, border


def overlay(photo, labels):
    valid = labels < NUM_CLASSES
    painted = photo.copy()
    painted[valid] = 0.55 * photo[valid] + 0.45 * colours[labels[valid]]
    return painted


n = min(4, len(photos))
fig, axes = plt.subplots(2, n, figsize=(3 * n, 6), squeeze=False)
for column, photo, mask, guess in zip(range(n), photos, masks.numpy(), predicted):
    axes[0, column].imshow(overlay(photo, mask))
    axes[1, column].imshow(overlay(photo, guess))
    axes[0, column].set_title("true trimap")
    axes[1, column].set_title("predicted")
for ax in axes.ravel():
    ax.axis("off")
fig.suptitle(f"CA DeepLabV3 on held-out photos (mIoU {scores['mean_iou']:.1%})")
fig.savefig(OUT / "pet_predictions.png", dpi=80, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## An int8 TFLite segmenter, checked pixel by pixel
#
# `export_tflite(mode="int8")` quantizes every op to int8 after calibrating the ranges on
# training images (post-training quantization; `applications/segmentation/export.py` also
# writes the float32 file and a quantization-aware-trained one). Then the LiteRT interpreter
# runs the file over the validation photos, and we count the labelled pixels where its
# argmax equals the Keras model's.

# %%
from keras_coordatt.export import LiteRTModel, export_tflite

calibration = np.concatenate(
    [x for x, _ in sd.eval_pipeline(train_raw.take(CALIBRATION_IMAGES), IMAGE_SIZE, BATCH_SIZE)]
)
int8_path = export_tflite(model, OUT / "pets_deeplabv3_ca_int8.tflite", mode="int8",
                          representative_dataset=calibration)
int8 = LiteRTModel(int8_path)
int8_scores = sd.segmentation_scores(int8, val_ds, NUM_CLASSES, reference=keras_predict)
print(f"int8 TFLite ({os.path.getsize(int8_path) / 2**20:.2f} MB): mIoU "
      f"{int8_scores['mean_iou']:.1%} (Keras {scores['mean_iou']:.1%}); same class as the "
      f"Keras model on {int8_scores['agreement']:.2%} of the labelled pixels")
assert int8_scores["agreement"] >= MIN_AGREEMENT, "the int8 file disagrees with Keras"

int8_predicted = int8(images.numpy()).argmax(-1)
fig, axes = plt.subplots(2, n, figsize=(3 * n, 6), squeeze=False)
for column, photo, keras_mask, int8_mask in zip(range(n), photos, predicted, int8_predicted):
    axes[0, column].imshow(overlay(photo, keras_mask))
    axes[1, column].imshow(overlay(photo, int8_mask))
    axes[0, column].set_title("Keras float32")
    axes[1, column].set_title(f"int8 TFLite ({(keras_mask == int8_mask).mean():.1%} same)")
for ax in axes.ravel():
    ax.axis("off")
fig.savefig(OUT / "int8_agreement.png", dpi=80, bbox_inches="tight")
plt.show()

# %% [markdown]
# The int8 file takes the same preprocessed float images as the Keras model and returns
# per-pixel logits at the input size; `argmax(-1)` is the mask. For a uint8-input file that
# MediaPipe's `ImageSegmenter` runs, see the README's segmentation section.
