"""applications/classification/cifar10_attention.py: the variants it compares, and one tiny
run of the whole script on the test images (train = test folder: it checks the plumbing)."""

from __future__ import annotations

import json

import pytest

from keras_coordatt.applications import count_params
from keras_coordatt.layers import CoordAttention

from helpers import CIFAR_DIR, ROOT, load_script

SCRIPT = ROOT / "applications" / "classification" / "cifar10_attention.py"
cifar10_attention = load_script(SCRIPT, "cifar10_attention")


def _build(variant):
    return cifar10_attention.build_variant(variant, alpha=0.35, output_stride=8, classes=10,
                                           size=32)


@pytest.fixture(scope="module")
def models():
    return {variant: _build(variant) for variant in ("ca", "ca-h", "ca-w")}


@pytest.mark.parametrize("variant, kept, dropped", [("ca-h", "conv_h", "conv_w"),
                                                    ("ca-w", "conv_w", "conv_h")])
def test_one_direction_variants(models, variant, kept, dropped):
    full, ablated = models["ca"], models[variant]
    layers = [layer for layer in ablated.layers if isinstance(layer, CoordAttention)]
    assert len(layers) == 16 and all(layer.directions == variant[-1] for layer in layers)
    assert all(getattr(layer, dropped) is None and getattr(layer, kept) is not None
               for layer in layers)
    # exactly the dropped 1x1 convs (mip -> C, with bias) fewer parameters than the full CA
    dropped_params = sum((layer.mip + 1) * layer.channels for layer in layers)
    assert count_params(full) - count_params(ablated) == dropped_params
    assert ablated.get_layer("head_relu").output.shape[1:3] == (4, 4)


def test_unknown_variant():
    with pytest.raises(ValueError, match="Unknown variant 'ca-x'"):
        _build("ca-x")


def test_tiny_run_writes_results(models, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train").symlink_to(CIFAR_DIR)
    (data / "test").symlink_to(CIFAR_DIR)
    out = tmp_path / "out"
    argv = ["--data-dir", str(data), "--output-dir", str(out), "--variants", "ca-w",
            "--seeds", "0", "--epochs", "0", "--alpha", "0.35", "--train-images", "32",
            "--test-images", "50"]
    monkeypatch.setattr("sys.argv", ["cifar10_attention.py", *argv])
    # no training (the demo's fit_classifier, tested there): the plumbing around it
    assert cifar10_attention.main(argv) == 0
    run = json.loads((out / "ca-w_seed0.json").read_text())
    assert run["test_images"] == 50 and run["train_images"] == 32
    assert 0.0 <= run["top1"] <= 1.0 and run["params"] == count_params(models["ca-w"])
    text = (out / cifar10_attention.RESULTS_FILE).read_text()
    assert "cifar10_attention.py --data-dir" in text and "| ca-w | 0 |" in text
    assert (out / "top1_vs_madds.png").stat().st_size > 0
    # --resume reuses the runs found instead of training: the table has both, in order
    (out / "none_seed0.json").write_text(json.dumps({**run, "variant": "none", "top1": 0.5}))
    assert cifar10_attention.main([*argv[:5], "none", *argv[5:], "--resume"]) == 0
    rows = [line for line in (out / cifar10_attention.RESULTS_FILE).read_text().splitlines()
            if line.startswith(("| none", "| ca-w"))]
    assert rows[0].startswith("| none | 0 | 50.00 |") and rows[1].startswith("| ca-w | 0 |")
