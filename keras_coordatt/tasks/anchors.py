"""SSD anchors (priors), the center-size box coder and anchor matching, in NumPy / ``keras.ops``.

Conventions (those of the SSD / SSDLite code the CA authors ran,
``houqb/ssdlite-pytorch-mobilenext``, after ``lufficc/SSD``):

* **Anchors** are relative ``center_yxhw`` boxes ``(N, 4)``: ``(cy, cx, h, w)`` in [0, 1] of the
  image height / width, the layout ``TFLite_Detection_PostProcess`` takes. Level ``k`` with an
  ``f_y x f_x`` grid has, at each cell ``(i, j)`` (row-major, then the boxes of the cell),
  centre ``((i + 0.5) / f_y, (j + 0.5) / f_x)`` and the boxes: a square of side ``min_k``, a
  square of side ``sqrt(min_k * max_k)``, then for each aspect ratio ``r`` a box ``(h, w) =
  (min_k / sqrt(r), min_k * sqrt(r))`` and its transpose (sizes are fractions of the image side).
  With ratios {2, 3}: 6 boxes per cell, with {2}: 4. ``clip=True`` clamps the four centre-form
  values to [0, 1], as the authors' ``PriorBox`` does (not the corners).
* **Box coder**: center-size with variances ``(0.1, 0.2)``: encodings ``(ty, tx, th, tw) =
  ((gy - ay) / (0.1 ah), (gx - ax) / (0.1 aw), log(gh / ah) / 0.2, log(gw / aw) / 0.2)``
  (the y / x / h / w scales 10 / 10 / 5 / 5 of ``TFLite_Detection_PostProcess``).
* **Matching**: each anchor takes the ground-truth box of highest IoU; it is positive when that
  IoU is >= ``iou_threshold`` (0.5); besides, each ground-truth box claims its best anchor (the
  last box wins when two claim the same anchor, as in the authors' loop). Class targets are
  ``label + 1`` for positives and 0 (background) otherwise.

Ground-truth boxes arrive in any ``keras.utils.bounding_boxes`` format
(:data:`BOUNDING_BOX_FORMATS`) and are handled as relative ``yxyx`` clipped to the image: a box
partly outside the image is clipped to it; a box with no area left (degenerate, flipped,
entirely outside, non-finite) or a label outside ``[0, num_classes)`` (the padding label -1
included) is dropped, i.e. matches no anchor. An image without any valid box has all anchors
background.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

#: Formats accepted as ``bounding_box_format`` (those of ``keras.utils.bounding_boxes``).
BOUNDING_BOX_FORMATS = (
    "xyxy", "yxyx", "xywh", "center_xywh", "center_yxhw",
    "rel_xyxy", "rel_yxyx", "rel_xywh", "rel_center_xywh",
)
#: Center-size coder variances (centre, size): the SSD convention.
VARIANCES = (0.1, 0.2)
#: SSDLite320's COCO anchor sizes (pixels at 320) as fractions of the image side.
DEFAULT_MIN_SIZES = tuple(size / 320 for size in (45, 90, 135, 180, 225, 270))
DEFAULT_MAX_SIZES = tuple(size / 320 for size in (90, 135, 180, 225, 270, 315))
DEFAULT_ASPECT_RATIOS = ((2, 3),) * 5 + ((2,),)
#: Smallest box side (relative) used in logs and divisions, so nothing becomes infinite.
_EPSILON = 1e-6


def check_bounding_box_format(bounding_box_format) -> str:
    """``bounding_box_format`` lower-cased, or a ValueError naming the accepted formats."""
    fmt = bounding_box_format.lower() if isinstance(bounding_box_format, str) else None
    if fmt not in BOUNDING_BOX_FORMATS:
        raise ValueError(
            f"Unknown bounding_box_format {bounding_box_format!r}: use one of "
            f"{', '.join(BOUNDING_BOX_FORMATS)} (keras.utils.bounding_boxes formats; rel_* are "
            "fractions of the image size, the others pixels)."
        )
    return fmt


def boxes_per_cell(aspect_ratios: Sequence[float]) -> int:
    """Anchors per grid cell: two squares plus two boxes per aspect ratio."""
    return 2 + 2 * len(aspect_ratios)


def _check_level_args(feature_sizes, min_sizes, max_sizes, aspect_ratios) -> None:
    lengths = {len(feature_sizes), len(min_sizes), len(max_sizes), len(aspect_ratios)}
    if len(lengths) != 1:
        raise ValueError(
            f"feature_sizes ({len(feature_sizes)}), min_sizes ({len(min_sizes)}), max_sizes "
            f"({len(max_sizes)}) and aspect_ratios ({len(aspect_ratios)}) must have one entry "
            "per feature level."
        )
    for low, high in zip(min_sizes, max_sizes, strict=True):
        if not 0 < low <= high:
            raise ValueError(
                f"Anchor sizes must satisfy 0 < min_size <= max_size (fractions of the image "
                f"side), got {low!r} / {high!r}."
            )
    for ratios in aspect_ratios:
        if any(not ratio > 0 for ratio in ratios):
            raise ValueError(f"Aspect ratios must be positive, got {tuple(ratios)!r}.")


def ssd_anchors(
    feature_sizes: Sequence[tuple[int, int]],
    min_sizes: Sequence[float] = DEFAULT_MIN_SIZES,
    max_sizes: Sequence[float] = DEFAULT_MAX_SIZES,
    aspect_ratios: Sequence[Sequence[float]] = DEFAULT_ASPECT_RATIOS,
    *,
    clip: bool = True,
) -> np.ndarray:
    """SSD anchors ``(N, 4)`` float32, relative ``center_yxhw`` (module docstring).

    Args:
        feature_sizes: ``(rows, cols)`` of each level's grid, e.g. ``[(20, 20), (10, 10), (5, 5),
            (3, 3), (2, 2), (1, 1)]`` at 320x320 (any input size: the grids of the model).
        min_sizes / max_sizes: per level, anchor sides as fractions of the image side.
        aspect_ratios: per level, the ratios ``r`` (boxes ``r``:1 and 1:``r``).
        clip: clamp the centre-form values to [0, 1].

    Returns:
        ``N = sum(rows * cols * (2 + 2 * len(ratios)))`` anchors, level by level, each level
        row-major over the grid with the boxes of a cell consecutive.
    """
    _check_level_args(feature_sizes, min_sizes, max_sizes, aspect_ratios)
    levels = []
    for (rows, cols), low, high, ratios in zip(
        feature_sizes, min_sizes, max_sizes, aspect_ratios, strict=True
    ):
        shapes = [(low, low), (np.sqrt(low * high),) * 2]
        for ratio in ratios:
            root = np.sqrt(ratio)
            shapes += [(low / root, low * root), (low * root, low / root)]
        cy, cx = np.meshgrid((np.arange(rows) + 0.5) / rows, (np.arange(cols) + 0.5) / cols,
                             indexing="ij")
        centers = np.stack([cy.ravel(), cx.ravel()], axis=-1)  # (rows * cols, 2)
        sizes = np.asarray(shapes, dtype="float64")  # (A, 2)
        grid = np.concatenate([
            np.repeat(centers[:, None, :], len(shapes), axis=1),
            np.repeat(sizes[None, :, :], len(centers), axis=0),
        ], axis=-1)
        levels.append(grid.reshape(-1, 4))
    anchors = np.concatenate(levels, axis=0)
    if clip:
        anchors = np.clip(anchors, 0.0, 1.0)
    return anchors.astype("float32")


def center_to_corners(boxes):
    """Relative ``center_yxhw`` -> relative ``yxyx`` (``keras.ops``, any leading shape)."""
    cy, cx, h, w = ops.unstack(boxes, 4, axis=-1)
    return ops.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)


def corners_to_center(boxes):
    """Relative ``yxyx`` -> relative ``center_yxhw`` (``keras.ops``, any leading shape)."""
    y1, x1, y2, x2 = ops.unstack(boxes, 4, axis=-1)
    return ops.stack([(y1 + y2) / 2, (x1 + x2) / 2, y2 - y1, x2 - x1], axis=-1)


def encode_boxes(boxes, anchors, variances: Sequence[float] = VARIANCES):
    """Center-size encodings ``(..., N, 4)`` ``(ty, tx, th, tw)`` of relative ``yxyx`` boxes
    ``(..., N, 4)`` against ``(N, 4)`` ``center_yxhw`` anchors. Sides are floored at 1e-6, so
    degenerate boxes give large but finite encodings."""
    anchors = ops.convert_to_tensor(anchors, "float32")
    center = corners_to_center(ops.convert_to_tensor(boxes, "float32"))
    a_yx, a_hw = anchors[..., :2], ops.maximum(anchors[..., 2:], _EPSILON)
    yx = (center[..., :2] - a_yx) / (a_hw * variances[0])
    hw = ops.log(ops.maximum(center[..., 2:], _EPSILON) / a_hw) / variances[1]
    return ops.concatenate([yx, hw], axis=-1)


def decode_boxes(encodings, anchors, variances: Sequence[float] = VARIANCES):
    """Inverse of :func:`encode_boxes`: relative ``yxyx`` boxes ``(..., N, 4)``."""
    anchors = ops.convert_to_tensor(anchors, "float32")
    encodings = ops.convert_to_tensor(encodings, "float32")
    yx = encodings[..., :2] * variances[0] * anchors[..., 2:] + anchors[..., :2]
    hw = ops.exp(encodings[..., 2:] * variances[1]) * anchors[..., 2:]
    return center_to_corners(ops.concatenate([yx, hw], axis=-1))


def to_relative_yxyx(boxes, bounding_box_format: str, image_size: tuple[int, int]):
    """Boxes ``(..., 4)`` in ``bounding_box_format`` -> relative ``yxyx``, not clipped."""
    height, width = image_size
    fmt = check_bounding_box_format(bounding_box_format)
    boxes = ops.cast(boxes, "float32")
    if fmt == "rel_yxyx":
        return boxes
    return keras.utils.bounding_boxes.convert_format(
        boxes, source=fmt, target="rel_yxyx", height=height, width=width
    )


def from_relative_yxyx(boxes, bounding_box_format: str, image_size: tuple[int, int]):
    """Relative ``yxyx`` boxes ``(..., 4)`` -> ``bounding_box_format``."""
    height, width = image_size
    fmt = check_bounding_box_format(bounding_box_format)
    if fmt == "rel_yxyx":
        return boxes
    return keras.utils.bounding_boxes.convert_format(
        boxes, source="rel_yxyx", target=fmt, height=height, width=width
    )


def sanitize_boxes(boxes, labels, num_classes: int):
    """Clips relative ``yxyx`` boxes ``(B, M, 4)`` to the image and marks the valid ones.

    Returns ``(boxes, valid)``: the clipped boxes (non-finite values replaced by 0) and a
    ``(B, M)`` bool mask, False for padding (label -1), labels outside ``[0, num_classes)``,
    and boxes without area after clipping (degenerate, flipped or outside the image).
    """
    boxes = ops.convert_to_tensor(boxes, "float32")
    finite = ops.all(ops.isfinite(boxes), axis=-1)
    boxes = ops.clip(ops.where(ops.isfinite(boxes), boxes, 0.0), 0.0, 1.0)
    labels = ops.cast(labels, "int32")
    y1, x1, y2, x2 = ops.unstack(boxes, 4, axis=-1)
    valid = finite & (labels >= 0) & (labels < num_classes) & (y2 > y1) & (x2 > x1)
    return boxes, valid


def match_anchors(boxes, labels, valid, anchors, iou_threshold: float = 0.5):
    """SSD matching of ground truth to anchors (module docstring).

    Args:
        boxes: ``(B, M, 4)`` relative ``yxyx`` ground truth (clipped, :func:`sanitize_boxes`).
        labels: ``(B, M)`` integer classes in ``[0, num_classes)`` where ``valid``.
        valid: ``(B, M)`` bool, the boxes that take part.
        anchors: ``(N, 4)`` relative ``center_yxhw`` anchors.
        iou_threshold: IoU from which an anchor is positive.

    Returns:
        ``(matched_boxes (B, N, 4) relative yxyx, class_targets (B, N) int32 with 0 the
        background and label + 1 the classes, positive (B, N) bool)``.
    """
    boxes = ops.convert_to_tensor(boxes, "float32")
    valid = ops.convert_to_tensor(valid, "bool")
    if boxes.shape[1] == 0:  # no box slot at all: one invalid slot keeps the argmax defined
        boxes = ops.zeros((ops.shape(boxes)[0], 1, 4), "float32")
        labels = ops.zeros((ops.shape(boxes)[0], 1), "int32")
        valid = ops.zeros((ops.shape(boxes)[0], 1), "bool")
    corners = center_to_corners(ops.convert_to_tensor(anchors, "float32"))
    num_anchors, num_boxes = corners.shape[0], boxes.shape[1]
    iou = keras.utils.bounding_boxes.compute_iou(boxes, corners, "yxyx")  # (B, M, N)
    iou = ops.where(valid[..., None], iou, -1.0)
    best_box = ops.argmax(iou, axis=1)  # (B, N)
    best_iou = ops.max(iou, axis=1)
    claimed = (ops.argmax(iou, axis=2)[..., None] == ops.arange(num_anchors)) & valid[..., None]
    claimed_by = ops.argmax(
        ops.cast(claimed, "int32") * (ops.arange(num_boxes) + 1)[None, :, None], axis=1
    )  # the last box claiming each anchor
    is_claimed = ops.any(claimed, axis=1)
    matched = ops.where(is_claimed, claimed_by, best_box)
    positive = is_claimed | (best_iou >= iou_threshold)
    matched_boxes = ops.take_along_axis(boxes, matched[..., None], axis=1)
    matched_labels = ops.take_along_axis(ops.cast(labels, "int32"), matched, axis=1)
    class_targets = ops.where(positive, matched_labels + 1, 0)
    return matched_boxes, class_targets, positive


def detection_targets(y, anchors, num_classes: int, bounding_box_format: str,
                      image_size: tuple[int, int], iou_threshold: float = 0.5):
    """Training targets from keras-hub style labels ``{"boxes": (B, M, 4), "labels": (B, M)}``.

    Returns ``(box_targets (B, N, 4) encodings, class_targets (B, N) int32, positive (B, N))``;
    boxes are clipped / dropped as in the module docstring.
    """
    boxes = to_relative_yxyx(y["boxes"], bounding_box_format, image_size)
    boxes, valid = sanitize_boxes(boxes, y["labels"], num_classes)
    labels = ops.where(valid, ops.cast(y["labels"], "int32"), 0)
    matched, class_targets, positive = match_anchors(boxes, labels, valid, anchors,
                                                     iou_threshold)
    return encode_boxes(matched, anchors), class_targets, positive
