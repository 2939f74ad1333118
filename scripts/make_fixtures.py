"""Regenerates the parity fixtures in ``tests/data/fixtures`` with the PyTorch reference networks.

The reference networks are ``benchmarks/torch_reference.py`` (written from
``docs/reference_networks.md``, module and key layout of the upstream code). The script takes as
given what was drawn at random once and is committed: the checkpoints in ``tests/data/checkpoints``
(deterministic random weights, see ``tests/data/README.md``) and the two inputs
``input_img_2x224x224x3_nhwc.npy`` and ``coordatt_c64_r32_input_nchw.npy``. From them it
recomputes every other fixture file:

* ``coordatt_c64_r32_input_nhwc.npy``: the NCHW input transposed;
* ``coordatt_c64_r32_output_{nchw,nhwc}.npy``: ``CoordAtt(64, 64, reduction=32)`` in eval mode;
* ``<model>_logits.npy`` (2, 1000) and ``<model>_pooled.npy`` (2, 1280, the classifier's input)
  for MBV2_CA 0.5, d-li14 MobileNetV2 0.35 and MobileNeXt (i2rnetv3) 0.5, eval mode, float32;
* ``coordatt_c64_r32_keys.txt`` and the width-1.0 key lists (key, shape, dtype, tab-separated).

Needs PyTorch (the ``bench`` extra). Usage::

    python scripts/make_fixtures.py --out /tmp/fixtures        # then compare, or
    python scripts/make_fixtures.py --out tests/data/fixtures  # overwrite in place

Outputs match the committed files bit for bit with two intra-op threads (the default here,
as when they were made); another thread count moves the logits by up to about 2e-5.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")  # the safe reader's package imports keras

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

import torch_reference as ref  # noqa: E402

#: fixture name -> (reference network, width, checkpoint in tests/data/checkpoints)
MODELS = {
    "mbv2_ca_w0.5": ("MobileNetV2CA", 0.5, "mbv2_ca_w0.5.pth"),
    "dli14_mobilenetv2_w0.35": ("MobileNetV2", 0.35, "dli14_mobilenetv2_w0.35_legacy.pth"),
    "yitu_mobilenext_i2rnetv3_w0.5": (
        "MobileNeXt", 0.5, "yitu_mobilenext_i2rnetv3_w0.5_timm_legacy.pth.tar"
    ),
}
#: width-1.0 key list -> reference network
KEY_LISTS = {
    "mbv2_ca_w1.0_keys.txt": "MobileNetV2CA",
    "dli14_mobilenetv2_w1.0_keys.txt": "MobileNetV2",
    "yitu_mobilenext_i2rnetv3_w1.0_keys_only.txt": "MobileNeXt",
}
IMAGE_INPUT = "input_img_2x224x224x3_nhwc.npy"
COORDATT_INPUT = "coordatt_c64_r32_input_nchw.npy"


def keys_text(state_dict: dict[str, torch.Tensor]) -> str:
    """One line per entry, in order: key, shape, dtype (tab-separated)."""
    lines = [
        f"{key}\t{tuple(value.shape)}\t{str(value.dtype).removeprefix('torch.')}"
        for key, value in state_dict.items()
    ]
    return "\n".join(lines) + "\n"


def upstream_hard_swish(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """hard-swish in the upstream rounding order, ``x * (relu6(x + 3) / 6)`` (h_swish calls
    h_sigmoid); ``torch_reference.HSwish`` divides last, which moves MBV2_CA's logits by ~1e-5."""
    return x * (torch.nn.functional.relu6(x + 3.0) / 6.0)


ref.HSwish.forward = upstream_hard_swish  # this process only: bit-exact fixtures


def load_checkpoint(name: str) -> dict[str, torch.Tensor]:
    """A checkpoint in tests/data/checkpoints as torch tensors (legacy ones via the safe reader)."""
    return ref.load_state_dict_file(DATA / "checkpoints" / name)


#: ``coordatt.py`` names the gate convs ``conv_h`` / ``conv_w``, ``mbv2_ca.py`` (whose names
#: ``torch_reference.CoordAtt`` keeps) ``conv2`` / ``conv3``; the computation is the same.
COORDATT_FILE_NAMES = {"conv_h.": "conv2.", "conv_w.": "conv3."}


def coordatt_fixtures(source: Path, out: Path) -> None:
    nchw = np.load(source / COORDATT_INPUT)
    state_dict = load_checkpoint("coordatt_c64_r32.pth")
    renamed = {}
    for key, value in state_dict.items():
        prefix = next((p for p in COORDATT_FILE_NAMES if key.startswith(p)), None)
        renamed[COORDATT_FILE_NAMES[prefix] + key[len(prefix):] if prefix else key] = value
    module = ref.CoordAtt(64, 64, groups=32)  # mip = max(8, 64 // 32) = 8
    module.load_state_dict(renamed, strict=True)
    module.eval()
    with torch.inference_mode():
        output = module(torch.from_numpy(nchw)).numpy()
    np.save(out / COORDATT_INPUT, nchw)
    np.save(
        out / "coordatt_c64_r32_input_nhwc.npy", np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
    )
    np.save(out / "coordatt_c64_r32_output_nchw.npy", output)
    np.save(
        out / "coordatt_c64_r32_output_nhwc.npy",
        np.ascontiguousarray(output.transpose(0, 2, 3, 1)),
    )
    (out / "coordatt_c64_r32_keys.txt").write_text(keys_text(state_dict))  # coordatt.py names


def logits_and_pooled(model: torch.nn.Module, images: torch.Tensor) -> tuple[np.ndarray, ...]:
    """Eval-mode logits and the classifier's input (the pooled features)."""
    pooled: list[np.ndarray] = []
    hook = model.classifier.register_forward_pre_hook(
        lambda _module, args: pooled.append(args[0].numpy().copy())
    )
    with torch.inference_mode():
        logits = model(images).numpy()
    hook.remove()
    return logits, pooled[0]


def model_fixtures(source: Path, out: Path) -> None:
    nhwc = np.load(source / IMAGE_INPUT)
    np.save(out / IMAGE_INPUT, nhwc)
    images = torch.from_numpy(np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)))
    for fixture, (network, width, checkpoint) in MODELS.items():
        model = ref.build(network, width)
        model.load_state_dict(load_checkpoint(checkpoint), strict=True)
        logits, pooled = logits_and_pooled(model, images)
        np.save(out / f"{fixture}_logits.npy", logits)
        np.save(out / f"{fixture}_pooled.npy", pooled)
    for file_name, network in KEY_LISTS.items():
        (out / file_name).write_text(keys_text(ref.build(network, 1.0).state_dict()))


def make_fixtures(out: Path, source: Path = DATA / "fixtures") -> list[Path]:
    """Writes every fixture into ``out`` (created); returns the written files, sorted."""
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != source.resolve():  # the two committed random inputs
        for name in (IMAGE_INPUT, COORDATT_INPUT):
            shutil.copyfile(source / name, out / name)
    coordatt_fixtures(source, out)
    model_fixtures(source, out)
    return sorted(out.iterdir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the fixtures to")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for path in make_fixtures(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
