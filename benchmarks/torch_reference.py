"""PyTorch reference networks for the benchmarks: MBV2_CA, d-li14 MobileNetV2, MobileNeXt.

Written from ``docs/reference_networks.md`` (the facts read from the upstream code), not copied from
the upstream repositories. The module and state_dict layouts are the upstream ones, so the
checkpoints / fixtures of the original code load with ``load_state_dict(strict=True)``:

* :class:`MBV2_CA` - ``houqb/CoordAttention`` ``mbv2_ca.py`` (CA in the 16 t = 6 blocks);
* :class:`MobileNetV2` - ``d-li14/mobilenetv2.pytorch`` (the CA paper's baseline);
* :class:`I2RNet` - ``yitu-opensource/MobileNeXt`` ``i2rnetv3`` (the paper's MobileNeXt);
  ``I2RNet(attention=True)`` adds CA where ``keras_coordatt.applications.MobileNeXtCA`` puts it
  (no upstream code exists for MobileNeXt + CA, so that variant has no fixture).

:func:`verify_against_fixtures` proves the three upstream networks against the fixture logits
(eval mode, float32, max abs difference <= 1e-4). torch is a benchmark-only dependency.

Run ``python benchmarks/torch_reference.py`` to print the proof.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
#: Fallback folder for fixtures missing from ``tests/data`` (env ``KERAS_COORDATT_FIXTURES``).
SHARED_FIXTURES = Path(os.environ.get("KERAS_COORDATT_FIXTURES", REPO.parent / "shared/fixtures"))
TOLERANCE = 1e-4


def make_divisible(value: float, divisor: int, min_value: int | None = None) -> int:
    """Nearest multiple of ``divisor`` (not below it, nor below 90 % of ``value``)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def width_divisor(width_mult: float) -> int:
    """4 for ``width_mult == 0.1`` exactly (float equality, as upstream), else 8."""
    return 4 if width_mult == 0.1 else 8


class HSwish(nn.Module):
    """hard-swish: ``x * relu6(x + 3) / 6``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * nn.functional.relu6(x + 3.0) / 6.0


class CoordAtt(nn.Module):
    """Coordinate Attention as ``mbv2_ca.py`` computes it (submodule names of that file).

    Pool along W and along H, concatenate (H part first) along the height axis, shared
    conv1 -> bn1 -> hard-swish, split, two gate convs with the logistic sigmoid, ``x * a_w * a_h``.
    ``mip = max(8, C // groups)``; ``groups`` is the reduction ratio (32), not conv groups.
    """

    def __init__(self, inp: int, oup: int, groups: int = 32) -> None:
        super().__init__()
        if inp != oup:
            raise ValueError(f"CoordAtt needs inp == oup, got {inp} and {oup}")
        self.pool_h = nn.AdaptiveAvgPool2d((None, 1))
        self.pool_w = nn.AdaptiveAvgPool2d((1, None))
        mip = max(8, inp // groups)
        self.conv1 = nn.Conv2d(inp, mip, kernel_size=1, stride=1, padding=0)
        self.bn1 = nn.BatchNorm2d(mip)
        self.relu = HSwish()
        self.conv2 = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)
        self.conv3 = nn.Conv2d(mip, oup, kernel_size=1, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        _, _, h, w = x.size()
        x_h = self.pool_h(x)  # (N, C, H, 1)
        x_w = self.pool_w(x).permute(0, 1, 3, 2)  # (N, C, W, 1)
        y = torch.cat([x_h, x_w], dim=2)
        y = self.relu(self.bn1(self.conv1(y)))
        x_h, x_w = torch.split(y, [h, w], dim=2)
        x_w = x_w.permute(0, 1, 3, 2)
        a_h = self.conv2(x_h).sigmoid()
        a_w = self.conv3(x_w).sigmoid()
        return identity * a_w * a_h


def conv_3x3_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
    """3x3 conv (pad 1, no bias) -> BN -> ReLU6."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU6(inplace=True)
    )


def conv_1x1_bn(inp: int, oup: int) -> nn.Sequential:
    """1x1 conv (no bias) -> BN -> ReLU6."""
    return nn.Sequential(
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.ReLU6(inplace=True)
    )


def _dw(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)


def _pw(inp: int, oup: int) -> nn.Conv2d:
    return nn.Conv2d(inp, oup, 1, 1, 0, bias=False)


class InvertedResidual(nn.Module):
    """MobileNetV2 block; with ``attention`` the t != 1 block gets CA after the dw ReLU6."""

    def __init__(
        self, inp: int, oup: int, stride: int, expand_ratio: float, attention: bool
    ) -> None:
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.identity = stride == 1 and inp == oup
        if expand_ratio == 1:
            layers: list[nn.Module] = [
                _dw(hidden, stride), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                _pw(hidden, oup), nn.BatchNorm2d(oup),
            ]
        else:
            layers = [
                _pw(inp, hidden), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                _dw(hidden, stride), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            ]
            if attention:
                layers.append(CoordAtt(hidden, hidden, 32))
            layers += [_pw(hidden, oup), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.identity else self.conv(x)


MBV2_CFG = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _init_weights(model: nn.Module) -> None:
    """The upstream init: fan-out He normal convs, zero biases, BN (1, 0), Linear N(0, 0.01)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.data.normal_(0, math.sqrt(2.0 / n))
            if m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            m.weight.data.normal_(0, 0.01)
            m.bias.data.zero_()


class _MobileNetV2Base(nn.Module):
    def __init__(self, num_classes: int, width_mult: float, attention: bool) -> None:
        super().__init__()
        divisor = width_divisor(width_mult)
        channels = make_divisible(32 * width_mult, divisor)
        layers: list[nn.Module] = [conv_3x3_bn(3, channels, 2)]
        for t, c, n, s in MBV2_CFG:
            out = make_divisible(c * width_mult, divisor)
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, t, attention))
                channels = out
        self.features = nn.Sequential(*layers)
        head = make_divisible(1280 * width_mult, divisor) if width_mult > 1.0 else 1280
        self.conv = conv_1x1_bn(channels, head)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.head_channels = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.features(x))
        x = self.avgpool(x).flatten(1)
        return self.classifier(x)


class MBV2_CA(_MobileNetV2Base):  # noqa: N801 - the upstream class name
    """``mbv2_ca.py``: MobileNetV2 with CA; classifier Dropout(0.1) + Linear."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__(num_classes, width_mult, attention=True)
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(self.head_channels, num_classes))
        _init_weights(self)


class MobileNetV2(_MobileNetV2Base):
    """d-li14 ``mobilenetv2.py``: no attention; classifier a bare Linear."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__(num_classes, width_mult, attention=False)
        self.classifier = nn.Linear(self.head_channels, num_classes)
        _init_weights(self)


# ------------------------------------------------------------------------------------------
# MobileNeXt (official i2rnetv3)
# ------------------------------------------------------------------------------------------

I2RNET_CFG = (
    (2, 96, 1, 2),
    (6, 144, 1, 1),
    (6, 192, 3, 2),
    (6, 288, 3, 2),
    (6, 384, 4, 1),
    (6, 576, 4, 2),
    (6, 960, 3, 1),
    (6, 1280, 1, 1),
)


class I2RBlock(nn.Module):
    """Sandglass block, cases A-D of ``docs/reference_networks.md`` §d.3.

    With ``attention``, CA goes after the first dw's ReLU6 (A, D) or after the expanding 1x1
    conv's ReLU6 (B, C), as ``keras_coordatt.applications.MobileNeXtCA``.
    """

    def __init__(
        self, inp: int, oup: int, stride: int, t: int, keep_3x3: bool, attention: bool = False
    ) -> None:
        super().__init__()
        hidden = inp // t
        if hidden < oup / 6.0:
            hidden = make_divisible(math.ceil(oup / 6.0), 16)
        self.identity = False
        ca = [CoordAtt(inp, inp, 32)] if attention else []
        ca_out = [CoordAtt(oup, oup, 32)] if attention else []
        reduce_expand: list[nn.Module] = [
            _pw(inp, hidden), nn.BatchNorm2d(hidden),
            _pw(hidden, oup), nn.BatchNorm2d(oup), nn.ReLU6(inplace=True),
        ]
        if t == 2:  # case A
            layers = [
                _dw(inp, 1), nn.BatchNorm2d(inp), nn.ReLU6(inplace=True), *ca, *reduce_expand,
                _dw(oup, stride), nn.BatchNorm2d(oup),
            ]
        elif inp != oup and stride == 1 and not keep_3x3:  # case B
            layers = [*reduce_expand, *ca_out]
        elif inp != oup and stride == 2 and not keep_3x3:  # case C
            layers = [*reduce_expand, *ca_out, _dw(oup, 2), nn.BatchNorm2d(oup)]
        else:  # case D: last dw stride hard-coded to 1
            self.identity = not keep_3x3
            layers = [
                _dw(inp, 1), nn.BatchNorm2d(inp), nn.ReLU6(inplace=True), *ca, *reduce_expand,
                _dw(oup, 1), nn.BatchNorm2d(oup),
            ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        # identity_div = 1 upstream: the in-place add on the first C channels is a full add.
        return out + x if self.identity else out


class I2RNet(nn.Module):
    """Official MobileNeXt ``i2rnetv3``: no head conv; Dropout(0.2) + Linear classifier."""

    def __init__(
        self, num_classes: int = 1000, width_mult: float = 1.0, attention: bool = False
    ) -> None:
        super().__init__()
        divisor = width_divisor(width_mult)
        channels = make_divisible(32 * width_mult, divisor)
        layers: list[nn.Module] = [conv_3x3_bn(3, channels, 2)]
        for t, c, n, s in I2RNET_CFG:
            out = make_divisible(c * width_mult, divisor)
            if c == 1280 and width_mult < 1:
                out = 1280
            for i in range(n):
                keep_3x3 = i == 0 and n == 1 and s == 1
                layers.append(
                    I2RBlock(channels, out, s if i == 0 else 1, t, keep_3x3, attention)
                )
                channels = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(
            nn.Dropout(0.2), nn.Linear(make_divisible(channels, 4), num_classes)
        )
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x)).flatten(1)
        return self.classifier(x)


#: Benchmark names -> constructors (``width_mult`` keyword).
MODELS: dict[str, Callable[..., nn.Module]] = {
    "MobileNetV2CA": MBV2_CA,
    "MobileNetV2": MobileNetV2,
    "MobileNeXt": I2RNet,
    "MobileNeXtCA": lambda **kw: I2RNet(attention=True, **kw),
}


def calibrate_batchnorm(model: nn.Module, images: torch.Tensor | np.ndarray) -> nn.Module:
    """Sets every BN's running statistics to those of ``images`` (NCHW), like a trained net.

    With the upstream init (BN gamma 1, beta 0, running stats 0 / 1) activations shrink block
    after block into float32 denormals (logits ~1e-12 for MBV2_CA), which slows eager x86
    kernels several-fold and would make a latency benchmark meaningless. One train-mode
    forward with cumulative-average BN momentum gives every BN the statistics of its input.
    """
    images = torch.as_tensor(np.asarray(images, dtype=np.float32))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return model


def build(
    name: str,
    width_mult: float = 1.0,
    num_classes: int = 1000,
    calibration: np.ndarray | None = None,
) -> nn.Module:
    """A reference network by benchmark name, in eval mode; with ``calibration`` (NCHW
    images) its BN statistics are set from them (:func:`calibrate_batchnorm`)."""
    model = MODELS[name](num_classes=num_classes, width_mult=width_mult)
    if calibration is not None:
        calibrate_batchnorm(model, calibration)
    return model.eval()


# ------------------------------------------------------------------------------------------
# Proof against the fixtures
# ------------------------------------------------------------------------------------------

#: (name, constructor kwargs, checkpoint candidates, logits file)
FIXTURES = (
    (
        "mbv2_ca_w0.5", "MobileNetV2CA", 0.5,
        ("tests/data/checkpoints/mbv2_ca_w0.5.pth", "mbv2_ca_w0.5.pth"),
        "mbv2_ca_w0.5_logits.npy",
    ),
    (
        "dli14_mobilenetv2_w0.35", "MobileNetV2", 0.35,
        (
            "tests/data/checkpoints/dli14_mobilenetv2_w0.35_legacy.pth",
            "dli14_mobilenetv2_w0.35.pth",
        ),
        "dli14_mobilenetv2_w0.35_logits.npy",
    ),
    (
        "yitu_mobilenext_i2rnetv3_w0.5", "MobileNeXt", 0.5,
        (
            "tests/data/checkpoints/yitu_mobilenext_i2rnetv3_w0.5_timm_legacy.pth.tar",
            "yitu_mobilenext_i2rnetv3_w0.5.pth",
        ),
        "yitu_mobilenext_i2rnetv3_w0.5_logits.npy",
    ),
)


def _find(candidates: tuple[str, ...]) -> Path:
    for candidate in candidates:
        for base in (REPO, SHARED_FIXTURES):
            path = base / candidate
            if path.is_file():
                return path
    raise FileNotFoundError(f"none of {candidates} under {REPO} or {SHARED_FIXTURES}")


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A zip state_dict through ``torch.load(weights_only=True)``; a legacy or training
    checkpoint through the package's safe reader (``module.`` prefix stripped)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # legacy format / argparse.Namespace inside: use the safe reader
        from keras_coordatt.weights.torch_checkpoint import load_torch_checkpoint

        arrays = load_torch_checkpoint(path)
        return {key: torch.from_numpy(np.array(value)) for key, value in arrays.items()}


def fixture_input() -> torch.Tensor:
    """The shared fixture input (2, 3, 224, 224), from the NHWC copy in tests/data."""
    nhwc = np.load(_find(("tests/data/fixtures/input_img_2x224x224x3_nhwc.npy",
                          "input_img_2x224x224x3_nhwc.npy")))
    return torch.from_numpy(np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)))


def verify_against_fixtures(tolerance: float = TOLERANCE) -> list[dict]:
    """Loads each fixture checkpoint into its reference network and compares the logits.

    Returns one dict per fixture (``fixture``, ``model``, ``checkpoint``, ``max_abs_diff``,
    ``ok``); raises ``AssertionError`` if any difference exceeds ``tolerance``.
    """
    images = fixture_input()
    rows = []
    for fixture, name, width, checkpoints, logits_file in FIXTURES:
        checkpoint = _find(checkpoints)
        expected = np.load(_find((f"tests/data/fixtures/{logits_file}", logits_file)))
        model = build(name, width)
        model.load_state_dict(load_state_dict_file(checkpoint), strict=True)
        with torch.inference_mode():
            got = model(images).numpy()
        diff = float(np.max(np.abs(got - expected)))
        rows.append(
            {
                "fixture": fixture,
                "model": name,
                "checkpoint": os.path.relpath(checkpoint, REPO),
                "max_abs_diff": diff,
                "ok": diff <= tolerance,
            }
        )
    bad = [row for row in rows if not row["ok"]]
    if bad:
        raise AssertionError(f"PyTorch reference differs from the fixtures: {bad}")
    return rows


def proof_markdown(rows: list[dict]) -> str:
    """The proof as a Markdown table."""
    lines = [
        "| fixture | reference | checkpoint | max abs diff vs fixture logits |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['fixture']} | {r['model']} | `{r['checkpoint']}` | {r['max_abs_diff']:.2e} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(proof_markdown(verify_against_fixtures()))
    for name in MODELS:
        params = sum(p.numel() for p in build(name).parameters())
        print(f"{name} width 1.0: {params:,} params")
    return 0


if __name__ == "__main__":
    sys.exit(main())
