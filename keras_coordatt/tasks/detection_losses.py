"""SSD losses on matched anchors: focal or hard-negative-mined softmax, plus a Huber box loss.

All three are sums over anchors divided by the number of positive anchors in the batch
(floored at 1, so a batch without any object gives a finite loss: the classification term of
its negatives, and a zero box term). Class logits are ``(B, N, num_classes + 1)`` softmax logits
with the background at index 0; class targets ``(B, N)`` are 0 (background) or ``label + 1``.

* :func:`focal_loss` (COCO setting): Keras' ``categorical_focal_crossentropy`` (softmax focal
  loss, alpha 0.25, gamma 2) summed over every anchor. Keras clips the probabilities to
  [1e-7, 1 - 1e-7], so an anchor's term saturates at ``-alpha * log(1e-7)`` (16.1 x alpha).
* :func:`hard_negative_loss` (VOC setting, SSD's ``MultiBoxLoss``): softmax cross-entropy over
  the positives and, per image, the ``negative_ratio`` (3) x positives negatives of highest
  background loss (``-log softmax[0]``); an image without positives contributes nothing.
* :func:`box_loss`: Keras' Huber loss (delta 1, = smooth L1) summed over the four encodings of
  the positive anchors.
"""

from __future__ import annotations

import keras
from keras import ops

#: Classification losses of :func:`classification_loss` (``"auto"`` picks ``"focal"``).
CLASSIFICATION_LOSSES = ("focal", "hard_negative")


def _num_positives(positive):
    """Positive anchors in the batch, floored at 1 (float32 scalar)."""
    return ops.maximum(ops.sum(ops.cast(positive, "float32")), 1.0)


def box_loss(box_targets, box_encodings, positive):
    """Huber (smooth L1) loss of the positive anchors' encodings ``(B, N, 4)`` / positives."""
    per_anchor = 4.0 * keras.losses.huber(
        ops.cast(box_targets, "float32"), ops.cast(box_encodings, "float32"), delta=1.0
    )  # Keras' huber is the mean over the 4 coordinates
    per_anchor = ops.where(positive, per_anchor, 0.0)
    return ops.sum(per_anchor) / _num_positives(positive)


def focal_loss(class_targets, class_logits, positive, alpha: float = 0.25,
               gamma: float = 2.0):
    """Softmax focal loss summed over all anchors / positives (``(B, N, C + 1)`` logits)."""
    num_classes = class_logits.shape[-1]
    one_hot = ops.one_hot(ops.cast(class_targets, "int32"), num_classes)
    per_anchor = keras.losses.categorical_focal_crossentropy(
        one_hot, ops.cast(class_logits, "float32"), alpha=alpha, gamma=gamma, from_logits=True
    )
    return ops.sum(per_anchor) / _num_positives(positive)


def hard_negative_loss(class_targets, class_logits, positive, negative_ratio: float = 3.0):
    """Softmax cross-entropy over positives and mined negatives (``negative_ratio``:1 per
    image) / positives."""
    logits = ops.cast(class_logits, "float32")
    positive = ops.convert_to_tensor(positive, "bool")
    cross_entropy = keras.losses.sparse_categorical_crossentropy(
        ops.cast(class_targets, "int32"), logits, from_logits=True
    )  # (B, N)
    background = ops.stop_gradient(-ops.log_softmax(logits, axis=-1)[..., 0])
    ranked = ops.where(positive, -1.0, background)  # positives last (losses are >= 0)
    rank = ops.argsort(ops.argsort(-ranked, axis=-1), axis=-1)  # 0 = hardest negative
    num_negatives = negative_ratio * ops.sum(ops.cast(positive, "float32"), axis=-1,
                                             keepdims=True)
    selected = ops.logical_or(positive, ops.cast(rank, "float32") < num_negatives)
    return ops.sum(ops.where(selected, cross_entropy, 0.0)) / _num_positives(positive)


def classification_loss(name: str, class_targets, class_logits, positive, *,
                        focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                        negative_ratio: float = 3.0):
    """The classification loss ``name`` (:data:`CLASSIFICATION_LOSSES`)."""
    if name == "focal":
        return focal_loss(class_targets, class_logits, positive, focal_alpha, focal_gamma)
    if name == "hard_negative":
        return hard_negative_loss(class_targets, class_logits, positive, negative_ratio)
    raise ValueError(
        f"Unknown classification loss {name!r}: use one of {', '.join(CLASSIFICATION_LOSSES)} "
        "(or 'auto', focal)."
    )
