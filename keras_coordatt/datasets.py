"""Small real image sets bundled with the package (for the demo, tests and notebooks)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_SUBSET = Path(__file__).parent / "data" / "cifar10_subset.zip"


def _decode_jpeg(data: bytes) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:  # TensorFlow can decode too; one of the two is always there with [tf]
        try:
            import tensorflow as tf
        except ImportError as error:
            raise ImportError(
                "Decoding the bundled JPEGs needs Pillow or TensorFlow: "
                "pip install 'keras-coordatt[tf]'"
            ) from error
        return tf.io.decode_jpeg(data, channels=3).numpy()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def load_cifar10_subset(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Loads the bundled CIFAR-10 subset.

    Returns ``(images, labels)``: uint8 ``(N, 32, 32, 3)`` RGB and int64 ``(N,)`` class indices
    (``CIFAR10_CLASSES`` order). ``split="train"`` has 4,000 images (400 per class),
    ``split="test"`` 1,000 (100 per class).
    """
    if split not in ("train", "test"):
        raise ValueError(f"Unknown split {split!r}: use 'train' or 'test'.")
    images, labels = [], []
    with zipfile.ZipFile(CIFAR10_SUBSET) as archive:
        for name in sorted(archive.namelist()):
            parts = name.split("/")
            if len(parts) != 3 or parts[0] != split or not parts[2].endswith(".jpg"):
                continue
            images.append(_decode_jpeg(archive.read(name)))
            labels.append(CIFAR10_CLASSES.index(parts[1]))
    return np.stack(images), np.asarray(labels, dtype="int64")


def load_image_folder(
    root: str | Path, class_names: list[str] | tuple[str, ...] | None = None,
    per_class: int | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Reads ``root/<class>/*.jpg`` (the layout of CIFAR-10 as JPEG folders).

    Returns ``(images, labels, class_names)``: uint8 ``(N, H, W, 3)``, int64 ``(N,)`` indices
    into ``class_names`` (default: the sorted sub-folder names), files in sorted order, the
    first ``per_class`` of each class if given. Raises ``ValueError`` for a missing folder or
    a class without JPEGs.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder: expected <class>/*.jpg under it.")
    names = list(class_names) if class_names else sorted(p.name for p in root.iterdir()
                                                         if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(names):
        files = sorted((root / name).glob("*.jpg"))[:per_class]
        if not files:
            raise ValueError(f"No JPEGs in {root / name}: expected {root}/<class>/*.jpg.")
        images += [_decode_jpeg(path.read_bytes()) for path in files]
        labels += [label] * len(files)
    return np.stack(images), np.asarray(labels, dtype="int64"), names
