"""Decoding and non-max suppression of SSD outputs into keras-hub's detection dict (``keras.ops``).

What :func:`decode_detections` does, per image (the scheme of ``TFLite_Detection_PostProcess``
with its default fast, class-agnostic NMS, so an exported detector can be compared with Keras):

1. softmax of the class logits ``(N, num_classes + 1)``; each anchor's score is its best
   non-background class probability, its label that class (``0 .. num_classes - 1``);
2. the ``pre_nms_top_k`` best-scoring anchors whose score is >= ``score_threshold`` are decoded
   (center-size coder, :func:`keras_coordatt.tasks.anchors.decode_boxes`);
3. greedy NMS over them, class-agnostic: a box is dropped when its IoU with a kept box of
   higher score exceeds ``iou_threshold``;
4. the ``max_detections`` best kept boxes, clipped to the image, converted to
   ``bounding_box_format``.

Output ``{"boxes": (B, K, 4), "labels": (B, K) int32, "confidence": (B, K), "num_detections":
(B,) int32}`` with ``K = max_detections``, detections by decreasing confidence, the slots after
``num_detections`` padded with -1 (boxes, labels and confidence).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_coordatt.tasks.anchors import decode_boxes, from_relative_yxyx


def _greedy_nms(boxes, scores, valid, iou_threshold: float):
    """Keep mask ``(B, K)`` of greedy NMS over ``(B, K, 4)`` yxyx boxes sorted by decreasing
    score; ``valid`` ``(B, K)`` marks the candidates."""
    count = boxes.shape[1]
    overlaps = keras.utils.bounding_boxes.compute_iou(boxes, boxes, "yxyx") > iou_threshold
    index = ops.arange(count)

    def step(i, keep):
        earlier = ops.expand_dims(index < i, 0)
        row = ops.take(overlaps, i, axis=1)  # (B, K): IoU of box i with every box
        suppressed = ops.any(row & keep & earlier, axis=-1)
        keep_i = ops.take(valid, i, axis=1) & ~suppressed
        return ops.where(ops.expand_dims(index == i, 0), ops.expand_dims(keep_i, 1), keep)

    return ops.fori_loop(0, count, step, ops.zeros_like(valid))


def decode_detections(
    box_encodings,
    class_logits,
    anchors,
    *,
    bounding_box_format: str,
    image_size: tuple[int, int],
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
    pre_nms_top_k: int = 400,
) -> dict:
    """Detections from raw outputs ``(B, N, 4)`` / ``(B, N, C + 1)`` (module docstring).

    ``anchors`` ``(N, 4)`` relative ``center_yxhw``; ``image_size`` ``(height, width)`` in
    pixels for the conversion to ``bounding_box_format``.
    """
    probabilities = ops.softmax(ops.cast(class_logits, "float32"), axis=-1)[..., 1:]
    scores = ops.max(probabilities, axis=-1)  # (B, N)
    labels = ops.cast(ops.argmax(probabilities, axis=-1), "int32")
    top_k = min(pre_nms_top_k, scores.shape[1])
    scores, order = ops.top_k(scores, top_k)  # sorted, decreasing
    labels = ops.take_along_axis(labels, order, axis=1)
    encodings = ops.take_along_axis(ops.cast(box_encodings, "float32"), order[..., None], axis=1)
    anchor_boxes = ops.take(ops.convert_to_tensor(anchors, "float32"), order, axis=0)
    boxes = decode_boxes(encodings, anchor_boxes)
    keep = _greedy_nms(boxes, scores, scores >= score_threshold, iou_threshold)

    count = min(max_detections, top_k)
    kept_scores, picked = ops.top_k(ops.where(keep, scores, -1.0), count)
    found = kept_scores >= 0
    boxes = ops.clip(ops.take_along_axis(boxes, picked[..., None], axis=1), 0.0, 1.0)
    boxes = from_relative_yxyx(boxes, bounding_box_format, image_size)
    labels = ops.take_along_axis(labels, picked, axis=1)
    result = {
        "boxes": ops.where(found[..., None], boxes, -1.0),
        "labels": ops.where(found, labels, -1),
        "confidence": ops.where(found, kept_scores, -1.0),
        "num_detections": ops.sum(ops.cast(found, "int32"), axis=-1),
    }
    if count < max_detections:  # fewer candidates than slots: pad to max_detections
        pad = max_detections - count
        result = {
            key: value if key == "num_detections" else ops.pad(
                value, [(0, 0), (0, pad)] + [(0, 0)] * (len(value.shape) - 2),
                constant_values=-1,
            )
            for key, value in result.items()
        }
    return result
