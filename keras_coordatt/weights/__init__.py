"""Pretrained weights: registry of upstream checkpoints, download, conversion and loading.

Contract used by the builders in ``keras_coordatt.applications``:

* ``check_weights_argument(weights, *, family, alpha, attention, include_top, classes,
  input_shape)`` is called *before* the model is built and raises ``ValueError`` for
  unsupported combinations (as keras.applications does).
* ``load_weights(model, weights, *, family, alpha, attention, input_shape)`` is called after
  the model is built when ``weights`` is not None: ``weights`` is ``"imagenet"``, a preset name
  from the registry, or a local path (``.pth`` / ``.pth.tar`` / ``.weights.h5``).

``family`` is ``"mobilenet_v2"`` or ``"mobilenext"``; ``attention`` is None, ``"ca"``, ``"se"``
or ``"cbam"``.
"""

from keras_coordatt.weights.loading import check_weights_argument, load_weights

__all__ = ["check_weights_argument", "load_weights"]
