"""keras_coordatt.tasks: SSDLite (ObjectDetector), its anchors, box coder, matching, losses and
post-processing, and its handling of bad labels.

Oracles: NumPy re-implementations written from the SSD convention (the authors' ``PriorBox``
loops, ``assign_priors``, ``MultiBoxLoss`` with hard negatives, the focal and Huber formulas),
a hand-computed encoding, the model before a ``.keras`` round trip, and a synthetic image whose
one box the detector must find after a few dozen steps.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_coordatt.applications import MobileNetV2, MobileNeXt, preprocess_input
from keras_coordatt.tasks import (
    BOUNDING_BOX_FORMATS,
    ObjectDetector,
    SSDLite,
    check_detection_batch,
    ssd_anchors,
)
from keras_coordatt.tasks import anchors as anchor_lib
from keras_coordatt.tasks import detection_losses

SIZE = 128
ALPHA = 0.35
COCO_MIN = np.array([45, 90, 135, 180, 225, 270]) / 320
COCO_MAX = np.array([90, 135, 180, 225, 270, 315]) / 320
RATIOS = [(2, 3)] * 5 + [(2,)]


def small_detector(attention="ca", family=MobileNetV2, size=SIZE, **kwargs) -> ObjectDetector:
    backbone = family((size, size, 3), alpha=ALPHA, include_top=False, weights=None,
                      attention=attention)
    return SSDLite(backbone, 2, **kwargs)


@pytest.fixture(scope="module")
def detector() -> ObjectDetector:
    """Untrained, never fitted: MobileNetV2CA 0.35 at 128x128, 2 classes, pixel ``xyxy``."""
    return small_detector(bounding_box_format="xyxy")


# ------------------------------------------------------------------------------ NumPy oracles

def numpy_priors(grids, min_sizes, max_sizes, ratios):
    """The authors' PriorBox loops (center_yxhw, clamped)."""
    priors = []
    for f, low, high, level_ratios in zip(grids, min_sizes, max_sizes, ratios, strict=True):
        for i in range(f):
            for j in range(f):
                cy, cx = (i + 0.5) / f, (j + 0.5) / f
                big = np.sqrt(low * high)
                priors += [[cy, cx, low, low], [cy, cx, big, big]]
                for r in level_ratios:
                    priors += [[cy, cx, low / np.sqrt(r), low * np.sqrt(r)],
                               [cy, cx, low * np.sqrt(r), low / np.sqrt(r)]]
    return np.clip(np.array(priors), 0, 1)


def numpy_iou(a, b):
    """IoU (M, N) of yxyx boxes."""
    top = np.maximum(a[:, None, 0], b[None, :, 0])
    left = np.maximum(a[:, None, 1], b[None, :, 1])
    bottom = np.minimum(a[:, None, 2], b[None, :, 2])
    right = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def numpy_match(gt, labels, priors, threshold=0.5):
    """``assign_priors`` of the SSD code: (class targets with 0 = background, matched box index)."""
    corners = np.concatenate([priors[:, :2] - priors[:, 2:] / 2,
                              priors[:, :2] + priors[:, 2:] / 2], axis=1)
    iou = numpy_iou(gt, corners)
    best_iou, best_gt = iou.max(0), iou.argmax(0)
    for target, prior in enumerate(iou.argmax(1)):
        best_gt[prior] = target
        best_iou[prior] = 2.0
    targets = labels[best_gt] + 1
    targets[best_iou < threshold] = 0
    return targets, best_gt


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ------------------------------------------------------------------------------- anchors, coder

def test_anchors_match_the_numpy_prior_loops_at_320():
    grids = [20, 10, 5, 3, 2, 1]
    anchors = ssd_anchors([(f, f) for f in grids])
    expected = numpy_priors(grids, COCO_MIN, COCO_MAX, RATIOS)
    assert anchors.shape == (3232, 4) == expected.shape
    np.testing.assert_allclose(anchors, expected, atol=1e-6)
    # level 0: 6 boxes per cell, first cell centred at (0.5 / 20, 0.5 / 20)
    np.testing.assert_allclose(anchors[:6, :2], 0.025)
    assert anchors_per_level([20, 10, 5, 3, 2, 1], RATIOS) == [2400, 600, 150, 54, 24, 4]


def anchors_per_level(grids, ratios):
    return [f * f * (2 + 2 * len(r)) for f, r in zip(grids, ratios, strict=True)]


def test_box_coder_hand_computed_and_round_trip():
    anchor = np.array([[0.5, 0.5, 0.2, 0.2]], "float32")  # cy, cx, h, w
    box = np.array([[0.4, 0.45, 0.7, 0.65]], "float32")  # centre (0.55, 0.55), h 0.3, w 0.2
    encoded = keras.ops.convert_to_numpy(anchor_lib.encode_boxes(box, anchor))
    np.testing.assert_allclose(encoded, [[2.5, 2.5, np.log(1.5) / 0.2, 0.0]], atol=1e-5)
    rng = np.random.default_rng(0)
    anchors = ssd_anchors([(4, 4), (2, 2)], COCO_MIN[:2], COCO_MAX[:2], RATIOS[:2])
    corners = np.sort(rng.uniform(0, 1, (len(anchors), 2, 2)), axis=1)  # (N, low/high, y/x)
    boxes = corners.reshape(-1, 4).astype("float32")  # y1, x1, y2, x2
    decoded = anchor_lib.decode_boxes(anchor_lib.encode_boxes(boxes[None], anchors), anchors)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(decoded)[0], boxes, atol=1e-5)


def test_matching_agrees_with_the_numpy_assign_priors():
    rng = np.random.default_rng(1)
    anchors = ssd_anchors([(8, 8), (4, 4), (2, 2), (1, 1)], COCO_MIN[:4], COCO_MAX[:4],
                          RATIOS[:4])
    centers = rng.uniform(0.2, 0.8, (2, 4, 2))
    sides = rng.uniform(0.05, 0.5, (2, 4, 2))
    boxes = np.concatenate([centers - sides / 2, centers + sides / 2], -1).clip(0, 1)
    labels = np.array([[0, 1, 1, -1], [1, -1, -1, -1]])  # padded with -1
    boxes = boxes.astype("float32")
    matched, targets, positive = anchor_lib.match_anchors(
        boxes, np.maximum(labels, 0), labels >= 0, anchors, 0.5
    )
    matched, targets = keras.ops.convert_to_numpy(matched), keras.ops.convert_to_numpy(targets)
    for b in range(2):
        valid = labels[b] >= 0
        expected, index = numpy_match(boxes[b][valid], labels[b][valid], anchors)
        np.testing.assert_array_equal(targets[b], expected)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(positive)[b], expected > 0)
        pos = expected > 0
        np.testing.assert_allclose(matched[b][pos], boxes[b][valid][index[pos]])
        assert pos.sum() >= valid.sum()  # every box has at least its best anchor


# ---------------------------------------------------------------------------------------- losses

def loss_inputs(seed=2, batch=2, anchors=40, classes=3):
    rng = np.random.default_rng(seed)
    targets = np.where(rng.uniform(size=(batch, anchors)) < 0.15,
                       rng.integers(1, classes + 1, (batch, anchors)), 0)
    targets[1] = 0  # an image without objects
    targets[0, 0] = 1
    logits = rng.normal(size=(batch, anchors, classes + 1)).astype("float32")
    encodings = rng.normal(size=(batch, anchors, 4)).astype("float32")
    box_targets = rng.normal(scale=2, size=(batch, anchors, 4)).astype("float32")
    return targets, logits, encodings, box_targets


def test_losses_agree_with_numpy():
    targets, logits, encodings, box_targets = loss_inputs()
    positive = targets > 0
    npos = max(positive.sum(), 1)
    p = softmax(logits.astype("float64"))
    p_true = np.take_along_axis(p, targets[..., None], -1)[..., 0]
    focal = np.sum(-0.25 * (1 - p_true) ** 2 * np.log(p_true)) / npos
    got = detection_losses.focal_loss(targets, logits, positive)
    np.testing.assert_allclose(float(got), focal, rtol=1e-5)

    ce = -np.log(p_true)
    background = -np.log(p[..., 0])
    selected = positive.copy()
    for b in range(len(targets)):
        ranked = np.where(positive[b], -np.inf, background[b])
        hardest = np.argsort(-ranked)[: 3 * positive[b].sum()]
        selected[b, hardest] = True
    hard = np.sum(ce[selected]) / npos
    got = detection_losses.hard_negative_loss(targets, logits, positive, 3.0)
    np.testing.assert_allclose(float(got), hard, rtol=1e-5)
    assert not selected[1].any()  # no positives: no negatives mined in that image

    d = np.abs(box_targets - encodings)
    huber = np.where(d <= 1, 0.5 * d**2, d - 0.5).sum(-1)
    got = detection_losses.box_loss(box_targets, encodings, positive)
    np.testing.assert_allclose(float(got), huber[positive].sum() / npos, rtol=1e-5)
