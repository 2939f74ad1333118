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
    detection_losses,
    ssd_anchors,
)
from keras_coordatt.tasks import anchors as anchor_lib

from helpers import calibrate_batchnorm

SIZE = 128
ALPHA = 0.35
COCO_MIN = np.array([45, 90, 135, 180, 225, 270]) / 320
COCO_MAX = np.array([90, 135, 180, 225, 270, 315]) / 320
RATIOS = [(2, 3)] * 5 + [(2,)]


def small_detector(attention="ca", family=MobileNetV2, size=SIZE, **kwargs) -> ObjectDetector:
    backbone = family((size, size, 3), alpha=ALPHA, include_top=False, weights=None,
                      attention=attention)
    return SSDLite(backbone, 2, **kwargs)


def synthetic_batch():
    """Three 128x128 images: a red box (class 0), a blue box (class 1) whose label box runs
    past the bottom edge, and an empty one; labels padded to 3 with -1, with a degenerate box
    and an out-of-range label mixed in (both dropped by the loss)."""
    rng = np.random.default_rng(0)
    images = rng.uniform(60, 100, (3, SIZE, SIZE, 3))
    images[0, 20:70, 30:90] = [220, 30, 30]
    images[1, 60:128, 10:60] = [30, 30, 220]
    boxes = np.array([
        [[30, 20, 90, 70], [40, 40, 40, 90], [0, 0, 0, 0]],  # xyxy pixels; zero-width box
        [[10, 60, 60, 150], [0, 0, 0, 0], [0, 0, 0, 0]],  # clipped to [10, 60, 60, 128]
        [[0, 0, 50, 50], [0, 0, 0, 0], [0, 0, 0, 0]],  # label 7 >= num_classes: dropped
    ], "float32")
    labels = np.array([[0, 1, -1], [1, -1, -1], [7, -1, -1]])
    return preprocess_input(images.astype("float32")), {"boxes": boxes, "labels": labels}


@pytest.fixture(scope="module")
def trained():
    """MobileNetV2 0.35 SSDLite (pixel ``xyxy``) fitted 20 steps on :func:`synthetic_batch`:
    the backbone frozen with BN statistics from the images (fast), the heads trained.
    Returns ``(model, losses)``."""
    keras.utils.set_random_seed(0)
    images, labels = synthetic_batch()
    backbone = MobileNetV2((SIZE, SIZE, 3), alpha=ALPHA, include_top=False, weights=None)
    calibrate_batchnorm(backbone, images)
    backbone.trainable = False
    model = SSDLite(backbone, 2, bounding_box_format="xyxy")
    model.compile(keras.optimizers.Adam(0.01), jit_compile=False)
    model.optimizer.build(model.trainable_variables)  # else the first step is traced twice
    losses = [float(model.train_on_batch(images, labels)) for _ in range(20)]
    return model, losses


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


def numpy_detections(encodings, logits, anchors, score_threshold, iou_threshold, top):
    """Decode + class-agnostic greedy NMS of one image, in NumPy (relative yxyx, unclipped)."""
    p = softmax(logits.astype("float64"))[:, 1:]
    scores, labels = p.max(-1), p.argmax(-1)
    centre = encodings[:, :2] * 0.1 * anchors[:, 2:] + anchors[:, :2]
    sides = np.exp(encodings[:, 2:] * 0.2) * anchors[:, 2:]
    boxes = np.concatenate([centre - sides / 2, centre + sides / 2], -1)
    kept = []
    for i in np.argsort(-scores):
        if scores[i] >= score_threshold and all(
            numpy_iou(boxes[i:i + 1], boxes[j:j + 1])[0, 0] <= iou_threshold for j in kept
        ):
            kept.append(i)
    kept = kept[:top]
    return boxes[kept], labels[kept], scores[kept]


def test_decode_detections_agree_with_numpy_nms():
    from keras_coordatt.tasks.detection_postprocess import decode_detections

    rng = np.random.default_rng(3)
    anchors = ssd_anchors([(4, 4), (2, 2)], COCO_MIN[:2] * 2, COCO_MAX[:2] * 2, RATIOS[:2])
    encodings = rng.normal(scale=0.5, size=(2, len(anchors), 4)).astype("float32")
    logits = rng.normal(scale=3, size=(2, len(anchors), 4)).astype("float32")
    out = decode_detections(encodings, logits, anchors, bounding_box_format="rel_yxyx",
                            image_size=(64, 64), score_threshold=0.3, iou_threshold=0.45,
                            max_detections=10)
    out = {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}
    for b in range(2):
        boxes, labels, scores = numpy_detections(encodings[b], logits[b], anchors, 0.3, 0.45, 10)
        n = len(boxes)
        assert out["num_detections"][b] == n > 2
        np.testing.assert_allclose(out["boxes"][b, :n], boxes.clip(0, 1), atol=1e-5)
        np.testing.assert_array_equal(out["labels"][b, :n], labels)
        np.testing.assert_allclose(out["confidence"][b, :n], scores, rtol=1e-5)
        assert np.all(out["labels"][b, n:] == -1) and np.all(out["boxes"][b, n:] == -1)


# ---------------------------------------------------------------------------------------- model

def test_ssdlite_320_mobilenetv2ca_has_six_levels_and_3232_anchors():
    backbone = MobileNetV2((320, 320, 3), include_top=False, weights=None, attention="ca")
    model = SSDLite(backbone, 80)
    assert model.anchor_config["feature_sizes"] == [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2),
                                                    (1, 1)]
    # the SSDLite tap: block14's 576-channel expansion at stride 16 (Keras' block_13_expand_relu)
    assert model.get_layer("block14_expand_relu").output.shape == (None, 20, 20, 576)
    assert model.get_layer("box_head0_dw").input.shape == (None, 20, 20, 576)
    assert model.get_layer("box_head1_dw").input.shape == (None, 10, 10, 1280)
    assert [model.get_layer(f"extra{k}_project_bn").output.shape[-1] for k in range(1, 5)] == [
        512, 256, 256, 64]
    assert model.anchors.shape == (3232, 4)
    assert [tuple(t.shape) for t in model.outputs] == [(None, 3232, 4), (None, 3232, 81)]


@pytest.mark.parametrize("family, attention", [
    (family, attention) for family in (MobileNetV2, MobileNeXt)
    for attention in (None, "se", "cbam", "ca")
    if (family, attention) != (MobileNetV2, "ca")  # built at 320 above
])
def test_every_backbone_builds(family, attention):
    model = small_detector(attention, family, size=64)
    sizes = model.anchor_config["feature_sizes"]
    assert sizes == [(4, 4), (2, 2), (1, 1), (1, 1), (1, 1), (1, 1)]
    count = sum(r * c * n for (r, c), n in zip(sizes, [6] * 5 + [4], strict=True))
    assert model.outputs[0].shape == (None, count, 4)
    assert model.outputs[1].shape == (None, count, 3)
    wide = model.get_layer("box_head0_dw").input.shape[-1]
    p4 = {MobileNetV2: "block13_add", MobileNeXt: "block12_add"}[family]
    assert wide > model.get_layer(p4).output.shape[-1]  # the expansion, wider than P4


def iou_xyxy(a, b):
    return numpy_iou(np.asarray(a)[None, [1, 0, 3, 2]], np.asarray(b)[None, [1, 0, 3, 2]])[0, 0]


def test_a_few_steps_fit_the_boxes_and_predict_finds_them(trained):
    model, losses = trained
    assert np.isfinite(losses).all() and losses[-1] < 0.2 * losses[0], losses
    images, labels = synthetic_batch()
    found = model.predict(images, verbose=0)
    assert set(found) == {"boxes", "labels", "confidence", "num_detections"}
    assert found["boxes"].shape == (3, 100, 4) and found["num_detections"].shape == (3,)
    truth = [[30, 20, 90, 70], [10, 60, 60, 128]]  # the second one clipped to the image
    for i, (box, label) in enumerate(zip(truth, [0, 1], strict=True)):
        assert found["num_detections"][i] >= 1
        assert iou_xyxy(found["boxes"][i, 0], box) > 0.6, found["boxes"][i, :3]
        assert found["labels"][i, 0] == label and found["confidence"][i, 0] > 0.5
    assert found["confidence"][2, 0] < found["confidence"][:2, 0].min()  # the empty image


def test_save_load_safe_mode_identical(trained, tmp_path):
    model, _ = trained
    model.compile(loss="hard_negative", negative_ratio=2.0)
    path = tmp_path / "ssdlite.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, ObjectDetector)
    assert loaded.get_config()["anchor_config"] == model.get_config()["anchor_config"]
    assert loaded._loss_settings == model._loss_settings  # compile() settings restored
    images, _ = synthetic_batch()
    for ours, theirs in zip(model(images), loaded(images), strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours),
                                      keras.ops.convert_to_numpy(theirs))
    np.testing.assert_array_equal(loaded.anchors, model.anchors)


# ------------------------------------------------------------------------------------ bad input

def clean_labels():
    """:func:`synthetic_batch`'s labels as the loss should see them: clipped, the rest gone."""
    boxes = np.zeros((3, 1, 4), "float32")
    boxes[0, 0], boxes[1, 0] = [30, 20, 90, 70], [10, 60, 60, 128]
    return {"boxes": boxes, "labels": np.array([[0], [1], [-1]])}


@pytest.mark.parametrize("loss", ["focal", "hard_negative"])
def test_bad_boxes_are_clipped_or_dropped_and_the_loss_stays_finite(trained, loss):
    model, _ = trained
    model.compile(loss=loss)
    images, dirty = synthetic_batch()
    outputs = model(images)
    expected = float(model.compute_loss(y=clean_labels(), y_pred=outputs))
    assert np.isfinite(expected) and expected > 0
    assert float(model.compute_loss(y=dirty, y_pred=outputs)) == pytest.approx(expected, 1e-6)
    worse = {"boxes": dirty["boxes"].copy(), "labels": dirty["labels"].copy()}
    worse["boxes"][2, 1] = [np.nan, 0, 50, 50]  # non-finite
    worse["boxes"][2, 2] = [200, 200, 300, 300]  # entirely outside the image
    worse["boxes"][0, 2] = [80, 60, 20, 10]  # flipped
    worse["labels"][:, 1:] = [[1, 0], [1, 1], [0, 1]]
    worse["labels"][1, 1:] = -1
    assert float(model.compute_loss(y=worse, y_pred=outputs)) == pytest.approx(expected, 1e-6)


def test_images_without_objects_give_the_all_background_loss(trained):
    model, _ = trained
    images, _ = synthetic_batch()
    boxes, logits = (keras.ops.convert_to_numpy(t) for t in model(images))
    # Keras' focal loss clips probabilities to [1e-7, 1 - 1e-7] (the trained logits reach it)
    p_background = np.clip(softmax(logits.astype("float64"))[..., 0], 1e-7, 1 - 1e-7)
    focal = np.sum(-0.25 * (1 - p_background) ** 2 * np.log(p_background))  # / max(0, 1)
    empty = {"boxes": np.full((3, 2, 4), -1.0, "float32"), "labels": np.full((3, 2), -1)}
    no_slots = {"boxes": np.zeros((3, 0, 4), "float32"), "labels": np.zeros((3, 0), "int32")}
    model.compile(loss="focal")
    for labels in (empty, no_slots):
        got = float(model.compute_loss(y=labels, y_pred=[boxes, logits]))
        assert got == pytest.approx(focal, rel=1e-5)
    model.compile(loss="hard_negative")  # no positives: no negatives mined, no box loss
    assert float(model.compute_loss(y=empty, y_pred=[boxes, logits])) == 0.0


def test_the_loss_gradient_is_finite_for_bad_boxes(trained):
    import tensorflow as tf

    model, _ = trained
    model.compile(loss="focal")
    images, labels = synthetic_batch()
    labels["boxes"][2, 1] = [np.nan, np.inf, 50, 50]
    labels["labels"][2, 1] = 0
    outputs = [tf.Variable(t) for t in model(images)]
    with tf.GradientTape() as tape:
        loss = model.compute_loss(y=labels, y_pred=outputs)
    gradients = tape.gradient(loss, outputs)
    assert np.isfinite(float(loss))
    assert all(np.isfinite(g.numpy()).all() for g in gradients)


def test_labels_outside_num_classes_and_bad_shapes_raise():
    _, labels = synthetic_batch()
    with pytest.raises(ValueError, match=r"outside \[0, 2\).*: 7"):
        check_detection_batch(labels, 2, "xyxy")
    labels["labels"][2, 0] = 1
    check_detection_batch(labels, 2, "xyxy")  # degenerate / outside boxes are not errors
    with pytest.raises(ValueError, match="pad each image"):
        check_detection_batch({"boxes": labels["boxes"][0], "labels": labels["labels"]}, 2)
    with pytest.raises(ValueError, match="keras-hub style"):
        check_detection_batch(labels["boxes"], 2)
    labels["boxes"][0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        check_detection_batch(labels, 2)


def test_a_wrong_bounding_box_format_names_the_accepted_ones(trained):
    for call in (lambda: SSDLite(None, 2, bounding_box_format="cxcywh"),
                 lambda: check_detection_batch(synthetic_batch()[1], 2, "cxcywh")):
        with pytest.raises(ValueError, match="cxcywh.*xyxy, yxyx, xywh, center_xywh") as error:
            call()
        assert all(name in str(error.value) for name in BOUNDING_BOX_FORMATS)
    model = trained[0]
    with pytest.raises(ValueError, match="Unknown bounding_box_format 'XYWZ'"):
        ObjectDetector(model.inputs, model.outputs, num_classes=2, bounding_box_format="XYWZ",
                       anchor_config=model.get_config()["anchor_config"])
