"""The :class:`ObjectDetector` model class: a functional SSD whose loss and ``predict`` know boxes.

Built by :func:`keras_coordatt.tasks.SSDLite`. The functional graph maps images ``(B, H, W, 3)``
to the raw outputs ``[box_encodings (B, N, 4), class_logits (B, N, num_classes + 1)]`` (a list,
in this order, from the layers named so: center-size encodings against the model's ``N``
anchors; softmax logits, background at index 0), what ``TFLite_Detection_PostProcess`` takes;
a list, not a dict, so the tf_keras twin of ``quantize_model`` rebuilds it. Around it:

* ``compile()`` has detection defaults, and ``fit`` / ``evaluate`` take keras-hub style labels
  ``{"boxes": (B, M, 4), "labels": (B, M)}`` in ``bounding_box_format``, padded with label -1.
  Matching and encoding happen inside the loss (:meth:`ObjectDetector.compute_loss`, with
  ``keras.ops``, on every backend): the ``tf.data`` pipeline only pads boxes. Boxes partly
  outside the image are clipped to it; boxes without area (degenerate, flipped, outside the
  image, non-finite) and labels outside ``[0, num_classes)`` are dropped (they match no anchor;
  :func:`keras_coordatt.tasks.check_detection_batch` raises a ValueError for the labels instead,
  call it on a batch before training); images without objects train every anchor as background.
  The loss is divided by the number of positive anchors floored at 1, so it is never NaN.
* ``predict()`` returns decoded, non-max-suppressed detections in keras-hub's dict form
  (:mod:`keras_coordatt.tasks.detection_postprocess`).

Everything in ``get_config()`` is plain data (anchor settings, thresholds), the graph is
standard Keras layers: the model saves as ``.keras`` and loads with ``safe_mode=True`` after
``import keras_coordatt.tasks`` (which registers this class).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from keras_coordatt.tasks import anchors as anchor_lib
from keras_coordatt.tasks.detection_losses import (
    CLASSIFICATION_LOSSES,
    box_loss,
    classification_loss,
)
from keras_coordatt.tasks.detection_postprocess import decode_detections
from keras_coordatt.training.fit_setup import FirstFitTracedOnce

#: SGD start of the authors' COCO config (LR 1e-2, momentum 0.9; warm-up cosine in the recipe).
DEFAULT_LEARNING_RATE = 0.01
DEFAULT_MOMENTUM = 0.9
#: Keys of ``anchor_config`` (the arguments of :func:`keras_coordatt.tasks.anchors.ssd_anchors`).
ANCHOR_KEYS = ("feature_sizes", "min_sizes", "max_sizes", "aspect_ratios", "clip")


def _check_number(name: str, value, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        low <= value and (high is None or value <= high)
    ):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"`{name}` must be a number in {bound}, got {value!r}.")
    return float(value)


def _check_anchor_config(anchor_config) -> dict[str, Any]:
    if not isinstance(anchor_config, dict) or set(anchor_config) != set(ANCHOR_KEYS):
        raise ValueError(
            f"`anchor_config` must be a dict with the keys {ANCHOR_KEYS}, got {anchor_config!r}."
        )
    return {
        "feature_sizes": [tuple(int(v) for v in size) for size in anchor_config["feature_sizes"]],
        "min_sizes": [float(v) for v in anchor_config["min_sizes"]],
        "max_sizes": [float(v) for v in anchor_config["max_sizes"]],
        "aspect_ratios": [tuple(float(v) for v in r) for r in anchor_config["aspect_ratios"]],
        "clip": bool(anchor_config["clip"]),
    }


@keras.saving.register_keras_serializable(package="keras_coordatt")
class ObjectDetector(FirstFitTracedOnce, keras.Model):
    """A functional SSD-style detector (module docstring); build it with :func:`SSDLite`.

    Constructed as ``ObjectDetector(inputs, outputs, name=..., num_classes=...,
    bounding_box_format=..., anchor_config=..., ...)``; the keyword arguments travel in
    ``get_config()``. ``anchors`` ``(N, 4)`` (relative ``center_yxhw``, NumPy) are rebuilt from
    ``anchor_config`` and must match the outputs' ``N``.
    """

    def __init__(self, inputs, outputs, name=None, *, num_classes: int,
                 bounding_box_format: str = "yxyx", anchor_config: dict | None = None,
                 matching_iou_threshold: float = 0.5, score_threshold: float = 0.05,
                 nms_iou_threshold: float = 0.5, max_detections: int = 100,
                 pre_nms_top_k: int = 400, **kwargs):
        super().__init__(inputs, outputs, name=name, **kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be an integer >= 1, got {num_classes!r}.")
        self.num_classes = num_classes
        self.bounding_box_format = anchor_lib.check_bounding_box_format(bounding_box_format)
        self.anchor_config = _check_anchor_config(anchor_config)
        self.matching_iou_threshold = _check_number("matching_iou_threshold",
                                                    matching_iou_threshold, 0.0, 1.0)
        self.score_threshold = _check_number("score_threshold", score_threshold, 0.0, 1.0)
        self.nms_iou_threshold = _check_number("nms_iou_threshold", nms_iou_threshold, 0.0, 1.0)
        self.max_detections = int(_check_number("max_detections", max_detections, 1))
        self.pre_nms_top_k = int(_check_number("pre_nms_top_k", pre_nms_top_k, 1))
        self.anchors = anchor_lib.ssd_anchors(**self.anchor_config)
        self._check_outputs()
        self._loss_settings = {"loss": "focal", "box_loss_weight": 1.0, "focal_alpha": 0.25,
                               "focal_gamma": 2.0, "negative_ratio": 3.0}

    def _check_outputs(self) -> None:
        shape = tuple(self.inputs[0].shape)
        if None in shape[1:3]:
            raise ValueError(
                f"{self.name!r} needs a fixed input size (its anchors depend on it), got input "
                f"shape {shape}: build the backbone with input_shape=(H, W, 3)."
            )
        self.image_size = (int(shape[1]), int(shape[2]))
        outputs = self.outputs
        if len(outputs) != 2:
            raise ValueError(
                f"{self.name!r} must have two outputs, [box_encodings, class_logits], got "
                f"{len(outputs)}."
            )
        count = len(self.anchors)
        boxes, logits = outputs[0].shape, outputs[1].shape
        if tuple(boxes[1:]) != (count, 4) or tuple(logits[1:]) != (count, self.num_classes + 1):
            raise ValueError(
                f"Outputs {tuple(boxes)} / {tuple(logits)} of {self.name!r} do not match its "
                f"{count} anchors and {self.num_classes} + 1 classes."
            )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, bounding_box_format=self.bounding_box_format,
            anchor_config={**self.anchor_config,
                           "feature_sizes": [list(s) for s in self.anchor_config["feature_sizes"]],
                           "aspect_ratios": [list(r) for r in self.anchor_config["aspect_ratios"]]},
            matching_iou_threshold=self.matching_iou_threshold,
            score_threshold=self.score_threshold, nms_iou_threshold=self.nms_iou_threshold,
            max_detections=self.max_detections, pre_nms_top_k=self.pre_nms_top_k,
        )
        return config

    # ----------------------------------------------------------------------------- training

    def compile(self, optimizer="auto", loss="auto", *, box_loss_weight: float = 1.0,
                focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                negative_ratio: float = 3.0, **kwargs) -> None:
        """``keras.Model.compile`` with detection defaults (keras-hub's ``"auto"`` style).

        * ``optimizer="auto"``: SGD, learning rate 0.01, momentum 0.9 (the authors' COCO start;
          pass your own for the warm-up cosine schedule and weight decay);
        * ``loss``: ``"auto"`` / ``"focal"`` (COCO setting: softmax focal loss, ``focal_alpha``,
          ``focal_gamma``) or ``"hard_negative"`` (VOC setting: softmax cross-entropy with
          ``negative_ratio``:1 hard negatives), each plus ``box_loss_weight`` x the Huber box
          loss, all divided by the positive anchors (:mod:`~keras_coordatt.tasks.detection_losses`).

        Labels: ``{"boxes": (B, M, 4), "labels": (B, M)}`` in ``bounding_box_format``, padded
        with label -1. Other arguments (``metrics``, ``jit_compile``, ...) go to Keras.
        """
        name = "focal" if loss in ("auto", None) else loss
        if name not in CLASSIFICATION_LOSSES:
            raise ValueError(
                f"`loss` must be 'auto', {' or '.join(map(repr, CLASSIFICATION_LOSSES))}, got "
                f"{loss!r} (the detector computes its own loss from box / label targets)."
            )
        self._loss_settings = {
            "loss": name,
            "box_loss_weight": _check_number("box_loss_weight", box_loss_weight, 0.0),
            "focal_alpha": _check_number("focal_alpha", focal_alpha, 0.0, 1.0),
            "focal_gamma": _check_number("focal_gamma", focal_gamma, 0.0),
            "negative_ratio": _check_number("negative_ratio", negative_ratio, 0.0),
        }
        if optimizer == "auto":
            optimizer = keras.optimizers.SGD(DEFAULT_LEARNING_RATE, momentum=DEFAULT_MOMENTUM)
        kwargs.pop("loss_weights", None)
        super().compile(optimizer=optimizer, **kwargs)

    def get_compile_config(self) -> dict[str, Any]:
        if not self.compiled:
            return {}
        config = super().get_compile_config() or {}
        config.pop("loss", None)
        config.pop("loss_weights", None)
        return {**config, **self._loss_settings}

    def compile_from_config(self, config: dict[str, Any]) -> None:
        """Restores ``compile()`` (loss settings included) when a ``.keras`` file is loaded."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Matching + encoding of ``y`` against the anchors, then the compiled loss."""
        if y is None or not isinstance(y, dict) or not {"boxes", "labels"} <= set(y):
            raise ValueError(
                "Detection labels must be a dict {'boxes': (B, M, 4), 'labels': (B, M)} "
                f"(keras-hub style), got {type(y).__name__}."
            )
        if y_pred is None:
            y_pred = self(x, training=training)
        box_targets, class_targets, positive = anchor_lib.detection_targets(
            y, self.anchors, self.num_classes, self.bounding_box_format, self.image_size,
            self.matching_iou_threshold,
        )
        settings = self._loss_settings
        total = settings["box_loss_weight"] * box_loss(
            box_targets, y_pred[0], positive
        ) + classification_loss(
            settings["loss"], class_targets, y_pred[1], positive,
            focal_alpha=settings["focal_alpha"], focal_gamma=settings["focal_gamma"],
            negative_ratio=settings["negative_ratio"],
        )
        if self.losses:  # weight regularizers, as keras.Model.compute_loss adds them
            total = total + ops.sum(ops.stack([ops.cast(v, "float32") for v in self.losses]))
        return total

    # ---------------------------------------------------------------------------- inference

    def decode_predictions(self, outputs) -> dict:
        """Raw outputs ``[box_encodings, class_logits]`` -> ``{"boxes", "labels", "confidence",
        "num_detections"}`` (decoded, NMS'd, :mod:`~keras_coordatt.tasks.detection_postprocess`)."""
        return decode_detections(
            outputs[0], outputs[1], self.anchors,
            bounding_box_format=self.bounding_box_format, image_size=self.image_size,
            score_threshold=self.score_threshold, iou_threshold=self.nms_iou_threshold,
            max_detections=self.max_detections, pre_nms_top_k=self.pre_nms_top_k,
        )

    def predict_step(self, *args):
        outputs = super().predict_step(*args)
        if keras.backend.backend() == "jax":  # JAX's step returns (outputs, variables)
            return self.decode_predictions(outputs[0]), outputs[1]
        return self.decode_predictions(outputs)



def check_detection_batch(y, num_classes: int, bounding_box_format: str = "yxyx") -> None:
    """Checks keras-hub style labels ``{"boxes": (B, M, 4), "labels": (B, M)}`` eagerly.

    What the loss silently drops, this raises for (call it on a batch before training):
    labels other than the padding -1 outside ``[0, num_classes)``, and non-finite box
    coordinates. Boxes outside the image or without area are not errors (the loss clips /
    drops them). NumPy arrays and backend tensors are accepted.

    Raises:
        ValueError: a missing key, shapes that do not fit ``(B, M, 4)`` / ``(B, M)``, an unknown
            ``bounding_box_format`` (naming the accepted ones), the labels or boxes above.
    """
    anchor_lib.check_bounding_box_format(bounding_box_format)
    if not isinstance(y, dict) or not {"boxes", "labels"} <= set(y):
        raise ValueError("Detection labels must be a dict {'boxes': (B, M, 4), 'labels': "
                         f"(B, M)}} (keras-hub style), got {type(y).__name__}.")
    boxes = np.asarray(ops.convert_to_numpy(y["boxes"]), dtype="float64")
    labels = np.asarray(ops.convert_to_numpy(y["labels"]))
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or labels.shape != boxes.shape[:2]:
        raise ValueError(
            f"Labels must be {{'boxes': (B, M, 4), 'labels': (B, M)}}, got boxes {boxes.shape} "
            f"and labels {labels.shape}: pad each image's boxes to M with label -1."
        )
    if labels.size and (labels.dtype.kind == "f" and np.any(labels != np.round(labels))):
        raise ValueError("`labels` must hold integer class indices (or -1 for padding).")
    bad = np.unique(labels[(labels != -1) & ((labels < 0) | (labels >= num_classes))])
    if bad.size:
        raise ValueError(
            f"`labels` holds values outside [0, {num_classes}) other than the padding -1: "
            f"{', '.join(str(int(v)) for v in bad[:8])}. Classes are 0-based without background "
            "(the model adds it): remap them, or build the model with a larger num_classes."
        )
    if not np.all(np.isfinite(boxes[labels != -1])):
        raise ValueError("`boxes` holds NaN or infinite coordinates for labelled boxes.")
