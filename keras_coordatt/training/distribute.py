"""Where training runs: one device, several GPUs, several machines, a TPU, or JAX data parallelism.

:func:`choose_distribution` is called once, first thing in a recipe, and returns a
:class:`Distribution`; the recipe builds and compiles its model inside ``distribution.scope()``
and gives ``fit`` the *global* batch:

* ``"none"``: Keras' default device placement (one GPU, or the CPU);
* ``"mirrored"``: ``tf.distribute.MirroredStrategy``, every local GPU (or ``devices``);
* ``"multiworker"``: ``tf.distribute.MultiWorkerMirroredStrategy``, one process per machine,
  the cluster read from the ``TF_CONFIG`` environment variable;
* ``"tpu"``: ``tf.distribute.TPUStrategy`` on the TPU named by ``tpu`` (``""``: the local one);
* ``"data_parallel"``: ``keras.distribution.DataParallel`` (JAX backend) over every device;
  several hosts when ``KERAS_DISTRIBUTION_JOB_ADDRESSES`` is set
  (``keras.distribution.initialize``).

The first four need the TensorFlow backend, the last the JAX backend. :func:`synchronize_batchnorm`
makes BatchNorm use the statistics of the global batch under a ``tf.distribute`` strategy
(``keras.layers.BatchNormalization(synchronized=True)``); under JAX ``DataParallel`` they already
are (the step is one program over the global batch). :func:`set_determinism` and
:func:`set_mixed_precision` set the rest of the run's numerics.

TensorFlow is imported only by the TensorFlow kinds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import keras

KINDS = ("none", "mirrored", "multiworker", "tpu", "data_parallel")
TF_KINDS = ("mirrored", "multiworker", "tpu")


@dataclasses.dataclass
class Distribution:
    """The chosen distribution.

    Attributes:
        kind: one of :data:`KINDS`.
        num_replicas: devices a global batch is split over (the global batch must divide).
        is_chief: True in the one process that writes checkpoints and logs.
        strategy: the ``tf.distribute.Strategy`` for the TensorFlow kinds, else None.
        distribution: the ``keras.distribution.Distribution`` for ``"data_parallel"``, else None.
    """

    kind: str
    num_replicas: int = 1
    is_chief: bool = True
    strategy: Any = None
    distribution: Any = None

    def scope(self):
        """Context manager to build and compile the model in."""
        if self.strategy is not None:
            return self.strategy.scope()
        if self.distribution is not None:
            return self.distribution.scope()
        return contextlib.nullcontext()

    def check_batch_size(self, global_batch: int) -> int:
        """The per-replica batch; ValueError when ``global_batch`` does not split evenly."""
        if global_batch % self.num_replicas:
            raise ValueError(
                f"The global batch size {global_batch} does not split over {self.num_replicas} "
                f"replicas ({self.kind}): use a multiple of {self.num_replicas}."
            )
        return global_batch // self.num_replicas


def _tensorflow():
    try:
        import tensorflow as tf
    except ImportError as error:
        raise ImportError(
            "tf.distribute strategies need TensorFlow: pip install 'keras-coordatt[tf]'"
        ) from error
    return tf


def _is_chief_from_tf_config() -> bool:
    """Chief: the ``chief`` task, or worker 0 of a cluster without one (TF's convention)."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task") or {}
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind in (None, "chief"):
        return True
    return kind == "worker" and index == 0 and "chief" not in config.get("cluster", {})


def _reduce_nests(strategy, tf) -> None:
    """Makes ``strategy.reduce`` take what Keras 3's ``fit`` gives it under
    ``MultiWorkerMirroredStrategy`` (TF 2.21; tensorflow/tensorflow#72388): the first batch, an
    ``(x, y)`` nest (``MirroredStrategy`` maps over nests, this strategy takes one value), and
    the per-replica scalar logs with ``axis=0`` (a scalar has no axis 0: reduce across replicas
    only)."""
    reduce = strategy.reduce

    def reduce_one(reduce_op, value, axis):
        if axis is not None:
            local = strategy.experimental_local_results(value)[0]
            if getattr(local, "shape", None) is not None and local.shape.rank == 0:
                axis = None
        return reduce(reduce_op, value, axis=axis)

    def reduce_each(reduce_op, value, axis=None):
        return tf.nest.map_structure(lambda v: reduce_one(reduce_op, v, axis), value)

    strategy.reduce = reduce_each


def _tf_distribution(kind: str, devices: Sequence[str] | None, tpu: str | None) -> Distribution:
    tf = _tensorflow()
    if kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
        return Distribution(kind, strategy.num_replicas_in_sync, True, strategy)
    if kind == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "distribute='multiworker' reads the cluster from the TF_CONFIG environment "
                "variable, which is not set: see applications/classification/README.md."
            )
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        _reduce_nests(strategy, tf)
        return Distribution(kind, strategy.num_replicas_in_sync, _is_chief_from_tf_config(),
                            strategy)
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    strategy = tf.distribute.TPUStrategy(resolver)
    return Distribution(kind, strategy.num_replicas_in_sync, True, strategy)


def _jax_distribution(devices: Sequence[str] | None) -> Distribution:
    if os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES"):
        keras.distribution.initialize()  # several hosts: addresses, count, id from the env
    devices = list(devices) if devices else keras.distribution.list_devices()
    import jax

    distribution = keras.distribution.DataParallel(devices=devices)
    return Distribution("data_parallel", len(devices), jax.process_index() == 0,
                        distribution=distribution)


def choose_distribution(
    kind: str = "none", *, devices: Sequence[str] | None = None, tpu: str | None = None
) -> Distribution:
    """Creates the distribution ``kind`` (one of :data:`KINDS`); call it before any other
    TensorFlow op (``MultiWorkerMirroredStrategy`` must come first).

    Args:
        kind: ``"none"``, ``"mirrored"``, ``"multiworker"``, ``"tpu"`` or ``"data_parallel"``.
        devices: ``"mirrored"`` / ``"data_parallel"``: the devices to use (e.g.
            ``["/cpu:0", "/cpu:1"]``); default every local GPU / every device.
        tpu: ``"tpu"``: the TPU name or address (default the local TPU).
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown distribution {kind!r}: use one of {', '.join(KINDS)}.")
    backend = keras.backend.backend()
    if kind in TF_KINDS and backend != "tensorflow":
        raise ValueError(
            f"distribute={kind!r} is a tf.distribute strategy and needs KERAS_BACKEND="
            f"tensorflow (the backend is {backend!r}); on JAX use 'data_parallel'."
        )
    if kind == "data_parallel" and backend != "jax":
        raise ValueError(
            f"distribute='data_parallel' (keras.distribution) needs KERAS_BACKEND=jax (the "
            f"backend is {backend!r}); on TensorFlow use 'mirrored' or 'multiworker'."
        )
    if kind in TF_KINDS:
        return _tf_distribution(kind, devices, tpu)
    if kind == "data_parallel":
        return _jax_distribution(devices)
    return Distribution("none")


def _batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


def synchronize_batchnorm(model: keras.Model, enabled: bool = True) -> int:
    """Makes every BatchNormalization layer of ``model`` compute its training statistics over
    the global batch of a ``tf.distribute`` strategy (``synchronized=True``), or back to
    per-replica statistics with ``enabled=False`` (do that before saving a model to be loaded
    on another backend). Returns the number of layers changed.

    TensorFlow backend only: under JAX ``DataParallel`` the statistics are those of the global
    batch already.
    """
    if enabled and keras.backend.backend() != "tensorflow":
        raise ValueError(
            "Synchronized BatchNorm is a tf.distribute option (KERAS_BACKEND=tensorflow); under "
            "JAX DataParallel BatchNorm already uses the global batch: leave it off."
        )
    layers = _batchnorm_layers(model)
    for layer in layers:
        layer.synchronized = bool(enabled)
    return len(layers)


def set_determinism(seed: int, deterministic: bool = True) -> None:
    """Seeds Python, NumPy and the backend (``keras.utils.set_random_seed``) and, with
    ``deterministic`` on TensorFlow, turns on op determinism (same inputs, same bits; slower on
    GPU)."""
    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        _tensorflow().config.experimental.enable_op_determinism()


def set_mixed_precision(precision: str) -> None:
    """``"float32"`` (off), ``"float16"`` (GPUs; Keras wraps the optimizer in a
    ``LossScaleOptimizer`` at compile) or ``"bfloat16"`` (TPUs, recent GPUs): the global dtype
    policy ``mixed_<precision>``, variables stay float32."""
    if precision not in ("float32", "float16", "bfloat16"):
        raise ValueError(
            f"Unknown precision {precision!r}: use 'float32', 'float16' or 'bfloat16'."
        )
    keras.mixed_precision.set_global_policy(
        "float32" if precision == "float32" else f"mixed_{precision}"
    )
