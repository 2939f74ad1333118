# The source of 06_detection.ipynb, in jupytext's percent format: edit it, then run
# `python notebooks/build_notebooks.py` and commit both (see notebooks/README.md).
# Notebook style: imports where a cell first needs them; zip over figure axes and
# batches that may be shorter than the grid (smoke mode).
# ruff: noqa: E402, B905

# %% [markdown]
# # Object detection: SSDLite with Coordinate Attention on Pascal VOC 2007
#
# {{COLAB_BADGE}}
#
# The CA paper's second downstream task is detection: SSDLite320 with a MobileNetV2 + CA
# backbone gets 24.5 AP on COCO (22.3 without attention) and 73.1 mAP on VOC 2007.
# `keras_coordatt.tasks.SSDLite` builds that detector on any backbone of the package. This
# notebook:
#
# 1. loads Pascal VOC 2007 from TensorFlow Datasets (`voc/2007`: 5,011 trainval and 4,952
#    test photos, 20 classes, boxes with a *difficult* flag);
# 2. builds the `tf.data` pipeline of `keras_coordatt.tasks.detection_data` with the SSD
#    augmentation (photometric distortion, zoom-out, IoU-constrained crop, flip: boxes move
#    with the pixels);
# 3. fine-tunes an SSDLite on an ImageNet-pretrained MobileNetV2CA;
# 4. draws its boxes over held-out photos and scores it with COCO's own metric
#    (pycocotools: AP, AP50, AP75);
# 5. exports an int8 TFLite detector that ends in the standard
#    `TFLite_Detection_PostProcess` op (boxes, classes, scores, count: what LiteRT and
#    MediaPipe expect) and checks, box by box, that it finds what the Keras model finds.
#
# The same steps with the paper's full COCO / VOC settings, checkpoints and float32 / PTQ /
# QAT exports are the programs in `applications/detection/`. Use a GPU runtime.

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
    ALPHA, WEIGHTS, IMAGE_SIZE = 0.5, "../tests/data/checkpoints/mbv2_ca_w0.5.pth", 128
    BATCH_SIZE, EPOCHS, STEPS, VAL_BATCHES, LEARNING_RATE = 4, 1, 2, 2, 0.01
    CALIBRATION_IMAGES, DRAW_SCORE = 4, 0.0
    # A barely trained detector scores nothing above 0.5 and its near-tied scores move under
    # int8 rounding: smoke mode prints the agreement but does not check it.
    MIN_AGREEMENT = 0.0
else:
    ALPHA, WEIGHTS, IMAGE_SIZE = 1.0, "imagenet", 320  # SSDLite320, as in the paper
    BATCH_SIZE, EPOCHS, STEPS, VAL_BATCHES, LEARNING_RATE = 32, 30, None, 16, 0.01
    CALIBRATION_IMAGES, DRAW_SCORE = 64, 0.4
    MIN_AGREEMENT = 0.95  # >= 95 % of the Keras boxes above 0.5 found again with IoU >= 0.9
print(f"smoke mode: {SMOKE}; MobileNetV2CA alpha={ALPHA}, weights={WEIGHTS!r}, "
      f"{IMAGE_SIZE}x{IMAGE_SIZE} inputs; outputs in {OUT}")

# %% [markdown]
# ## The data
#
# `tfds_source("voc/2007", split)` reads the TFDS set as `(encoded image, boxes, labels,
# ignore)` per photo: boxes relative `yxyx` (TFDS' own convention), labels 0..19, and
# `ignore` for the *difficult* boxes, which neither train nor count in the evaluation (as in
# VOC's own protocol). `"train"` is VOC 2007 trainval, `"val"` its test split.

# %%
import contextlib
import io

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from keras_coordatt.tasks import detection_data as dd


def mock_voc(builder, *args, decoders=None, **kwargs):
    """Smoke mode: real Penn-Fudan street photos as VOC photos of the class 'person'."""
    folder = Path("../tests/data/pennfudan_instances")
    names = sorted(p.name[: -len("_mask.png")] for p in folder.glob("*_mask.png"))
    person = builder.info.features["objects"]["label"].str2int("person")
    skip_decoding = "image" in (decoders or {})  # tfds_source reads the encoded bytes

    def examples():
        for i in range(16):
            name = names[i % len(names)]
            boxes = dd.mask_boxes(np.asarray(Image.open(folder / f"{name}_mask.png")))
            photo = Image.open(folder / f"{name}.png").convert("RGB")
            encoded = io.BytesIO()
            photo.save(encoded, format="JPEG")
            n = len(boxes)
            yield {
                "image": encoded.getvalue() if skip_decoding else np.asarray(photo),
                "image/filename": f"{name}.jpg",
                "objects": {"bbox": boxes, "label": np.full(n, person),
                            "is_difficult": np.zeros(n, bool),
                            "is_truncated": np.zeros(n, bool), "pose": np.zeros(n, int)},
                "labels": np.full(n, person), "labels_no_difficult": np.full(n, person),
            }

    spec = builder.info.features.get_tensor_spec()
    if skip_decoding:
        spec["image"] = tf.TensorSpec((), tf.string)
    return tf.data.Dataset.from_generator(examples, output_signature=spec)


data_source = tfds.testing.mock_data(as_dataset_fn=mock_voc) if SMOKE else (
    contextlib.nullcontext())
with data_source:
    train_source = dd.tfds_source("voc/2007", "train")
    val_source = dd.tfds_source("voc/2007", "val")
CLASS_NAMES = train_source.class_names
print(f"{train_source.num_examples} training and {val_source.num_examples} held-out photos; "
      f"classes: {', '.join(CLASS_NAMES)}")

# %% [markdown]
# ## The input pipeline
#
# `train_batches` decodes each photo, applies the SSD augmentation to the photo and its boxes
# together, resizes to `IMAGE_SIZE` (the SSD convention: the aspect ratio is not kept) and
# applies `preprocess_input`. Labels come in keras-hub's form: `{"boxes": (B, M, 4),
# "labels": (B, M)}` in the detector's `bounding_box_format`, padded with label -1. Epoch `e`
# is a function of `(seed, e)` only, so a resumed run reads the same data.
# `coco_batches` gives the held-out photos once, unaugmented, with their original sizes for
# the COCO metric.

# %%
FORMAT = "xyxy"  # pixels of the IMAGE_SIZE input, as keras-hub detectors take them
steps = STEPS or dd.steps_per_epoch(train_source, BATCH_SIZE)
train_ds = dd.train_batches(train_source, IMAGE_SIZE, BATCH_SIZE, EPOCHS, seed=0,
                            bounding_box_format=FORMAT, steps=steps)
val_batches = list(dd.coco_batches(val_source, IMAGE_SIZE, BATCH_SIZE).take(VAL_BATCHES))
print(f"{steps} steps of {BATCH_SIZE} photos per epoch; "
      f"{sum(len(images) for images, _ in val_batches)} held-out photos to score")

# %% [markdown]
# ## The detector
#
# `SSDLite(backbone, num_classes)` taps the backbone's wide stride-16 expansion tensor and
# its stride-32 features, adds four inverted-residual layers down to six levels (20 / 10 /
# 5 / 3 / 2 / 1 cells at 320x320) and separable-convolution box and class predictors over
# SSD anchors. Its `compile()` default is the paper's COCO setting (focal loss, Huber box
# loss, SGD); `compile(loss="hard_negative")` is the VOC one. Here: the default losses, SGD
# with momentum and a warm-up + cosine schedule for a short fine-tune.

# %%
import keras

from keras_coordatt.applications import MobileNetV2CA
from keras_coordatt.tasks import SSDLite

keras.utils.set_random_seed(0)
backbone = MobileNetV2CA((IMAGE_SIZE, IMAGE_SIZE, 3), alpha=ALPHA, weights=WEIGHTS,
                         include_top=False)
model = SSDLite(backbone, num_classes=len(CLASS_NAMES), bounding_box_format=FORMAT)
schedule = keras.optimizers.schedules.CosineDecay(
    0.0, decay_steps=steps * EPOCHS, warmup_target=LEARNING_RATE,
    warmup_steps=min(500, steps * EPOCHS // 10),
)
model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=4e-5))
history = model.fit(train_ds, epochs=EPOCHS, steps_per_epoch=steps, verbose=2)
model.save(OUT / "voc_ssdlite_ca.keras")

# %% [markdown]
# ## Boxes over held-out photos, and COCO AP
#
# `predict` decodes the box encodings, applies non-max suppression and returns keras-hub's
# dict: `boxes` in `bounding_box_format`, `labels`, `confidence`, `num_detections`.
# `coco_evaluate` runs it over the held-out batches and scores it with pycocotools'
# `COCOeval` (boxes back in pixels of the original photos, difficult boxes as crowd).

# %%
import matplotlib.pyplot as plt

from keras_coordatt.applications.imagenet_utils import IMAGENET_MEAN, IMAGENET_STD
from keras_coordatt.tasks.detection_metrics import coco_evaluate, relative_detections

metrics, _, _ = coco_evaluate(model.predict_on_batch, val_batches, CLASS_NAMES, FORMAT,
                              IMAGE_SIZE)
print(f"Keras model: AP {metrics['AP']:.3f}, AP50 {metrics['AP50']:.3f}, "
      f"AP75 {metrics['AP75']:.3f}")

images, truth = val_batches[0]
keras_found = relative_detections(model.predict_on_batch(images), FORMAT, IMAGE_SIZE)
photos = np.clip(np.asarray(images) * IMAGENET_STD + IMAGENET_MEAN, 0, 1)


def draw(ax, photo, boxes, labels, scores=None, colour="lime"):
    """Relative yxyx boxes over a photo, with class names (and scores)."""
    ax.imshow(photo)
    height, width = photo.shape[:2]
    for k, ((y0, x0, y1, x1), label) in enumerate(zip(boxes, labels)):
        ax.add_patch(plt.Rectangle((x0 * width, y0 * height), (x1 - x0) * width,
                                   (y1 - y0) * height, fill=False, color=colour, lw=2))
        text = CLASS_NAMES[label] + ("" if scores is None else f" {scores[k]:.2f}")
        ax.text(x0 * width, y0 * height, text, color="black", fontsize=7,
                bbox={"facecolor": colour, "alpha": 0.8, "pad": 1})
    ax.axis("off")


def shown(found, i, limit=5):
    """The detections of image ``i`` to draw: above DRAW_SCORE, at most ``limit``."""
    count = int(found["num_detections"][i])
    keep = np.flatnonzero(found["confidence"][i, :count] >= DRAW_SCORE)[:limit]
    return found["boxes"][i, keep], found["labels"][i, keep], found["confidence"][i, keep]


n = min(4, len(photos))
fig, axes = plt.subplots(2, n, figsize=(3.5 * n, 7), squeeze=False)
for column, photo in zip(range(n), photos):
    real = np.asarray(truth["labels"][column]) >= 0
    draw(axes[0, column], photo, np.asarray(truth["boxes"][column])[real],
         np.asarray(truth["labels"][column])[real], colour="orange")
    axes[0, column].set_title("ground truth")
    draw(axes[1, column], photo, *shown(keras_found, column))
    axes[1, column].set_title("Keras SSDLite-CA")
fig.suptitle(f"Held-out photos (AP50 {metrics['AP50']:.1%} on {VAL_BATCHES} batches)")
fig.savefig(OUT / "detections.png", dpi=80, bbox_inches="tight")
plt.show()

# %% [markdown]
# ## An int8 TFLite detector with the post-processing op, checked box by box
#
# `export_detector_tflite(mode="int8")` calibrates the network's ranges on training photos,
# quantizes every op between the input and the box / score outputs to int8 (it raises if one
# is left in float), and appends `TFLite_Detection_PostProcess`: the anchors, the box coder's
# scales and the detector's NMS settings go into the file, and it returns the four standard
# outputs. `run_detector_tflite` runs it with the LiteRT interpreter and returns the dict of
# `predict` (relative `yxyx` boxes). `detection_agreement` takes every Keras detection with
# a score of at least 0.5 and looks for a box of the same class in the same photo from the
# file: the share found with IoU >= 0.9 is the check.

# %%
import collections

from keras_coordatt.export import export_detector_tflite, inspect_tflite, run_detector_tflite
from keras_coordatt.tasks.detection_metrics import detection_agreement

calibration = np.concatenate([np.asarray(x) for x, _ in dd.eval_batches(
    train_source, IMAGE_SIZE, BATCH_SIZE).take(-(-CALIBRATION_IMAGES // BATCH_SIZE))])
int8_path = export_detector_tflite(model, OUT / "voc_ssdlite_ca_int8.tflite", "int8",
                                   calibration[:CALIBRATION_IMAGES])
ops = collections.Counter(op.name for op in inspect_tflite(int8_path))
print(f"{int8_path}: {os.path.getsize(int8_path) / 2**20:.2f} MB; ops: {dict(ops)}")


def run_int8(images):
    return run_detector_tflite(int8_path, np.asarray(images))


int8_metrics, _, _ = coco_evaluate(run_int8, val_batches, CLASS_NAMES, "rel_yxyx", IMAGE_SIZE)
reference = [relative_detections(model.predict_on_batch(x), FORMAT, IMAGE_SIZE)
             for x, _ in val_batches]
found = [run_int8(x) for x, _ in val_batches]
agreement = detection_agreement(reference, found, min_score=0.5, min_iou=0.9)
print(f"int8 TFLite: AP {int8_metrics['AP']:.3f}, AP50 {int8_metrics['AP50']:.3f} "
      f"(Keras {metrics['AP']:.3f} / {metrics['AP50']:.3f})")
share = agreement["matched_share"]
print(f"{agreement['compared']} Keras detections >= 0.5: "
      + ("none to compare" if share is None else
         f"{share:.1%} found again with IoU >= 0.9 (mean IoU {agreement['mean_iou']:.3f})"))
if MIN_AGREEMENT > 0:
    assert share is not None and share >= MIN_AGREEMENT, "the int8 file disagrees with Keras"

fig, axes = plt.subplots(2, n, figsize=(3.5 * n, 7), squeeze=False)
for column, photo in zip(range(n), photos):
    draw(axes[0, column], photo, *shown(keras_found, column))
    axes[0, column].set_title("Keras float32")
    draw(axes[1, column], photo, *shown(found[0], column), colour="deepskyblue")
    axes[1, column].set_title("int8 TFLite")
fig.savefig(OUT / "int8_agreement.png", dpi=80, bbox_inches="tight")
plt.show()

# %% [markdown]
# The file takes the same preprocessed float images as the Keras model. For a phone, export
# with `input_type="uint8"` (the file normalises raw RGB pixels itself) and
# `labels=CLASS_NAMES`: that writes the TFLite metadata MediaPipe's `ObjectDetector` reads
# (see the README's detection section). `applications/detection/export.py` also writes the
# float32 and the quantization-aware-trained int8 files and reports all three.
