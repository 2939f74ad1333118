"""``tf.data`` input pipelines for semantic segmentation (shared by the recipes and notebooks).

Sources, each a ``tf.data.Dataset`` of ``(image, mask)``: ``uint8`` RGB images ``(H, W, 3)`` and
``uint8`` label masks ``(H, W)`` of the same size:

* :func:`voc_dataset`: a folder in Pascal VOC layout (``JPEGImages/``, ``SegmentationClass/``
  palette PNGs, ``ImageSets/Segmentation/{split}.txt``); 255 marks the "void" border;
* :func:`pennfudan_dataset`: the Penn-Fudan pedestrians (instance masks, turned into
  0 background / 1 person); :func:`pennfudan_names` and :func:`split_names` give a fixed split;
* :func:`tfds_dataset`: any tensorflow-datasets set with an image and a mask feature;
  :data:`TFDS_PRESETS` knows ``oxford_iiit_pet`` and ``cityscapes``.

Then :func:`train_pipeline` (random scale, padded random crop, horizontal flip: image and mask
transformed together) or :func:`eval_pipeline` (resize the longer side, pad), both batching
``(preprocess_input(image), mask)`` for :func:`keras_coordatt.tasks.DeepLabV3`. Padding fills
images with the ImageNet mean pixel and masks with the ignore label, so padded pixels count in
neither the loss nor ``MeanIoU``.

The transforms live in :mod:`keras_coordatt.tasks.segmentation_augment` and the scores
(:func:`segmentation_scores`, NumPy) in :mod:`keras_coordatt.tasks.segmentation_metrics`; this
module re-exports them. Needs TensorFlow (and Pillow for the PNG masks); tensorflow-datasets only
for :func:`tfds_dataset`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_coordatt.tasks.segmentation_augment import (
    IGNORE_LABEL,
    MEAN_PIXEL,
    _resize_shorter,
    check_labels,
    random_scale_crop_flip,
    resize_and_pad,
)
from keras_coordatt.tasks.segmentation_metrics import (
    confusion_matrix,
    iou_from_confusion,
    segmentation_scores,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
PENNFUDAN_CLASSES = ("background", "person")
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
# cityscapesScripts' label table: label id (0..33) -> train id (0..18, 255 = ignored).
CITYSCAPES_TRAIN_IDS = (
    255, 255, 255, 255, 255, 255, 255, 0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6, 7, 8,
    9, 10, 11, 12, 13, 14, 15, 255, 255, 16, 17, 18,
)


def _tf():
    import tensorflow as tf

    return tf


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Reads a label PNG as ``uint8`` class indices ``(H, W)``.

    Palette ("P", as VOC's ``SegmentationClass``) and greyscale ("L") PNGs hold the indices
    themselves. Raises ValueError for colour (RGB) masks, whose colours would need a palette to
    map back to classes, and for masks with values above 255.
    """
    from PIL import Image

    with Image.open(path) as image:
        mode = image.mode
        if mode in ("P", "L", "1"):
            return np.asarray(image, dtype=np.uint8)
        if mode in ("I", "I;16", "I;16B"):
            mask = np.asarray(image)
            if mask.min() < 0 or mask.max() > 255:
                raise ValueError(
                    f"Mask {path} has values in [{mask.min()}, {mask.max()}]: label masks must "
                    "hold class indices 0..255."
                )
            return mask.astype(np.uint8)
    raise ValueError(
        f"Mask {path} is a {mode} image: label masks must be palette (P) or greyscale (L) PNGs "
        "holding one class index per pixel (VOC's SegmentationClass PNGs are palette PNGs; a "
        "colour-rendered mask cannot be read back as classes)."
    )


def _decode_pair(image_path, mask_path, mask_fn: Callable[[np.ndarray], np.ndarray]):
    """tf.data map: reads one (image, mask) pair, checking that their sizes match."""
    tf = _tf()

    def read(path):
        path = path.numpy().decode()
        mask = mask_fn(read_mask(path))
        return mask

    image = tf.io.decode_image(tf.io.read_file(image_path), channels=3, expand_animations=False)
    mask = tf.py_function(read, [mask_path], tf.uint8)
    mask.set_shape([None, None])
    return _same_size(image, mask)


def _same_size(image, mask):
    """Raises (InvalidArgumentError in tf.data) unless image (H, W, 3) and mask (H, W) match."""
    tf = _tf()
    with tf.control_dependencies([
        tf.debugging.assert_equal(
            tf.shape(image)[:2], tf.shape(mask),
            message="image and mask sizes differ (check the mask of this image)",
        )
    ]):
        return tf.identity(image), tf.identity(mask)


def _pairs_dataset(image_paths: Sequence[str], mask_paths: Sequence[str], mask_fn):
    tf = _tf()
    dataset = tf.data.Dataset.from_tensor_slices((list(image_paths), list(mask_paths)))
    return dataset.map(
        lambda image, mask: _decode_pair(image, mask, mask_fn),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def _identity(mask: np.ndarray) -> np.ndarray:
    return mask


def _nonzero(mask: np.ndarray) -> np.ndarray:
    return (mask > 0).astype(np.uint8)


def _missing(root: Path, parts: Sequence[str]) -> list[str]:
    return [part for part in parts if not (root / part).exists()]


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


def voc_dataset(root: str | os.PathLike, split: str = "train"):
    """A folder in Pascal VOC layout as a ``tf.data.Dataset`` of ``(image, mask)``.

    Args:
        root: the folder holding ``JPEGImages/``, ``SegmentationClass/`` and
            ``ImageSets/Segmentation/`` (e.g. ``VOCdevkit/VOC2012``; for the augmented set,
            point ``SegmentationClass`` at SBD's converted masks, as DeepLab does).
        split: the list ``ImageSets/Segmentation/{split}.txt`` to read (``train``, ``val``...).

    Returns:
        ``(uint8 (H, W, 3), uint8 (H, W))`` pairs in the list's order; masks hold 0..20 and 255.

    Raises:
        ValueError: a missing folder or list, an empty list, or listed files that do not exist
            (the first few are named).
    """
    root = Path(root)
    list_file = Path("ImageSets") / "Segmentation" / f"{split}.txt"
    missing = _missing(root, ["JPEGImages", "SegmentationClass", str(list_file)])
    if missing:
        raise ValueError(
            f"{root} is not a Pascal VOC folder: missing {', '.join(missing)} (expected "
            "JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/<split>.txt)."
        )
    names = [line.split()[0] for line in (root / list_file).read_text().splitlines()
             if line.strip()]
    if not names:
        raise ValueError(f"{root / list_file} lists no images.")
    images = [root / "JPEGImages" / f"{name}.jpg" for name in names]
    masks = [root / "SegmentationClass" / f"{name}.png" for name in names]
    absent = [str(path) for path in images + masks if not path.exists()]
    if absent:
        raise ValueError(
            f"{len(absent)} files of {root / list_file} are missing, e.g. {', '.join(absent[:3])}."
        )
    return _pairs_dataset([str(p) for p in images], [str(p) for p in masks], _identity)


def _pennfudan_layout(root: Path) -> tuple[Path, Path]:
    """(images folder, masks folder) of a Penn-Fudan copy, in any of its three layouts."""
    for images, masks in (("images", "masks"), ("PNGImages", "PedMasks")):
        if (root / images).is_dir() and any((root / masks).glob("*_mask.png")):
            return root / images, root / masks
    if root.is_dir() and any(root.glob("*_mask.png")):
        return root, root
    raise ValueError(
        f"{root} is not a Penn-Fudan folder: expected images/ + masks/ "
        "(images/<name>.jpg, masks/<name>_mask.png), PNGImages/ + PedMasks/ (the original "
        "release) or images and their <name>_mask.png in one folder."
    )


def pennfudan_names(root: str | os.PathLike) -> list[str]:
    """The sorted image names (no suffix) of a Penn-Fudan folder that have a mask."""
    images, masks = _pennfudan_layout(Path(root))
    names = sorted(
        path.stem for path in images.iterdir()
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.stem.endswith("_mask")
        and (masks / f"{path.stem}_mask.png").exists()
    )
    if not names:
        raise ValueError(f"No image with a <name>_mask.png found in {root}.")
    return names


def pennfudan_dataset(root: str | os.PathLike, names: Sequence[str] | None = None):
    """Penn-Fudan pedestrians as ``(image, mask)`` with mask 0 background / 1 person.

    Args:
        root: a folder in one of the layouts of :func:`pennfudan_names`.
        names: the images to read (default all, sorted); see :func:`split_names`.

    Raises:
        ValueError: not a Penn-Fudan folder, or a name without its image or mask.
    """
    root = Path(root)
    images, masks = _pennfudan_layout(root)
    names = pennfudan_names(root) if names is None else list(names)
    image_paths = []
    for name in names:
        found = [images / f"{name}{suffix}" for suffix in IMAGE_SUFFIXES
                 if (images / f"{name}{suffix}").exists()]
        if not found or not (masks / f"{name}_mask.png").exists():
            raise ValueError(f"Penn-Fudan image {name!r} or its mask is missing in {root}.")
        image_paths.append(str(found[0]))
    mask_paths = [str(masks / f"{name}_mask.png") for name in names]
    return _pairs_dataset(image_paths, mask_paths, _nonzero)


def split_names(names: Sequence[str], num_val: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """A fixed ``(train, val)`` split: a seeded permutation of the sorted names, ``num_val`` held
    out; both lists sorted. Same names and seed -> same split on every machine."""
    names = sorted(names)
    if not 0 < num_val < len(names):
        raise ValueError(f"num_val must be in [1, {len(names) - 1}], got {num_val}.")
    order = np.random.default_rng(seed).permutation(len(names))
    val = sorted(names[i] for i in order[:num_val])
    held = set(val)
    return [name for name in names if name not in held], val


@dataclass(frozen=True)
class TFDSPreset:
    """How to read one tensorflow-datasets segmentation set (see :data:`TFDS_PRESETS`)."""

    name: str
    image_key: str
    mask_key: str
    class_names: tuple[str, ...]
    label_map: tuple[int, ...] | None = None  # mask value -> class (255: ignored)
    train_split: str = "train"
    val_split: str = "test"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


TFDS_PRESETS: dict[str, TFDSPreset] = {
    # Trimap 1 pet, 2 background, 3 border -> classes 0, 1, 2 (TFDS' values minus one).
    "oxford_iiit_pet": TFDSPreset(
        "oxford_iiit_pet", "image", "segmentation_mask", ("pet", "background", "border"),
        label_map=(255, 0, 1, 2),
    ),
    "cityscapes": TFDSPreset(
        "cityscapes/semantic_segmentation", "image_left", "segmentation_label",
        CITYSCAPES_CLASSES, label_map=CITYSCAPES_TRAIN_IDS, val_split="validation",
    ),
}


def _lookup(mask, label_map: Sequence[int]):
    tf = _tf()
    table = tf.constant(list(label_map) + [IGNORE_LABEL] * (256 - len(label_map)), tf.uint8)
    return tf.gather(table, tf.cast(mask, tf.int32))


def tfds_dataset(
    name: str,
    split: str,
    *,
    image_key: str | None = None,
    mask_key: str | None = None,
    label_map: Sequence[int] | None = None,
    data_dir: str | None = None,
    download: bool = True,
):
    """A tensorflow-datasets set as ``(image, mask)`` pairs.

    Args:
        name: a key of :data:`TFDS_PRESETS` (``oxford_iiit_pet``, ``cityscapes``), whose keys
            and label map are the defaults, or any TFDS name with ``image_key`` / ``mask_key``.
        split: a TFDS split string (``"train"``, ``"test[:50%]"``...).
        image_key, mask_key: the image and mask features (the mask may be ``(H, W, 1)``).
        label_map: mask value -> class index (255: ignored; values past its end map to 255);
            None keeps the values.
        data_dir, download: passed to ``tfds.load``.

    Raises:
        ValueError: unknown set without keys, or keys the set does not have.
    """
    import tensorflow_datasets as tfds

    tf = _tf()
    preset = TFDS_PRESETS.get(name)
    tfds_name = preset.name if preset else name
    image_key = image_key or (preset.image_key if preset else None)
    mask_key = mask_key or (preset.mask_key if preset else None)
    if label_map is None and preset is not None:
        label_map = preset.label_map
    if not image_key or not mask_key:
        raise ValueError(
            f"{name!r} is not one of {sorted(TFDS_PRESETS)}: pass image_key= and mask_key= "
            "(the names of its image and mask features)."
        )
    dataset, info = tfds.load(tfds_name, split=split, with_info=True, data_dir=data_dir,
                              download=download)
    missing = [key for key in (image_key, mask_key) if key not in info.features]
    if missing:
        raise ValueError(
            f"{tfds_name} has no feature {', '.join(missing)}; its features: "
            f"{sorted(info.features.keys())}."
        )

    def pick(example):
        mask = example[mask_key]
        if mask.shape.rank == 3:
            mask = mask[..., 0]
        mask = _lookup(mask, label_map) if label_map is not None else tf.cast(mask, tf.uint8)
        return _same_size(tf.cast(example[image_key], tf.uint8), mask)

    return dataset.map(pick, num_parallel_calls=tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------------
# Transforms (image and mask together)
def _finish(image, mask, num_classes, ignore_label):
    from keras_coordatt.applications import preprocess_input

    tf = _tf()
    if num_classes is not None:
        mask = check_labels(mask, num_classes, ignore_label)
    return preprocess_input(tf.cast(image, tf.float32)), tf.cast(mask, tf.int32)


def _check_size(name: str, value) -> tuple[int, int]:
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise ValueError(f"{name} must be a positive int or (height, width), got {value!r}.")
    return size


def train_pipeline(
    dataset,
    crop_size: int | tuple[int, int],
    batch_size: int,
    *,
    scale_range: tuple[float, float] = (0.5, 2.0),
    flip: bool = True,
    base_size: int | None = None,
    num_classes: int | None = None,
    ignore_label: int = IGNORE_LABEL,
    shuffle_buffer: int = 1000,
    cache: bool = False,
    seed: int | None = None,
    drop_remainder: bool = True,
):
    """Batches ``(preprocess_input(image), int32 mask)`` for training, augmented.

    Args:
        dataset: ``(image, mask)`` pairs (a source of this module).
        crop_size: training crop; a multiple of the model's output stride for
            :func:`keras_coordatt.tasks.DeepLabV3` (512 for VOC, 768 for Cityscapes).
        batch_size: images per batch.
        scale_range, flip: see :func:`random_scale_crop_flip`.
        base_size: if set, first resize each pair so its shorter side is ``base_size`` (small
            budgets; the paper augments the original resolution, None).
        num_classes: if set, check every mask's labels (:func:`check_labels`).
        cache: cache the decoded (and base-resized) pairs in memory (small sets).
        seed: shuffle and augmentation seed (None: nondeterministic).
        drop_remainder: drop the last incomplete batch.

    Returns:
        A ``tf.data.Dataset`` of ``(float32 (B, h, w, 3), int32 (B, h, w))``.
    """
    tf = _tf()
    crop = _check_size("crop_size", crop_size)
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got "
                         f"{scale_range!r}.")
    if base_size is not None:
        dataset = dataset.map(lambda i, m: _resize_shorter(i, m, base_size),
                              num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        dataset = dataset.cache()
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if seed is None:
        dataset = dataset.map(
            lambda i, m: random_scale_crop_flip(i, m, crop, scale_range=scale_range, flip=flip,
                                                ignore_label=ignore_label),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda pair, s: random_scale_crop_flip(
                pair[0], pair[1], crop, scale_range=scale_range, flip=flip,
                ignore_label=ignore_label, seed=s),
            num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(lambda i, m: _finish(i, m, num_classes, ignore_label),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def eval_pipeline(
    dataset,
    size: int,
    batch_size: int,
    *,
    num_classes: int | None = None,
    ignore_label: int = IGNORE_LABEL,
    cache: bool = False,
):
    """Batches ``(preprocess_input(image), int32 mask)`` for evaluation, in order: each pair
    resized and padded to ``size x size`` (:func:`resize_and_pad`); padded pixels are labelled
    ``ignore_label``, so metrics skip them."""
    tf = _tf()
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}.")
    dataset = dataset.map(
        lambda i, m: _finish(*resize_and_pad(i, m, size, ignore_label=ignore_label),
                             num_classes, ignore_label),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        dataset = dataset.cache()
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def segmentation_source(
    source: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    tfds_name: str | None = None,
    num_val: int = 50,
    split_seed: int = 0,
):
    """One split of a segmentation source, as the recipes name them.

    Args:
        source: ``"voc"`` (a VOC-layout folder, ``data_dir``), ``"pennfudan"`` (a Penn-Fudan
            folder, ``data_dir``: ``split`` ``"train"`` / ``"val"`` of :func:`split_names` with
            ``num_val`` and ``split_seed``) or ``"tfds"`` (``tfds_name``; ``split`` ``"train"`` /
            ``"val"`` map to the preset's splits, any other string is a TFDS split;
            ``data_dir`` is TFDS' data folder).
        split: see ``source``.

    Returns:
        ``(dataset, class_names)``: ``(image, mask)`` pairs and the class names (None for a TFDS
        set without a preset).
    """
    if source == "voc":
        if data_dir is None:
            raise ValueError("source 'voc' needs data_dir (the folder with JPEGImages/).")
        return voc_dataset(data_dir, split), VOC_CLASSES
    if source == "pennfudan":
        if data_dir is None:
            raise ValueError("source 'pennfudan' needs data_dir (the Penn-Fudan folder).")
        if split not in ("train", "val", "all"):
            raise ValueError(f"Penn-Fudan splits: 'train', 'val', 'all'; got {split!r}.")
        names = pennfudan_names(data_dir)
        if split != "all":
            train, val = split_names(names, num_val, split_seed)
            names = train if split == "train" else val
        return pennfudan_dataset(data_dir, names), PENNFUDAN_CLASSES
    if source == "tfds":
        if not tfds_name:
            raise ValueError("source 'tfds' needs tfds_name (e.g. 'oxford_iiit_pet').")
        preset = TFDS_PRESETS.get(tfds_name)
        if preset is not None:
            split = {"train": preset.train_split, "val": preset.val_split}.get(split, split)
        dataset = tfds_dataset(tfds_name, split, data_dir=None if data_dir is None
                               else os.fspath(data_dir))
        return dataset, preset.class_names if preset else None
    raise ValueError(f"Unknown source {source!r}: use 'voc', 'pennfudan' or 'tfds'.")


__all__ = [
    "CITYSCAPES_CLASSES",
    "IGNORE_LABEL",
    "MEAN_PIXEL",
    "PENNFUDAN_CLASSES",
    "TFDS_PRESETS",
    "VOC_CLASSES",
    "TFDSPreset",
    "check_labels",
    "confusion_matrix",
    "eval_pipeline",
    "iou_from_confusion",
    "pennfudan_dataset",
    "pennfudan_names",
    "random_scale_crop_flip",
    "read_mask",
    "resize_and_pad",
    "segmentation_scores",
    "segmentation_source",
    "split_names",
    "tfds_dataset",
    "train_pipeline",
    "voc_dataset",
]
