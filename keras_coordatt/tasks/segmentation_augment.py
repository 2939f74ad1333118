"""Transforms of ``(image, mask)`` pairs for segmentation: DeepLab's training augmentation and
the evaluation resize, applied to the image and its mask together (TensorFlow ops, usable in
``tf.data``). Images: ``(H, W, 3)`` pixels in [0, 255]; masks: ``(H, W)`` integer labels.

Padding fills images with the ImageNet mean pixel (0 after ``preprocess_input``) and masks with
the ignore label, so padded pixels count in neither the loss nor ``MeanIoU``.
"""

from __future__ import annotations

from keras_coordatt.applications.imagenet_utils import IMAGENET_MEAN

IGNORE_LABEL = 255
# The ImageNet mean pixel in [0, 255]: padding with it gives 0 after preprocess_input.
MEAN_PIXEL = tuple(255.0 * value for value in IMAGENET_MEAN)


def _tf():
    import tensorflow as tf

    return tf


def _resize_pair(image, mask, size):
    """Image bilinear (float), mask nearest-neighbour, to ``size`` (height, width)."""
    tf = _tf()
    image = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
    mask = tf.image.resize(mask[..., None], size, method="nearest")[..., 0]
    return image, mask


def _pad_pair(image, mask, height, width, ignore_label: int):
    """Pads bottom/right to at least (height, width): image with the mean pixel, mask with the
    ignore label."""
    tf = _tf()
    shape = tf.shape(mask)
    pad_h = tf.maximum(height - shape[0], 0)
    pad_w = tf.maximum(width - shape[1], 0)
    paddings = [[0, pad_h], [0, pad_w]]
    channels = [tf.pad(image[..., c], paddings, constant_values=MEAN_PIXEL[c]) for c in range(3)]
    image = tf.stack(channels, axis=-1)
    mask = tf.pad(mask, paddings, constant_values=ignore_label)
    return image, mask


def random_scale_crop_flip(
    image,
    mask,
    crop_size: tuple[int, int],
    *,
    scale_range: tuple[float, float] = (0.5, 2.0),
    flip: bool = True,
    ignore_label: int = IGNORE_LABEL,
    seed=None,
):
    """DeepLab's training augmentation of one ``(image, mask)`` pair.

    Random scale (one factor in ``scale_range`` for both axes; image bilinear, mask nearest),
    padding to at least ``crop_size`` (image: mean pixel, mask: ``ignore_label``), a random
    ``crop_size`` crop at the same offset in both, and a horizontal flip of both with
    probability 1/2.

    Args:
        image: ``(H, W, 3)`` pixels in [0, 255] (any dtype).
        mask: ``(H, W)`` integer labels.
        crop_size: ``(height, width)`` of the output.
        seed: an optional ``(2,)`` int tensor for stateless random ops (reproducible); None
            uses the global random generator.

    Returns:
        ``(float32 (h, w, 3), uint8 (h, w))``.
    """
    tf = _tf()
    height, width = crop_size
    seeds = (None,) * 4 if seed is None else [
        tf.random.experimental.stateless_fold_in(seed, i) for i in range(4)
    ]

    def uniform(index, shape, low, high, dtype=tf.float32):
        if seeds[index] is None:
            return tf.random.uniform(shape, low, high, dtype=dtype)
        return tf.random.stateless_uniform(shape, seeds[index], low, high, dtype=dtype)

    mask = tf.cast(mask, tf.uint8)
    low, high = scale_range
    shape = tf.cast(tf.shape(mask), tf.float32)
    scale = uniform(0, [], low, high) if low != high else tf.constant(low, tf.float32)
    size = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), 1)
    image, mask = _resize_pair(image, mask, size)
    image, mask = _pad_pair(image, mask, height, width, ignore_label)
    shape = tf.shape(mask)
    top = uniform(1, [], 0, shape[0] - height + 1, tf.int32)
    left = uniform(2, [], 0, shape[1] - width + 1, tf.int32)
    image = image[top:top + height, left:left + width]
    mask = mask[top:top + height, left:left + width]
    if flip:
        flipped = uniform(3, [], 0.0, 1.0) < 0.5
        image = tf.cond(flipped, lambda: tf.reverse(image, [1]), lambda: image)
        mask = tf.cond(flipped, lambda: tf.reverse(mask, [1]), lambda: mask)
    image.set_shape([height, width, 3])
    mask.set_shape([height, width])
    return image, mask


def resize_and_pad(image, mask, size: int, *, ignore_label: int = IGNORE_LABEL):
    """Evaluation preprocessing: resize so the longer side is ``size`` (aspect kept; image
    bilinear, mask nearest), then pad to ``size x size`` (mean pixel / ``ignore_label``)."""
    tf = _tf()
    shape = tf.cast(tf.shape(mask), tf.float32)
    scale = size / tf.reduce_max(shape)
    new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), 1)
    image, mask = _resize_pair(image, tf.cast(mask, tf.uint8), new)
    image, mask = _pad_pair(image, mask, size, size, ignore_label)
    image.set_shape([size, size, 3])
    mask.set_shape([size, size])
    return image, mask


def check_labels(mask, num_classes: int, ignore_label: int = IGNORE_LABEL):
    """Raises (``InvalidArgumentError`` in ``tf.data``) on labels outside ``[0, num_classes)``
    other than ``ignore_label``; returns the mask."""
    tf = _tf()
    valid = tf.logical_or(tf.cast(mask, tf.int32) < num_classes,
                          tf.equal(tf.cast(mask, tf.int32), ignore_label))
    check = tf.debugging.Assert(
        tf.reduce_all(valid),
        [f"mask labels must be in [0, {num_classes}) or {ignore_label} (the ignore label); "
         "found max", tf.reduce_max(mask)],
    )
    with tf.control_dependencies([check]):
        return tf.identity(mask)


def _resize_shorter(image, mask, size: int):
    tf = _tf()
    shape = tf.cast(tf.shape(mask), tf.float32)
    new = tf.cast(tf.round(shape * (size / tf.reduce_min(shape))), tf.int32)
    return _resize_pair(image, tf.cast(mask, tf.uint8), new)


__all__ = ["IGNORE_LABEL", "MEAN_PIXEL", "check_labels", "random_scale_crop_flip",
           "resize_and_pad"]
