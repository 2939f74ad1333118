"""Helpers shared by the test files: where the bundled data lies, real CIFAR-10 images, and
BatchNorm statistics that make a randomly initialised network behave like a trained one, and
loading a script (recipe or benchmark) by path."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from keras_coordatt.benchmark import calibrate_batchnorm  # noqa: F401 - one helper, shared

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "tests" / "data"
CHECKPOINTS_DIR = DATA_DIR / "checkpoints"
FIXTURES_DIR = DATA_DIR / "fixtures"
#: 200 CIFAR-10 test images, 20 JPEGs per class folder.
CIFAR_DIR = DATA_DIR / "cifar10_small" / "test"
IMAGENET_DIR = DATA_DIR / "imagenet_small"


def cifar_files(
    classes: Sequence[str] | None = None, per_class: int | None = None
) -> list[tuple[Path, int]]:
    """(JPEG path, label) of the bundled CIFAR-10 images, class by class, files sorted.

    ``classes`` defaults to every class folder in alphabetical order; the label is the class's
    index in ``classes``. ``per_class`` keeps the first files of each class.
    """
    if classes is None:
        classes = sorted(path.name for path in CIFAR_DIR.iterdir() if path.is_dir())
    found = []
    for label, name in enumerate(classes):
        files = sorted((CIFAR_DIR / name).glob("*.jpg"))
        if not files:
            raise ValueError(f"no CIFAR-10 images for class {name!r} in {CIFAR_DIR}")
        found += [(path, label) for path in files[:per_class]]
    return found


def load_cifar(
    size: int, classes: Sequence[str] | None = None, per_class: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, size, size, 3) float32 in [0, 255] (bilinear ``tf.image.resize``) and labels
    (N,) int of :func:`cifar_files`; not preprocessed."""
    import tensorflow as tf

    files = cifar_files(classes, per_class)
    images = [
        tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3), (size, size))
        .numpy()
        for path, _ in files
    ]
    return np.stack(images).astype("float32"), np.array([label for _, label in files])


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization of ``model``, also those inside attention layers (``bn1``)."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def infer(model, inputs):
    """``model``'s inference-mode outputs for one batch ``inputs``, as NumPy (a list for several
    outputs): the computation of ``predict``. Called eagerly on TensorFlow and PyTorch (a test
    that predicts once would spend longer tracing a predict function than running it); on JAX
    one jit-compiled ``predict_on_batch`` (JAX compiles every op of an eager call on its own,
    several times slower the first time). ``model``: Keras 3 or tf_keras, without a custom
    predict step."""
    if keras.backend.backend() == "jax" and isinstance(model, keras.Model):
        outputs = model.predict_on_batch(inputs)
    else:
        outputs = model(inputs, training=False)
    return keras.tree.map_structure(lambda x: np.asarray(keras.ops.convert_to_numpy(x)), outputs)


def randomize_batchnorm(model: keras.Model, seed: int = 0) -> None:
    """Non-trivial BN statistics, BN affine parameters and biases (BN at init is nearly an
    identity): gamma / moving variance uniform in [0.5, 1.5], beta / moving mean / bias
    normal(0, 0.2)."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        leaf = weight.path.split("/")[-1]
        if leaf in ("gamma", "moving_variance"):
            weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype("float32"))
        elif leaf in ("beta", "moving_mean", "bias"):
            weight.assign(rng.normal(0.0, 0.2, weight.shape).astype("float32"))


def run_python(code: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """Runs ``python -c code`` in a fresh interpreter and returns the completed process (text
    output captured). The environment is this one without ``TF_USE_LEGACY_KERAS`` (so a
    subprocess starts as a user's would), plus ``env``."""
    environment = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment,
        timeout=timeout,
    )


def load_script(path: Path, name: str) -> types.ModuleType:
    """The program at ``path`` (a recipe or benchmark script, not a package module) imported
    under the module name ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
