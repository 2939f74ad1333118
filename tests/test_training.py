"""keras_coordatt.training in this process: the optimizer against PyTorch's SGD formula in NumPy,
the schedule against its formula, checkpoints that refuse corrupt files, and the classification
pipelines against NumPy crops (tiny models and images)."""

from __future__ import annotations

import json
import math
import os

import keras
import numpy as np
import pytest

from keras_coordatt.applications import preprocess_input
from keras_coordatt.training import (
    CorruptCheckpointError,
    CoupledSGD,
    VerifiedBackupAndRestore,
    backup_epoch,
    load_model,
    save_model,
    warmup_cosine,
    weights_fingerprint,
)

# ---------------------------------------------------------------------------------------------
# optimizer and schedule
# ---------------------------------------------------------------------------------------------


def test_coupled_sgd_is_pytorch_sgd_with_weight_decay():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5,)).astype("float32")
    grads = rng.normal(size=(4, 5)).astype("float32")
    lr, momentum, decay = 0.1, 0.9, 0.05
    variable = keras.Variable(w0)
    optimizer = CoupledSGD(lr, momentum=momentum, l2=decay)
    for g in grads:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(g), variable)])
    # torch.optim.SGD(lr, momentum, weight_decay): d = g + wd * w; buf = m * buf + d; w -= lr * buf
    w, buf = w0.astype("float64"), np.zeros(5)
    for i, g in enumerate(grads):
        d = g + decay * w
        buf = d if i == 0 else momentum * buf + d
        w = w - lr * buf
    np.testing.assert_allclose(keras.ops.convert_to_numpy(variable), w, rtol=1e-5, atol=1e-6)
    config = keras.optimizers.serialize(optimizer)
    assert keras.optimizers.deserialize(config).l2 == decay
    with pytest.raises(ValueError, match="`l2`"):
        CoupledSGD(0.1, weight_decay=1e-4)


def test_warmup_cosine_schedule():
    schedule = warmup_cosine(0.4, total_steps=100, warmup_steps=10)
    values = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    expected = [0.0, 0.2, 0.4, 0.4 * (1 + math.cos(math.pi * 0.5)) / 2, 0.0]
    np.testing.assert_allclose(values, expected, atol=1e-6)
    reloaded = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule))
    assert float(reloaded(5)) == pytest.approx(0.2)
    assert float(warmup_cosine(0.4, 100)(0)) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="warm-up"):
        warmup_cosine(0.1, total_steps=10, warmup_steps=10)


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------


def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
                              keras.layers.Dropout(0.5), keras.layers.Dense(1)])
    model.compile(CoupledSGD(0.05, momentum=0.9), "mse")
    return model


DATA = (np.linspace(-1, 1, 24, dtype="float32").reshape(8, 3), np.ones((8, 1), "float32"))


@pytest.fixture(scope="module")
def backup(tmp_path_factory):
    """A backup after 2 epochs (kept: delete_checkpoint=False), the model's weights then, and
    the weights of the same run after 3 epochs."""
    folder = tmp_path_factory.mktemp("backup")
    model = tiny_model()
    model.fit(*DATA, epochs=2, batch_size=4, verbose=0, shuffle=False,
              callbacks=[VerifiedBackupAndRestore(folder, delete_checkpoint=False)])
    after_two = weights_fingerprint(model)
    model.fit(*DATA, epochs=3, initial_epoch=2, batch_size=4, verbose=0, shuffle=False)
    return folder, after_two, weights_fingerprint(model)


def copy_of(folder, tmp_path):
    tmp_path.mkdir(exist_ok=True)
    import shutil

    return shutil.copytree(folder, tmp_path / "copy")


def test_backup_restores_weights_optimizer_and_epoch(backup, tmp_path):
    folder, after_two, after_three = backup
    assert backup_epoch(folder) == 2 and backup_epoch(tmp_path / "none") == 0
    assert sorted(os.listdir(folder)) == ["epoch-00002.weights.h5", "manifest.json"]
    model = tiny_model()
    callback = VerifiedBackupAndRestore(copy_of(folder, tmp_path), delete_checkpoint=False)
    history = model.fit(*DATA, epochs=2, batch_size=4, verbose=0, callbacks=[callback])
    assert history.history == {} and weights_fingerprint(model) == after_two  # nothing left
    assert int(model.optimizer.iterations.numpy()) == 4  # optimizer state restored too
    # a fresh process's model resumed for epoch 3 = the run that went on (Dropout's generator
    # state is restored too: without it the masks, hence the weights, differ)
    model = tiny_model()
    model.fit(*DATA, epochs=3, batch_size=4, verbose=0, shuffle=False,
              callbacks=[VerifiedBackupAndRestore(copy_of(folder, tmp_path / "again"))])
    assert weights_fingerprint(model) == after_three


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "missing"])
def test_damaged_backup_is_reported_never_loaded(backup, tmp_path, damage):
    folder = copy_of(backup[0], tmp_path)
    weights = folder / "epoch-00002.weights.h5"
    if damage == "truncate":  # a half-written copy
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "flip":  # same size, one byte of a weight changed: still a valid HDF5 file
        data = bytearray(weights.read_bytes())
        data[-200] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "manifest":
        (folder / "manifest.json").write_text('{"epoch": 2, "weig')
    else:
        weights.unlink()
    model = tiny_model()
    before = weights_fingerprint(model)
    message = {"truncate": "does not match the SHA-256", "flip": "does not match the SHA-256",
               "manifest": "unreadable", "missing": "is missing"}[damage]
    with pytest.raises(CorruptCheckpointError, match=message):
        model.fit(*DATA, epochs=3, batch_size=4, verbose=0,
                  callbacks=[VerifiedBackupAndRestore(folder)])
    assert weights_fingerprint(model) == before  # nothing was loaded, nothing trained


def test_leftover_partial_file_is_ignored(backup, tmp_path):
    """A run killed while writing epoch 3 leaves a partial file; epoch 2's backup is used."""
    folder = copy_of(backup[0], tmp_path)
    (folder / ".partial-epoch-00003.weights.h5").write_bytes(b"\x89HDF half")
    model = tiny_model()
    history = model.fit(*DATA, epochs=3, batch_size=4, verbose=0,
                        callbacks=[VerifiedBackupAndRestore(folder)])
    assert len(history.history["loss"]) == 1  # only epoch 3 ran
    assert not folder.exists()  # finished: the backup is removed


def test_save_and_load_model_verify_the_file(tmp_path):
    model = tiny_model()
    path = tmp_path / "model.keras"
    digest = save_model(model, path)
    assert (tmp_path / "model.keras.sha256").read_text() == f"{digest}  model.keras\n"
    assert sorted(os.listdir(tmp_path)) == ["model.keras", "model.keras.sha256"]
    assert weights_fingerprint(load_model(path)) == weights_fingerprint(model)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CorruptCheckpointError, match="does not match the SHA-256"):
        load_model(path)
    os.remove(tmp_path / "model.keras.sha256")  # no record: the archive itself is checked
    with pytest.raises(CorruptCheckpointError, match="cannot be read as a .keras archive"):
        load_model(path)


# ---------------------------------------------------------------------------------------------
# classification pipelines
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """3 classes x 4 PNGs; the class is the dominant colour channel; sizes 40x48 .. 48x40."""
    from PIL import Image

    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for name in ("b_red", "a_green", "c_blue"):
        (root / name).mkdir()
        for i in range(4):
            shape = (40, 48, 3) if i % 2 else (48, 40, 3)
            image = rng.integers(0, 100, shape).astype("uint8")
            image[..., ("b_red", "a_green", "c_blue").index(name)] += 150
            Image.fromarray(image).save(root / name / f"{i}.png")
    return root


def test_folder_eval_pipeline_is_resize_centre_crop_normalise(image_folder):
    from keras_coordatt.training import classification_data as cd

    source = cd.folder_source(image_folder)
    assert source.class_names == ("a_green", "b_red", "c_blue") and source.num_examples == 12
    images, labels = next(iter(cd.eval_batches(source, 12, image_size=32, resize_size=40)))
    assert images.shape == (12, 32, 32, 3) and labels.shape == (12,)
    path = sorted((image_folder / "b_red").iterdir())[0]  # 48x40: shorter side already 40
    original = np.asarray(keras.utils.load_img(path))
    expected = preprocess_input(original[8:40, 4:36])  # the centre 32x32 of the 48x40 image
    index = [p.decode() for p in source.table[0].numpy()].index(str(path))
    np.testing.assert_allclose(images[index].numpy(), expected, atol=1e-5)
    assert labels[index] == 1


def test_train_stream_resumes_at_any_epoch(image_folder):
    from keras_coordatt.training import classification_data as cd

    source = cd.folder_source(image_folder)

    def epochs(start):
        batches = list(cd.train_batches(source, 4, epochs=3, start_epoch=start, image_size=24,
                                        seed=7))
        return [batches[i:i + 3] for i in range(0, len(batches), 3)]  # 3 steps per epoch

    full, resumed = epochs(0), epochs(2)
    assert len(full) == 3 and len(resumed) == 1
    for (a, la), (b, lb) in zip(full[2], resumed[0], strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(la.numpy(), lb.numpy())
    orders = [np.concatenate([labels.numpy() for _, labels in epoch]) for epoch in full]
    assert sorted(orders[0]) == sorted([0, 1, 2] * 4)  # every image once per epoch
    assert any(not np.array_equal(orders[0], other) for other in orders[1:])  # reshuffled
    images, labels = full[0][0]
    assert images.shape == (4, 24, 24, 3)
    # the crop keeps each image's colour: its dominant channel is its label
    mean = images.numpy().mean(axis=(1, 2))
    green, red, blue = mean[:, 1], mean[:, 0], mean[:, 2]
    dominant = np.argmax(np.stack([green, red, blue], -1), -1)
    np.testing.assert_array_equal(dominant, labels.numpy())


def test_steps_per_epoch_and_missing_folder(image_folder, tmp_path):
    from keras_coordatt.training import classification_data as cd

    source = cd.folder_source(image_folder)
    assert cd.steps_per_epoch(source, 5) == 2
    with pytest.raises(ValueError, match="fewer than one batch of 16"):
        cd.steps_per_epoch(source, 16)
    with pytest.raises(ValueError, match="does not exist"):
        cd.folder_source(tmp_path / "absent")
    assert json.dumps(list(source.class_names))
