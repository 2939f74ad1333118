"""Attention surgery on real keras.applications networks: ResNet50 (224x224, weights loaded
from a saved file, real ImageNet images), MobileNetV3Small / Large and EfficientNetB0 (64x64,
weights=None, real CIFAR-10 images); .keras save / load with safe_mode, TFLite float32 and
int8 (post-training at 224, and QAT where tfmot takes the network)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from test_surgery import SMALL, _assert_unchanged, _real_images, _relative, _run, _snapshot

from keras_coordatt import CoordAttention, add_attention, replace_attention

from helpers import IMAGENET_DIR, calibrate_batchnorm

APPLICATIONS = {
    "MobileNetV3Small": keras.applications.MobileNetV3Small,
    "MobileNetV3Large": keras.applications.MobileNetV3Large,
    "EfficientNetB0": keras.applications.EfficientNetB0,
}


def _imagenet_images(size: int = 224) -> np.ndarray:
    """The bundled ImageNet validation JPEGs, resized, float32 0..255."""
    from PIL import Image

    files = sorted(IMAGENET_DIR.glob("*.jpg"))
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size)), "float32")
                     for f in files])


@pytest.fixture(scope="module")
def cifar_small() -> np.ndarray:
    return _real_images(SMALL)


@pytest.fixture(scope="module")
def networks(cifar_small) -> dict:
    """Each application at 64x64 with weights=None, BN statistics from real images, and its
    copy with CA after every depthwise activation."""
    result = {}
    for name, build in APPLICATIONS.items():
        keras.utils.set_random_seed(0)
        model = build(input_shape=(SMALL, SMALL, 3), weights=None, include_top=False,
                      pooling="avg", include_preprocessing=True) if "V3" in name else build(
            input_shape=(SMALL, SMALL, 3), weights=None, include_top=False, pooling="avg")
        calibrate_batchnorm(model, cifar_small)
        snapshot = _snapshot(model)
        result[name] = (model, add_attention(model, "after_depthwise_activation"), snapshot)
    return result


@pytest.mark.parametrize("name", list(APPLICATIONS))
def test_identity_start_on_keras_applications(networks, cifar_small, name):
    model, new, snapshot = networks[name]
    assert _relative(_run(new, cifar_small), _run(model, cifar_small)) <= 1e-4
    _assert_unchanged(model, snapshot)
    depthwise = [lay for lay in model.layers if isinstance(lay, keras.layers.DepthwiseConv2D)]
    added = [lay for lay in new.layers if isinstance(lay, CoordAttention)]
    assert len(added) == len(depthwise) and not any(
        isinstance(lay, keras.layers.Rescaling) and lay.name.endswith("_scale")
        for lay in new.layers
    )


def test_resnet50_from_a_saved_weights_file(tmp_path):
    """ResNet50 at 224 with weights loaded from a file, CA at the end of every residual branch:
    the new model computes what the original does on real ImageNet images."""
    images = keras.applications.resnet50.preprocess_input(_imagenet_images())
    keras.utils.set_random_seed(1)
    source = keras.applications.ResNet50(weights=None, classifier_activation=None)
    calibrate_batchnorm(source, images)
    path = str(tmp_path / "resnet50.weights.h5")
    source.save_weights(path)
    model = keras.applications.ResNet50(weights=path, classifier_activation=None)
    snapshot = _snapshot(model)
    new = add_attention(model, "residual_branch_end")
    assert len([lay for lay in new.layers if isinstance(lay, CoordAttention)]) == 16
    assert new.get_layer("conv2_block1_3_bn_ca").input.shape == (None, 56, 56, 256)
    assert _relative(_run(new, images), _run(model, images)) <= 1e-4
    _assert_unchanged(model, snapshot)


@pytest.mark.parametrize("name", ["MobileNetV3Small", "EfficientNetB0"])
def test_replace_se_with_ca(networks, cifar_small, name):
    """Oracle: the original with every SE gate forced to exactly 1 (second SE conv: kernel 0,
    bias 30 / 3 so sigmoid / hard sigmoid give 1.0) computes what the identity-started CA
    replacement computes."""
    model, _, _ = networks[name]
    with pytest.warns(UserWarning, match="'se' blocks .* were replaced by 'ca'"):
        new = replace_attention(model, "se", "ca")
    gated = keras.models.clone_model(model)
    gated.set_weights(model.get_weights())
    ends = ("se_expand", "squeeze_excite_conv_1")
    expands = [lay for lay in gated.layers if lay.name.endswith(ends)]
    for layer in expands:
        kernel, bias = layer.get_weights()
        layer.set_weights([np.zeros_like(kernel), np.full_like(bias, 30.0 if "se_" in layer.name
                                                               else 3.0)])
    added = [lay for lay in new.layers if isinstance(lay, CoordAttention)]
    assert len(added) == len(expands) > 0
    assert not any(isinstance(lay, keras.layers.Multiply) for lay in new.layers)
    assert added[0].name in ("expanded_conv_ca", "block1a_ca")
    assert _relative(_run(new, cifar_small), _run(gated, cifar_small)) <= 1e-4


def test_keras_file_roundtrip_with_safe_mode(networks, cifar_small, tmp_path):
    _, new, _ = networks["MobileNetV3Small"]
    path = tmp_path / "mnv3_ca.keras"
    new.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(_run(loaded, cifar_small), _run(new, cifar_small), rtol=0,
                               atol=1e-5)


@pytest.mark.tflite
def test_tflite_float32_and_int8_at_224(networks, cifar_small, tmp_path):
    """float32 (MobileNetV3Small + CA, 64x64) matches Keras; post-training int8 of
    MobileNetV3Small + CA at 224, calibrated on real images, is all int8 and agrees."""
    from keras_coordatt.export import LiteRTModel, export_tflite, float_ops, inspect_tflite

    _, small, _ = networks["MobileNetV3Small"]
    path = export_tflite(small, tmp_path / "mnv3_ca.tflite", isolate=False)
    assert _relative(LiteRTModel(path)(cifar_small), _run(small, cifar_small)) <= 1e-4
    images = _imagenet_images()
    keras.utils.set_random_seed(2)
    base = keras.applications.MobileNetV3Small(input_shape=(224, 224, 3), weights=None,
                                               include_top=False, pooling="avg")
    calibrate_batchnorm(base, images)
    model = add_attention(base, "after_depthwise_activation")
    path = export_tflite(model, tmp_path / "mnv3_ca_int8.tflite", "int8", images,
                         isolate=False)
    assert float_ops(inspect_tflite(path)) == []
    expected = _run(model, images)
    actual = LiteRTModel(path)(images)
    assert np.abs(actual - expected).mean() < 0.1 * (expected.max() - expected.min())


@pytest.mark.qat
@pytest.mark.tflite
def test_qat_where_tfmot_takes_the_network(networks, cifar_small, tmp_path):
    """The package's MobileNetV2 (its first six blocks) + CA added goes through QAT and int8
    export; MobileNetV3's Rescaling input layer is a clear error naming the layer."""
    from keras_coordatt.applications import MobileNetV2, preprocess_input
    from keras_coordatt.export import LiteRTModel, export_tflite, float_ops, inspect_tflite
    from keras_coordatt.quantization import quantize_model

    images = np.asarray(preprocess_input(cifar_small[:, ::2, ::2]))
    full = MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, include_top=False)
    base = keras.Model(full.input, full.get_layer("block6_add").output)
    calibrate_batchnorm(base, images)
    model = add_attention(base, [f"block{i}_dw_relu" for i in range(2, 7)])
    qat = quantize_model(model, calibration_data=images)
    expected = qat(images, training=False).numpy()
    path = export_tflite(qat, tmp_path / "mbv2_ca_qat.tflite", "int8", isolate=False)
    assert float_ops(inspect_tflite(path)) == []
    actual = LiteRTModel(path)(images)
    assert np.abs(actual - expected).mean() < 0.05 * (expected.max() - expected.min())
    _, mobilenet_v3, _ = networks["MobileNetV3Small"]
    with pytest.raises(ValueError, match="'rescaling.*Rescaling"):
        quantize_model(mobilenet_v3)


def test_keras_hub_backbone(cifar_small):
    """A keras-hub ResNetBackbone (a functional Backbone subclass) gets CA at the end of its
    residual branches and keeps computing what it computed."""
    import keras_hub

    keras.utils.set_random_seed(3)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3], stackwise_num_filters=[64, 32],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(SMALL, SMALL, 3),
    )
    calibrate_batchnorm(backbone, cifar_small / 127.5 - 1)
    new = add_attention(backbone, "residual_branch_end")
    added = [layer.name for layer in new.layers if isinstance(layer, CoordAttention)]
    assert added == ["stack0_block0_2_bn_ca", "stack1_block0_2_bn_ca"]
    images = cifar_small / 127.5 - 1
    assert _relative(_run(new, images), _run(backbone, images)) <= 1e-4
