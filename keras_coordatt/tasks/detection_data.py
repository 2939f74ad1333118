"""Object detection data: sources (folders, tensorflow-datasets) and ``tf.data`` pipelines.

A :class:`DetectionSource` is a dataset of ``(data, boxes, labels, ignore)`` per image: ``data``
the image file path or its encoded bytes, ``boxes`` ``(m, 4)`` float32 **relative** ``yxyx``,
``labels`` ``(m,)`` int32 classes ``0 .. num_classes - 1`` (no background; -1 pads),
``ignore`` ``(m,)`` bool: boxes that neither train nor count in evaluation (VOC's
*difficult*, COCO's *crowd*: pycocotools' ``iscrowd``). Pixel annotations become continuous
coordinates: VOC / Penn-Fudan's 1-based inclusive ``(xmin, ymin, xmax, ymax)`` span
``[xmin - 1, xmax]``, COCO's ``[x, y, w, h]`` is ``[x, x + w]``, a mask's pixel rows
``r0 .. r1`` span ``[r0, r1 + 1]``.

* :func:`voc_source`: folders in Pascal VOC layout (``Annotations/*.xml``, ``JPEGImages/``,
  ``ImageSets/Main/<split>.txt``), several concatenated (VOC2007 + VOC2012);
* :func:`coco_source`: a folder in COCO layout (``annotations/instances_<split>.json``,
  images in ``<split>/``); category ids mapped to 0.. in id order, crowd boxes ignored;
* :func:`pennfudan_source`: the Penn-Fudan pedestrians (one class), boxes from
  ``annotations/*.txt`` (``Annotation/`` in the original release) or, without them, from the
  instance masks;
* :func:`tfds_source`: ``coco/2017``, ``voc/2007``, ``voc/2012`` (:data:`TFDS_PRESETS`), several
  concatenated.

Pipelines for :class:`~keras_coordatt.tasks.ObjectDetector` (images ``preprocess_input``-ed at
``image_size x image_size``, the SSD convention of resizing without keeping the aspect ratio;
labels keras-hub's ``{"boxes": (B, M, 4), "labels": (B, M)}`` in ``bounding_box_format``,
padded with -1 to a fixed ``M = max_boxes``): :func:`train_batches` (SSD augmentation,
:mod:`~keras_coordatt.tasks.detection_augment`; epoch ``e`` a pure function of ``(seed, e)``, so
a resumed run reads the same data), :func:`eval_batches`, and :func:`coco_batches` (relative
boxes, ``ignore`` and original sizes, for :func:`~keras_coordatt.tasks.detection_metrics.
coco_evaluate`). Needs TensorFlow; tensorflow-datasets for :func:`tfds_source`; Pillow for
masks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_coordatt.tasks.segmentation_data import (
    IMAGE_SUFFIXES,
    VOC_CLASSES,
    _pennfudan_layout,
    pennfudan_names,
    read_mask,
    split_names,
)

VOC_DETECTION_CLASSES = VOC_CLASSES[1:]
PENNFUDAN_DETECTION_CLASSES = ("person",)


@dataclasses.dataclass(frozen=True)
class TFDSPreset:
    """A tensorflow-datasets detection set: its splits and its ``ignore`` feature."""

    ignore_key: str
    train_split: str
    val_split: str


TFDS_PRESETS = {
    "coco/2017": TFDSPreset("is_crowd", "train", "validation"),
    "voc/2007": TFDSPreset("is_difficult", "train+validation", "test"),
    "voc/2012": TFDSPreset("is_difficult", "train+validation", "validation"),
}


def _tf():
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ImportError("The detection input pipelines use tf.data: "
                          "pip install 'keras-coordatt[tf]'") from error
    return tf


@dataclasses.dataclass
class DetectionSource:
    """One split: ``dataset`` of ``(data, boxes, labels, ignore)`` (module docstring),
    ``num_examples``, ``class_names``; ``from_files`` when ``data`` is a path; ``table``: the
    padded tensors of a random-access (folder) source, else None."""

    dataset: Any
    num_examples: int
    class_names: tuple[str, ...]
    from_files: bool = False
    table: Any = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _table_source(paths, boxes, labels, ignore, class_names) -> DetectionSource:
    """A folder source from per-image lists, padded to the largest box count (at least 1)."""
    tf = _tf()
    if not paths:
        raise ValueError("The split lists no images.")
    m = max([1] + [len(b) for b in boxes])
    pad_boxes = np.zeros((len(paths), m, 4), "float32")
    pad_labels = np.full((len(paths), m), -1, "int32")
    pad_ignore = np.ones((len(paths), m), bool)
    for i, (b, c, g) in enumerate(zip(boxes, labels, ignore, strict=True)):
        pad_boxes[i, :len(b)] = np.reshape(b, (-1, 4))
        pad_labels[i, :len(c)] = c
        pad_ignore[i, :len(g)] = g
    table = (tf.constant([os.fspath(p) for p in paths]), tf.constant(pad_boxes),
             tf.constant(pad_labels), tf.constant(pad_ignore))
    return DetectionSource(tf.data.Dataset.from_tensor_slices(table), len(paths),
                           tuple(class_names), from_files=True, table=table)


def read_voc_xml(path: str | os.PathLike, class_names: Sequence[str]) -> dict:
    """One Pascal VOC annotation: ``{"filename", "height", "width", "boxes" (n, 4) relative
    yxyx, "labels" (n,), "ignore" (n,) (difficult)}``. ValueError for an unknown class or a
    missing size."""
    root = ElementTree.parse(path).getroot()
    size = root.find("size")
    if size is None or size.findtext("width") is None:
        raise ValueError(f"{path}: no <size><width>/<height>, needed for relative boxes.")
    width, height = float(size.findtext("width")), float(size.findtext("height"))
    boxes, labels, ignore = [], [], []
    for item in root.iter("object"):
        name = (item.findtext("name") or "").strip()
        if name not in class_names:
            raise ValueError(f"{path}: class {name!r} is not one of {tuple(class_names)}.")
        box = item.find("bndbox")
        x1, y1, x2, y2 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([(y1 - 1) / height, (x1 - 1) / width, y2 / height, x2 / width])
        labels.append(list(class_names).index(name))
        ignore.append((item.findtext("difficult") or "0").strip() == "1")
    return {"filename": root.findtext("filename"), "height": height, "width": width,
            "boxes": np.reshape(np.asarray(boxes, "float32"), (-1, 4)),
            "labels": np.asarray(labels, "int32"), "ignore": np.asarray(ignore, bool)}


def voc_source(roots: str | os.PathLike | Sequence[str | os.PathLike], split: str = "trainval",
               class_names: Sequence[str] = VOC_DETECTION_CLASSES) -> DetectionSource:
    """Folders in Pascal VOC layout (e.g. ``VOCdevkit/VOC2007`` and ``VOC2012``), the images of
    ``ImageSets/Main/<split>.txt`` of each, concatenated. ValueError for a missing folder /
    list / file or an unknown class."""
    roots = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
    paths, boxes, labels, ignore = [], [], [], []
    for root in map(Path, roots):
        listing = root / "ImageSets" / "Main" / f"{split}.txt"
        missing = [p for p in ("Annotations", "JPEGImages", listing) if not (root / p).exists()]
        if missing:
            raise ValueError(f"{root} is not a Pascal VOC folder: missing "
                             f"{', '.join(map(str, missing))}.")
        for name in listing.read_text().split():
            info = read_voc_xml(root / "Annotations" / f"{name}.xml", class_names)
            image = root / "JPEGImages" / f"{name}.jpg"
            if not image.exists():
                raise ValueError(f"{image} (listed in {listing}) does not exist.")
            paths.append(image)
            boxes.append(info["boxes"])
            labels.append(info["labels"])
            ignore.append(info["ignore"])
    return _table_source(paths, boxes, labels, ignore, class_names)


def coco_source(root: str | os.PathLike, split: str = "train2017") -> DetectionSource:
    """A folder in COCO layout: ``annotations/instances_<split>.json`` and the images in
    ``<split>/``. Categories become 0.. in id order (``class_names`` their names); crowd
    boxes are ``ignore``; images without annotations are kept (no objects)."""
    root = Path(root)
    path = root / "annotations" / f"instances_{split}.json"
    if not path.is_file() or not (root / split).is_dir():
        raise ValueError(f"{root} is not a COCO folder for split {split!r}: expected {path} "
                         f"and the images in {root / split}/.")
    data = json.loads(path.read_text())
    categories = sorted(data["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(categories)}
    per_image: dict[int, list] = {image["id"]: [] for image in data["images"]}
    for ann in data["annotations"]:
        per_image[ann["image_id"]].append(ann)
    paths, boxes, labels, ignore = [], [], [], []
    for image in sorted(data["images"], key=lambda item: item["id"]):
        height, width = float(image["height"]), float(image["width"])
        anns = per_image[image["id"]]
        boxes.append([[a["bbox"][1] / height, a["bbox"][0] / width,
                       (a["bbox"][1] + a["bbox"][3]) / height,
                       (a["bbox"][0] + a["bbox"][2]) / width] for a in anns])
        labels.append([index[a["category_id"]] for a in anns])
        ignore.append([bool(a.get("iscrowd", 0)) for a in anns])
        paths.append(root / split / image["file_name"])
    return _table_source(paths, boxes, labels, ignore, [c["name"] for c in categories])


_PF_SIZE = re.compile(r"Image size \(X x Y x C\) : (\d+) x (\d+)")
_PF_BOX = re.compile(r"Bounding box for object \d+ .*: \((\d+), (\d+)\) - \((\d+), (\d+)\)")


def read_pennfudan_annotation(path: str | os.PathLike) -> np.ndarray:
    """Relative ``yxyx`` boxes ``(n, 4)`` of one Penn-Fudan ``.txt`` annotation."""
    text = Path(path).read_text(errors="replace")
    size = _PF_SIZE.search(text)
    if size is None:
        raise ValueError(f"{path}: no 'Image size (X x Y x C)' line.")
    width, height = float(size.group(1)), float(size.group(2))
    boxes = [[(float(y1) - 1) / height, (float(x1) - 1) / width, float(y2) / height,
              float(x2) / width] for x1, y1, x2, y2 in _PF_BOX.findall(text)]
    return np.reshape(np.asarray(boxes, "float32"), (-1, 4))


def mask_boxes(mask: np.ndarray) -> np.ndarray:
    """Relative ``yxyx`` boxes ``(n, 4)`` of the instances ``1..n`` of a ``(H, W)`` mask."""
    height, width = mask.shape
    boxes = []
    for instance in sorted(int(v) for v in np.unique(mask) if v > 0):
        rows = np.flatnonzero(np.any(mask == instance, axis=1))
        cols = np.flatnonzero(np.any(mask == instance, axis=0))
        boxes.append([rows[0] / height, cols[0] / width, (rows[-1] + 1) / height,
                      (cols[-1] + 1) / width])
    return np.reshape(np.asarray(boxes, "float32"), (-1, 4))


def pennfudan_source(root: str | os.PathLike,
                     names: Sequence[str] | None = None) -> DetectionSource:
    """Penn-Fudan pedestrians (class ``person``): the images ``names`` (default all) of a
    folder laid out as :func:`keras_coordatt.tasks.segmentation_data.pennfudan_names` reads it;
    boxes from ``annotations/`` / ``Annotation/`` ``<name>.txt`` when present, else from the
    instance mask."""
    root = Path(root)
    images, masks = _pennfudan_layout(root)
    notes = next((root / d for d in ("annotations", "Annotation") if (root / d).is_dir()), None)
    names = pennfudan_names(root) if names is None else list(names)
    paths, boxes = [], []
    for name in names:
        image = next((images / f"{name}{s}" for s in IMAGE_SUFFIXES
                      if (images / f"{name}{s}").exists()), None)
        if image is None:
            raise ValueError(f"Penn-Fudan image {name!r} is missing in {images}.")
        paths.append(image)
        if notes is not None and (notes / f"{name}.txt").exists():
            boxes.append(read_pennfudan_annotation(notes / f"{name}.txt"))
        else:
            boxes.append(mask_boxes(read_mask(masks / f"{name}_mask.png")))
    labels = [np.zeros(len(b), "int32") for b in boxes]
    ignore = [np.zeros(len(b), bool) for b in boxes]
    return _table_source(paths, boxes, labels, ignore, PENNFUDAN_DETECTION_CLASSES)


def _split_size(info, split: str, dataset) -> int:
    """Examples in a TFDS split (``"train+validation"`` included); counted when TFDS' record
    of it is missing."""
    for parts in ([split], split.split("+")):
        try:
            return sum(int(info.splits[part].num_examples) for part in parts)
        except (KeyError, ValueError, TypeError):
            continue
    count = int(dataset.cardinality())
    return count if count >= 0 else int(dataset.reduce(0, lambda n, _: n + 1))


def tfds_source(names: str | Sequence[str], split: str,
                data_dir: str | None = None) -> DetectionSource:
    """Sets of :data:`TFDS_PRESETS`, concatenated; ``split`` ``"train"`` / ``"val"`` map to each
    preset's splits (VOC: train+validation / test for 2007), other strings are TFDS splits."""
    import tensorflow_datasets as tfds

    tf = _tf()
    names = [names] if isinstance(names, str) else list(names)
    parts, count, class_names = [], 0, None
    for name in names:
        if name not in TFDS_PRESETS:
            raise ValueError(f"Unknown TFDS detection set {name!r}: use {sorted(TFDS_PRESETS)}.")
        preset = TFDS_PRESETS[name]
        tfds_split = {"train": preset.train_split, "val": preset.val_split}.get(split, split)
        dataset, info = tfds.load(name, split=tfds_split, data_dir=data_dir, with_info=True,
                                  shuffle_files=False,
                                  decoders={"image": tfds.decode.SkipDecoding()})
        names_here = tuple(info.features["objects"]["label"].names)
        if class_names not in (None, names_here):
            raise ValueError(f"{name} has other classes than {names[0]}: cannot concatenate.")
        class_names = names_here

        def pick(example, key=preset.ignore_key):
            objects = example["objects"]
            return (example["image"], tf.cast(objects["bbox"], tf.float32),
                    tf.cast(objects["label"], tf.int32), tf.cast(objects[key], tf.bool))

        parts.append(dataset.map(pick))
        count += _split_size(info, tfds_split, dataset)
    dataset = parts[0]
    for part in parts[1:]:
        dataset = dataset.concatenate(part)
    return DetectionSource(dataset, count, class_names, from_files=False)


def detection_source(source: str, split: str, *, data_dir=None, tfds_names=None,
                     num_val: int = 50, split_seed: int = 0) -> DetectionSource:
    """One split of a source as the recipe names them: ``"voc"`` (``data_dir``: one folder or a
    list; ``split`` an ``ImageSets/Main`` list), ``"coco"`` (``split`` e.g. ``val2017``),
    ``"pennfudan"`` (``split`` ``"train"`` / ``"val"`` / ``"all"``: ``num_val`` images held out by
    :func:`~keras_coordatt.tasks.segmentation_data.split_names`), ``"tfds"`` (``tfds_names``)."""
    if source in ("voc", "coco", "pennfudan") and not data_dir:
        raise ValueError(f"source {source!r} needs a data folder (--data-dir).")
    if source == "voc":
        return voc_source(data_dir, split)
    if source == "coco":
        return coco_source(data_dir if isinstance(data_dir, (str, os.PathLike)) else data_dir[0],
                           split)
    if source == "pennfudan":
        root = data_dir if isinstance(data_dir, (str, os.PathLike)) else data_dir[0]
        if split not in ("train", "val", "all"):
            raise ValueError(f"Penn-Fudan splits: 'train', 'val', 'all'; got {split!r}.")
        names = pennfudan_names(root)
        if split != "all":
            train, val = split_names(names, num_val, split_seed)
            names = train if split == "train" else val
        return pennfudan_source(root, names)
    if source == "tfds":
        return tfds_source(tfds_names or ["coco/2017"], split,
                           None if data_dir is None else os.fspath(
                               data_dir if isinstance(data_dir, (str, os.PathLike))
                               else data_dir[0]))
    raise ValueError(f"Unknown source {source!r}: use 'voc', 'coco', 'pennfudan' or 'tfds'.")


# Pipelines ----------------------------------------------------------------------------------


def _decode(data, from_files: bool):
    tf = _tf()
    if from_files:
        data = tf.io.read_file(data)
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return tf.cast(image, tf.float32)


def pack_boxes(boxes, labels, max_boxes: int, bounding_box_format: str, image_size: int):
    """Valid boxes (label >= 0) first, cut / padded to ``max_boxes``, converted from relative
    ``yxyx`` to ``bounding_box_format`` at ``image_size``; padding slots: box -1, label -1."""
    from keras_coordatt.tasks.anchors import from_relative_yxyx

    tf = _tf()
    order = tf.argsort(tf.cast(labels < 0, tf.int32), stable=True)
    boxes, labels = tf.gather(boxes, order)[:max_boxes], tf.gather(labels, order)[:max_boxes]
    pad = max_boxes - tf.shape(labels)[0]
    boxes = tf.pad(boxes, [[0, pad], [0, 0]])
    labels = tf.pad(labels, [[0, pad]], constant_values=-1)
    boxes = from_relative_yxyx(boxes, bounding_box_format, (image_size, image_size))
    boxes = tf.where(labels[:, None] >= 0, boxes, -1.0)
    boxes.set_shape([max_boxes, 4])
    labels.set_shape([max_boxes])
    return {"boxes": boxes, "labels": labels}


def _resize(image, image_size: int):
    from keras_coordatt.applications import preprocess_input

    tf = _tf()
    image = tf.image.resize(image, (image_size, image_size), method="bilinear")
    return preprocess_input(image)


def _shuffled(source: DetectionSource, epoch_seed, window: int):
    """``source.dataset`` in the order of the epoch ``epoch_seed``: a stateless permutation of
    a folder's table, or of consecutive windows of a streamed (TFDS) set."""
    tf = _tf()

    def permute(items, index):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(tf.shape(items[2], out_type=tf.int64)[0]), seed=tf.stack([epoch_seed, index]))
        return tf.data.Dataset.from_tensor_slices(tuple(tf.gather(t, order) for t in items))

    if source.table is not None:
        return permute(source.table, tf.constant(0, tf.int64))
    windows = source.dataset.padded_batch(window, padding_values=(b"", 0.0, -1, True))
    return windows.enumerate().flat_map(lambda index, items: permute(items, index))


def train_batches(source: DetectionSource, image_size: int, batch_size: int, epochs: int, *,
                  start_epoch: int = 0, seed: int = 0, max_boxes: int = 100,
                  bounding_box_format: str = "yxyx", shuffle_buffer: int = 1000,
                  steps: int | None = None, **augment) -> Any:
    """Epochs ``start_epoch .. epochs - 1`` of augmented batches back to back (module
    docstring), ``steps`` (default ``num_examples // batch_size``, at most that) full batches
    each: give ``fit`` the same ``steps_per_epoch``; ``augment``: the options of
    :func:`~keras_coordatt.tasks.detection_augment.ssd_augment`. Ignored boxes are dropped."""
    from keras_coordatt.tasks.detection_augment import ssd_augment

    tf = _tf()
    steps = min(steps or sys.maxsize, steps_per_epoch(source, batch_size))

    def one_epoch(epoch):
        epoch_seed = tf.cast(seed, tf.int64) * 1_000_003 + epoch

        def transform(position, item):
            data, boxes, labels, ignore = item
            image, boxes, labels = ssd_augment(
                _decode(data, source.from_files), boxes, tf.where(ignore, -1, labels),
                tf.stack([epoch_seed, position]), **augment)
            return _resize(image, image_size), pack_boxes(boxes, labels, max_boxes,
                                                          bounding_box_format, image_size)

        return (_shuffled(source, epoch_seed, shuffle_buffer).take(steps * batch_size)
                .enumerate().map(transform, num_parallel_calls=tf.data.AUTOTUNE)
                .batch(batch_size, drop_remainder=True))

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return (tf.data.Dataset.range(start_epoch, epochs).flat_map(one_epoch)
            .prefetch(tf.data.AUTOTUNE).with_options(options))


def eval_batches(source: DetectionSource, image_size: int, batch_size: int, *,
                 max_boxes: int = 100, bounding_box_format: str = "yxyx") -> Any:
    """Every image once, in order, resized (no augmentation), labels as in training."""
    tf = _tf()

    def transform(data, boxes, labels, ignore):
        return (_resize(_decode(data, source.from_files), image_size),
                pack_boxes(boxes, tf.where(ignore, -1, labels), max_boxes, bounding_box_format,
                           image_size))

    return (source.dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def coco_batches(source: DetectionSource, image_size: int, batch_size: int) -> Any:
    """Every image once, in order: ``(images, {"boxes" relative yxyx, "labels", "ignore",
    "size" (B, 2) original height / width})``, padded per batch (label -1)."""
    tf = _tf()

    def transform(data, boxes, labels, ignore):
        image = _decode(data, source.from_files)
        size = tf.shape(image)[:2]
        return _resize(image, image_size), {"boxes": boxes, "labels": labels,
                                            "ignore": ignore, "size": size}

    padding = (0.0, {"boxes": -1.0, "labels": -1, "ignore": True, "size": 0})
    return (source.dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
            .padded_batch(batch_size, padding_values=padding).prefetch(tf.data.AUTOTUNE))


def steps_per_epoch(source: DetectionSource, batch_size: int) -> int:
    """Full batches per epoch; ValueError when the set holds fewer images than one batch."""
    if source.num_examples < batch_size:
        raise ValueError(f"The training set has {source.num_examples} images, fewer than one "
                         f"batch of {batch_size}: use a smaller --batch-size.")
    return source.num_examples // batch_size


__all__ = [
    "PENNFUDAN_DETECTION_CLASSES", "TFDS_PRESETS", "VOC_DETECTION_CLASSES", "DetectionSource",
    "coco_batches", "coco_source", "detection_source", "eval_batches", "mask_boxes",
    "pack_boxes", "pennfudan_source", "read_pennfudan_annotation", "read_voc_xml",
    "steps_per_epoch", "tfds_source", "train_batches", "voc_source",
]
