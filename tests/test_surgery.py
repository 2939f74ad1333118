"""add_attention / replace_attention (keras_coordatt.surgery) on real keras.applications networks
and the package's builders, checked against the original models' outputs on real images.

The tests marked ``backends`` (small functional models) also run on JAX and PyTorch
(scripts/test.sh).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_coordatt import CBAM, CoordAttention, SqueezeExcite, add_attention, replace_attention

from helpers import randomize_batchnorm

SMALL = 64


def _run(model: keras.Model, images) -> np.ndarray:
    """Inference outputs, eagerly (no tracing: faster than predict for a few images)."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, model(images, training=False))


def _relative(actual, expected) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def _snapshot(model: keras.Model) -> tuple[list[str], list[np.ndarray]]:
    return [layer.name for layer in model.layers], [w.copy() for w in model.get_weights()]


def _assert_unchanged(model: keras.Model, snapshot) -> None:
    names, weights = snapshot
    assert [layer.name for layer in model.layers] == names
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def _real_images(size: int, count: int = 8) -> np.ndarray:
    """The bundled CIFAR-10 / ImageNet JPEGs resized to ``size`` (float32 0..255)."""
    from keras_coordatt.datasets import load_cifar10_subset

    images, _ = load_cifar10_subset("test")
    chosen = images[:: len(images) // count][:count].astype("float32")
    return keras.ops.convert_to_numpy(keras.ops.image.resize(chosen, (size, size)))


@pytest.fixture(scope="module")
def cifar_small() -> np.ndarray:
    return _real_images(SMALL)


def _tiny(channels: int = 8, seed: int = 0) -> keras.Model:
    """conv -> BN -> ReLU6 -> depthwise -> BN -> ReLU -> project conv -> Add -> pool -> dense."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SMALL, SMALL, 3))
    x = keras.layers.Conv2D(channels, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = shortcut = keras.layers.ReLU(6.0, name="stem_relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.ReLU(name="dw_relu")(x)
    x = keras.layers.Conv2D(channels, 1, name="project")(x)
    x = keras.layers.BatchNormalization(name="project_bn")(x)
    x = keras.layers.Add(name="add")([shortcut, x])
    x = keras.layers.Activation("swish", name="swish")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="tiny")
    randomize_batchnorm(model, seed)
    return model


# ---------------------------------------------------------------------------------------------
# Identity start, gradients, nesting: small models on every backend


@pytest.mark.parametrize("attention", [pytest.param("ca", marks=pytest.mark.backends), "se",
                                       "cbam"])
@pytest.mark.parametrize("where", [["stem_bn"], "after_depthwise_activation",
                                   "residual_branch_end"])
def test_identity_start_on_every_placement(attention, where, cifar_small):
    model = _tiny()
    snapshot = _snapshot(model)
    new = add_attention(model, where, attention, reduction=4)
    expected = _run(model, cifar_small / 127.5 - 1)
    assert _relative(_run(new, cifar_small / 127.5 - 1), expected) <= 1e-4
    _assert_unchanged(model, snapshot)
    layer_cls = {"ca": CoordAttention, "se": SqueezeExcite, "cbam": CBAM}[attention]
    added = [layer for layer in new.layers if isinstance(layer, layer_cls)]
    assert len(added) == 1
    assert not any(isinstance(lay, keras.layers.Rescaling) for lay in new.layers)
    # every original layer is there with its name and weights (one of them rescaled: the fold)
    assert {layer.name for layer in model.layers} < {layer.name for layer in new.layers}


@pytest.mark.backends
def test_every_new_weight_trains(cifar_small):
    """The gate convs get gradient at the first step, the layers before them from the second:
    after three optimizer steps on real images every new weight has moved."""
    model = _tiny()
    new = add_attention(model, ["stem_bn", "dw_relu"], "ca", reduction=4)
    added = [layer for layer in new.layers if isinstance(layer, CoordAttention)]
    start = {w.path: np.array(w.numpy()) for a in added
             for w in a.trainable_weights}
    new.compile(keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                run_eagerly=keras.backend.backend() == "tensorflow")  # fastest for 2 steps
    labels = np.arange(len(cifar_small)) % 10
    new.fit(cifar_small / 127.5 - 1, labels, batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert len(cifar_small) // 4 >= 2
    for a in added:
        for weight in a.trainable_weights:
            moved = np.abs(np.array(weight.numpy()) - start[weight.path]).max()
            assert moved > 0, weight.path


def test_gate_kernels_get_gradient_at_the_first_step(cifar_small):
    import tensorflow as tf

    new = add_attention(_tiny(), ["dw_relu"], "ca", reduction=4)
    layer = new.get_layer("dw_relu_ca")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(new(cifar_small / 127.5 - 1, training=True)))
    grads = dict(zip([w.path for w in layer.trainable_weights],
                     tape.gradient(loss, layer.trainable_weights), strict=True))
    for path, grad in grads.items():
        norm = float(tf.reduce_max(tf.abs(grad)))
        gate = "conv_h" in path or "conv_w" in path
        assert (norm > 0) == gate, path  # zero-gated: only the gates' own convs at step one


@pytest.mark.backends
def test_nested_functional_model(cifar_small):
    inner = _tiny()
    backbone = keras.Model(inner.input, inner.get_layer("add").output, name="backbone")
    inputs = keras.Input((SMALL, SMALL, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    outer = keras.Model(inputs, keras.layers.Dense(3)(x), name="outer")
    snapshot = _snapshot(outer)
    new = add_attention(outer, ["dw_relu"], "ca", reduction=4)
    nested = new.get_layer("backbone")
    assert nested is not backbone and isinstance(nested.get_layer("dw_relu_ca"), CoordAttention)
    images = cifar_small / 127.5 - 1
    assert _relative(_run(new, images), _run(outer, images)) <= 1e-4
    _assert_unchanged(outer, snapshot)


# ---------------------------------------------------------------------------------------------
# Bad input


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 1)

    def call(self, x):
        return self.conv(x)


def _unknown_channels() -> keras.Model:
    inputs = keras.Input((8, 8, None))
    return keras.Model(inputs, keras.layers.ReLU(name="relu")(inputs))


@pytest.mark.parametrize(
    "make, where, message",
    [
        (lambda: keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 1)]), ["x"],
         "keras.Sequential"),
        (lambda: _Subclassed(), ["x"], "subclassed"),
        (_tiny, ["dw_rellu"], "No layer named 'dw_rellu'.*Did you mean 'dw_relu'"),
        (_tiny, ["pool"], "the output of layer 'pool' is 2-D"),
        (_unknown_channels, ["relu"], "unknown channel count"),
        (_tiny, "after_everything", "No layer named 'after_everything'"),
        (_tiny, 42, "`where` must be"),
    ],
)
def test_bad_input_is_a_clear_error(make, where, message):
    with pytest.raises(ValueError, match=message):
        add_attention(make(), where)


def test_bad_arguments_and_no_old_attention():
    model = _tiny()
    with pytest.raises(ValueError, match="Unknown attention='eca'"):
        add_attention(model, ["dw_relu"], "eca")
    with pytest.raises(ValueError, match="`reduction` must be an integer"):
        add_attention(model, ["dw_relu"], reduction=0)
    with pytest.raises(ValueError, match="has no 'se' attention block"):
        replace_attention(model)
    with pytest.raises(ValueError, match="already taken"):
        add_attention(model, ["dw_relu"], name_fn=lambda name: "project")


def test_unfoldable_placement_warns_or_raises(cifar_small):
    """After the swish (read by the pool only through a non-linear path) nothing can absorb the
    constant gate: 'fold' raises naming the layer, 'auto' warns and adds an exact Rescaling."""
    model = _tiny()
    model = keras.Model(model.input, [model.get_layer("swish").output, model.output])
    with pytest.raises(ValueError, match="attention at 'swish' cannot fold"):
        add_attention(model, ["swish"], compensation="fold")
    with pytest.warns(UserWarning, match="attention at 'swish'.*Rescaling"):
        new = add_attention(model, ["swish"])
    images = cifar_small / 127.5 - 1
    for got, want in zip(_run(new, images), _run(model, images),
                         strict=True):
        assert _relative(got, want) <= 1e-4
    assert isinstance(new.get_layer("swish_ca_scale"), keras.layers.Rescaling)


# ---------------------------------------------------------------------------------------------
# The package's builders (point 4) and SE replacement


def test_mobilenet_v2_plus_ca_is_mobilenet_v2_ca(cifar_small):
    from keras_coordatt.applications import MobileNetV2, MobileNetV2CA, preprocess_input

    kwargs = {"input_shape": (32, 32, 3), "alpha": 0.35, "weights": None, "classes": 10}
    base, reference = MobileNetV2(**kwargs), MobileNetV2CA(**kwargs)
    sites = [f"block{i}_dw_relu" for i in range(2, 18)]  # mbv2_ca.py: none in block 1
    new = add_attention(base, sites, "ca", identity_init=False,
                        name_fn=lambda name: name.split("_")[0] + "_ca")

    def structure(model):
        return {layer.name: (type(layer).__name__, layer.output.shape,
                             sorted(n.operation.name for t in layer._inbound_nodes[0].input_tensors
                                    for n in [t._keras_history]))
                for layer in model.layers}

    assert structure(new) == structure(reference)
    assert new.count_params() == reference.count_params()
    for layer in reference.layers:
        new.get_layer(layer.name).set_weights(layer.get_weights())
    images = np.asarray(preprocess_input(cifar_small[:, ::2, ::2]))
    np.testing.assert_allclose(_run(new, images), _run(reference, images), rtol=0, atol=1e-6)
    # and its own SE model with the SE swapped for CA has MobileNetV2CA's structure too
    se = MobileNetV2(**kwargs, attention="se")
    with pytest.warns(UserWarning, match="16 'se' blocks"):
        swapped = replace_attention(se, "se", "ca", reduction=32)
    assert structure(swapped) == structure(reference)
