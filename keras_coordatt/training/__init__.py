"""What the training recipes (applications/) share: distribution, optimizer and schedule,
checkpoints, and (needing TensorFlow) the classification input pipelines.

* :mod:`~keras_coordatt.training.distribute`: :func:`choose_distribution` (none / mirrored /
  multiworker / tpu on TensorFlow, data_parallel on JAX), :func:`synchronize_batchnorm`,
  :func:`set_determinism`, :func:`set_mixed_precision`;
* :mod:`~keras_coordatt.training.optimizers`: :class:`CoupledSGD` (PyTorch-style weight decay),
  :func:`warmup_cosine`;
* :mod:`~keras_coordatt.training.fit_setup`: :func:`build_for_fit` (the first ``fit`` traces its
  train step once instead of twice on TensorFlow);
* :mod:`~keras_coordatt.training.checkpoints`: :class:`VerifiedBackupAndRestore`,
  :func:`save_model` / :func:`load_model` (atomic, SHA-256 checked),
  :class:`CorruptCheckpointError`, :func:`weights_fingerprint`;
* :mod:`~keras_coordatt.training.comparison`: :func:`run_grid` (one training run per attention
  x seed, the same arguments, each in its own process; the recipes' ``compare.py``);
* :mod:`~keras_coordatt.training.classification_data`: TFDS / image-folder sources and the
  train / eval pipelines (imported on use: it needs TensorFlow).

Importing this package imports only Keras.
"""

from keras_coordatt.training.checkpoints import (
    CorruptCheckpointError,
    SaveModelCheckpoint,
    VerifiedBackupAndRestore,
    backup_epoch,
    load_model,
    save_model,
    weights_fingerprint,
)
from keras_coordatt.training.distribute import (
    KINDS,
    Distribution,
    choose_distribution,
    set_determinism,
    set_mixed_precision,
    synchronize_batchnorm,
)
from keras_coordatt.training.fit_setup import build_for_fit
from keras_coordatt.training.optimizers import CoupledSGD, warmup_cosine

__all__ = [
    "KINDS",
    "CorruptCheckpointError",
    "CoupledSGD",
    "Distribution",
    "SaveModelCheckpoint",
    "VerifiedBackupAndRestore",
    "backup_epoch",
    "build_for_fit",
    "choose_distribution",
    "load_model",
    "save_model",
    "set_determinism",
    "set_mixed_precision",
    "synchronize_batchnorm",
    "warmup_cosine",
    "weights_fingerprint",
]
