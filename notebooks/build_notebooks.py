"""Writes the notebooks in this folder (stripped: no outputs, no execution counts).

The notebooks are generated from this file so that they stay consistent and easy to review:
edit the cells here, then run

    python notebooks/build_notebooks.py          # rewrite the .ipynb files
    python notebooks/build_notebooks.py --check  # exit 1 if a committed notebook is stale

``REPO_URL`` / ``BRANCH`` below are the *only* place that names the repository: the Colab
badges, the ``%pip install`` lines and the example-image download URLs are all derived from
them. To point the notebooks at a fork, change them and run the script.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat

REPO_URL = "https://github.com/keras-coordatt/keras-coordatt"
BRANCH = "main"

NOTEBOOKS_DIR = Path(__file__).resolve().parent
_SLUG = REPO_URL.removeprefix("https://github.com/").strip("/")
RAW_URL = f"https://raw.githubusercontent.com/{_SLUG}/{BRANCH}"
SMOKE_CHECKPOINT = "../tests/data/checkpoints/mbv2_ca_w0.5.pth"


# ---------------------------------------------------------------------------------------------
# Cell helpers


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(textwrap.dedent(text).strip())


def title(name: str, heading: str, intro: str) -> nbformat.NotebookNode:
    """The first cell: heading, Open-in-Colab badge and introduction."""
    colab = f"https://colab.research.google.com/github/{_SLUG}/blob/{BRANCH}/notebooks/{name}"
    badge = "https://colab.research.google.com/assets/colab-badge.svg"
    body = textwrap.dedent(intro).strip()
    return nbformat.v4.new_markdown_cell(
        f"# {heading}\n\n[![Open In Colab]({badge})]({colab})\n\n{body}"
    )


def install(extras: str) -> nbformat.NotebookNode:
    """The install cell: pip-installs the package in Colab, does nothing where it is installed."""
    return code(
        f"""
        # Colab: install keras-coordatt with the extras this notebook uses. Skipped where the
        # package is already installed (a local clone) and in smoke mode (CI, see below).
        import importlib.util
        import os

        installed = importlib.util.find_spec("keras_coordatt") is not None
        if not installed and os.environ.get("KERAS_COORDATT_SMOKE") != "1":
            %pip install -q "keras-coordatt[{extras}] @ git+{REPO_URL}"
        """
    )


SMOKE_MARKDOWN = md(
    f"""
    ## Settings

    Setting the environment variable `KERAS_COORDATT_SMOKE=1` switches the notebook to
    **smoke mode**, which the repository's CI uses to run it offline in about a minute:
    `tfds.testing.mock_data` serves random images with the real `tf_flowers` metadata,
    the "pretrained" weights come from the small test checkpoint
    `{SMOKE_CHECKPOINT[3:]}` (width 0.5, *random* weights) instead of the
    ImageNet download, images are 96x96 and training runs for a few steps. Its numbers and
    pictures are meaningless; it only proves that every cell runs. Leave the variable unset
    for the real run. Figures and models go to `OUT`.
    """
)

SETTINGS_PREAMBLE = """
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # tf.data, TFLite and SavedModels need it
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # fewer TensorFlow start-up messages

SMOKE = os.environ.get("KERAS_COORDATT_SMOKE") == "1"
OUT = Path(os.environ.get("KERAS_COORDATT_NOTEBOOK_OUT", "outputs"))
OUT.mkdir(parents=True, exist_ok=True)
"""


def settings(smoke: str, full: str) -> nbformat.NotebookNode:
    """The settings cell: the smoke switch and the values of both modes."""
    smoke = textwrap.indent(textwrap.dedent(smoke).strip(), "    ")
    full = textwrap.indent(textwrap.dedent(full).strip(), "    ")
    return nbformat.v4.new_code_cell(
        f"{SETTINGS_PREAMBLE.strip()}\n\n"
        f"if SMOKE:  # CI: offline, tiny and fast (see above)\n{smoke}\n"
        f"else:\n{full}\n"
        'print(f"smoke mode: {SMOKE}; MobileNetV2CA alpha={ALPHA}, weights={WEIGHTS!r}, "\n'
        '      f"{IMAGE_SIZE}x{IMAGE_SIZE} inputs; outputs in {OUT}")'
    )


LOAD_FLOWERS = """
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
"""


# ---------------------------------------------------------------------------------------------
# 01: fine-tuning on tf_flowers


def fine_tune_notebook() -> list[nbformat.NotebookNode]:
    name = "01_fine_tune_tf_flowers.ipynb"
    return [
        title(
            name,
            "Fine-tune MobileNetV2 with Coordinate Attention on tf_flowers",
            """
            Coordinate Attention (CA; Hou, Zhou & Feng, CVPR 2021) is a light attention block
            for mobile networks: it pools the features along each spatial direction separately,
            so its gates know *where* (which rows and which columns) as well as *what* (which
            channels). `keras_coordatt.applications.MobileNetV2CA` is the paper's MobileNetV2
            with CA, with the authors' ImageNet weights.

            This notebook is a standard Keras transfer-learning recipe with it:

            1. load `tf_flowers` (3,670 photos, 5 kinds of flowers) with TensorFlow Datasets;
            2. build a `tf.data` input pipeline with data augmentation;
            3. put a new classifier on the ImageNet-pretrained backbone and train it with the
               backbone frozen;
            4. unfreeze the top blocks and fine-tune them with a small learning rate;
            5. plot the training curves and look at predictions on validation images;
            6. save the model as a `.keras` file and check that the reloaded model gives the same
               outputs.

            In Colab, use a GPU runtime (*Runtime > Change runtime type*).
            """,
        ),
        install("tf,data"),
        SMOKE_MARKDOWN,
        settings(
            f"""
            ALPHA, WEIGHTS, IMAGE_SIZE = 0.5, "{SMOKE_CHECKPOINT}", 96
            BATCH_SIZE, HEAD_EPOCHS, FINE_TUNE_EPOCHS = 16, 2, 1
            """,
            """
            ALPHA, WEIGHTS, IMAGE_SIZE = 1.0, "imagenet", 224
            BATCH_SIZE, HEAD_EPOCHS, FINE_TUNE_EPOCHS = 32, 5, 5
            """,
        ),
        md(
            """
            ## The data

            `tf_flowers` has a single `train` split; we keep 85 % for training and 15 % for
            validation. `as_supervised=True` gives `(image, label)` pairs: `uint8` images of
            various sizes and integer labels.
            """
        ),
        code(LOAD_FLOWERS),
        md(
            """
            ## The input pipeline

            Every image is resized to the model's input size. Training images are then shuffled
            and augmented with Keras preprocessing layers (random flips, rotations and zooms),
            which run inside `tf.data`, in parallel with training. Last comes
            `preprocess_input`, the normalisation the pretrained weights were trained with
            (RGB scaled to [0, 1], then ImageNet mean / std): the model expects normalised
            inputs, so the same function is needed whenever it is used later.
            """
        ),
        code(
            """
            import keras
            import matplotlib.pyplot as plt
            import numpy as np
            import tensorflow as tf

            from keras_coordatt.applications import MobileNetV2CA, preprocess_input

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
            """
        ),
        md("What the augmentation does to one training image:"),
        code(
            """
            image, label = next(iter(train_raw.map(resize)))
            variants = augment(tf.repeat(image[None], 8, axis=0), training=True)

            fig, axes = plt.subplots(1, 8, figsize=(16, 2.6))
            for ax, variant in zip(axes, variants):
                ax.imshow(np.clip(np.asarray(variant), 0, 255).astype("uint8"))
                ax.axis("off")
            fig.suptitle(f"Random augmentations of one '{CLASS_NAMES[label]}' image")
            fig.savefig(OUT / "augmentation.png", dpi=80, bbox_inches="tight")
            plt.show()
            """
        ),
        md(
            """
            ## The model: pretrained backbone + new head

            `include_top=False, pooling="avg"` gives the backbone without its ImageNet
            classifier, ending in the 1280-channel global-average-pooled features. We add
            dropout and a `Dense` layer with one logit per flower class. Building the classifier
            from `backbone.input` and `backbone.output` keeps a single, flat functional model,
            which is what the QAT notebook (`02_qat_int8_tflite.ipynb`) expects.

            First the backbone is frozen, so only the new head learns.
            """
        ),
        code(
            """
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
            """
        ),
        md("## Phase 1: train the head"),
        code(
            """
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
            history_head = model.fit(
                train_ds, validation_data=val_ds, epochs=HEAD_EPOCHS, verbose=2
            )
            """
        ),
        md(
            """
            ## Phase 2: fine-tune the top blocks

            Now the last stage of the backbone (blocks 14-17, at stride 32, with their CA blocks)
            and the final 1x1 convolution are unfrozen too. The BatchNormalization layers stay
            frozen: a frozen BatchNormalization layer runs in inference mode, so the small
            batches of fine-tuning do not disturb the statistics learnt on ImageNet. The
            learning rate is 10x smaller than before, so that the pretrained features are
            adjusted rather than overwritten. (`compile` again after changing `trainable`.)
            """
        ),
        code(
            """
            TOP = ("block14_", "block15_", "block16_", "block17_", "head_")
            for layer in backbone.layers:
                is_batch_norm = isinstance(layer, keras.layers.BatchNormalization)
                layer.trainable = layer.name.startswith(TOP) and not is_batch_norm
            trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
            print(f"{trainable:,} trainable parameters")

            model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss, metrics=["accuracy"])
            history_fine = model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=HEAD_EPOCHS + FINE_TUNE_EPOCHS,
                initial_epoch=HEAD_EPOCHS,  # continue the epoch count of phase 1
                verbose=2,
            )
            """
        ),
        md("## Training curves"),
        code(
            """
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
            """
        ),
        md(
            """
            ## Predictions on validation images

            Titles give the predicted class, green when it is right and red when it is wrong.
            """
        ),
        code(
            """
            images, labels = next(iter(val_raw.map(resize).batch(12)))
            predicted = model.predict(preprocess_input(images), verbose=0).argmax(axis=-1)

            fig, axes = plt.subplots(3, 4, figsize=(10, 8.5))
            for ax, image, label, guess in zip(axes.flat, images, labels.numpy(), predicted):
                ax.imshow(image.numpy().astype("uint8"))
                ax.set_title(
                    f"{CLASS_NAMES[guess]}\\n(true: {CLASS_NAMES[label]})",
                    color="green" if guess == label else "red",
                    fontsize=10,
                )
                ax.axis("off")
            fig.tight_layout()
            fig.savefig(OUT / "validation_predictions.png", dpi=80, bbox_inches="tight")
            plt.show()

            val_loss, val_accuracy = model.evaluate(val_ds, verbose=0)
            print(f"validation accuracy: {val_accuracy:.1%}")
            """
        ),
        md(
            """
            ## Save and reload

            A `.keras` file holds the architecture, the weights and the optimizer state. The
            CoordAttention layers are registered Keras serializables, so `load_model` only needs
            `keras_coordatt` to be installed (importing it registers them); `compile=False`
            because we only need the reloaded model for inference. It must compute exactly what
            the trained one does.
            """
        ),
        code(
            """
            path = OUT / "flowers_mobilenetv2_ca.keras"
            model.save(path)
            reloaded = keras.models.load_model(path, compile=False)

            batch = next(iter(val_ds))[0]
            np.testing.assert_allclose(
                reloaded.predict(batch, verbose=0), model.predict(batch, verbose=0), atol=1e-5
            )
            print(f"{path} ({path.stat().st_size / 2**20:.1f} MB): same outputs after reloading")
            """
        ),
        md(
            """
            Next: `02_qat_int8_tflite.ipynb` turns this model into a full-integer (int8) TFLite
            model with quantization-aware training.
            """
        ),
    ]


# ---------------------------------------------------------------------------------------------
# 02: QAT -> int8 TFLite


def qat_notebook() -> list[nbformat.NotebookNode]:
    name = "02_qat_int8_tflite.ipynb"
    return [
        title(
            name,
            "Quantization-aware training and int8 TFLite export",
            """
            Phones and microcontrollers run neural networks fastest in 8-bit integers. This
            notebook turns the flower classifier of `01_fine_tune_tf_flowers.ipynb` into a
            **full-integer** TFLite model (every op in int8, Coordinate Attention included) in
            two ways, and compares them:

            * **post-training quantization (PTQ)**: convert the float model, measuring the
              ranges of its activations on a few calibration images;
            * **quantization-aware training (QAT)**: fine-tune a copy of the model that
              simulates int8 rounding (`keras_coordatt.quantization.quantize_model`, built on
              the TensorFlow Model Optimization toolkit), then convert it.

            The table at the end gives accuracy, file size and latency (LiteRT interpreter,
            batch 1) of the float32, PTQ int8 and QAT int8 models, and a check that the int8
            models predict what the float model predicts.
            """,
        ),
        install("qat,litert,data"),
        SMOKE_MARKDOWN,
        settings(
            f"""
            ALPHA, WEIGHTS, IMAGE_SIZE = 0.5, "{SMOKE_CHECKPOINT}", 96
            BATCH_SIZE, FLOAT_EPOCHS, QAT_EPOCHS, CALIBRATION_BATCHES = 16, 1, 1, 1
            # Random weights on noise images give nearly tied logits, so int8 rounding flips many
            # top-1 classes: smoke mode does not check the agreement, only prints it.
            MIN_AGREEMENT = 0.0
            """,
            """
            ALPHA, WEIGHTS, IMAGE_SIZE = 1.0, "imagenet", 224
            BATCH_SIZE, FLOAT_EPOCHS, QAT_EPOCHS, CALIBRATION_BATCHES = 32, 5, 2, 8
            MIN_AGREEMENT = 0.9  # int8 and float top-1 must agree on >= 90 % of the images
            """,
        ),
        md("## Data: tf_flowers, as in notebook 01"),
        code(LOAD_FLOWERS),
        code(
            """
            import keras
            import matplotlib.pyplot as plt
            import numpy as np
            import tensorflow as tf

            from keras_coordatt.applications import MobileNetV2CA, preprocess_input

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
            """
        ),
        md(
            """
            ## The float model

            If notebook 01 saved its fine-tuned model in `OUT`, we use it. Otherwise (notebooks
            run independently, e.g. each in its own Colab runtime) we make a quick stand-in the
            same way: a new head trained on the frozen pretrained backbone.
            """
        ),
        code(
            """
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
                model.fit(train_ds, epochs=FLOAT_EPOCHS, verbose=2)
            """
        ),
        md(
            """
            ## Float32 and post-training-quantized int8 exports

            `export_tflite` converts with built-in TFLite ops only. `mode="int8"` on a float
            model is full-integer PTQ: the converter runs the calibration images through the
            model to pick a scale for every tensor, and (by default, `strict=True`) the export
            fails if any op would still compute in float. Inputs and outputs stay float32, so
            the TFLite models take the same preprocessed images as the Keras model.
            """
        ),
        code(
            """
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
            """
        ),
        md(
            """
            ## Quantization-aware training

            `quantize_model` rebuilds the Keras 3 model in tf_keras (what the TensorFlow Model
            Optimization toolkit works with), copies the weights and inserts fake-quantization
            ops that round weights and activations to int8 in the forward pass. With
            `calibration_data` the activation ranges start from the float model's real ranges
            (otherwise they need thousands of steps to settle). The QAT model is a tf_keras
            model: compile it with `tf_keras` optimizers and losses.

            QAT fine-tunes every layer with a small learning rate, except the
            BatchNormalization layers, which stay frozen (and keep their statistics) as in
            notebook 01.
            """
        ),
        code(
            """
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
            qat_history = qat_model.fit(train_ds, epochs=QAT_EPOCHS, verbose=2)
            """
        ),
        md(
            """
            A QAT model already carries its int8 ranges, so its export needs no calibration
            data. Every op of the result works on int8 tensors; only the first `QUANTIZE` and the
            last `DEQUANTIZE` touch the float input and output:
            """
        ),
        code(
            """
            from collections import Counter

            from keras_coordatt.export import float_ops, inspect_tflite

            paths["QAT int8"] = export_tflite(
                qat_model, OUT / "flowers_qat_int8.tflite", mode="int8"
            )

            ops = inspect_tflite(paths["QAT int8"])
            print(dict(Counter(op.name for op in ops)))
            print("ops computing in float:", float_ops(ops) or "none")
            """
        ),
        md(
            """
            ## Accuracy, size and latency

            `evaluate_tflite` runs a `.tflite` file over the validation set with the LiteRT
            interpreter; `tflite_latency_ms` is the median time of one batch-1 inference (after
            warm-up). Latency depends on the machine: compare the rows, not the absolute values.
            """
        ),
        code(
            """
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
            display(Markdown("\\n".join(rows)))
            """
        ),
        code(
            """
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
            """
        ),
        md(
            """
            ## Do the int8 models predict what the float model predicts?

            The float32 TFLite model must reproduce the Keras logits (up to float rounding). The
            int8 models cannot be exact, but they should pick the same class as the float model
            for almost every image.
            """
        ),
        code(
            """
            np.testing.assert_allclose(
                results["float32"]["logits"], float_logits, rtol=1e-3, atol=1e-3
            )
            print("float32 TFLite: same logits as the Keras model (within 1e-3)")

            for name in ("PTQ int8", "QAT int8"):
                agreement = np.mean(results[name]["logits"].argmax(-1) == float_logits.argmax(-1))
                print(f"{name}: same top-1 class as the float model for {agreement:.1%}")
                assert agreement >= MIN_AGREEMENT, f"{name} disagrees with the float model"
            """
        ),
        md(
            """
            The `.tflite` files in `OUT` are ready for the LiteRT runtime on Android, iOS or
            embedded Linux (`ai_edge_litert.interpreter.Interpreter` in Python).
            """
        ),
    ]


# ---------------------------------------------------------------------------------------------
# 03: attention maps


def attention_notebook() -> list[nbformat.NotebookNode]:
    name = "03_attention_maps.ipynb"
    return [
        title(
            name,
            "What Coordinate Attention looks at",
            """
            A Coordinate Attention (CA) block pools its input `x` (height H, width W, C
            channels) along each direction separately and turns the two pooled descriptors into
            two gates: `a_h` of shape (H, 1, C), one weight per *row*, and `a_w` of shape
            (1, W, C), one weight per *column*. Its output is `x * a_h * a_w`, so for every
            channel the effective gate is the outer product `a_h ⊗ a_w`: large where both the
            row and the column matter. Unlike Squeeze-and-Excitation (SE), which gives one
            weight per channel and no position at all, CA keeps positional information.

            This notebook draws those gates over real ImageNet photos, for blocks at several
            depths of an ImageNet-pretrained MobileNetV2-CA, and then compares CA with SE and
            CBAM trained the same way, in the spirit of the paper's visualisations.
            `CoordAttention.gates(x)` returns `(a_h, a_w)`; `SqueezeExcite.gates(x)` the
            channel gate; `CBAM.gates(x)` its channel and spatial gates.
            """,
        ),
        install("tf,data"),
        SMOKE_MARKDOWN,
        settings(
            f"""
            ALPHA, WEIGHTS, IMAGE_SIZE = 0.5, "{SMOKE_CHECKPOINT}", 96
            WEIGHTS_LABEL = "random-init test checkpoint (smoke mode): no learned attention"
            BATCH_SIZE, EPOCHS = 16, 1
            """,
            """
            ALPHA, WEIGHTS, IMAGE_SIZE = 1.0, "imagenet", 224
            WEIGHTS_LABEL = "ImageNet-pretrained MobileNetV2-CA"
            BATCH_SIZE, EPOCHS = 32, 3
            """,
        ),
        md(
            """
            ## Six ImageNet photos

            They come from the repository's test data (`tests/data/imagenet_small`), read from
            the clone when there is one and downloaded otherwise. Each is resized and
            centre-cropped to the model's input size.
            """
        ),
        code(
            f'''
            import csv

            import keras
            import matplotlib.pyplot as plt
            import numpy as np
            from keras import ops
            from PIL import Image, ImageOps

            EXAMPLES = Path("../tests/data/imagenet_small")  # in a clone of the repository
            EXAMPLES_URL = "{RAW_URL}/tests/data/imagenet_small"
            CHOSEN = ("house_finch", "tree_frog", "brown_bear", "hamster", "bell_pepper",
                      "mushroom")


            def example_file(name):
                """A file of tests/data/imagenet_small: from the clone, else downloaded."""
                if (EXAMPLES / name).exists():
                    return EXAMPLES / name
                url = f"{{EXAMPLES_URL}}/{{name}}"
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
            '''
        ),
        md(
            """
            ## The pretrained model and its predictions

            With its ImageNet classifier, so we can see what it recognises.
            """
        ),
        code(
            """
            from keras_coordatt import CBAM, CoordAttention, SqueezeExcite
            from keras_coordatt.applications import (
                MobileNetV2CA,
                decode_predictions,
                preprocess_input,
            )

            model = MobileNetV2CA(
                input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), alpha=ALPHA, weights=WEIGHTS
            )
            inputs = preprocess_input(images)
            top1 = decode_predictions(model.predict(inputs, verbose=0), top=1)
            predicted = [top[0][1] for top in top1]
            for name, guess in zip(names, predicted):
                print(f"{name:>12}: predicted {guess}")
            """
        ),
        md(
            """
            ## CA gates at four depths

            MobileNetV2-CA has a CA block in each of its inverted-residual blocks 2-17, right
            after the depthwise convolution. We take the last block at each stride (4, 8, 16
            and 32 pixels per feature-map cell): a small model returns the input of these four
            blocks, and each block's `gates` method turns that input into `(a_h, a_w)`. To
            draw one map per block we average `a_h ⊗ a_w` over the channels; every map is
            min-max scaled for display, so compare shapes, not colours across panels.
            """
        ),
        code(
            """
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
                \"\"\"The channel mean of a CA block's gate a_h ⊗ a_w: (N, H, W).\"\"\"
                a_h, a_w = layer.gates(x)  # (N, H, 1, C) and (N, 1, W, C)
                return ops.convert_to_numpy(ops.mean(a_h * a_w, axis=-1))


            def overlay(ax, image, attention, title=""):
                \"\"\"Draws `attention` (any H x W, min-max scaled) over `image`.\"\"\"
                attention = (attention - attention.min()) / (np.ptp(attention) + 1e-8)
                height, width = image.shape[:2]
                ax.imshow(image)
                ax.imshow(attention, cmap="jet", alpha=0.5, interpolation="bilinear",
                          extent=(-0.5, width - 0.5, height - 0.5, -0.5))
                ax.set_title(title, fontsize=9)
                ax.axis("off")


            maps = {stage: ca_map(model.get_layer(name), block_inputs[stage])
                    for stage, name in STAGES.items()}
            """
        ),
        code(
            """
            fig, axes = plt.subplots(len(images), 1 + len(STAGES), figsize=(12, 2.5 * len(images)))
            for row, (image, name, guess) in enumerate(zip(images, names, predicted)):
                axes[row, 0].imshow(image)
                axes[row, 0].set_title(f"{name}\\n(predicted: {guess})", fontsize=9)
                axes[row, 0].axis("off")
                for col, stage in enumerate(STAGES, start=1):
                    size = "x".join(map(str, maps[stage].shape[1:]))
                    title = f"{STAGES[stage]}: {stage}, {size}"
                    overlay(axes[row, col], image, maps[stage][row], title)
            fig.suptitle(
                f"Coordinate Attention gates: channel mean of a_h ⊗ a_w\\n{WEIGHTS_LABEL}"
            )
            fig.tight_layout()
            fig.savefig(OUT / "ca_gates_by_stage.png", dpi=72, bbox_inches="tight")
            plt.show()
            """
        ),
        md(
            """
            ## One gate up close

            The channel average hides how each channel's gate is built. Below, for the first
            image and the block at stride 16, are the four channels whose gate varies most over
            the image: the curve on top is `a_w` (one value per column), the curve on the left
            `a_h` (one value per row), and the map is their product `a_h ⊗ a_w`. Being the
            product of a row profile and a column profile, each map is brightest where a
            selected row meets a selected column, with fainter bands along them: that is how CA
            encodes position with two 1-D gates instead of one 2-D map.
            """
        ),
        code(
            """
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
            fig.suptitle(f"Per-channel CA gates of {STAGES['stride 16']}\\n{WEIGHTS_LABEL}")
            fig.savefig(OUT / "ca_gate_anatomy.png", dpi=72, bbox_inches="tight")
            plt.show()
            """
        ),
        md(
            """
            ## SE and CBAM for comparison

            No ImageNet checkpoints of MobileNetV2 with SE or CBAM come with the paper. For a
            like-for-like comparison we keep the pretrained backbone above, replace each of its
            16 CA blocks by a *fresh* SE, CBAM or CA block, freeze everything else, and train
            the new blocks with a new classifier on `tf_flowers` for a few epochs. Only the
            attention type differs between the three models.

            `keras.models.clone_model` rebuilds the functional graph layer by layer; our
            `clone_function` returns a new attention block in place of each `CoordAttention`
            layer and the *same* (frozen) layer object for everything else, so the three models
            share the pretrained weights.
            """
        ),
        code(LOAD_FLOWERS),
        code(
            """
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
            """
        ),
        code(
            """
            backbone = keras.Model(model.input, model.get_layer("avg_pool").output, name="backbone")
            for layer in backbone.layers:
                layer.trainable = False

            NEW_BLOCK = {
                "SE": lambda name: SqueezeExcite(reduction=24, name=name.replace("_ca", "_se")),
                "CBAM": lambda name: CBAM(reduction=24, name=name.replace("_ca", "_cbam")),
                "CA": lambda name: CoordAttention(reduction=32, name=name),
            }


            def with_new_attention(kind):
                \"\"\"The frozen backbone, a fresh `kind` block for each CA block, a new head.\"\"\"

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
                history = variant.fit(train_ds, epochs=EPOCHS, verbose=0)
                print(f"{kind:>4}: training accuracy {history.history['accuracy'][-1]:.1%}")
                variants[kind] = variant
            """
        ),
        md(
            """
            Now the block at stride 16 (`block13`) of each model, on four validation flowers:

            * **SE** has no spatial map: its gate is one number per channel (sorted bar chart).
              The map next to it is the energy (L2 norm over channels) of the SE-gated
              features: whatever spatial structure it shows comes from the features, not from
              the attention.
            * **CBAM**'s spatial gate is a full H x W map, computed by a 7x7 convolution over
              the channel-wise max and mean of the features: local evidence only.
            * **CA**'s map is the channel mean of `a_h ⊗ a_w`, built from whole rows and whole
              columns: long-range context along one direction, exact position along the other.
            """
        ),
        code(
            """
            flowers, _ = next(iter(val_raw.map(resize).batch(4)))
            flowers = flowers.numpy().astype("uint8")
            flower_inputs = preprocess_input(flowers)


            def block_input(variant, name):
                \"\"\"The input of layer `name` of `variant` for the four flowers.\"\"\"
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
            """
        ),
        code(
            """
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
                         f"tf_flowers\\nbackbone: {WEIGHTS_LABEL}")
            fig.tight_layout()
            fig.savefig(OUT / "se_cbam_ca.png", dpi=72, bbox_inches="tight")
            plt.show()
            """
        ),
        md(
            """
            ## What to look for

            * **Across depths** (first figure): the gates go from fine (stride 4) to coarse
              (stride 32) grids. Compare where each depth puts its weight: on the object or
              on the background, on its outline or on its whole extent.
            * **Per channel** (second figure): each channel picks its own rows and columns, so
              one channel can select a horizontal band, another a vertical band, another the
              box where the two meet. The channel mean of these rank-1 maps can take any shape.
            * **SE vs CBAM vs CA** (last figure): SE only says *which* channels matter, the same
              everywhere; CBAM says *where*, from a local 7x7 window; CA says where from whole
              rows and columns, the positional information the paper credits for its gains,
              largest on detection and segmentation.

            With the smoke-mode checkpoint the weights are random, so the maps show no learned
            attention at all; run the notebook with the ImageNet weights to see the real thing.
            """
        ),
    ]


# ---------------------------------------------------------------------------------------------
# 04: TF-Hub


def hub_notebook() -> list[nbformat.NotebookNode]:
    name = "04_tf_hub_transfer.ipynb"
    return [
        title(
            name,
            "TF-Hub feature vectors: export, reload and fine-tune",
            """
            `keras_coordatt.export.hub.export_hub` writes a model as a *reusable* TF2
            SavedModel in the TF-Hub / Kaggle Models format: it takes float32 RGB images in
            [0, 1] (the ImageNet normalisation is inside), returns the 1280-d pooled features
            (`kind="feature_vector"`) and can be fine-tuned after loading. This notebook

            1. exports an ImageNet-pretrained MobileNetV2-CA feature vector;
            2. loads it in a tf_keras model with `tensorflow_hub.KerasLayer(trainable=True)`
               and checks it computes what the Keras model computes;
            3. loads it in a Keras 3 model with `keras.layers.TFSMLayer`;
            4. fine-tunes both briefly on `tf_flowers` and plots the loss going down.
            """,
        ),
        install("hub,data"),
        SMOKE_MARKDOWN,
        settings(
            f"""
            ALPHA, WEIGHTS, IMAGE_SIZE = 0.5, "{SMOKE_CHECKPOINT}", 96
            BATCH_SIZE, EPOCHS, TRAIN_IMAGES = 16, 4, 32
            """,
            """
            ALPHA, WEIGHTS, IMAGE_SIZE = 1.0, "imagenet", 224
            BATCH_SIZE, EPOCHS, TRAIN_IMAGES = 32, 3, 1024  # a brief fine-tuning
            """,
        ),
        md(
            """
            ## Export a feature-vector SavedModel

            `freeze_batch_norm=True` exports the BatchNormalization layers in inference mode, so
            fine-tuning on small batches cannot disturb their ImageNet statistics (the usual
            choice for transfer learning). `weights` is only recorded in the model card written
            next to the SavedModel.
            """
        ),
        code(
            """
            import keras
            import matplotlib.pyplot as plt
            import numpy as np
            import tensorflow as tf

            from keras_coordatt.applications import MobileNetV2CA, preprocess_input
            from keras_coordatt.export.hub import export_hub, import_tensorflow_hub

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
            """
        ),
        md("The beginning of the model card:"),
        code(
            """
            print("\\n".join(export.model_card.read_text().splitlines()[:30]))
            """
        ),
        md(
            """
            ## Data: tf_flowers scaled to [0, 1]

            The SavedModel normalises its input itself, so the pipeline only resizes and scales
            to [0, 1] (no `preprocess_input`). A subset of `TRAIN_IMAGES` images keeps the
            fine-tuning brief.
            """
        ),
        code(LOAD_FLOWERS),
        code(
            """
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
            """
        ),
        md(
            """
            ## Load it: tf_keras with `hub.KerasLayer`, Keras 3 with `TFSMLayer`

            `hub.KerasLayer` is a tf_keras (Keras 2) layer; `import_tensorflow_hub()` is
            `import tensorflow_hub` plus a fix for tensorflow-hub 0.16.1 under setuptools >= 82
            (which removed the `pkg_resources` module it imports). In Keras 3,
            `keras.layers.TFSMLayer` calls the `serve` endpoint for inference and
            `serve_training` in training. Both must give the features of the original Keras
            backbone, which takes normalised images: `preprocess_input(255 * images)`.
            """
        ),
        code(
            """
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
            """
        ),
        md(
            """
            ## Fine-tune in tf_keras

            The hub layer sits in a tf_keras `Sequential` model with a new classifier; with
            `trainable=True` its weights are fine-tuned along with the head.
            """
        ),
        code(
            """
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
            hub_history = hub_model.fit(train_ds, epochs=EPOCHS, verbose=2)
            """
        ),
        md(
            """
            ## Fine-tune in Keras 3

            The same with `TFSMLayer`. One Keras 3.15 limitation: the variables of a
            `TFSMLayer` keep TensorFlow names ending in `:0`, which optimizers that keep a state
            per variable (Adam, SGD with momentum) cannot use to name that state, so `fit` fails
            with "is not a valid scope name". Plain SGD keeps no state and works; gradient
            clipping keeps its first steps on the whole backbone stable.
            """
        ),
        code(
            """
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
            keras_history = keras_model.fit(train_ds, epochs=EPOCHS, verbose=2)
            """
        ),
        md("## The loss goes down"),
        code(
            """
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
            """
        ),
        md(
            """
            To publish the export, upload the directory (with its `MODEL_CARD.md`) to Kaggle
            Models; `keras-coordatt export-hub --help` does the same export from the command
            line.
            """
        ),
    ]


# ---------------------------------------------------------------------------------------------
# Writing


NOTEBOOKS = {
    "01_fine_tune_tf_flowers.ipynb": fine_tune_notebook,
    "02_qat_int8_tflite.ipynb": qat_notebook,
    "03_attention_maps.ipynb": attention_notebook,
    "04_tf_hub_transfer.ipynb": hub_notebook,
}


def build(name: str) -> nbformat.NotebookNode:
    """The stripped notebook ``name``, with deterministic cell ids."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = NOTEBOOKS[name]()
    prefix = name.split("_")[0]
    for index, cell in enumerate(notebook.cells):
        cell.id = f"nb{prefix}-cell{index:02d}"
    notebook.metadata = {
        "accelerator": "GPU",
        "colab": {"provenance": [], "toc_visible": True},
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nbformat.validate(notebook)
    return notebook


def render(name: str) -> str:
    return nbformat.writes(build(name)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a notebook differs from what is built"
    )
    args = parser.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = NOTEBOOKS_DIR / name
        text = render(name)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"stale notebooks: {', '.join(stale)}; run python notebooks/build_notebooks.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
