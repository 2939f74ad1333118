"""Checkpoints that are written atomically and verified before they are read.

* :class:`VerifiedBackupAndRestore`: ``keras.callbacks.BackupAndRestore`` whose backup
  (weights, optimizer state and the layers' random-generator states, e.g. Dropout's, at the end
  of each epoch) is written to a new file, fsynced,
  renamed into place and then recorded with its SHA-256 in ``manifest.json`` (itself replaced
  atomically). A run killed at any moment (SIGKILL included) leaves the previous complete backup;
  the next ``fit`` with the same callback resumes after its epoch. A backup that does not match
  its manifest (truncated, overwritten, half-copied) raises :class:`CorruptCheckpointError`
  instead of being loaded. Only the chief writes; every worker reads.
* :func:`save_model` / :func:`load_model`: a ``.keras`` file written the same way with a
  ``<file>.sha256`` next to it (``sha256sum -c`` format), checked when loading.
* :class:`SaveModelCheckpoint`: the callback that writes ``last.keras`` / ``best.keras`` that way.
* :func:`weights_fingerprint`: one SHA-256 of all weights, to compare replicas or runs.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
import zipfile

import keras
import numpy as np

MANIFEST = "manifest.json"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint on disk is incomplete or not the file that was written."""


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: str) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _write_text_atomically(path: str, text: str) -> None:
    partial = path + ".partial"
    with open(partial, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def weights_fingerprint(model: keras.Model) -> str:
    """SHA-256 of the weights of ``model`` in order (shapes, dtypes, bytes; not their names):
    two models of one architecture give the same digest iff their weights are bitwise equal."""
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{value.shape}:{value.dtype};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# .keras files
# ---------------------------------------------------------------------------------------------


def _discarded_save(save, name: str) -> None:
    """``save(path)`` into a temporary folder that is then removed: what the workers that are
    not the chief do, since reading distributed variables may need every worker."""
    with tempfile.TemporaryDirectory() as folder:
        save(os.path.join(folder, name))


def save_model(model: keras.Model, path: str | os.PathLike, is_chief: bool = True) -> str | None:
    """Saves ``model`` to ``path`` (``.keras``) atomically and writes ``path + ".sha256"``.
    Returns the digest. ``is_chief=False``: saves to a temporary file that is deleted (call it
    on every worker of a multi-worker run) and returns None."""
    if not is_chief:
        _discarded_save(model.save, os.path.basename(os.fspath(path)))
        return None
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = os.path.join(os.path.dirname(os.path.abspath(path)),
                           ".partial-" + os.path.basename(path))
    model.save(partial)
    _fsync(partial)
    digest = file_sha256(partial)
    os.replace(partial, path)
    _write_text_atomically(path + ".sha256", f"{digest}  {os.path.basename(path)}\n")
    return digest


def verify_file(path: str | os.PathLike, expected_sha256: str | None = None) -> None:
    """CorruptCheckpointError unless ``path`` exists and matches ``expected_sha256`` (default:
    the digest in ``path + ".sha256"`` when that file exists)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CorruptCheckpointError(f"Checkpoint {path!r} is missing.")
    if expected_sha256 is None and os.path.isfile(path + ".sha256"):
        with open(path + ".sha256") as f:
            fields = f.read().split()
        expected_sha256 = fields[0] if fields else "(empty digest file)"
    if expected_sha256 is not None and file_sha256(path) != expected_sha256:
        raise CorruptCheckpointError(
            f"Checkpoint {path!r} does not match the SHA-256 recorded when it was written "
            f"({expected_sha256[:12]}...): it is truncated, half-copied or was overwritten. "
            "Use another checkpoint (or delete this one to start over); it was not loaded."
        )


def load_model(path: str | os.PathLike, **kwargs) -> keras.Model:
    """``keras.saving.load_model`` after :func:`verify_file` and a CRC check of the archive: a
    damaged file raises CorruptCheckpointError (never a half-loaded model)."""
    verify_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # every member against its CRC
        if bad is not None:
            raise zipfile.BadZipFile(f"member {bad!r} fails its CRC check")
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise CorruptCheckpointError(
            f"Checkpoint {os.fspath(path)!r} cannot be read as a .keras archive ({error}): it "
            "is truncated or not a Keras model file; it was not loaded."
        ) from error
    return keras.saving.load_model(path, **kwargs)


class SaveModelCheckpoint(keras.callbacks.Callback):
    """Saves the model with :func:`save_model` after each epoch (``monitor=None``) or when
    ``logs[monitor]`` improves (``mode`` "max" or "min"). Not ``is_chief``: saves and
    discards (see :func:`save_model`)."""

    def __init__(self, path: str, monitor: str | None = None, mode: str = "max",
                 is_chief: bool = True):
        super().__init__()
        self.path, self.monitor, self.mode, self.is_chief = path, monitor, mode, is_chief
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is not None:
            value = (logs or {}).get(self.monitor)
            if value is None:
                return
            better = self.best is None or (value > self.best if self.mode == "max"
                                           else value < self.best)
            if not better:
                return
            self.best = value
        save_model(self.model, self.path, is_chief=self.is_chief)


# ---------------------------------------------------------------------------------------------
# Backup and restore
# ---------------------------------------------------------------------------------------------


def read_manifest(backup_dir: str | os.PathLike) -> dict | None:
    """The verified backup record ``{"epoch", "weights", "sha256", "seed_states"}`` of
    ``backup_dir``, or None
    when there is no backup; CorruptCheckpointError when the record or its file is damaged."""
    path = os.path.join(os.fspath(backup_dir), MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            manifest = json.load(f)
        epoch, name, digest = manifest["epoch"], manifest["weights"], manifest["sha256"]
    except (ValueError, KeyError, TypeError) as error:
        raise CorruptCheckpointError(
            f"Backup record {path!r} is unreadable ({error}); delete {os.fspath(backup_dir)!r} "
            "to start the run over."
        ) from error
    verify_file(os.path.join(os.fspath(backup_dir), name), digest)
    return {"epoch": int(epoch), "weights": name, "sha256": digest,
            "seed_states": manifest.get("seed_states", [])}


def backup_epoch(backup_dir: str | os.PathLike) -> int:
    """Epochs completed by the run backed up in ``backup_dir`` (0 when there is none): where a
    resumed run's data stream starts."""
    manifest = read_manifest(backup_dir)
    return 0 if manifest is None else manifest["epoch"]


def _seed_generators(model: keras.Model) -> list:
    """The random generators of ``model``'s layers (Dropout, ...): their states are not in
    ``save_weights``' files, and a resumed run needs them to draw the same masks."""
    return [generator for layer in model._flatten_layers(include_self=True, recursive=True)
            for generator in getattr(layer, "_seed_generators", [])]


class VerifiedBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` (end-of-epoch backups) with atomic writes and a
    verified restore (see the module docstring). ``is_chief=False`` restores but never writes
    (the other workers of a multi-worker run, sharing the chief's ``backup_dir``: they save
    into a temporary folder that is removed)."""

    def __init__(self, backup_dir: str, delete_checkpoint: bool = True, is_chief: bool = True):
        super().__init__(os.fspath(backup_dir), save_freq="epoch",
                         delete_checkpoint=delete_checkpoint)
        self.is_chief = is_chief

    def on_train_begin(self, logs=None):
        manifest = read_manifest(self.backup_dir)  # verifies before anything is loaded
        if manifest is None:
            return
        if not self.model.built:
            raise ValueError("Build the model before fit() to restore a backup into it.")
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(self.backup_dir, manifest["weights"]))
        states = manifest.get("seed_states", [])
        generators = _seed_generators(self.model)
        if len(states) != len(generators):
            raise ValueError(
                f"The backup in {self.backup_dir!r} holds {len(states)} random-generator states,"
                f" the model has {len(generators)}: it was written by another model."
            )
        for generator, state in zip(generators, states, strict=True):
            generator.state.assign(np.asarray(state, generator.state.dtype))
        self.model._initial_epoch = manifest["epoch"]  # as BackupAndRestore does

    def _save_model(self):
        if not self.is_chief:
            _discarded_save(self.model.save_weights, "backup.weights.h5")
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch-{self._current_epoch:05d}.weights.h5"
        partial = os.path.join(self.backup_dir, ".partial-" + name)
        self.model.save_weights(partial, overwrite=True)
        _fsync(partial)
        record = {"epoch": self._current_epoch, "weights": name,
                  "sha256": file_sha256(partial),
                  "seed_states": [np.asarray(g.state.numpy()).tolist()
                                  for g in _seed_generators(self.model)]}
        os.replace(partial, os.path.join(self.backup_dir, name))
        _write_text_atomically(os.path.join(self.backup_dir, MANIFEST), json.dumps(record))
        for old in glob.glob(os.path.join(self.backup_dir, "epoch-*.weights.h5")):
            if os.path.basename(old) != name:
                os.remove(old)

    def on_train_end(self, logs=None):
        if self.is_chief:
            super().on_train_end(logs)


def recipe_callbacks(output_dir: str, is_chief: bool, best_monitor: str | None = None,
                     best_mode: str = "max") -> list:
    """The recipes' callbacks: ``checkpoints/last.keras`` (and ``best.keras`` when
    ``best_monitor`` names a validation metric) and the backup on every worker (the others
    save into deleted temporary files: reading distributed variables may need all of them);
    a CSV log and TensorBoard (when installed) on the chief. The backup goes last: an epoch
    counts as done once its logs and checkpoints are written."""
    import importlib.util

    callbacks: list = [SaveModelCheckpoint(os.path.join(output_dir, "checkpoints", "last.keras"),
                                           is_chief=is_chief)]
    if best_monitor is not None:
        callbacks.append(SaveModelCheckpoint(
            os.path.join(output_dir, "checkpoints", "best.keras"), monitor=best_monitor,
            mode=best_mode, is_chief=is_chief))
    if is_chief:
        callbacks.append(keras.callbacks.CSVLogger(os.path.join(output_dir, "train_log.csv"),
                                                   append=True))
        if importlib.util.find_spec("tensorboard") is not None:
            callbacks.append(keras.callbacks.TensorBoard(os.path.join(output_dir, "logs")))
        else:
            print("TensorBoard is not installed (pip install tensorboard): no logs/ written.")
    return callbacks + [VerifiedBackupAndRestore(os.path.join(output_dir, "backup"),
                                                 is_chief=is_chief)]
