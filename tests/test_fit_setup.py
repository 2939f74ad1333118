"""build_for_fit: the first fit traces its train step once instead of twice, and trains exactly
as it would have (same history, same weights), for Keras 3 and tf_keras (QAT) models."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from keras_coordatt.training import build_for_fit

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def data():
    rng = np.random.default_rng(1)
    return rng.random((16, 8, 8, 3)).astype("float32"), np.arange(16) % 3


def keras_model(keras_module, calls: list):
    """Conv -> BN -> pool -> Dense(3) with a layer that counts its training-mode Python calls
    (one per trace of the train step: a traced step does not run Python again)."""

    class CountTraces(keras_module.layers.Layer):
        def call(self, inputs, training=None):
            if training:
                calls.append(1)
            return inputs

    keras_module.utils.set_random_seed(0)
    inputs = keras_module.Input((8, 8, 3))
    x = keras_module.layers.Conv2D(4, 3)(inputs)
    x = CountTraces()(keras_module.layers.BatchNormalization()(x))
    x = keras_module.layers.GlobalAveragePooling2D()(x)
    return keras_module.Model(inputs, keras_module.layers.Dense(3)(x))


def train(keras_module, prebuild: bool, optimizer):
    calls: list = []
    model = keras_model(keras_module, calls)
    model.compile(optimizer=optimizer,
                  loss=keras_module.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    x, y = data()
    if prebuild:
        build_for_fit(model, y)
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
    return len(calls), history.history, model.get_weights()


def assert_same_training(keras_module, make_optimizer):
    traces_plain, history_plain, weights_plain = train(keras_module, False, make_optimizer())
    traces, history, weights = train(keras_module, True, make_optimizer())
    assert traces_plain == 2 and traces == 1
    assert history == history_plain
    for built, plain in zip(weights, weights_plain, strict=True):
        np.testing.assert_array_equal(built, plain)


def test_keras_first_fit_traces_once_and_trains_the_same():
    import keras

    assert_same_training(keras, lambda: keras.optimizers.SGD(0.1, momentum=0.9))


def test_tf_keras_first_fit_traces_once_and_trains_the_same():
    import tf_keras  # the [qat] extra, part of [dev]

    assert_same_training(tf_keras, lambda: tf_keras.optimizers.Adam(1e-2))


def test_a_dataset_gives_the_label_shapes_without_being_iterated():
    import keras
    import tensorflow as tf

    x, y = data()
    results = []
    for prebuild in (False, True):
        # one dataset per run: iterating a dataset advances its seeded reshuffling
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(16, seed=0).batch(4)
        calls: list = []
        model = keras_model(keras, calls)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        if prebuild:
            build_for_fit(model, dataset)
        history = model.fit(dataset, epochs=2, verbose=0)
        results.append((len(calls), history.history, model.get_weights()))
    (traces_plain, history_plain, weights_plain), (traces, history, weights) = results
    assert traces_plain == 2 and traces == 1
    assert history == history_plain  # the same shuffled order: the dataset was not iterated
    for built, plain in zip(weights, weights_plain, strict=True):
        np.testing.assert_array_equal(built, plain)


def test_dict_outputs_and_uncompiled_model():
    import keras

    inputs = keras.Input((4,))
    model = keras.Model(inputs, {"a": keras.layers.Dense(2)(inputs),
                                 "b": keras.layers.Dense(3)(inputs)})
    with pytest.raises(ValueError, match="not compiled"):
        build_for_fit(model, {"a": np.zeros((2, 2)), "b": np.zeros((2, 3))})
    model.compile(optimizer="adam", loss="mse", metrics={"a": ["mae"], "b": ["mae"]})
    targets = {"a": np.ones((5, 2), "float32"), "b": np.ones((5, 3), "float32")}
    build_for_fit(model, targets)
    assert model.optimizer.built
    history = model.fit(np.ones((5, 4), "float32"), targets, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def count_train_step_traces(model) -> list:
    """Replaces ``model.train_step`` by a wrapper that records each Python call (one per trace
    of the train step); returns the list it appends to."""
    calls: list = []
    original = model.train_step

    def train_step(data):
        calls.append(1)
        return original(data)

    model.train_step = train_step
    return calls


def tiny_task_model(kind: str):
    """A small DeepLabV3 (32x32) or SSDLite (96x96) on a frozen MobileNetV2CA 0.35, and data:
    ``(model, x, y)``; a seeded build, so two calls give the same weights."""
    import keras

    from keras_coordatt.applications import MobileNetV2CA
    from keras_coordatt.tasks import DeepLabV3, SSDLite

    keras.utils.set_random_seed(0)
    size = 32 if kind == "deeplab" else 96
    backbone = MobileNetV2CA((size, size, 3), alpha=0.35, include_top=False, weights=None)
    backbone.trainable = False
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (4, size, size, 3)).astype("float32")
    if kind == "deeplab":
        model = DeepLabV3(backbone, 3)
        y = rng.integers(0, 3, (4, size, size))
    else:
        model = SSDLite(backbone, 2, bounding_box_format="xyxy")
        y = {"boxes": np.array([[[8, 8, 60, 70]]] * 4, "float32"), "labels": np.ones((4, 1), int)}
    model.compile()
    return model, x, y


def test_deeplab_first_fit_traces_once_and_trains_the_same():
    """DeepLabV3's ``fit`` prepares its first fit itself: one trace, and the same history and
    weights as Keras' own ``fit`` (which traces twice)."""
    import keras

    results = []
    for own_fit in (True, False):
        model, x, y = tiny_task_model("deeplab")
        calls = count_train_step_traces(model)
        fit = model.fit if own_fit else functools.partial(keras.Model.fit, model)
        history = fit(x, y, batch_size=2, epochs=1, verbose=0, shuffle=False)
        results.append((len(calls), history.history, model.get_weights()))
    (traces, history, weights), (traces_plain, history_plain, weights_plain) = results
    assert traces == 1 and traces_plain == 2
    assert history == history_plain
    for own, plain in zip(weights, weights_plain, strict=True):
        np.testing.assert_array_equal(own, plain)


def test_ssdlite_first_fit_on_a_dataset_traces_once():
    """SSDLite's ``fit`` on a tf.data Dataset of ``(images, {"boxes", "labels"})`` batches reads
    the label structure from the dataset's spec and traces its train step once."""
    import tensorflow as tf

    model, x, y = tiny_task_model("ssdlite")
    calls = count_train_step_traces(model)
    history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(2), epochs=1,
                        verbose=0)
    assert len(calls) == 1
    assert np.isfinite(history.history["loss"]).all()
