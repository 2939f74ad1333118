"""Packaging facts: version, public API, import side effects, bundled data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import keras_coordatt
from keras_coordatt.datasets import CIFAR10_CLASSES, load_cifar10_subset

from helpers import run_python


def test_version_and_public_api():
    assert isinstance(keras_coordatt.__version__, str) and keras_coordatt.__version__
    for name in ("CoordAttention", "SqueezeExcite", "CBAM", "applications"):
        assert name in keras_coordatt.__all__
        assert hasattr(keras_coordatt, name)


def test_import_has_no_heavy_or_global_side_effects():
    """`import keras_coordatt` must not import tfmot / tf_keras / TF-Hub / torch / keras-hub,
    nor flip TF_USE_LEGACY_KERAS (tfmot does on import), so `tf.keras` stays Keras 3 for the
    user."""
    code = (
        "import json, os, sys; import keras_coordatt, keras_coordatt.applications, "
        "keras_coordatt.interop; mods = ['tensorflow_model_optimization', 'tf_keras', "
        "'tensorflow_hub', 'torch', 'keras_hub']; "
        "print(json.dumps({'loaded': [m for m in mods if m in sys.modules], "
        "'legacy': os.environ.get('TF_USE_LEGACY_KERAS')}))"
    )
    result = run_python(code, KERAS_BACKEND="tensorflow")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"loaded": [], "legacy": None}


def test_bundled_cifar10_subset_is_real_and_balanced():
    images, labels = load_cifar10_subset("test")
    assert images.shape == (1000, 32, 32, 3) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [100] * 10
    # Real photographs, not blank or constant arrays.
    assert images.std() > 30 and len(np.unique(images[:10])) > 200
    train_images, train_labels = load_cifar10_subset("train")
    assert train_images.shape == (4000, 32, 32, 3)
    assert np.bincount(train_labels).tolist() == [400] * 10
    assert len(CIFAR10_CLASSES) == 10


def test_unknown_split_is_refused():
    import pytest

    with pytest.raises(ValueError, match="Unknown split 'val'"):
        load_cifar10_subset("val")


def test_the_library_does_not_import_the_cli():
    """The CLI sits on top: importing the library's packages (and export_hub) loads no
    keras_coordatt.cli module."""
    code = (
        "import json, sys; import keras_coordatt.export, keras_coordatt.quantization, "
        "keras_coordatt.weights, keras_coordatt.applications, keras_coordatt.demo, "
        "keras_coordatt.benchmark; from keras_coordatt.export import export_hub; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('keras_coordatt'))))"
    )
    result = run_python(code, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert "keras_coordatt.export.hub" in loaded and "keras_coordatt.weights.registry" in loaded
    assert [m for m in loaded if m == "keras_coordatt.cli" or m.startswith("keras_coordatt.cli.")
            ] == []


def test_load_image_folder_reads_the_cifar10_jpeg_layout(tmp_path):
    """``<class>/*.jpg`` -> uint8 images, labels in the order of ``class_names``; the pixels are
    PIL's decoding of each file."""
    from PIL import Image

    from keras_coordatt.datasets import load_image_folder

    root = Path(__file__).parent / "data" / "cifar10_small" / "test"
    images, labels, names = load_image_folder(root, ("frog", "airplane"), per_class=3)
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    assert labels.tolist() == [0, 0, 0, 1, 1, 1] and names == ["frog", "airplane"]
    first = sorted((root / "frog").glob("*.jpg"))[0]
    np.testing.assert_array_equal(images[0], np.asarray(Image.open(first).convert("RGB")))
    _, all_labels, all_names = load_image_folder(root)
    assert all_names == sorted(p.name for p in root.iterdir() if p.is_dir())
    assert len(all_labels) == sum(len(list((root / n).glob("*.jpg"))) for n in all_names)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="No JPEGs in"):
        load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        load_image_folder(tmp_path / "missing")
