"""applications/attention_anywhere: pretrain a backbone on some CIFAR-10 classes, then fine-tune
it on others with and without CA added (tiny budget: the plumbing, not the accuracy)."""

from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import pytest

from helpers import ROOT

RECIPE = ROOT / "applications" / "attention_anywhere"
PRETRAIN = ("airplane", "automobile")
FINETUNE = ("cat", "dog", "ship")


@pytest.fixture(scope="module")
def cifar_folders(tmp_path_factory):
    """train/<class>/*.jpg and test/<class>/*.jpg: 6 and 3 real images per class."""
    from PIL import Image

    from keras_coordatt.datasets import CIFAR10_CLASSES, load_cifar10_subset

    root = tmp_path_factory.mktemp("cifar")
    for split, count in (("train", 6), ("test", 3)):
        images, labels = load_cifar10_subset(split)
        for name in PRETRAIN + FINETUNE:
            folder = root / split / name
            folder.mkdir(parents=True)
            picks = np.flatnonzero(labels == CIFAR10_CLASSES.index(name))[:count]
            for i, index in enumerate(picks):
                Image.fromarray(images[index]).save(folder / f"{i}.jpg", quality=95)
    return root


@pytest.fixture()
def recipe_modules():
    sys.path.insert(0, str(RECIPE))
    try:
        yield (importlib.import_module("pretrain_backbone"),
               importlib.import_module("finetune_compare"))
    finally:
        sys.path.remove(str(RECIPE))
        for name in ("pretrain_backbone", "finetune_compare"):
            sys.modules.pop(name, None)


def test_pretrain_then_finetune_with_and_without_ca(cifar_folders, recipe_modules, tmp_path):
    import keras

    from keras_coordatt.applications import MobileNetV2

    pretrain, compare = recipe_modules
    weights = tmp_path / "backbone.weights.h5"
    record = pretrain.main(["--data-dir", str(cifar_folders), "--classes", ",".join(PRETRAIN),
                            "--size", "32", "--epochs", "1", "--batch-size", "4",
                            "--output", str(weights)])
    assert record["train_images"] == 12 and record["test_images"] == 6
    assert json.loads(weights.with_name("backbone.json").read_text()) == record
    # The file is the trained backbone: it loads into an include_top=False network, and every
    # kernel moved from the initial weights (the same seed rebuilds them) during the epoch.
    loaded = MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False,
                         weights=str(weights))
    keras.utils.set_random_seed(0)
    initial = MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None)
    for trained, start in zip(loaded.trainable_weights, initial.trainable_weights, strict=True):
        assert trained.path == start.path
        assert not np.array_equal(trained.numpy(), start.numpy()), trained.path

    output = tmp_path / "comparison.txt"
    compare.main(["--weights", str(weights), "--data-dir", str(cifar_folders),
                  "--where", "block17_dw_relu",  # one CA block: a faster test
                  "--classes", ",".join(FINETUNE), "--train-per-class", "6",
                  "--test-per-class", "3", "--size", "32", "--epochs", "1",
                  "--batch-size", "6", "--seeds", "3", "--output", str(output)])
    results = json.loads(output.with_suffix(".json").read_text())["seeds"]["3"]
    assert results["start_relative_difference"] < 1e-5  # the identity start, from real weights
    base, added = results["baseline"], results["ca_added"]
    assert added["params"] > base["params"]
    # three classes: accuracy is a multiple of 1/9 on the nine test images
    for row in (base, added):
        assert len(row["train_loss"]) == 1 and np.isfinite(row["train_loss"][0])
        assert round(9 * row["test_accuracy"], 6) == round(9 * row["test_accuracy"])
    text = output.read_text()
    assert f"| + CA (add_attention) | 3 | {added['params']:,} |" in text
    # no machine paths in the committed command line
    assert str(cifar_folders) not in text and str(tmp_path) not in text
    assert "--data-dir <cifar10-jpeg-dir>" in text and "<pretrained>/backbone.weights.h5" in text
    keras.backend.clear_session()


def test_unknown_class_is_refused(recipe_modules):
    _, compare = recipe_modules
    with pytest.raises(SystemExit, match="not CIFAR-10 classes"):
        compare.load_data(compare.parse_args(["--classes", "cat,unicorn"]))
