"""Resolving the builders' ``weights=`` argument and loading pretrained weights.

``weights`` may be:

* ``None``: random initialisation;
* ``"imagenet"``: the registry's default checkpoint for the model's family, width, attention and
  input size (MobileNetV2 1.0 at 96/128/160/192 gets the checkpoint trained at that size);
* a preset name from :func:`keras_coordatt.weights.list_presets`;
* a local PyTorch checkpoint (``.pth``, ``.pth.tar``, ``.pt``), read by the safe reader and
  mapped by the converter, or a Keras weights file (``.weights.h5``).

Presets are downloaded (:func:`~keras_coordatt.weights.download.download_checkpoint`), verified,
converted once into the model, and the converted weights are cached next to the download as
``<stem>-<pin[:12]>-<model fingerprint[:12]>.weights.h5`` with a ``.json`` record holding its
SHA-256. The fingerprint hashes the model's variable paths, shapes and dtypes, so e.g.
``include_top=False`` gets its own converted file. Later loads read the converted file after
checking its SHA-256; a missing record, a mismatch or a failed load deletes it and converts
again. Every file is written to a temporary name in the same directory and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import warnings
from typing import Any

from keras_coordatt.weights import registry
from keras_coordatt.weights.download import (
    download_checkpoint,
    remove_quietly,
    sha256_file,
    weights_cache_dir,
)
from keras_coordatt.weights.registry import Preset

#: File name endings read as PyTorch checkpoints.
TORCH_SUFFIXES = (".pth", ".pth.tar", ".pt")
#: File name endings read as Keras weights.
KERAS_SUFFIXES = (".weights.h5",)

_CONVERTED_FORMAT = 1


# ------------------------------------------------------------------------------------------
# Argument resolution
# ------------------------------------------------------------------------------------------


def _model_label(family: str, alpha: float, attention: str | None) -> str:
    builder = registry.BUILDERS.get((family, attention)) or (
        f"{family} (attention={attention!r})"
    )
    return f"{builder} with alpha={float(alpha)!r}"


def _input_rows(input_shape: Any) -> tuple[int | None, int | None]:
    """(rows, channels) of a builder's ``input_shape`` (None where unknown)."""
    if input_shape is None:
        return None, None
    shape = tuple(input_shape)
    if len(shape) != 3:
        return None, None
    try:
        import keras

        channels_first = keras.config.image_data_format() == "channels_first"
    except Exception:  # pragma: no cover - keras always importable in practice
        channels_first = False
    if channels_first:
        channels, rows, cols = shape
    else:
        rows, cols, channels = shape
    if rows is None or cols is None or rows != cols:
        return None, channels
    return int(rows), channels


def _is_path_like(weights: Any) -> bool:
    if isinstance(weights, os.PathLike):
        return True
    text = str(weights)
    return (
        os.sep in text
        or (os.altsep is not None and os.altsep in text)
        or text.startswith("~")
        or re.fullmatch(r"\.[A-Za-z][A-Za-z0-9]*", os.path.splitext(text)[1]) is not None
    )


def file_kind(path: str | os.PathLike) -> str:
    """``"torch"`` or ``"keras"`` from a weights file's name; ValueError for anything else."""
    name = os.fspath(path).lower()
    if name.endswith(TORCH_SUFFIXES):
        return "torch"
    if name.endswith(KERAS_SUFFIXES):
        return "keras"
    raise ValueError(
        f"Unsupported weights file {os.fspath(path)!r}: expected a PyTorch checkpoint "
        f"({', '.join(TORCH_SUFFIXES)}) or Keras weights ({', '.join(KERAS_SUFFIXES)})."
    )


def resolve_weights(
    weights: Any,
    *,
    family: str,
    alpha: float,
    attention: str | None,
    include_top: bool = True,
    classes: int = 1000,
    input_shape: Any = None,
    reduction: int | None = None,
) -> Preset | str | None:
    """What ``weights`` designates for this model: None, a :class:`Preset` or a local path.

    Raises ValueError (before anything is built or downloaded) for combinations that cannot be
    honoured: no checkpoint for the model, ``classes`` != the checkpoint's with
    ``include_top=True``, an unknown preset name, a missing file or an unsupported file type.
    """
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            "`weights` must be None, 'imagenet', a preset name or a path to a weights file, "
            f"got {type(weights).__name__} {weights!r}."
        )
    label = _model_label(family, alpha, attention)
    rows, channels = _input_rows(input_shape)

    preset: Preset | None = None
    if isinstance(weights, str) and weights == "imagenet":
        preset = registry.find_imagenet_preset(family, alpha, attention, rows)
        if preset is None:
            raise ValueError(
                f"No ImageNet weights for {label}. Available: {registry.describe_available()}. "
                "Use weights=None, a local checkpoint, or register_preset(...) for your own."
            )
        if rows is not None and rows != preset.input_size:
            warnings.warn(
                f"`input_shape` rows={rows} is not the resolution {label} ImageNet weights "
                f"were trained at ({preset.input_size}); loading the {preset.input_size}x"
                f"{preset.input_size} weights ({preset.name!r}).",
                stacklevel=3,
            )
    elif isinstance(weights, str) and weights in registry.PRESETS:
        preset = registry.get_preset(weights)
        if not preset.matches(family, alpha, attention):
            raise ValueError(
                f"Weights preset {preset.name!r} is for {preset.describe_model()}, but the "
                f"model is {label}. Presets for this model: "
                f"{_names_for(family, alpha, attention) or 'none'}."
            )
    else:
        return _existing_weights_file(weights)
    _check_preset_fits(
        weights, preset, include_top=include_top, classes=classes, reduction=reduction,
        channels=channels, input_shape=input_shape,
    )
    return preset


def _existing_weights_file(weights: str | os.PathLike) -> str:
    """The expanded path of an existing, supported weights file; ValueError otherwise."""
    path = os.path.expanduser(os.fspath(weights))
    if os.path.isfile(path):
        file_kind(path)  # raises for an unsupported extension
        return path
    if os.path.exists(path):
        raise ValueError(f"`weights` path {path!r} is not a file.")
    if _is_path_like(weights):
        raise ValueError(f"`weights` file {path!r} does not exist.")
    close = registry.close_preset_names(str(weights), extra=("imagenet",))
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"Unknown `weights` value {weights!r}: not None, 'imagenet', a registered preset "
        f"or an existing file.{hint} Presets: {', '.join(registry.list_presets())}."
    )


def _check_preset_fits(
    weights: Any,
    preset: Preset,
    *,
    include_top: bool,
    classes: int,
    reduction: int | None,
    channels: int | None,
    input_shape: Any,
) -> None:
    """ValueError when the model's reduction, classifier or input channels differ from the
    preset's."""
    if reduction is not None and preset.reduction is not None and reduction != preset.reduction:
        raise ValueError(
            f"weights={weights!r} ({preset.name}) was trained with attention reduction "
            f"{preset.reduction}, got reduction={reduction}."
        )
    if include_top and classes != preset.classes:
        raise ValueError(
            f"weights={weights!r} ({preset.name}) has a {preset.classes}-class classifier: with "
            f"include_top=True, `classes` must be {preset.classes}, got {classes}. Use "
            "include_top=False to put your own head on the pretrained features."
        )
    if channels is not None and channels != 3:
        raise ValueError(
            f"weights={weights!r} needs 3 input channels (RGB), got input_shape={input_shape}."
        )


def _names_for(family: str, alpha: float, attention: str | None) -> str:
    return ", ".join(
        p.name for p in registry.PRESETS.values() if p.matches(family, alpha, attention)
    )


def check_weights_argument(
    weights: Any,
    *,
    family: str,
    alpha: float,
    attention: str | None,
    include_top: bool,
    classes: int,
    input_shape: Any,
    reduction: int | None = None,
) -> None:
    """Raises ValueError for a ``weights`` value that cannot be honoured (call before building).

    ``reduction`` (optional) is checked against the preset's attention reduction ratio.
    """
    resolve_weights(
        weights,
        family=family,
        alpha=alpha,
        attention=attention,
        include_top=include_top,
        classes=classes,
        input_shape=input_shape,
        reduction=reduction,
    )


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------


def load_weights(
    model: Any,
    weights: Any,
    *,
    family: str,
    alpha: float,
    attention: str | None,
    input_shape: Any = None,
    reduction: int | None = None,
    base_url: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> None:
    """Loads ``weights`` (``"imagenet"``, a preset name or a local file) into ``model``.

    ``base_url`` overrides the download location (default: ``$KERAS_COORDATT_WEIGHTS_URL`` or
    upstream); ``cache_dir`` the cache root (default: ``$KERAS_HOME`` or ``~/.keras``).
    """
    if weights is None:
        return
    # include_top / classes were checked by check_weights_argument before building; a model
    # built otherwise fails the converter's strict shape checks instead.
    target = resolve_weights(
        weights, family=family, alpha=alpha, attention=attention, include_top=False,
        input_shape=input_shape, reduction=reduction,
    )
    if isinstance(target, Preset):
        load_preset_weights(model, target, base_url=base_url, cache_dir=cache_dir)
    elif target is not None:
        load_weights_file(model, target)


def load_weights_file(model: Any, path: str | os.PathLike) -> None:
    """Loads a local ``.pth``/``.pth.tar``/``.pt`` (reader + converter) or ``.weights.h5``."""
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise ValueError(f"Weights file {path!r} does not exist.")
    if file_kind(path) == "keras":
        model.load_weights(path)
        return
    state_dict = read_checkpoint(path)
    convert_state_dict(model, state_dict)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The state_dict of a PyTorch checkpoint as numpy arrays, never executing its pickle."""
    from keras_coordatt.weights.torch_checkpoint import load_torch_checkpoint

    return load_torch_checkpoint(path)


def _converter():
    from keras_coordatt.weights import convert

    for name in ("load_torch_state_dict", "load_state_dict", "convert_state_dict"):
        fn = getattr(convert, name, None)
        if callable(fn):
            return fn
    raise ImportError("keras_coordatt.weights.convert has no state_dict loading function.")


def convert_state_dict(model: Any, state_dict: dict[str, Any]) -> Any:
    """Maps a PyTorch state_dict onto ``model`` with the strict converter; returns its report."""
    return _converter()(model, state_dict)


def model_fingerprint(model: Any) -> str:
    """SHA-256 over the model's variable paths, shapes and dtypes (identifies a layout)."""
    items = [
        [getattr(v, "path", getattr(v, "name", "")), list(v.shape), str(v.dtype)]
        for v in model.weights
    ]
    blob = json.dumps(items, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def converted_paths(
    model: Any, preset: Preset, cache_dir: str | os.PathLike | None = None
) -> tuple[str, str]:
    """(weights file, record file) of ``preset`` converted for ``model``'s layout."""
    datadir = weights_cache_dir(cache_dir)
    stem = preset.cache_file_name
    for suffix in (".pth.tar", ".pth", ".pt", ".tar", ".bin"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    base = os.path.join(datadir, f"{stem}-{model_fingerprint(model)[:12]}")
    return base + ".weights.h5", base + ".json"


def _load_converted(model: Any, weights_path: str, record_path: str, preset: Preset) -> bool:
    """Loads a cached converted file if its record vouches for it; cleans up otherwise."""
    if not os.path.exists(weights_path):
        remove_quietly(record_path)
        return False
    try:
        with open(record_path, encoding="utf-8") as f:
            record = json.load(f)
        ok = (
            record.get("format") == _CONVERTED_FORMAT
            and record.get("pin") == preset.pin
            and record.get("sha256") == sha256_file(weights_path)
        )
    except (OSError, ValueError):
        ok = False
    if ok:
        try:
            model.load_weights(weights_path)
            return True
        except Exception as exc:  # unreadable despite its hash: convert again
            warnings.warn(
                f"Cached converted weights {weights_path} could not be loaded ({exc}); "
                "converting again.",
                stacklevel=3,
            )
    remove_quietly(weights_path)
    remove_quietly(record_path)
    return False


def _atomic_write_text(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        tmp = None
    finally:
        remove_quietly(tmp)


def save_weights_atomic(model: Any, path: str) -> str:
    """``model.save_weights`` to a temporary file next to ``path``, renamed into place.

    Returns the SHA-256 of the written file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".weights.h5", dir=directory)
    os.close(fd)
    try:
        model.save_weights(tmp, overwrite=True)
        digest = sha256_file(tmp)
        os.replace(tmp, path)
        tmp = None
        return digest
    finally:
        remove_quietly(tmp)


def load_preset_weights(
    model: Any,
    preset: Preset | str,
    *,
    base_url: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    force_download: bool = False,
) -> str:
    """Loads a registry preset into ``model``: cached conversion, else download + convert.

    Returns the path of the converted ``.weights.h5`` that now backs the model. A verified
    download that the safe reader refuses (hostile or unreadable) is deleted; nothing converted
    is written unless the strict converter accepted every tensor.
    """
    if isinstance(preset, str):
        preset = registry.get_preset(preset)
    weights_path, record_path = converted_paths(model, preset, cache_dir)
    if not force_download and _load_converted(model, weights_path, record_path, preset):
        return weights_path

    checkpoint = download_checkpoint(
        preset, base_url=base_url, cache_dir=cache_dir, force_download=force_download
    )
    try:
        state_dict = read_checkpoint(checkpoint)
    except Exception:
        # unreadable or hostile (UnsafeCheckpointError): it can never load, so drop it
        remove_quietly(checkpoint)
        raise
    convert_state_dict(model, state_dict)  # raises ValueError if it does not fit the model
    digest = save_weights_atomic(model, weights_path)
    record = {
        "format": _CONVERTED_FORMAT,
        "preset": preset.name,
        "pin": preset.pin,
        "source": preset.upstream_url,
        "checkpoint": os.path.basename(checkpoint),
        "fingerprint": model_fingerprint(model),
        "sha256": digest,
    }
    with contextlib.suppress(OSError):
        _atomic_write_text(record_path, json.dumps(record, indent=1, sort_keys=True))
    return weights_path


__all__ = [
    "KERAS_SUFFIXES",
    "TORCH_SUFFIXES",
    "check_weights_argument",
    "convert_state_dict",
    "converted_paths",
    "file_kind",
    "load_preset_weights",
    "load_weights",
    "load_weights_file",
    "model_fingerprint",
    "read_checkpoint",
    "resolve_weights",
    "save_weights_atomic",
]
