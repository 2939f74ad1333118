"""COCO box metrics by pycocotools' ``COCOeval`` (the reference implementation, never our own).

:func:`coco_metrics` takes ground truth and detections per image in pixels, builds the two COCO
objects in memory and returns ``AP`` (IoU 0.50:0.95), ``AP50``, ``AP75``, ``AP_small`` /
``AP_medium`` / ``AP_large`` and the recalls ``AR1`` / ``AR10`` / ``AR100`` (fractions; -1
where COCOeval has nothing to score, e.g. no ground-truth box of that size). Ground-truth
``area`` is the box area (the official COCO annotations hold mask areas, so the size split
differs slightly); ``ignore`` boxes go in as ``iscrowd`` (COCOeval neither rewards nor
penalises detections on them). Category ``k`` of the model is COCO category id ``k + 1``.

:func:`coco_evaluate` runs a detector over :func:`keras_coordatt.tasks.detection_data.
coco_batches` and scores it. Needs ``pycocotools`` (the ``data`` extra).

:func:`detection_agreement` measures how closely one detector reproduces another's detections
(a TFLite file against the Keras model it came from): NumPy only.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

METRIC_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
                "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as error:
        raise ImportError("COCO metrics use pycocotools: pip install 'keras-coordatt[data]'"
                          ) from error
    return COCO, COCOeval


def _xywh(boxes) -> np.ndarray:
    """Pixel ``yxyx`` ``(n, 4)`` -> COCO ``[x, y, w, h]``."""
    boxes = np.reshape(np.asarray(boxes, "float64"), (-1, 4))
    return np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1],
                     boxes[:, 2] - boxes[:, 0]], axis=-1)


def _coco(COCO, images, categories, annotations):
    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_metrics(ground_truth: Sequence[dict], detections: Sequence[dict],
                 class_names: Sequence[str]) -> dict[str, Any]:
    """COCO metrics (module docstring).

    Args:
        ground_truth: per image ``{"height", "width", "boxes" (n, 4) pixel yxyx, "labels" (n,),
            "ignore" (n,) optional}``.
        detections: per image, same order: ``{"boxes" (k, 4) pixel yxyx, "labels" (k,),
            "scores" (k,)}``.
        class_names: the model's classes (``labels`` index them).

    Returns:
        ``{name: float for name in METRIC_NAMES}`` plus ``"summary"``: COCOeval's printout.
    """
    COCO, COCOeval = _pycocotools()
    if len(ground_truth) != len(detections):
        raise ValueError(f"{len(ground_truth)} ground-truth images but {len(detections)} "
                         "detection entries: give one per image, in the same order.")
    images = [{"id": i + 1, "height": int(g["height"]), "width": int(g["width"])}
              for i, g in enumerate(ground_truth)]
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(class_names)]
    gts, dets = [], []
    for i, (g, d) in enumerate(zip(ground_truth, detections, strict=True)):
        ignore = g.get("ignore", np.zeros(len(g["labels"]), bool))
        for box, label, crowd in zip(_xywh(g["boxes"]), g["labels"], ignore, strict=True):
            gts.append({"id": len(gts) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                        "bbox": box.tolist(), "area": float(box[2] * box[3]),
                        "iscrowd": int(bool(crowd))})
        for box, label, score in zip(_xywh(d["boxes"]), d["labels"], d["scores"], strict=True):
            dets.append({"id": len(dets) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                         "bbox": box.tolist(), "area": float(box[2] * box[3]),
                         "score": float(score), "iscrowd": 0})
    evaluator = COCOeval(_coco(COCO, images, categories, gts),
                         _coco(COCO, images, categories, dets), "bbox")
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    result: dict[str, Any] = {name: float(value)
                              for name, value in zip(METRIC_NAMES, evaluator.stats, strict=True)}
    result["summary"] = text.getvalue().strip()
    return result


def coco_evaluate(predict, batches, class_names: Sequence[str], bounding_box_format: str,
                  image_size: int) -> tuple[dict[str, Any], list[dict], list[dict]]:
    """Runs ``predict`` (images -> keras-hub detection dict, e.g. ``model.predict_on_batch`` of
    an :class:`~keras_coordatt.tasks.ObjectDetector`) over ``batches`` of
    :func:`~keras_coordatt.tasks.detection_data.coco_batches` and scores it with
    :func:`coco_metrics`. Returns ``(metrics, ground_truth, detections)`` (pixels of the
    original images)."""
    from keras import ops

    from keras_coordatt.tasks.anchors import to_relative_yxyx

    ground_truth, detections = [], []
    for images, y in batches:
        out = predict(images)
        rel = ops.convert_to_numpy(to_relative_yxyx(out["boxes"], bounding_box_format,
                                                    (image_size, image_size)))
        for i, size in enumerate(np.asarray(y["size"])):
            scale = np.tile(size.astype("float64"), 2)
            keep = np.asarray(y["labels"][i]) >= 0
            ground_truth.append({"height": size[0], "width": size[1],
                                 "boxes": np.asarray(y["boxes"][i])[keep] * scale,
                                 "labels": np.asarray(y["labels"][i])[keep],
                                 "ignore": np.asarray(y["ignore"][i])[keep]})
            count = int(np.asarray(out["num_detections"])[i])
            detections.append({"boxes": np.clip(rel[i, :count], 0, 1) * scale,
                               "labels": np.asarray(out["labels"])[i, :count],
                               "scores": np.asarray(out["confidence"])[i, :count]})
    return coco_metrics(ground_truth, detections, class_names), ground_truth, detections


def relative_detections(detections: dict, bounding_box_format: str,
                        image_size: int | tuple[int, int]) -> dict[str, np.ndarray]:
    """A keras-hub detection dict (``predict`` of an ``ObjectDetector``, boxes in
    ``bounding_box_format`` at ``image_size``) as NumPy with relative ``yxyx`` boxes, the form
    :func:`detection_agreement` compares and ``run_detector_tflite`` returns."""
    from keras import ops

    from keras_coordatt.tasks.anchors import to_relative_yxyx

    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    boxes = to_relative_yxyx(detections["boxes"], bounding_box_format, size)
    return {**{key: ops.convert_to_numpy(value) for key, value in detections.items()},
            "boxes": ops.convert_to_numpy(boxes)}


def _box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``yxyx`` box ``(4,)`` with ``boxes`` ``(n, 4)`` -> ``(n,)``."""
    low = np.maximum(box[:2], boxes[:, :2])
    high = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=-1)
    union = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=-1) - inter
    return inter / np.maximum(union, 1e-12)


def _image_matches(ours: dict, theirs: dict, b: int, min_score: float):
    """(IoU, |score difference|) of each reference detection of image ``b`` with confidence
    >= ``min_score`` and its best same-class box in ``theirs`` (IoU 0 when there is none)."""
    count = int(theirs["num_detections"][b])
    boxes = np.clip(theirs["boxes"][b, :count], 0.0, 1.0)
    for k in range(int(ours["num_detections"][b])):
        score = float(ours["confidence"][b, k])
        if score < min_score:
            continue
        same = theirs["labels"][b, :count] == ours["labels"][b, k]
        iou = np.where(same, _box_iou(np.clip(ours["boxes"][b, k], 0.0, 1.0), boxes), 0.0)
        if not count or not same.any():
            yield 0.0, None
            continue
        best = int(np.argmax(iou))
        yield float(iou[best]), abs(float(theirs["confidence"][b, best]) - score)


def detection_agreement(reference: Sequence[dict], found: Sequence[dict], *,
                        min_score: float = 0.5, min_iou: float = 0.9) -> dict[str, Any]:
    """How well the detections ``found`` reproduce ``reference``, image by image.

    Both are sequences (one entry per batch, in the same order) of keras-hub detection dicts
    with **relative** ``yxyx`` boxes: ``boxes`` ``(B, K, 4)``, ``labels`` ``(B, K)``,
    ``confidence`` ``(B, K)``, ``num_detections`` ``(B,)`` (``run_detector_tflite`` returns
    this form). Every reference detection with confidence >= ``min_score`` is matched to the
    found box of the same class in the same image with the highest IoU (boxes clipped to the
    image). Returns ``compared`` (reference detections), ``matched_share`` (share with IoU >=
    ``min_iou``; None if none compared), ``mean_iou``, ``min_iou_seen`` and
    ``max_score_gap`` (largest |confidence difference| over the matched ones).
    """
    if len(reference) != len(found):
        raise ValueError(f"reference has {len(reference)} batches, found {len(found)}: pass "
                         "the detections of the same batches, in the same order.")
    overlaps, gaps = [], []
    for ours, theirs in zip(reference, found, strict=True):
        ours = {key: np.asarray(value) for key, value in ours.items()}
        theirs = {key: np.asarray(value) for key, value in theirs.items()}
        for b in range(len(ours["num_detections"])):
            for iou, gap in _image_matches(ours, theirs, b, min_score):
                overlaps.append(iou)
                if iou >= min_iou and gap is not None:
                    gaps.append(gap)
    overlaps = np.asarray(overlaps, dtype="float64")
    compared = len(overlaps)
    return {
        "compared": compared,
        "matched_share": float(np.mean(overlaps >= min_iou)) if compared else None,
        "mean_iou": float(overlaps.mean()) if compared else None,
        "min_iou_seen": float(overlaps.min()) if compared else None,
        "max_score_gap": max(gaps) if gaps else None,
    }


__all__ = ["METRIC_NAMES", "coco_evaluate", "coco_metrics", "detection_agreement",
           "relative_detections"]
