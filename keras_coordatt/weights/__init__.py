"""Pretrained weights: registry of upstream checkpoints, download, conversion and loading.

Contract used by the builders in ``keras_coordatt.applications``:

* ``check_weights_argument(weights, *, family, alpha, attention, include_top, classes,
  input_shape)`` is called *before* the model is built and raises ``ValueError`` for
  unsupported combinations (as keras.applications does).
* ``load_weights(model, weights, *, family, alpha, attention, input_shape)`` is called after
  the model is built when ``weights`` is not None: ``weights`` is ``"imagenet"``, a preset name
  from the registry, or a local path (``.pth`` / ``.pth.tar`` / ``.pt`` / ``.weights.h5``).

``family`` is ``"mobilenet_v2"`` or ``"mobilenext"``; ``attention`` is None, ``"ca"``, ``"se"``
or ``"cbam"``.

Registry: ``list_presets()``, ``get_preset(name)``, ``register_preset(Preset(...))``,
``unregister_preset(name)``, ``find_imagenet_preset(...)``, ``PRESETS`` (read-only view).
Download: ``download_checkpoint(preset, base_url=None, cache_dir=None)``; mirrors via
``$KERAS_COORDATT_WEIGHTS_URL``; cache under ``$KERAS_HOME/keras_coordatt`` (``~/.keras``).
"""

from keras_coordatt.weights.download import (
    WEIGHTS_URL_ENV,
    ChecksumError,
    DownloadError,
    download_checkpoint,
    git_blob_id,
    verify_file,
    weights_cache_dir,
)
from keras_coordatt.weights.loading import (
    check_weights_argument,
    load_preset_weights,
    load_weights,
    load_weights_file,
    resolve_weights,
)
from keras_coordatt.weights.registry import (
    PRESETS,
    Preset,
    find_imagenet_preset,
    get_preset,
    list_presets,
    register_preset,
    unregister_preset,
)

__all__ = [
    "PRESETS",
    "WEIGHTS_URL_ENV",
    "ChecksumError",
    "DownloadError",
    "Preset",
    "check_weights_argument",
    "download_checkpoint",
    "find_imagenet_preset",
    "get_preset",
    "git_blob_id",
    "list_presets",
    "load_preset_weights",
    "load_weights",
    "load_weights_file",
    "register_preset",
    "resolve_weights",
    "unregister_preset",
    "verify_file",
    "weights_cache_dir",
]
