"""keras_coordatt.training.distribute on real engines, each in a fresh interpreter (the device
set-up is per process): tf.distribute.MirroredStrategy on 2 logical CPUs and JAX
keras.distribution.DataParallel on 2 host devices, each against one device on the same global
batch (a small Conv-BN-CoordAttention network, 2 steps). The multi-worker run is in
tests/test_classification_recipe.py (it runs the recipe)."""

from __future__ import annotations

import json

import pytest

from helpers import run_python

# One network for both engines: conv -> BatchNorm -> CA -> pooled logits (4 classes); two SGD
# steps (momentum, coupled L2) on 16 images at global batch 8.
COMMON = """
import json, numpy as np, keras
from keras_coordatt.layers import CoordAttention
from keras_coordatt.training import CoupledSGD, choose_distribution, synchronize_batchnorm

rng = np.random.default_rng(0)
X = rng.normal(size=(16, 16, 16, 3)).astype("float32")
Y = rng.integers(0, 4, size=(16,))

def build():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = CoordAttention(reduction=4)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))

def train(model):
    model.compile(CoupledSGD(0.1, momentum=0.9, l2=4e-5),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(X, Y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return [np.asarray(keras.ops.convert_to_numpy(w)) for w in model.weights]

def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))
"""

MIRRORED = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
""" + COMMON + """
single = train(build())
report = {}
dist = choose_distribution("mirrored", devices=["/cpu:0", "/cpu:1"])  # one per process
for sync in (True, False):
    with dist.scope():
        model = build()
        report["layers"] = synchronize_batchnorm(model, sync)
        weights = train(model)
    report["replicas"] = dist.num_replicas
    report["sync" if sync else "per_replica"] = max_diff(weights, single)
report["moved"] = max_diff(single, [np.asarray(w) for w in build().get_weights()])
print("REPORT", json.dumps(report))
"""

DATA_PARALLEL = COMMON + """
import jax
single_model = build()
single = train(single_model)
dist = choose_distribution("data_parallel")
with dist.scope():
    model = build()
    weights = train(model)
try:
    synchronize_batchnorm(model)
    refused = False
except ValueError as error:
    refused = "DataParallel" in str(error)
print("REPORT", json.dumps({
    "devices": len(jax.devices()), "replicas": dist.num_replicas, "chief": dist.is_chief,
    "kernel_devices": len(model.weights[0].value.sharding.device_set),
    "single_devices": len(single_model.weights[0].value.sharding.device_set),
    "diff": max_diff(weights, single),
    "moved": max_diff(single, [np.asarray(w) for w in build().get_weights()]),
    "sync_refused": refused,
}))
"""

#: float32 sums over the batch run in another order on 2 replicas; 2 steps at lr 0.1.
TOLERANCE = 1e-5


def report_of(result) -> dict:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    line = [s for s in result.stdout.splitlines() if s.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


def test_mirrored_step_equals_one_device():
    report = report_of(run_python(MIRRORED, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3"))
    assert report["replicas"] == 2, report
    assert report["layers"] == 2  # the conv's BN and the one inside CoordAttention
    assert report["moved"] > 1e-3  # the steps changed the weights
    # synchronized BatchNorm: the 2-replica step is the one-device step on the global batch
    assert report["sync"] <= TOLERANCE, report
    # per-replica statistics (half batches) are not: the comparison can tell
    assert report["per_replica"] > 100 * TOLERANCE, report


def test_jax_data_parallel_equals_one_device():
    report = report_of(run_python(
        DATA_PARALLEL, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    ))
    assert report["devices"] == 2 and report["replicas"] == 2 and report["chief"]
    assert report["kernel_devices"] == 2 and report["single_devices"] == 1  # really on 2
    assert report["moved"] > 1e-3
    # BatchNorm sees the global batch under DataParallel: no synchronisation needed
    assert report["diff"] <= TOLERANCE, report
    assert report["sync_refused"]


@pytest.mark.parametrize(("config", "chief"), [
    ({}, True),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker",
                                                                  "index": 0}}, False),
    ({"cluster": {"chief": ["a:1"], "worker": ["b:2"]}, "task": {"type": "chief",
                                                                  "index": 0}}, True),
])
def test_chief_from_tf_config(monkeypatch, config, chief):
    from keras_coordatt.training.distribute import _is_chief_from_tf_config

    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert _is_chief_from_tf_config() is chief


def test_choose_distribution_checks_the_backend():
    import keras

    from keras_coordatt.training import choose_distribution

    with pytest.raises(ValueError, match="Unknown distribution 'gpus'"):
        choose_distribution("gpus")
    wrong = "data_parallel" if keras.backend.backend() != "jax" else "mirrored"
    with pytest.raises(ValueError, match="KERAS_BACKEND"):
        choose_distribution(wrong)
    assert choose_distribution("none").num_replicas == 1
    with pytest.raises(ValueError, match="multiple of 2"):
        choose_distribution("none").__class__("mirrored", num_replicas=2).check_batch_size(7)
