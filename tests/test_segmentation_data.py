"""keras_coordatt.tasks.segmentation_data: sources, mask-aware augmentation, scores.

Oracles: PIL reads of the files written here, NumPy flips / repeats, images whose pixel values
encode their own coordinates (so any crop, flip or scale of image and mask can be checked for
alignment), hand-counted confusion matrices.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_coordatt.tasks import segmentation_data as sd

from helpers import DATA_DIR

PENNFUDAN = DATA_DIR / "pennfudan_small"


def pennfudan_files():
    """[(name, image path, mask path)] of the bundled Penn-Fudan photos."""
    names = sorted(p.name[: -len("_mask.png")] for p in PENNFUDAN.glob("*_mask.png"))
    return [(n, PENNFUDAN / f"{n}.jpg", PENNFUDAN / f"{n}_mask.png") for n in names]


def voc_palette() -> list[int]:
    palette = []
    for label in range(256):
        r = g = b = 0
        c = label
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def make_voc(root, files, val=1):
    """A VOC-layout folder: the photos as JPEGImages, person = 15, a 255 border (as VOC's)."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    masks = {}
    for name, image, mask in files:
        (root / "JPEGImages" / f"{name}.jpg").write_bytes(image.read_bytes())
        labels = np.where(np.asarray(Image.open(mask)) > 0, 15, 0).astype(np.uint8)
        labels[0, :] = 255
        png = Image.fromarray(labels, mode="P")
        png.putpalette(voc_palette())
        png.save(root / "SegmentationClass" / f"{name}.png")
        masks[name] = labels
    names = [f[0] for f in files]
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(names[val:]) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(names[:val]) + "\n")
    return masks


def test_voc_folder_reads_palette_indices_and_matching_photos(tmp_path):
    files = pennfudan_files()
    masks = make_voc(tmp_path, files)
    assert Image.open(tmp_path / "SegmentationClass" / f"{files[0][0]}.png").mode == "P"
    pairs = list(sd.voc_dataset(tmp_path, "train"))
    assert len(pairs) == len(files) - 1
    for (name, image_path, _), (image, mask) in zip(files[1:], pairs, strict=True):
        np.testing.assert_array_equal(mask.numpy(), masks[name])  # indices, not colours
        photo = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.int16)
        assert image.dtype == tf.uint8 and image.shape == photo.shape
        assert np.abs(image.numpy().astype(np.int16) - photo).mean() < 2  # JPEG decoders
    (val_image, val_mask), = list(sd.voc_dataset(tmp_path, "val"))
    assert set(np.unique(val_mask.numpy())) <= {0, 15, 255}


def test_voc_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="missing JPEGImages, SegmentationClass"):
        sd.voc_dataset(tmp_path, "train")
    make_voc(tmp_path, pennfudan_files())
    with pytest.raises(ValueError, match="missing ImageSets/Segmentation/test.txt"):
        sd.voc_dataset(tmp_path, "test")
    (tmp_path / "ImageSets" / "Segmentation" / "test.txt").write_text("2007_000001\n")
    with pytest.raises(ValueError, match="2 files .* missing.*2007_000001.jpg"):
        sd.voc_dataset(tmp_path, "test")
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (4, 4), (128, 0, 0)).save(rgb)
    with pytest.raises(ValueError, match="is a RGB image"):
        sd.read_mask(rgb)


def test_mask_of_another_size_fails_in_the_pipeline(tmp_path):
    files = pennfudan_files()
    make_voc(tmp_path, files)
    name = files[1][0]
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(
        tmp_path / "SegmentationClass" / f"{name}.png")
    with pytest.raises(tf.errors.InvalidArgumentError, match="image and mask sizes differ"):
        list(sd.voc_dataset(tmp_path, "train"))


def test_pennfudan_layouts_give_person_masks(tmp_path):
    files = pennfudan_files()
    flat = list(sd.pennfudan_dataset(PENNFUDAN))
    assert sd.pennfudan_names(PENNFUDAN) == [f[0] for f in files]
    # the shared layout (images/ + masks/) with instance ids 1, 2, ... -> person 1
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name, image, mask in files:
        (tmp_path / "images" / f"{name}.jpg").write_bytes(image.read_bytes())
        instances = np.asarray(Image.open(mask)).astype(np.uint8)
        instances[instances > 0] += np.arange(instances.shape[1], dtype=np.uint8)[
            np.nonzero(instances > 0)[1]] % 3
        Image.fromarray(instances).save(tmp_path / "masks" / f"{name}_mask.png")
    shared = list(sd.pennfudan_dataset(tmp_path))
    for (_, _, mask), (_, a), (_, b) in zip(files, flat, shared, strict=True):
        expected = (np.asarray(Image.open(mask)) > 0).astype(np.uint8)
        np.testing.assert_array_equal(a.numpy(), expected)
        np.testing.assert_array_equal(b.numpy(), expected)
    with pytest.raises(ValueError, match="not a Penn-Fudan folder"):
        sd.pennfudan_dataset(tmp_path / "images" / "missing")


def test_split_is_fixed_disjoint_and_complete():
    names = [f"img{i:03d}" for i in range(170)]
    train, val = sd.split_names(names[::-1], 50, seed=0)
    assert (train, val) == sd.split_names(names, 50, seed=0)  # order of the input ignored
    assert len(val) == 50 and not set(train) & set(val) and sorted(train + val) == names
    assert sd.split_names(names, 50, seed=1)[1] != val
    with pytest.raises(ValueError, match="num_val"):
        sd.split_names(names, 170)


def coordinate_pair(height, width):
    """An image whose channels 0 / 1 are the row / column (0..255) and a mask f(row, col)."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    image = np.stack([rows, cols, np.full_like(rows, 7)], -1).astype(np.uint8)
    return image, label_of(rows, cols)


def label_of(rows, cols):
    return ((7 * np.asarray(rows) + 3 * np.asarray(cols)) % 200).astype(np.uint8)


def test_crop_and_flip_keep_image_and_mask_aligned():
    image, mask = coordinate_pair(60, 50)
    flips = 0
    for i in range(8):
        out_image, out_mask = sd.random_scale_crop_flip(
            image, mask, (32, 24), scale_range=(1.0, 1.0), seed=tf.constant([i, 1]))
        out_image, out_mask = out_image.numpy(), out_mask.numpy()
        rows, cols = out_image[..., 0], out_image[..., 1]
        np.testing.assert_array_equal(out_mask, label_of(rows, cols))  # aligned everywhere
        top, left = int(rows.min()), int(cols.min())
        window = image[top:top + 32, left:left + 24]
        if cols[0, 0] > cols[0, -1]:  # flipped: both, as np.flip
            flips += 1
            window = np.flip(window, axis=1)
        np.testing.assert_array_equal(out_image, window.astype(np.float32))
    assert 0 < flips < 8


def test_flip_equals_numpy_flip():
    image, mask = coordinate_pair(16, 16)
    seen = set()
    for i in range(8):
        out_image, out_mask = sd.random_scale_crop_flip(
            image, mask, (16, 16), scale_range=(1.0, 1.0), seed=tf.constant([i, 2]))
        flipped = not np.array_equal(out_mask.numpy(), mask)
        seen.add(flipped)
        expected = np.flip(mask, axis=1) if flipped else mask
        np.testing.assert_array_equal(out_mask.numpy(), expected)
        np.testing.assert_array_equal(out_image.numpy()[..., 1], np.flip(image[..., 1], 1)
                                      if flipped else image[..., 1])
    assert seen == {True, False}


def test_scale_uses_nearest_for_masks_and_pads_with_mean_and_ignore():
    image, mask = coordinate_pair(8, 8)
    _, out_mask = sd.random_scale_crop_flip(image, mask, (16, 16), scale_range=(2.0, 2.0),
                                            flip=False)
    np.testing.assert_array_equal(out_mask.numpy(), np.repeat(np.repeat(mask, 2, 0), 2, 1))
    out_image, out_mask = sd.random_scale_crop_flip(image, mask, (12, 12),
                                                    scale_range=(1.0, 1.0), flip=False)
    out_image, out_mask = out_image.numpy(), out_mask.numpy()
    padded = out_mask == 255
    assert padded.sum() == 12 * 12 - 8 * 8
    np.testing.assert_allclose(out_image[padded], np.tile(sd.MEAN_PIXEL, (padded.sum(), 1)),
                               rtol=1e-6)
    np.testing.assert_array_equal(out_mask[8:, :], 255)  # padding at the bottom / right
    np.testing.assert_array_equal(out_mask[:8, :8], mask)


def test_eval_resize_and_pad():
    image, mask = coordinate_pair(20, 10)
    out_image, out_mask = sd.resize_and_pad(image, mask, 40)
    np.testing.assert_array_equal(out_mask.numpy()[:, :20], np.repeat(np.repeat(mask, 2, 0), 2, 1))
    np.testing.assert_array_equal(out_mask.numpy()[:, 20:], 255)
    assert out_image.shape == (40, 40, 3)


def test_pipelines_batch_preprocessed_images_and_check_labels():
    data = sd.pennfudan_dataset(PENNFUDAN)
    images, masks = next(iter(sd.train_pipeline(data, 64, 2, base_size=80, num_classes=2,
                                                seed=0)))
    assert images.shape == (2, 64, 64, 3) and masks.shape == (2, 64, 64)
    assert images.dtype == tf.float32 and masks.dtype == tf.int32
    assert -3 < images.numpy().min() and images.numpy().max() < 3  # preprocess_input
    assert set(np.unique(masks.numpy())) <= {0, 1, 255}
    again, _ = next(iter(sd.train_pipeline(data, 64, 2, base_size=80, num_classes=2, seed=0)))
    np.testing.assert_array_equal(images.numpy(), again.numpy())  # seeded: reproducible
    batches = list(sd.eval_pipeline(data, 48, 3, num_classes=2))
    assert [b[0].shape[0] for b in batches] == [3, len(pennfudan_files()) - 3]
    padded = batches[0][1].numpy() == 255
    np.testing.assert_allclose(batches[0][0].numpy()[padded], 0.0, atol=1e-5)  # mean pixel
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"mask labels must be in \[0, 1\)"):
        list(sd.eval_pipeline(data, 48, 3, num_classes=1))
    with pytest.raises(ValueError, match="crop_size"):
        sd.train_pipeline(data, (64,), 2)


def test_tfds_pet_trimap_becomes_classes(monkeypatch):
    """tfds' mock with our own examples: trimap values 1 / 2 / 3 -> pet 0 / background 1 /
    border 2 (TFDS' values minus one); the images pass through."""
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(0)
    trimaps = [rng.integers(1, 4, size=(9 + i, 7, 1)).astype(np.uint8) for i in range(3)]

    def as_dataset(self, *args, **kwargs):
        def examples():
            for i, trimap in enumerate(trimaps):
                yield {"image": np.full(trimap.shape[:2] + (3,), i, np.uint8), "label": 0,
                       "species": 0, "file_name": f"{i}.jpg", "segmentation_mask": trimap,
                       "head_bbox": np.zeros(4, np.float32)}

        return tf.data.Dataset.from_generator(
            examples, output_types=self.info.features.dtype,
            output_shapes=self.info.features.shape)

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        dataset, names = sd.segmentation_source("tfds", "train", tfds_name="oxford_iiit_pet")
        pairs = list(dataset)
    assert names == ("pet", "background", "border")
    for i, (trimap, (image, mask)) in enumerate(zip(trimaps, pairs, strict=True)):
        np.testing.assert_array_equal(mask.numpy(), trimap[..., 0] - 1)
        assert image.shape == trimap.shape[:2] + (3,) and int(image[0, 0, 0]) == i
    with pytest.raises(ValueError, match="pass image_key= and mask_key="):
        sd.tfds_dataset("mnist", "train")


def test_cityscapes_label_ids_map_to_train_ids():
    ids = tf.constant([[0, 7, 8, 11, 26, 33, 34, 255]], tf.uint8)
    expected = [[255, 0, 1, 2, 13, 18, 255, 255]]  # cityscapesScripts' label table
    np.testing.assert_array_equal(sd._lookup(ids, sd.CITYSCAPES_TRAIN_IDS).numpy(), expected)
    assert sorted(set(sd.CITYSCAPES_TRAIN_IDS) - {255}) == list(range(19))


def test_scores_match_hand_counts():
    masks = np.array([[[0, 0, 1, 255]], [[1, 1, 2, 2]]])
    predicted = np.array([[[0, 1, 1, 0]], [[1, 1, 2, 0]]])
    logits = np.eye(3)[predicted]
    reference = np.eye(3)[np.array([[[0, 1, 1, 2]], [[1, 0, 2, 0]]])]
    data = [(np.zeros((1, 1, 4, 3)), masks[i:i + 1]) for i in range(2)]
    calls = iter([logits[0:1], logits[1:2]])
    refs = iter([reference[0:1], reference[1:2]])
    scores = sd.segmentation_scores(lambda x: next(calls), data, 3,
                                    reference=lambda x: next(refs))
    # class 0: tp 1, fp 1, fn 1 -> 1/3; class 1: tp 3, fp 1, fn 0 -> 3/4; class 2: tp 1, fn 1
    np.testing.assert_allclose(scores["iou"], [1 / 3, 3 / 4, 1 / 2])
    assert scores["mean_iou"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert scores["pixels"] == 7 and scores["pixel_accuracy"] == pytest.approx(5 / 7)
    assert scores["agreement"] == pytest.approx(6 / 7)  # the 255 pixel is not counted
