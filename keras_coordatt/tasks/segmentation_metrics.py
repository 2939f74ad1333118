"""Segmentation scores in NumPy: confusion matrices, IoU per class, mIoU, and the per-pixel
agreement of two predictors (e.g. a TFLite file and its Keras model)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from keras_coordatt.tasks.segmentation_augment import IGNORE_LABEL


def confusion_matrix(labels, predictions, num_classes: int,
                     ignore_label: int = IGNORE_LABEL) -> np.ndarray:
    """``(num_classes, num_classes)`` pixel counts (rows: true class, columns: predicted) over
    the pixels whose label is not ``ignore_label`` (NumPy)."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    keep = labels != ignore_label
    labels, predictions = labels[keep], predictions[keep]
    if labels.size and (labels.max() >= num_classes or labels.min() < 0):
        raise ValueError(f"labels outside [0, {num_classes}) other than {ignore_label}.")
    return np.bincount(labels * num_classes + predictions,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(confusion: np.ndarray) -> tuple[float, np.ndarray]:
    """``(mIoU, per-class IoU)`` from a confusion matrix; classes absent from both labels and
    predictions get NaN and are left out of the mean."""
    confusion = np.asarray(confusion, dtype=np.float64)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, intersection / union, np.nan)
    return float(np.nanmean(iou)) if np.any(union > 0) else float("nan"), iou


def segmentation_scores(
    predict: Callable,
    dataset,
    num_classes: int,
    *,
    ignore_label: int = IGNORE_LABEL,
    reference: Callable | None = None,
) -> dict:
    """Runs ``predict`` (images -> logits ``(B, H, W, num_classes)``) over ``(images, masks)``
    batches and scores the argmax against the masks.

    ``reference`` (another predict function, e.g. the Keras model next to a TFLite file) adds
    ``"agreement"``: the fraction of labelled pixels (not ``ignore_label``, so not padding)
    where both argmaxes are equal.

    Returns:
        ``{"mean_iou", "iou" (per class, NaN if absent), "pixel_accuracy", "confusion",
        "pixels"}`` plus ``"agreement"`` with a reference.
    """
    confusion = np.zeros((num_classes, num_classes), np.int64)
    same = counted = 0
    for images, masks in dataset:
        images = np.asarray(images)
        masks = np.asarray(masks)
        predicted = np.argmax(np.asarray(predict(images)), axis=-1)
        confusion += confusion_matrix(masks, predicted, num_classes, ignore_label)
        if reference is not None:
            keep = masks != ignore_label
            other = np.argmax(np.asarray(reference(images)), axis=-1)
            same += int(np.sum((other == predicted) & keep))
            counted += int(np.sum(keep))
    mean_iou, iou = iou_from_confusion(confusion)
    total = int(confusion.sum())
    scores = {
        "mean_iou": mean_iou,
        "iou": iou.tolist(),
        "pixel_accuracy": float(np.trace(confusion) / total) if total else float("nan"),
        "confusion": confusion.tolist(),
        "pixels": total,
    }
    if reference is not None:
        scores["agreement"] = same / counted if counted else float("nan")
    return scores


__all__ = ["confusion_matrix", "iou_from_confusion", "segmentation_scores"]
