"""applications/detection and its data side: VOC-XML / COCO-JSON / Penn-Fudan readers, the SSD
augmentation against NumPy, pycocotools metrics on hand-made cases, and train -> evaluate on the
8 Penn-Fudan photos of tests/data/pennfudan_instances (tiny model, 1 step: the plumbing)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_coordatt.tasks import detection_augment as da
from keras_coordatt.tasks import detection_data as dd
from keras_coordatt.tasks.detection_metrics import coco_metrics, detection_agreement

from helpers import DATA_DIR, ROOT, load_script

RECIPE = ROOT / "applications" / "detection"
PENNFUDAN = DATA_DIR / "pennfudan_instances"


def _load(name: str):
    return load_script(RECIPE / name, f"detection_recipe_{name}")


def _jpeg(path, height: int, width: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(path)


# ------------------------------------------------------------------------------------ readers


def _voc_folder(root):
    """VOC2007-style folder: two images, one difficult box."""
    objects = {"a": (100, 200, [("dog", 11, 21, 60, 80, 0), ("person", 1, 1, 200, 100, 1)]),
               "b": (50, 40, [("cat", 5, 10, 30, 50, 0)])}
    for name, (height, width, items) in objects.items():
        _jpeg(root / "JPEGImages" / f"{name}.jpg", height, width)
        xml = ElementTree.Element("annotation")
        ElementTree.SubElement(xml, "filename").text = f"{name}.jpg"
        size = ElementTree.SubElement(xml, "size")
        ElementTree.SubElement(size, "width").text = str(width)
        ElementTree.SubElement(size, "height").text = str(height)
        for cls, x1, y1, x2, y2, difficult in items:
            obj = ElementTree.SubElement(xml, "object")
            ElementTree.SubElement(obj, "name").text = cls
            ElementTree.SubElement(obj, "difficult").text = str(difficult)
            box = ElementTree.SubElement(obj, "bndbox")
            for key, value in zip(("xmin", "ymin", "xmax", "ymax"), (x1, y1, x2, y2),
                                  strict=True):
                ElementTree.SubElement(box, key).text = str(value)
        (root / "Annotations").mkdir(exist_ok=True)
        ElementTree.ElementTree(xml).write(root / "Annotations" / f"{name}.xml")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("a\nb\n")


def test_voc_xml_folder_boxes_equal_the_files(tmp_path):
    _voc_folder(tmp_path / "VOC2007")
    source = dd.voc_source([tmp_path / "VOC2007"], "trainval")
    boxes, labels, ignore = (t.numpy() for t in source.table[1:])
    classes = list(dd.VOC_DETECTION_CLASSES)
    # (xmin - 1, ymin - 1, xmax, ymax) in pixels -> relative yxyx
    np.testing.assert_allclose(boxes[0], [[20 / 100, 10 / 200, 80 / 100, 60 / 200],
                                          [0, 0, 100 / 100, 200 / 200]], rtol=1e-6)
    np.testing.assert_allclose(boxes[1, 0], [9 / 50, 4 / 40, 50 / 50, 30 / 40], rtol=1e-6)
    assert labels.tolist() == [[classes.index("dog"), classes.index("person")],
                               [classes.index("cat"), -1]]
    assert ignore.tolist() == [[False, True], [False, True]]
    # the pipeline: pixels of the 64x64 input in xyxy, difficult boxes dropped, M fixed
    _, y = next(iter(dd.eval_batches(source, 64, 2, max_boxes=3, bounding_box_format="xyxy")))
    np.testing.assert_allclose(y["boxes"].numpy()[0],
                               [[64 * 10 / 200, 64 * 20 / 100, 64 * 60 / 200, 64 * 80 / 100],
                                [-1] * 4, [-1] * 4], atol=1e-4)
    assert y["labels"].numpy().tolist() == [[classes.index("dog"), -1, -1],
                                            [classes.index("cat"), -1, -1]]
    with pytest.raises(ValueError, match="not a Pascal VOC folder"):
        dd.voc_source(tmp_path / "nothing", "trainval")


def test_coco_json_folder_boxes_equal_the_files(tmp_path):
    for name, (height, width) in {"x.jpg": (60, 80), "y.jpg": (30, 30)}.items():
        _jpeg(tmp_path / "val2017" / name, height, width)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "x.jpg", "height": 60, "width": 80},
                   {"id": 3, "file_name": "y.jpg", "height": 30, "width": 30}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 18, "bbox": [8, 6, 40, 30], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 80, 60], "iscrowd": 1}],
    }))
    source = dd.coco_source(tmp_path, "val2017")
    assert source.class_names == ("person", "dog")  # category ids in order -> 0, 1
    boxes, labels, ignore = (t.numpy() for t in source.table[1:])
    # images by id: y (no objects) first, then x
    assert labels.tolist() == [[-1, -1], [1, 0]] and ignore[1].tolist() == [False, True]
    np.testing.assert_allclose(boxes[1], [[6 / 60, 8 / 80, 36 / 60, 48 / 80], [0, 0, 1, 1]],
                               rtol=1e-6)
    _, y = next(iter(dd.coco_batches(source, 32, 2)))
    assert y["size"].numpy().tolist() == [[30, 30], [60, 80]]


def test_pennfudan_boxes_from_annotations_and_from_masks(tmp_path):
    note = tmp_path / "annotations" / "P1.txt"
    note.parent.mkdir()
    note.write_text('Image size (X x Y x C) : 559 x 536 x 3\n'
                    'Bounding box for object 1 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : '
                    '(160, 182) - (302, 431)\n')
    np.testing.assert_allclose(dd.read_pennfudan_annotation(note),
                               [[181 / 536, 159 / 559, 431 / 536, 302 / 559]], rtol=1e-6)
    source = dd.pennfudan_source(PENNFUDAN)  # no annotations/: boxes from the masks
    assert source.num_examples == 8 and source.class_names == ("person",)
    mask = np.asarray(Image.open(PENNFUDAN / "FudanPed00001_mask.png"))
    expected = []
    for k in range(1, mask.max() + 1):  # the NumPy oracle: extent of each instance id
        ys, xs = np.nonzero(mask == k)
        expected.append([ys.min() / 96, xs.min() / 96, (ys.max() + 1) / 96, (xs.max() + 1) / 96])
    got = source.table[1].numpy()[0][: len(expected)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    train = dd.detection_source("pennfudan", "train", data_dir=PENNFUDAN, num_val=2)
    val = dd.detection_source("pennfudan", "val", data_dir=PENNFUDAN, num_val=2)
    assert (train.num_examples, val.num_examples) == (6, 2)


# ------------------------------------------------------------------------------ augmentation


def test_flip_crop_expand_agree_with_numpy():
    boxes = np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.7, 0.4, 0.95]], np.float32)
    np.testing.assert_allclose(da.flip_boxes(tf.constant(boxes)).numpy(),
                               [[0.1, 0.4, 0.5, 0.8], [0.0, 0.05, 0.4, 0.3]], atol=1e-6)
    # crop: image 100 x 200, window rows 10..60, cols 20..120
    image = np.random.default_rng(0).uniform(0, 255, (100, 200, 3)).astype(np.float32)
    boxes = np.array([[0.2, 0.2, 0.4, 0.5],     # inside
                      [0.05, 0.4, 0.5, 0.7],    # cut by the window, centre inside
                      [0.7, 0.1, 0.9, 0.3]], np.float32)  # centre outside: dropped
    out, got, labels = da.crop(tf.constant(image), tf.constant(boxes),
                               tf.constant([0, 1, 2]), tf.constant([10, 20, 60, 120]))
    np.testing.assert_array_equal(out.numpy(), image[10:60, 20:120])
    pixels = boxes * [100, 200, 100, 200]
    clipped = np.clip(pixels, [10, 20, 10, 20], [60, 120, 60, 120])
    expected = (clipped - [10, 20, 10, 20]) / [50, 100, 50, 100]
    assert labels.numpy().tolist() == [0, 1, -1]
    np.testing.assert_allclose(got.numpy()[:2], expected[:2], atol=1e-5)
    np.testing.assert_allclose(expected[1], [0, 0.6, 0.8, 1.0], atol=1e-6)  # really cut
    # expand: a 50 x 40 image at (10, 30) on a 100 x 120 canvas
    small = image[:50, :40]
    out, got = da.expand(tf.constant(small), tf.constant(boxes), (100, 120), (10, 30))
    out = out.numpy()
    np.testing.assert_array_equal(out[10:60, 30:70], small)
    np.testing.assert_allclose(out[0, 0], da.MEAN_PIXEL, rtol=1e-6)
    np.testing.assert_allclose(out[99, 119], da.MEAN_PIXEL, rtol=1e-6)
    expected = (boxes * [50, 40, 50, 40] + [10, 30, 10, 30]) / [100, 120, 100, 120]
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)


def test_random_ssd_augmentation_keeps_boxes_on_their_pixels():
    """Two boxes painted in their own colours: after any expand / crop / flip, each kept box is
    exactly the extent of its colour in the output image."""
    image = np.full((60, 80, 3), 128.0, np.float32)
    boxes = np.array([[6 / 60, 8 / 80, 30 / 60, 40 / 80], [35 / 60, 50 / 80, 55 / 60, 76 / 80]],
                     np.float32)
    colours = np.array([[255.0, 0, 0], [0, 0, 255.0]])
    for (y1, x1, y2, x2), colour in zip(boxes * [60, 80, 60, 80], colours, strict=True):
        image[round(y1):round(y2), round(x1):round(x2)] = colour
    seen = {"cut": 0, "dropped": 0, "flipped": 0}
    for seed in range(24):
        out, got, labels = da.ssd_augment(tf.constant(image), tf.constant(boxes),
                                          tf.constant([0, 1]), tf.constant([seed, 7]),
                                          photometric_distort=False)
        out, got, labels = out.numpy(), got.numpy(), labels.numpy()
        height, width = out.shape[:2]
        seen["dropped"] += int((labels < 0).sum())
        for k in np.flatnonzero(labels >= 0):
            ys, xs = np.nonzero(np.all(out == colours[labels[k]], axis=-1))
            extent = [ys.min() / height, xs.min() / width, (ys.max() + 1) / height,
                      (xs.max() + 1) / width]
            np.testing.assert_allclose(got[k], extent, atol=1e-5, err_msg=f"seed {seed}")
            seen["cut"] += int(len(ys) < (boxes[k, 2] - boxes[k, 0]) * 60 * (
                boxes[k, 3] - boxes[k, 1]) * 80)
        seen["flipped"] += int(labels[0] >= 0 and labels[1] >= 0 and got[1, 1] < got[0, 1])
    assert all(seen.values()), seen  # the seeds covered cut, dropped and flipped boxes


def test_a_resumed_stream_reads_the_same_batches():
    """Epoch e of train_batches depends on (seed, e) only: a run resumed at epoch 1 reads what
    an uninterrupted run reads there, and the two epochs differ."""
    source = dd.pennfudan_source(PENNFUDAN)
    full = list(dd.train_batches(source, 32, 2, 2, seed=3, max_boxes=4, steps=1))
    resumed = list(dd.train_batches(source, 32, 2, 2, start_epoch=1, seed=3, max_boxes=4,
                                    steps=1))
    assert (len(full), len(resumed)) == (2, 1)
    np.testing.assert_array_equal(full[1][0].numpy(), resumed[0][0].numpy())
    np.testing.assert_array_equal(full[1][1]["boxes"].numpy(), resumed[0][1]["boxes"].numpy())
    assert not np.array_equal(full[0][0].numpy(), full[1][0].numpy())
    assert full[0][1]["boxes"].shape == (2, 4, 4) and full[0][1]["labels"].shape == (2, 4)


# ------------------------------------------------------------------------------ COCO metrics


def test_coco_metrics_exact_cases():
    truth = [{"height": 100, "width": 100, "labels": np.array([0, 0]),
              "boxes": np.array([[10, 10, 50, 60], [60, 60, 90, 95]], float),
              "ignore": np.array([False, True])}]
    hit = [{"boxes": np.array([[60, 60, 90, 95], [10, 10, 50, 60]], float),
            "labels": np.array([0, 0]), "scores": np.array([0.9, 0.8])}]
    miss = [{"boxes": np.array([[0, 70, 20, 100]], float), "labels": np.array([0]),
             "scores": np.array([0.9])}]
    perfect = coco_metrics(truth, hit, ["person"])  # a detection on the ignored box is no FP
    for name in ("AP", "AP50", "AP75"):
        assert perfect[name] == pytest.approx(1.0, abs=1e-12), name
    assert coco_metrics(truth, miss, ["person"])["AP"] == 0.0
    none = coco_metrics(truth, [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0),
                                 "scores": np.zeros(0)}], ["person"])
    assert none["AP"] == 0.0


def _detections(boxes, labels, scores):
    """One batch of one image, padded to 3 slots with -1 (the predict / LiteRT form)."""
    count = len(labels)
    pad = 3 - count
    return {"boxes": np.array([list(boxes) + [[-1.0] * 4] * pad], "float32"),
            "labels": np.array([list(labels) + [-1] * pad]),
            "confidence": np.array([list(scores) + [-1.0] * pad], "float32"),
            "num_detections": np.array([count])}


def test_detection_agreement_hand_computed():
    """IoUs worked out by hand: a shifted box (0.4 x 0.5 overlap of 0.5 x 0.5 boxes: IoU
    0.2 / 0.3 = 2/3), a box of another class (no match), one below min_score (not compared),
    padding slots (never matched)."""
    reference = [_detections([[0.1, 0.1, 0.6, 0.6], [0.2, 0.2, 0.7, 0.7], [0.0, 0.0, 0.2, 0.2]],
                             [0, 1, 0], [0.9, 0.8, 0.3])]
    found = [_detections([[0.1, 0.1, 0.6, 0.6], [0.3, 0.2, 0.8, 0.7]], [0, 0], [0.85, 0.8])]
    result = detection_agreement(reference, found, min_score=0.5, min_iou=0.9)
    assert result["compared"] == 2  # the 0.3 detection is below min_score
    assert result["matched_share"] == 0.5  # the class-1 box has no class-1 partner
    assert result["mean_iou"] == pytest.approx(0.5) and result["min_iou_seen"] == 0.0
    assert result["max_score_gap"] == pytest.approx(0.05)
    shifted = [_detections([[0.3, 0.2, 0.8, 0.7]], [1], [0.8])]
    second = detection_agreement(reference, shifted, min_score=0.5, min_iou=0.6)
    assert second["mean_iou"] == pytest.approx((0.0 + 2 / 3) / 2)
    assert second["matched_share"] == 0.5 and second["max_score_gap"] == pytest.approx(0.0)
    empty = detection_agreement(reference, [_detections([], [], [])])
    assert empty["compared"] == 2 and empty["matched_share"] == 0.0
    assert detection_agreement([_detections([], [], [])], found)["matched_share"] is None
    with pytest.raises(ValueError, match="same batches"):
        detection_agreement(reference, found + found)


# ------------------------------------------------------------------------------- the recipe


@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "export.py"])
def test_help_shows_the_paper_settings(script):
    text = subprocess.run([sys.executable, str(RECIPE / script), "--help"], text=True,
                          capture_output=True, check=True, timeout=60).stdout
    assert text.startswith("usage:")
    flat = " ".join(text.split())
    assert "--config {coco,voc}" in flat and "--image-size IMAGE_SIZE square input size " \
        "(default: 320)" in flat
    if script == "train.py":
        for option in ("--backbone {mobilenet_v2,mobilenext}", "--attention {none,se,cbam,ca}",
                       "--distribute {none,mirrored,multiworker,tpu,data_parallel}",
                       "coco 1e-2, voc 1e-3", "coco 32, voc 24", "coco: focal, voc: hard_negative"):
            assert option in flat, option
    train = _load("train.py")
    coco, voc = train.parse_args([]), train.parse_args(["--config", "voc"])
    assert (coco.loss, coco.learning_rate, coco.batch_size, coco.weight_decay, coco.schedule) \
        == ("focal", 1e-2, 32, 4e-5, "cosine")
    assert (voc.loss, voc.learning_rate, voc.batch_size, voc.tfds_name) == (
        "hard_negative", 1e-3, 24, ["voc/2007", "voc/2012"])


def test_train_then_evaluate_on_pennfudan(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = tmp_path / "run"
    data = ["--source", "pennfudan", "--data-dir", str(PENNFUDAN), "--num-val", "2",
            "--image-size", "128"]
    assert _load("train.py").main([
        *data, "--attention", "none", "--alpha", "0.35", "--weights", "none",  # (fastest trace)
        "--batch-size", "2", "--epochs", "1",
        "--steps-per-epoch", "1", "--max-boxes", "8", "--validation-freq", "5",
        "--skip-coco-eval", "--output-dir", str(out), "--verbose", "0"]) == 0
    for name in ("model.keras", "model.keras.sha256", "checkpoints/last.keras", "train_log.csv"):
        assert (out / name).exists(), name
    assert not (out / "backup").exists()  # BackupAndRestore removes it after a finished run
    assert list((out / "logs").rglob("events.out.tfevents.*")), "no TensorBoard events"

    scores, detections = tmp_path / "scores.json", tmp_path / "detections.json"
    assert _load("evaluate.py").main([  # after one step every score is ~0.01: keep them all
        "--model", str(out / "model.keras"), *data, "--score-threshold", "0", "--json",
        str(scores), "--detections", str(detections)]) == 0
    scores = json.loads(scores.read_text())
    # pycocotools directly: ground truth from the two held-out masks, our detections file
    _, val = dd.split_names([p.stem for p in PENNFUDAN.glob("*Ped0000?.png")], 2, 0)
    images, annotations = [], []
    for i, name in enumerate(val):
        mask = np.asarray(Image.open(PENNFUDAN / f"{name}_mask.png"))
        images.append({"id": i + 1, "height": 96, "width": 96})
        for k in range(1, mask.max() + 1):
            ys, xs = np.nonzero(mask == k)
            w, h = xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
                                "bbox": [int(xs.min()), int(ys.min()), int(w), int(h)],
                                "area": int(w * h), "iscrowd": 0})
    truth = COCO()
    truth.dataset = {"images": images, "annotations": annotations,
                     "categories": [{"id": 1, "name": "person"}]}
    truth.createIndex()
    results = json.loads(detections.read_text())
    assert results, "the model returned no detection at all"
    evaluator = COCOeval(truth, truth.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert scores["AP"] == pytest.approx(evaluator.stats[0], abs=1e-9)
    assert scores["AP50"] == pytest.approx(evaluator.stats[1], abs=1e-9)

    # export.py (float32 only here: the int8 paths are tests/test_detection_export.py's)
    report = tmp_path / "export.json"
    assert _load("export.py").main([
        "--model", str(out / "model.keras"), *data, "--max-boxes", "8", "--batch-size", "2",
        "--modes", "float32", "--agreement-score", "0", "--output-dir", str(tmp_path / "tflite"),
        "--json", str(report)]) == 0
    report = json.loads(report.read_text())
    row = report["float32"]
    assert row["ops"]["TFLite_Detection_PostProcess"] == 1 and row["ops"]["CONV_2D"] > 40
    # the float file finds every Keras detection, and so the same COCO scores
    assert row["agreement"]["compared"] > 0 and row["agreement"]["matched_share"] == 1.0
    assert row["AP"] == pytest.approx(report["keras"]["AP"], abs=1e-3)
    assert report["keras"]["AP"] == pytest.approx(scores["AP"], abs=1e-9)
