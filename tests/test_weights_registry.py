"""Registry of upstream checkpoints, the ``weights=`` argument checks, and local weight files."""

from __future__ import annotations

import hashlib
import re
import warnings

import numpy as np
import pytest

from keras_coordatt.weights import (
    PRESETS,
    Preset,
    check_weights_argument,
    find_imagenet_preset,
    get_preset,
    git_blob_id,
    list_presets,
    register_preset,
    unregister_preset,
)
from keras_coordatt.weights import registry as registry_module
from keras_coordatt.weights.loading import resolve_weights

HEX40 = re.compile(r"^[0-9a-f]{40}$")

# docs/reference_networks.md §c.1: d-li14 files (width, input size, git blob id, top-1, top-5).
DLI14_TABLE = {
    "mobilenetv2-c5e733a8.pth": (1.0, 224, "328582ba4afd90b6d910cda251d9d9e411b60c39", 72.834,
                                 91.060),
    "mobilenetv2_1.0-0c6065bc.pth": (1.0, 224, "0a66ce95c46d5047a0fc003c0c5a8205875e1b8b",
                                     72.192, 90.534),
    "mobilenetv2_0.75-dace9791.pth": (0.75, 224, "cdeec72e379dd97de9f2c6da9804bcb2b1acc83d",
                                      69.952, 88.986),
    "mobilenetv2_0.5-eaa6f9ad.pth": (0.5, 224, "ccd6f9174d801e775e3423dd82af6fbc4ee9456c",
                                     64.592, 85.392),
    "mobilenetv2_0.35-b2e15951.pth": (0.35, 224, "6e99454d05c8600f241f620557201ce9bd28a3a8",
                                      60.092, 82.172),
    "mobilenetv2_0.25-b61d2159.pth": (0.25, 224, "bf82bc72fc702f6dc491343b4991c1ff6d39b208",
                                      52.352, 75.932),
    "mobilenetv2_0.1-7d1d638a.pth": (0.1, 224, "2d4bcb67deece9b9c7a01adb040dd28e3f53eb9a",
                                     34.896, 56.564),
    "mobilenetv2_192x192-e423d99e.pth": (1.0, 192, "9a585f75d34131da02aa8cbb68bcc8962607b955",
                                         71.076, 89.760),
    "mobilenetv2_160x160-64dc7fa1.pth": (1.0, 160, "dadc7d20135ba9adf391c0273bd5d69c8f531c82",
                                         69.504, 88.848),
    "mobilenetv2_128x128-fd66a69d.pth": (1.0, 128, "3389515dd30d953a115e637d2d23f8881d7403af",
                                         66.740, 86.952),
    "mobilenetv2_96x96-ff0e83d8.pth": (1.0, 96, "908e3fb021b9a2dad578da9072ea1ae556638b07",
                                       62.696, 84.046),
}

MBV2 = {"family": "mobilenet_v2", "attention": None}
MBV2_CA = {"family": "mobilenet_v2", "attention": "ca"}
MNEXT = {"family": "mobilenext", "attention": None}
MNEXT_CA = {"family": "mobilenext", "attention": "ca"}


def _check(weights, *, alpha=1.0, include_top=True, classes=1000, input_shape=None, **model):
    model = model or MBV2
    check_weights_argument(
        weights, alpha=alpha, include_top=include_top, classes=classes, input_shape=input_shape,
        **model,
    )


@pytest.fixture
def restore_registry():
    before = dict(PRESETS)
    yield
    for name in list(PRESETS):
        if name not in before:
            unregister_preset(name)
    for name, preset in before.items():
        if PRESETS.get(name) is not preset:
            register_preset(preset, overwrite=True)


# ------------------------------------------------------------------------------------------
# the built-in table


def test_builtin_presets_cover_the_upstream_files():
    names = list_presets()
    assert len(names) == len(set(names)) == 13
    dli14 = {p.path.rsplit("/", 1)[-1]: p for p in PRESETS.values()
             if p.repo == "d-li14/mobilenetv2.pytorch"}
    assert set(dli14) == set(DLI14_TABLE)
    for file, (alpha, size, blob, top1, top5) in DLI14_TABLE.items():
        p = dli14[file]
        assert (p.family, p.attention, p.alpha, p.input_size) == ("mobilenet_v2", None, alpha, size)
        assert (p.git_blob, p.top1, p.top5) == (blob, top1, top5)
        assert p.license == "Apache-2.0"
        assert p.upstream_url == (
            "https://github.com/d-li14/mobilenetv2.pytorch/raw/"
            f"1733532bd43743442077326e1efc556d7cfd025d/pretrained/{file}"
        )

    ca = get_preset("mobilenetv2_ca_100_imagenet")
    assert (ca.family, ca.attention, ca.alpha, ca.reduction) == ("mobilenet_v2", "ca", 1.0, 32)
    assert ca.git_blob == "07b6640600b7d767acfaebcf5ddb801b675073df"
    assert ca.top1 == 74.3 and ca.license == "MIT"
    assert ca.upstream_url.endswith(
        "houqb/CoordAttention/raw/7619bea9acbe260b3793833cc78cef3f124c8112/mbv2_ca.pth"
    )
    mnext = get_preset("mobilenext_100_imagenet")
    assert (mnext.family, mnext.attention, mnext.alpha) == ("mobilenext", None, 1.0)
    assert mnext.git_blob == "e0a567e52c86ab4a66863745162c758f3fd27d84"
    assert mnext.path == "mobilenext/output/74_02_full_id_tensor/model_best.pth.tar"
    assert mnext.top1 == 74.02
    assert "unverified" in mnext.license
    for p in PRESETS.values():
        assert HEX40.match(p.git_blob) and HEX40.match(p.commit)
        assert p.license and p.license_source and p.description and p.builder
        assert p.cache_file_name.startswith(p.file_name.split(".")[0])
        assert p.git_blob[:12] in p.cache_file_name


def test_list_presets_filters():
    assert list_presets("mobilenext") == ["mobilenext_100_imagenet"]
    assert list_presets("mobilenet_v2", attention="ca") == ["mobilenetv2_ca_100_imagenet"]
    assert "mobilenetv2_ca_100_imagenet" not in list_presets("mobilenet_v2", attention=None)


@pytest.mark.parametrize(
    ("model", "alpha", "rows", "expected"),
    [
        (MBV2, 1.0, None, "mobilenetv2_100_imagenet"),
        (MBV2, 1.0, 224, "mobilenetv2_100_imagenet"),
        (MBV2, 1.0, 300, "mobilenetv2_100_imagenet"),
        (MBV2, 1.0, 96, "mobilenetv2_100_96_imagenet"),
        (MBV2, 1.0, 128, "mobilenetv2_100_128_imagenet"),
        (MBV2, 1, 160, "mobilenetv2_100_160_imagenet"),
        (MBV2, 1.0, 192, "mobilenetv2_100_192_imagenet"),
        (MBV2, 0.5, 192, "mobilenetv2_050_imagenet"),
        (MBV2, 0.1, None, "mobilenetv2_010_imagenet"),
        (MBV2_CA, 1.0, 160, "mobilenetv2_ca_100_imagenet"),
        (MNEXT, 1.0, None, "mobilenext_100_imagenet"),
    ],
)
def test_imagenet_resolution(model, alpha, rows, expected):
    assert find_imagenet_preset(model["family"], alpha, model["attention"], rows).name == expected
    shape = None if rows is None else (rows, rows, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert resolve_weights("imagenet", alpha=alpha, input_shape=shape, **model).name == expected


def test_imagenet_at_an_untrained_size_warns_and_uses_224():
    with pytest.warns(UserWarning, match="resolution"):
        preset = resolve_weights("imagenet", alpha=1.0, input_shape=(200, 200, 3), **MBV2)
    assert preset.input_size == 224
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # dynamic size: no warning
        resolve_weights("imagenet", alpha=1.0, input_shape=(None, None, 3), **MBV2)


# ------------------------------------------------------------------------------------------
# ValueErrors before building


def test_no_checkpoint_for_the_model_lists_what_exists():
    with pytest.raises(ValueError, match="No ImageNet weights for MobileNeXtCA") as info:
        _check("imagenet", **MNEXT_CA)
    message = str(info.value)
    assert "MobileNetV2CA alpha in {1.0}" in message and "MobileNeXt alpha in {1.0}" in message
    assert "0.35" in message
    with pytest.raises(ValueError, match="No ImageNet weights for MobileNetV2CA with alpha=0.5"):
        _check("imagenet", alpha=0.5, **MBV2_CA)
    with pytest.raises(ValueError, match="No ImageNet weights for MobileNetV2 with alpha=0.6"):
        _check("imagenet", alpha=0.6)
    with pytest.raises(ValueError, match="No ImageNet weights"):
        _check("imagenet", family="mobilenet_v2", attention="se")


def test_classes_must_match_with_include_top():
    with pytest.raises(ValueError, match="`classes` must be 1000, got 10"):
        _check("imagenet", classes=10)
    with pytest.raises(ValueError, match="`classes` must be 1000"):
        _check("mobilenetv2_050_imagenet", alpha=0.5, classes=5)
    _check("imagenet", classes=10, include_top=False)


def test_unknown_preset_suggests_close_names():
    with pytest.raises(ValueError, match="Did you mean 'imagenet'"):
        _check("imagenett")
    with pytest.raises(ValueError, match="Did you mean 'mobilenetv2_ca_100_imagenet'"):
        _check("mobilenetv2_ca_10_imagenet", **MBV2_CA)
    with pytest.raises(ValueError, match="Unknown `weights` value 'nothing_like_it'"):
        _check("nothing_like_it")


def test_preset_for_another_model_is_refused():
    with pytest.raises(ValueError, match="is for MobileNetV2CA alpha=1.0 .* but the model is "
                                         "MobileNetV2 with alpha=1.0"):
        _check("mobilenetv2_ca_100_imagenet")
    with pytest.raises(ValueError, match="alpha=0.5"):
        _check("mobilenetv2_100_imagenet", alpha=0.5)
    with pytest.raises(ValueError, match="reduction 32, got reduction=16"):
        check_weights_argument(
            "imagenet", alpha=1.0, include_top=True, classes=1000, input_shape=None,
            reduction=16, **MBV2_CA,
        )


def test_paths_and_types(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        _check(str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="does not exist"):
        _check("missing.weights.h5")
    with pytest.raises(ValueError, match="not a file"):
        _check(str(tmp_path))
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"x")
    with pytest.raises(ValueError, match="Unsupported weights file"):
        _check(str(odd))
    with pytest.raises(ValueError, match="Unsupported weights file"):
        _check(tmp_path / "weights.bin")  # os.PathLike
    with pytest.raises(ValueError, match="must be None, 'imagenet'"):
        _check(123)
    for name in ("w.pth", "w.pth.tar", "w.pt", "w.weights.h5"):
        (tmp_path / name).write_bytes(b"x")
        _check(str(tmp_path / name), classes=7)  # local files: no class check
    _check(None, classes=7)


def test_rgb_input_required_for_pretrained():
    with pytest.raises(ValueError, match="3 input channels"):
        _check("imagenet", input_shape=(224, 224, 1))


def test_builder_refuses_before_building():
    from keras_coordatt.applications import MobileNetV2CA, MobileNeXtCA

    with pytest.raises(ValueError, match="No ImageNet weights for MobileNetV2CA with alpha=0.75"):
        MobileNetV2CA(alpha=0.75, weights="imagenet")
    with pytest.raises(ValueError, match="No ImageNet weights for MobileNeXtCA"):
        MobileNeXtCA(weights="imagenet")
    with pytest.raises(ValueError, match="`classes` must be 1000"):
        MobileNetV2CA(weights="imagenet", classes=10)


# ------------------------------------------------------------------------------------------
# registering presets


def _preset(**overrides):
    fields = {
        "name": "test_extra", "family": "mobilenet_v2", "alpha": 0.5, "attention": "ca",
        "url": "http://127.0.0.1:9/x.pth", "git_blob": "0" * 40,
    }
    fields.update(overrides)
    return Preset(**fields)


def test_register_and_unregister(restore_registry):
    p = register_preset(_preset(imagenet_default=True))
    assert "test_extra" in list_presets() and get_preset("test_extra") is p
    assert find_imagenet_preset("mobilenet_v2", 0.5, "ca").name == "test_extra"
    _check("imagenet", alpha=0.5, **MBV2_CA)  # now has a default
    with pytest.raises(ValueError, match="already registered"):
        register_preset(_preset())
    register_preset(_preset(alpha=0.75), overwrite=True)
    assert get_preset("test_extra").alpha == 0.75
    unregister_preset("test_extra")
    assert "test_extra" not in PRESETS
    assert find_imagenet_preset("mobilenet_v2", 0.5, "ca") is None

    # a later imagenet default wins; unregistering a built-in override restores the original
    builtin = get_preset("mobilenetv2_050_imagenet")
    register_preset(_preset(name="mobilenetv2_050_imagenet", attention=None), overwrite=True)
    assert get_preset("mobilenetv2_050_imagenet").url == "http://127.0.0.1:9/x.pth"
    unregister_preset("mobilenetv2_050_imagenet")
    assert get_preset("mobilenetv2_050_imagenet") == builtin
    with pytest.raises(KeyError):
        unregister_preset("never_registered")
    with pytest.raises(TypeError):
        register_preset({"name": "dict"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"git_blob": None}, "no content pin"),
        ({"git_blob": "abc"}, "40 hex"),
        ({"sha256": "z" * 64}, "64 hex"),
        ({"url": None}, "give url, or repo"),
        ({"family": "resnet"}, "family"),
        ({"attention": "eca"}, "attention"),
        ({"name": "bad name"}, "Preset name"),
        ({"url": None, "repo": "a/b", "commit": "main", "path": "x.pth"}, "40-hex commit"),
    ],
)
def test_preset_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        _preset(**overrides)


def test_urls_and_mirror_layout():
    p = get_preset("mobilenetv2_ca_100_imagenet")
    assert p.url_for("http://mirror.example/w/") == (
        "http://mirror.example/w/houqb/CoordAttention/"
        "7619bea9acbe260b3793833cc78cef3f124c8112/mbv2_ca.pth"
    )
    assert p.url_for(None) == p.upstream_url
    q = _preset(url="https://example.org/files/my.pth.tar?download=1")
    assert q.file_name == "my.pth.tar" and q.cache_file_name == "my-000000000000.pth.tar"
    assert q.url_for("http://m") == "http://m/my.pth.tar"
    assert q.builder == "MobileNetV2CA" and q.pin == "0" * 40


# ------------------------------------------------------------------------------------------
# content pins


def test_git_blob_id_matches_git(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert git_blob_id(empty) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    hello = tmp_path / "hello"
    hello.write_bytes(b"hello\n")
    assert git_blob_id(hello) == "ce013625030ba8dba906f756967f9e9ca394464a"
    big = tmp_path / "big"
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # spans several read chunks
    big.write_bytes(data)
    expected = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert git_blob_id(big) == expected


def test_registry_module_exports():
    for name in registry_module.__all__:
        assert hasattr(registry_module, name)
    with pytest.raises(TypeError):
        PRESETS["x"] = None  # read-only view


# ------------------------------------------------------------------------------------------
# local files through the builders


def test_local_pth_and_weights_h5(data_dir, tmp_path):
    from keras_coordatt.applications import MobileNetV2

    images = np.load(data_dir / "fixtures" / "input_img_2x224x224x3_nhwc.npy")
    expected = np.load(data_dir / "fixtures" / "dli14_mobilenetv2_w0.35_logits.npy")
    checkpoint = data_dir / "checkpoints" / "dli14_mobilenetv2_w0.35_legacy.pth"
    model = MobileNetV2(alpha=0.35, weights=str(checkpoint), classifier_activation=None)
    np.testing.assert_allclose(model.predict_on_batch(images), expected, atol=1e-4)

    saved = tmp_path / "dli14_035.weights.h5"
    model.save_weights(saved)
    again = MobileNetV2(alpha=0.35, weights=saved, classifier_activation=None)
    np.testing.assert_allclose(again.predict_on_batch(images), expected, atol=1e-4)
