"""applications/classification: train.py as real processes on a tiny image folder (MobileNetV2
alpha 0.35 at 32x32, a few steps: the plumbing, not the accuracy).

* fault tolerance: a run killed with SIGKILL in the middle of its training and started again with
  the same command ends with the same bits as an uninterrupted run (op determinism on);
* two MultiWorkerMirroredStrategy workers on 127.0.0.1 end with identical weights and only the
  chief writes files;
* evaluate.py's top-1 / top-5 against NumPy on the same images.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import infer

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "applications" / "classification"
CLASSES = ("red", "green", "blue")
TINY = ["--model", "MobileNetV2", "--alpha", "0.35", "--image-size", "32", "--resize-size", "36",
        "--batch-size", "4", "--warmup-epochs", "1", "--verbose", "2"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """train/ (4 per class: 3 steps of 4 per epoch) and val/ (3 per class, 36x36: the eval
    resize is the identity) of noise images whose class is the dominant colour channel."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("val", 3)):
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                shape = (36, 36, 3) if split == "val" else (36 + 4 * (i % 3), 44, 3)
                image = rng.integers(0, 120, shape).astype("uint8")
                image[..., label] += 120
                Image.fromarray(image).save(root / split / name / f"{i}.png")
    return root


def command(script: str, *args: str) -> list[str]:
    return [sys.executable, str(RECIPE / script), *args]


def environment(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "TF_CONFIG")}
    env.update(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **extra)
    return env


def start(script: str, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(command(script, *args), env=environment(**env), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def fingerprint(output: str) -> str:
    return re.search(r"weights sha256 ([0-9a-f]{64})", output).group(1)


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_help(script):
    result = subprocess.run(command(script, "--help"), env=environment(), capture_output=True,
                            text=True, timeout=120)
    text = " ".join(result.stdout.split())
    assert result.returncode == 0 and text.startswith("usage:"), result.stderr
    assert "MobileNetV2,MobileNetV2CA,MobileNeXt,MobileNeXtCA" in text
    if script == "train.py":  # the paper's setting as defaults
        for default in ("the paper: 200 (default: 200)", "global batch, all replicas "
                        "(default: 256)", "SGD momentum (default: 0.9)",
                        "(PyTorch SGD's weight_decay) (default: 4e-05)",
                        "none,mirrored,multiworker,tpu,data_parallel", "--sync-batchnorm",
                        "--ema", "--mixed-precision", "default 0.05 * batch-size / 256"):
            assert default in text, default


def test_sigkill_then_same_command_resumes_to_the_same_weights(folders, tmp_path):
    data = ["--train-dir", str(folders / "train"), "--epochs", "3", "--deterministic", *TINY]
    reference = start("train.py", *data, "--output-dir", str(tmp_path / "reference"))
    out = tmp_path / "killed"
    args = [*data, "--output-dir", str(out)]
    victim = start("train.py", *args)
    manifest = out / "backup" / "manifest.json"
    deadline = time.time() + 600
    while not manifest.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)  # epoch 1 is backed up: now in the middle of epoch 2
    output, _ = victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL, output[-3000:]
    done = json.loads(manifest.read_text())["epoch"]
    assert 1 <= done < 3
    assert not (out / "model.keras").exists()

    resumed = finish(start("train.py", *args))
    assert f"Resuming from the backup after epoch {done}." in resumed
    with open(out / "train_log.csv") as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    assert epochs == [0, 1, 2]  # the killed epoch was run once, after the restart
    assert not (out / "backup").exists()  # removed when the run completed
    assert fingerprint(resumed) == fingerprint(finish(reference))


def test_evaluate_top1_top5_against_numpy(folders, tmp_path, capsys):
    import keras

    from keras_coordatt.applications import preprocess_input
    from keras_coordatt.training import save_model

    # A classifier with clear margins (a random MobileNetV2's logits are near-ties that another
    # CPU's kernels order differently): logit j = 20 x mean of channel j (R, G, B), while the
    # folder labels are blue 0, green 1, red 2: green images are right, red and blue swapped.
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    head = keras.layers.Dense(3, name="logits")
    model = keras.Model(inputs, head(pooled), name="channel_means")
    head.set_weights([20.0 * np.eye(3, dtype="float32"),
                      np.zeros(3, "float32")])
    save_model(model, tmp_path / "model.keras")
    images, labels = [], []
    for label, name in enumerate(sorted(CLASSES)):  # folder labels: class names sorted
        for path in sorted((folders / "val" / name).iterdir()):
            images.append(np.asarray(keras.utils.load_img(path))[2:34, 2:34])  # centre 32
            labels.append(label)
    logits = infer(model, preprocess_input(np.stack(images)))
    top1 = np.mean(np.argmax(logits, -1) == labels)
    assert top1 == pytest.approx(1 / 3)  # the oracle itself: one class of three is right
    top5 = 1.0  # 3 classes

    sys.path.insert(0, str(RECIPE))
    try:
        sys.modules.pop("train", None)
        evaluate = importlib.import_module("evaluate")
        evaluate.main(["--checkpoint", str(tmp_path / "model.keras"), "--val-dir",
                       str(folders / "val"), "--resize-size", "36", "--verbose", "0",
                       "--json", str(tmp_path / "scores.json")])
    finally:
        sys.path.remove(str(RECIPE))
        for name in ("train", "evaluate"):
            sys.modules.pop(name, None)
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["images"] == 9 and scores["input_size"] == 32
    assert scores["top1"] == pytest.approx(top1) and scores["top5"] == pytest.approx(top5)
    assert f"top-1 {100 * top1:.2f} %" in capsys.readouterr().out


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_end_identical_and_only_the_chief_writes(folders, tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = [
        start("train.py", "--train-dir", str(folders / "train"), "--epochs", "1",
              "--steps-per-epoch", "2", "--distribute", "multiworker", *TINY,
              "--warmup-epochs", "0",
              "--output-dir", str(tmp_path / f"worker{index}"),
              TF_CONFIG=json.dumps({"cluster": cluster,
                                    "task": {"type": "worker", "index": index}}))
        for index in range(2)
    ]
    outputs = [finish(worker) for worker in workers]
    assert "global batch 4 on 2 replica(s) (multiworker, synchronized BatchNorm)" in outputs[0]
    assert fingerprint(outputs[0]) == fingerprint(outputs[1])
    chief, other = tmp_path / "worker0", tmp_path / "worker1"
    for name in ("model.keras", "model.keras.sha256", "checkpoints/last.keras",
                 "train_log.csv"):
        assert (chief / name).is_file(), name
    assert not other.exists() or not any(p.is_file() for p in other.rglob("*"))
