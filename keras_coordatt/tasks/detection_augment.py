"""Box-aware transforms of ``(image, boxes, labels)`` for SSD training (TensorFlow ops, usable in
``tf.data``): SSD's augmentation (Liu et al. 2016; the set of ``lufficc/SSD``, which the CA
authors' detection code builds on), each step moving the boxes with the pixels.

Conventions: images ``(H, W, 3)`` float32 pixels in [0, 255]; boxes ``(M, 4)`` float32
**relative** ``yxyx`` (fractions of the image height / width, so a resize leaves them
unchanged); labels ``(M,)`` int32, -1 marking padding or a dropped box (its box is then
meaningless). The explicit-parameter transforms (:func:`flip_boxes`, :func:`expand`,
:func:`crop`) are what the random ones (:func:`ssd_augment`) apply:

1. photometric distortion (optional): brightness +-32, contrast / saturation x [0.5, 1.5], hue
   +-18 degrees, pixels clipped to [0, 255];
2. expand, half the time: the image placed at a random offset on a canvas ``r`` times larger
   (``r`` uniform in [1, ``max_expand``] = [1, 4]) filled with the ImageNet mean pixel;
3. SSD's random crop: a mode drawn among *keep the image* / min IoU 0.1, 0.3, 0.7, 0.9 /
   *any*; up to 50 candidate windows of sides in [0.3, 1] of the image and aspect (pixels)
   in [1/2, 2]; the first whose IoU with some valid box reaches the mode's minimum and that
   holds the centre of at least one box is taken (none: the image is kept). Boxes whose centre
   falls outside the window are dropped (label -1), the others clipped to it;
4. horizontal flip, half the time.
"""

from __future__ import annotations

from keras_coordatt.tasks.segmentation_augment import MEAN_PIXEL

#: SSD's random-crop modes: minimum IoU with some box; 0 keeps the image, -1 takes any window.
CROP_MIN_IOUS = (0.0, 0.1, 0.3, 0.7, 0.9, -1.0)
CROP_TRIALS = 50


def _tf():
    import tensorflow as tf

    return tf


def flip_boxes(boxes):
    """Relative ``yxyx`` boxes ``(M, 4)`` of a horizontally flipped image."""
    tf = _tf()
    y1, x1, y2, x2 = tf.unstack(boxes, 4, axis=-1)
    return tf.stack([y1, 1.0 - x2, y2, 1.0 - x1], axis=-1)


def expand(image, boxes, canvas_size, offset):
    """``image`` ``(H, W, 3)`` placed with its top-left corner at ``offset`` ``(top, left)`` on a
    ``canvas_size`` ``(h, w)`` canvas of the mean pixel; ``boxes`` moved with it. Integers."""
    tf = _tf()
    shape = tf.shape(image)
    canvas = tf.cast(canvas_size, tf.int32)
    top, left = tf.cast(offset[0], tf.int32), tf.cast(offset[1], tf.int32)
    paddings = [[top, canvas[0] - shape[0] - top], [left, canvas[1] - shape[1] - left]]
    image = tf.stack([tf.pad(image[..., c], paddings, constant_values=MEAN_PIXEL[c])
                      for c in range(3)], axis=-1)
    size = tf.cast(tf.stack([shape[0], shape[1]] * 2), tf.float32)
    origin = tf.cast(tf.stack([top, left] * 2), tf.float32)
    scale = tf.cast(tf.stack([canvas[0], canvas[1]] * 2), tf.float32)
    return image, (boxes * size + origin) / scale


def crop(image, boxes, labels, window):
    """The pixels of ``window`` ``(top, left, bottom, right)`` (integers, exclusive end) of
    ``image``; boxes whose centre lies outside it are dropped (label -1), the others clipped
    to it and made relative to it."""
    tf = _tf()
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    window = tf.cast(window, tf.int32)
    image = image[window[0]:window[2], window[1]:window[3]]
    rel = tf.cast(window, tf.float32) / tf.concat([shape, shape], 0)
    center_y = (boxes[:, 0] + boxes[:, 2]) / 2
    center_x = (boxes[:, 1] + boxes[:, 3]) / 2
    inside = ((center_y > rel[0]) & (center_y < rel[2]) & (center_x > rel[1])
              & (center_x < rel[3]))
    clipped = tf.clip_by_value(boxes, tf.concat([rel[:2], rel[:2]], 0),
                               tf.concat([rel[2:], rel[2:]], 0))
    size = tf.concat([rel[2:] - rel[:2]] * 2, 0)
    boxes = (clipped - tf.concat([rel[:2], rel[:2]], 0)) / size
    return image, boxes, tf.where(inside, labels, -1)


def _iou(window, boxes):
    """IoU ``(K, M)`` of relative windows ``(K, 4)`` and boxes ``(M, 4)``, both ``yxyx``."""
    tf = _tf()
    low = tf.maximum(window[:, None, :2], boxes[None, :, :2])
    high = tf.minimum(window[:, None, 2:], boxes[None, :, 2:])
    inter = tf.reduce_prod(tf.maximum(high - low, 0.0), axis=-1)
    area_w = tf.reduce_prod(window[:, 2:] - window[:, :2], axis=-1)[:, None]
    area_b = tf.reduce_prod(tf.maximum(boxes[:, 2:] - boxes[:, :2], 0.0), axis=-1)[None, :]
    return inter / tf.maximum(area_w + area_b - inter, 1e-12)


def sample_crop_window(image_size, boxes, labels, seed):
    """SSD's random crop window ``(top, left, bottom, right)`` in pixels (module docstring, step
    3); ``seed`` a ``(2,)`` stateless seed. The whole image when the mode keeps it or no
    candidate fits."""
    tf = _tf()
    seeds = [tf.random.experimental.stateless_fold_in(seed, i) for i in range(5)]
    height, width = tf.cast(image_size[0], tf.float32), tf.cast(image_size[1], tf.float32)
    mode = tf.random.stateless_uniform([], seeds[0], 0, len(CROP_MIN_IOUS), tf.int32)
    min_iou = tf.gather(tf.constant(CROP_MIN_IOUS, tf.float32), mode)
    h = tf.random.stateless_uniform([CROP_TRIALS], seeds[1], 0.3, 1.0)
    w = tf.random.stateless_uniform([CROP_TRIALS], seeds[2], 0.3, 1.0)
    top = tf.random.stateless_uniform([CROP_TRIALS], seeds[3]) * (1.0 - h)
    left = tf.random.stateless_uniform([CROP_TRIALS], seeds[4]) * (1.0 - w)
    pixels = tf.round(tf.stack([top * height, left * width, (top + h) * height,
                                (left + w) * width], axis=-1))
    pixels = tf.maximum(pixels, tf.concat([tf.zeros([CROP_TRIALS, 2]),
                                           pixels[:, :2] + 1.0], axis=-1))
    window = pixels / tf.stack([height, width, height, width])
    aspect = (pixels[:, 2] - pixels[:, 0]) / (pixels[:, 3] - pixels[:, 1])
    valid = labels >= 0
    iou = tf.where(valid[None, :], _iou(window, boxes), -1.0)
    center = tf.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], -1)
    holds = ((center[None, :, 0] > window[:, None, 0]) & (center[None, :, 0] < window[:, None, 2])
             & (center[None, :, 1] > window[:, None, 1]) & (center[None, :, 1] < window[:, None, 3])
             & valid[None, :])
    any_box = tf.reduce_any(valid)
    fits = ((aspect >= 0.5) & (aspect <= 2.0)
            & ((tf.reduce_max(iou, axis=1) >= min_iou) | ~any_box)
            & (tf.reduce_any(holds, axis=1) | ~any_box))
    fits = fits & (min_iou != 0.0)
    whole = tf.stack([0.0, 0.0, height, width])
    chosen = tf.cond(tf.reduce_any(fits),
                     lambda: tf.gather(pixels, tf.argmax(tf.cast(fits, tf.int32))),
                     lambda: whole)
    return tf.cast(chosen, tf.int32)


def photometric(image, seed):
    """SSD's photometric distortion (module docstring, step 1) of ``(H, W, 3)`` pixels."""
    tf = _tf()
    seeds = [tf.random.experimental.stateless_fold_in(seed, 10 + i) for i in range(4)]
    image = tf.image.stateless_random_brightness(image, 32.0, seeds[0])
    image = tf.image.stateless_random_contrast(image, 0.5, 1.5, seeds[1])
    image = tf.clip_by_value(image, 0.0, 255.0) / 255.0
    image = tf.image.stateless_random_saturation(image, 0.5, 1.5, seeds[2])
    image = tf.image.stateless_random_hue(image, 18.0 / 360.0, seeds[3])
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def random_expand(image, boxes, seed, max_expand: float = 4.0):
    """Step 2 of the module docstring (half the time; ``max_expand`` <= 1 never)."""
    tf = _tf()
    seeds = [tf.random.experimental.stateless_fold_in(seed, 20 + i) for i in range(4)]
    if max_expand <= 1.0:
        return image, boxes
    shape = tf.shape(image)[:2]
    ratio = tf.random.stateless_uniform([], seeds[0], 1.0, max_expand)
    canvas = tf.cast(tf.round(tf.cast(shape, tf.float32) * ratio), tf.int32)
    top = tf.random.stateless_uniform([], seeds[1], 0, canvas[0] - shape[0] + 1, tf.int32)
    left = tf.random.stateless_uniform([], seeds[2], 0, canvas[1] - shape[1] + 1, tf.int32)
    apply = tf.random.stateless_uniform([], seeds[3]) < 0.5
    return tf.cond(apply, lambda: expand(image, boxes, canvas, (top, left)),
                   lambda: (image, boxes))


def ssd_augment(image, boxes, labels, seed, *, photometric_distort: bool = True,
                max_expand: float = 4.0, random_crop: bool = True, flip: bool = True):
    """SSD's training augmentation (module docstring) of one example; ``seed`` a ``(2,)``
    stateless seed (same seed, same result). Returns ``(float32 (h, w, 3), boxes (M, 4),
    labels (M,))``: a new size; boxes relative ``yxyx`` to it, dropped ones labelled -1."""
    tf = _tf()
    image = tf.cast(image, tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    labels = tf.cast(labels, tf.int32)
    if photometric_distort:
        image = photometric(image, seed)
    image, boxes = random_expand(image, boxes, seed, max_expand)
    if random_crop:
        window = sample_crop_window(tf.shape(image)[:2], boxes, labels,
                                    tf.random.experimental.stateless_fold_in(seed, 30))
        image, boxes, labels = crop(image, boxes, labels, window)
    if flip:
        flipped = tf.random.stateless_uniform(
            [], tf.random.experimental.stateless_fold_in(seed, 40)) < 0.5
        image, boxes = tf.cond(flipped, lambda: (tf.reverse(image, [1]), flip_boxes(boxes)),
                               lambda: (image, boxes))
    image.set_shape([None, None, 3])
    return image, boxes, labels


__all__ = ["CROP_MIN_IOUS", "crop", "expand", "flip_boxes", "photometric", "random_expand",
           "sample_crop_window", "ssd_augment"]
