"""Trains the small segmenter the MediaPipe export tests use, and copies their Penn-Fudan images.

The deployment tests (``tests/test_export_mediapipe.py``) need a segmenter whose decisions are
stable the way a trained model's are: a randomly initialised network is chaotic (one grey level
of noise flips a quarter of its pixels), so no int8 file could agree with it. This script trains
one on the real Penn-Fudan pedestrians (person vs background) and writes into
``tests/data/pennfudan_small``:

* ``tiny_ca_segmenter.keras``: ``MobileNetV2CA(alpha=0.35)`` at 96x96, cut at its stride-16
  level (``P4``), a 1x1 ``Conv2D`` to 2 classes and a bilinear ``Resizing`` back to 96x96;
  float images in :func:`keras_coordatt.applications.preprocess_input`'s range in, logits
  (N, 96, 96, 2) out;
* ``images/*.png`` (96x96 RGB) and ``masks/*.png`` (0 background, 1 person): the first
  ``--calibration`` training images (calibration data) and the held-out images (never trained
  on), named ``calib_*`` / ``heldout_*``.

Usage (a Penn-Fudan copy with ``images/*.jpg`` and ``masks/*_mask.png``)::

    python scripts/make_segmenter_fixture.py --data path/to/pennfudan

About ten minutes on two busy CPU cores. Training is seeded, but not bit-reproducible across
machines; the tests only rely on the committed files.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZE = 96


def load_pennfudan(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, images (N, SIZE, SIZE, 3) uint8 and person masks (N, SIZE, SIZE) uint8."""
    from PIL import Image

    names, images, masks = [], [], []
    for path in sorted((folder / "images").glob("*.jpg")):
        image = Image.open(path).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
        mask = Image.open(folder / "masks" / f"{path.stem}_mask.png")
        mask = (np.asarray(mask.resize((SIZE, SIZE), Image.NEAREST)) > 0).astype(np.uint8)
        names.append(path.stem)
        images.append(np.asarray(image, dtype=np.uint8))
        masks.append(mask)
    return names, np.stack(images), np.stack(masks)


def build_segmenter():
    import keras

    from keras_coordatt.applications import MobileNetV2CA, feature_extractor

    backbone = MobileNetV2CA(alpha=0.35, include_top=False, input_shape=(SIZE, SIZE, 3),
                             weights=None)
    features = feature_extractor(backbone).output["P4"]
    logits = keras.layers.Conv2D(2, 1, name="classifier")(features)
    logits = keras.layers.Resizing(SIZE, SIZE, interpolation="bilinear", name="upsample")(logits)
    return keras.Model(backbone.input, logits, name="tiny_ca_segmenter")


def train(model, images, masks, epochs: int):
    import keras

    from keras_coordatt.applications import preprocess_input

    inputs = np.concatenate([images, images[:, :, ::-1]])  # and their mirror images
    targets = np.concatenate([masks, masks[:, :, ::-1]])
    steps = epochs * -(-len(inputs) // 16)
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(preprocess_input(inputs.astype("float32")), targets, batch_size=16,
              epochs=epochs, shuffle=True, verbose=2)
    return model


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, required=True, help="Penn-Fudan folder")
    parser.add_argument("--out", type=Path, default=REPO / "tests/data/pennfudan_small")
    parser.add_argument("--heldout", type=int, default=8, help="held-out images (every n-th)")
    parser.add_argument("--calibration", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import keras

    from keras_coordatt.applications import preprocess_input

    keras.utils.set_random_seed(args.seed)
    names, images, masks = load_pennfudan(args.data)
    step = len(names) // args.heldout
    heldout = np.zeros(len(names), bool)
    heldout[step // 2 :: step][: args.heldout] = True
    model = train(build_segmenter(), images[~heldout], masks[~heldout], args.epochs)
    predicted = model.predict(preprocess_input(images[heldout].astype("float32")), verbose=0)
    accuracy = np.mean(predicted.argmax(-1) == masks[heldout])
    print(f"held-out pixel accuracy {accuracy:.4f} (background share "
          f"{1 - masks[heldout].mean():.4f})")
    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "tiny_ca_segmenter.keras")
    chosen = [("calib", i) for i in np.flatnonzero(~heldout)[: args.calibration]]
    chosen += [("heldout", i) for i in np.flatnonzero(heldout)]
    for prefix, i in chosen:
        write_png(args.out / "images" / f"{prefix}_{names[i]}.png", images[i])
        write_png(args.out / "masks" / f"{prefix}_{names[i]}.png", masks[i])
    return 0


if __name__ == "__main__":
    sys.exit(main())
