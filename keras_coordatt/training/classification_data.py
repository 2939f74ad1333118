"""``tf.data`` pipelines for image classification (shared by applications/classification).

Sources (:class:`Source`: a dataset of ``(encoded image or file path, label)`` plus its size and
class names):

* :func:`tfds_source`: any tensorflow-datasets set with ``image`` / ``label`` features
  (``imagenet2012``, ``imagenette``, ``cifar10``, ...), read undecoded;
* :func:`folder_source`: one sub-folder per class, listed by
  ``keras.utils.image_dataset_from_directory`` (same classes, same order: sorted folder names;
  for ImageNet in synset folders that is the standard label order).

Pipelines, batches of ``(float32 images (N, S, S, 3) normalised as
keras_coordatt.applications.preprocess_input, int labels (N,))``:

* :func:`train_batches`: random-resized crop (area 8-100 %, aspect 3/4-4/3) and horizontal flip,
  the standard ImageNet augmentation. Epoch ``e`` is a pure function of ``(seed, e)``, so a run
  resumed at epoch ``e`` sees exactly the data an uninterrupted run sees: stateless random ops
  seeded by ``(seed, e, ...)`` shuffle it (image folders: the whole file list; TFDS, read in
  order: within consecutive windows of ``shuffle_buffer`` examples, TFDS having shuffled the
  records when it prepared the set) and draw every crop and flip;
* :func:`eval_batches`: resize the shorter side to ``resize_size`` (256) and centre-crop
  ``image_size`` (224), the original evaluation.

Needs TensorFlow (tf.data); tensorflow-datasets only for :func:`tfds_source`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from keras_coordatt.applications.imagenet_utils import IMAGENET_MEAN, IMAGENET_STD

AREA_RANGE = (0.08, 1.0)
RATIO_RANGE = (3 / 4, 4 / 3)


def _tf():
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ImportError(
            "The classification input pipelines use tf.data: pip install 'keras-coordatt[tf]'"
        ) from error
    return tf


@dataclasses.dataclass
class Source:
    """Undecoded examples of one split.

    Attributes:
        dataset: ``tf.data.Dataset`` of ``(bytes or path, int64 label)``.
        num_examples: its length.
        class_names: label -> name.
        from_files: True when the first element is a file path, False for encoded bytes.
        table: ``(paths, labels)`` tensors of a random-access source (image folders), else None.
    """

    dataset: Any
    num_examples: int
    class_names: tuple[str, ...]
    from_files: bool = False
    table: Any = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def tfds_source(name: str, split: str, data_dir: str | None = None) -> Source:
    """Split ``split`` of the tensorflow-datasets set ``name`` (downloaded / prepared into
    ``data_dir`` as TFDS does; ImageNet needs its archives placed there by hand)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "Reading tensorflow-datasets sets needs it installed: "
            "pip install 'keras-coordatt[data]'"
        ) from error
    dataset, info = tfds.load(
        name, split=split, data_dir=data_dir, with_info=True, shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    features = info.features
    if "image" not in features or "label" not in features:
        raise ValueError(
            f"TFDS set {name!r} has features {sorted(features)}: an image classification set "
            "needs 'image' and 'label'."
        )
    dataset = dataset.map(lambda item: (item["image"], item["label"]))
    return Source(dataset, int(info.splits[split].num_examples),
                  tuple(features["label"].names), from_files=False)


def folder_source(directory: str | os.PathLike) -> Source:
    """Images under ``directory/<class name>/`` (any depth below it; jpeg, png, bmp, gif)."""
    import keras

    tf = _tf()
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(f"Image folder {directory!r} does not exist.")
    listing = keras.utils.image_dataset_from_directory(
        directory, labels="inferred", batch_size=None, shuffle=False, verbose=False,
    )
    paths = list(listing.file_paths)
    if not paths:
        raise ValueError(f"No images under {directory!r}: expected {directory}/<class>/*.jpg.")
    names = tuple(listing.class_names)
    labels = [names.index(os.path.relpath(p, directory).split(os.sep)[0]) for p in paths]
    table = (tf.constant(paths), tf.constant(labels, tf.int64))
    return Source(tf.data.Dataset.from_tensor_slices(table), len(paths), names,
                  from_files=True, table=table)


def normalize(images):
    """uint8 / float RGB in [0, 255] -> ``(x / 255 - mean) / std`` (ImageNet), float32."""
    tf = _tf()
    x = tf.cast(images, tf.float32) / 255.0
    return (x - tf.constant(IMAGENET_MEAN, tf.float32)) / tf.constant(IMAGENET_STD, tf.float32)


def _decode(data, from_files: bool):
    tf = _tf()
    if from_files:
        data = tf.io.read_file(data)
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def center_crop(image, image_size: int, resize_size: int):
    """Shorter side resized to ``resize_size`` (bilinear, antialiased), then the central
    ``image_size`` square; float32 in [0, 255]."""
    tf = _tf()
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = resize_size / tf.reduce_min(shape)
    size = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), resize_size)
    image = tf.image.resize(image, size, method="bilinear", antialias=True)
    top = (size[0] - image_size) // 2
    left = (size[1] - image_size) // 2
    return image[top:top + image_size, left:left + image_size]


def random_resized_crop(image, image_size: int, seed, flip: bool = True):
    """Inception-style crop (area :data:`AREA_RANGE`, aspect :data:`RATIO_RANGE`; the whole
    image when no crop fits in 10 tries), resized to ``image_size`` and flipped half the time;
    ``seed`` is a stateless seed ``(2,)``. Float32 in [0, 255]."""
    tf = _tf()
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=RATIO_RANGE, area_range=AREA_RANGE,
        max_attempts=10, use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, size)
    crop = tf.image.resize(crop, (image_size, image_size), method="bilinear", antialias=True)
    if flip:
        crop = tf.image.stateless_random_flip_left_right(crop, seed=seed[::-1])
    return crop


def eval_batches(source: Source, batch_size: int, image_size: int = 224,
                 resize_size: int | None = None):
    """The evaluation pipeline (every example once, in order, last batch smaller)."""
    tf = _tf()
    resize_size = resize_size or round(image_size / 0.875)

    def transform(data, label):
        image = center_crop(_decode(data, source.from_files), image_size, resize_size)
        return normalize(image), label

    return (source.dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size).prefetch(tf.data.AUTOTUNE))


def train_batches(source: Source, batch_size: int, epochs: int, start_epoch: int = 0,
                  image_size: int = 224, seed: int = 0, shuffle_buffer: int = 10_000,
                  flip: bool = True):
    """Epochs ``start_epoch .. epochs - 1`` of augmented training batches, back to back:
    ``steps_per_epoch(source, batch_size)`` full batches per epoch (the rest of each shuffled
    epoch is dropped). Give ``fit`` ``steps_per_epoch`` so it keeps one iterator."""
    tf = _tf()
    steps = steps_per_epoch(source, batch_size)

    def one_epoch(epoch):
        epoch_seed = tf.cast(seed, tf.int64) * 1_000_003 + epoch
        shuffled = _shuffled(source, epoch_seed, shuffle_buffer)

        def transform(position, item):
            data, label = item
            crop_seed = tf.stack([epoch_seed, position])
            image = random_resized_crop(_decode(data, source.from_files), image_size,
                                        crop_seed, flip)
            return normalize(image), label

        return (shuffled.take(steps * batch_size).enumerate()
                .map(transform, num_parallel_calls=tf.data.AUTOTUNE)
                .batch(batch_size, drop_remainder=True))

    options = tf.data.Options()  # several workers: each takes its share of every batch
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    epochs_ds = tf.data.Dataset.range(start_epoch, epochs)
    return epochs_ds.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE).with_options(options)


def _shuffled(source: Source, epoch_seed, window: int):
    """``source.dataset`` in the order of the epoch seeded by ``epoch_seed`` (int64 tensor)."""
    tf = _tf()
    if source.table is not None:
        paths, labels = source.table
        order = tf.random.experimental.stateless_shuffle(
            tf.range(tf.shape(labels, out_type=tf.int64)[0]), seed=tf.stack([epoch_seed, 0]))
        return tf.data.Dataset.from_tensor_slices((tf.gather(paths, order),
                                                   tf.gather(labels, order)))

    def shuffle_window(index, items):
        data, labels = items
        order = tf.random.experimental.stateless_shuffle(
            tf.range(tf.shape(labels, out_type=tf.int64)[0]), seed=tf.stack([epoch_seed, index]))
        return tf.data.Dataset.from_tensor_slices((tf.gather(data, order),
                                                   tf.gather(labels, order)))

    return source.dataset.batch(window).enumerate().flat_map(shuffle_window)


def steps_per_epoch(source: Source, batch_size: int) -> int:
    """Full batches in one epoch of ``source``; ValueError when there is not one."""
    if source.num_examples < batch_size:
        raise ValueError(
            f"The training set has {source.num_examples} images, fewer than one batch of "
            f"{batch_size}: use a smaller --batch-size."
        )
    return source.num_examples // batch_size
