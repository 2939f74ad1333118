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


__all__ = ["METRIC_NAMES", "coco_evaluate", "coco_metrics"]
