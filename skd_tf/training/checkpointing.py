"""Crash-safe run state: weights + optimizer state + random-generator state + epoch.

Keras' BackupAndRestore restores the epoch inside ``fit``, after the dataset has
been built; our data stream must know the resume step before that (so that a
resumed run sees the same batches as an uninterrupted one), hence this small
callback with a readable ``state.json``. Keras' weight files also leave out the
state of the layers' random generators (dropout masks), which ``state.json``
records too, so a resumed run draws the same masks as an uninterrupted one.
Parts of the model that training never changes and that come from files of their own (the distiller's
teacher: its ``frozen_parts()``) stay out of the state: a ResNet-101 teacher would be most of every
epoch's write.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import keras

from skd_tf.atomic import atomic_path, write_text

STATE_WEIGHTS = "state.weights.h5"
STATE_JSON = "state.json"


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or inf; training stopped and the last good state was kept."""


class DamagedState(ValueError):
    """The saved run state cannot be read (a truncated or foreign file): the run cannot resume."""

    def __init__(self, path: Path, err: Exception):
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        super().__init__(f"cannot resume from {path}: the file is damaged ({first}); rerun with --fresh to "
                         f"start over (this deletes {Path(path).parent.parent})")


def seed_generators(model: keras.Model) -> list:
    """Every keras.random.SeedGenerator owned by ``model``'s layers, in a stable order."""
    found, seen = [], set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for generator in getattr(layer, "_seed_generators", []):
            if id(generator) not in seen:
                seen.add(id(generator))
                found.append(generator)
    return found


def frozen_parts(model: keras.Model) -> list:
    """The parts of ``model`` its run state leaves out: what its ``frozen_parts()`` returns, if it has one."""
    parts = getattr(model, "frozen_parts", None)
    return list(parts()) if callable(parts) else []


def read_epoch(state_dir: str | os.PathLike) -> int:
    """The number of finished epochs recorded in ``state_dir`` (0 when there is no state)."""
    path = Path(state_dir) / STATE_JSON
    if not path.is_file() or not (Path(state_dir) / STATE_WEIGHTS).is_file():
        return 0
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (ValueError, KeyError, TypeError) as err:
        raise DamagedState(path, err) from None


def restore(model: keras.Model, state_dir: str | os.PathLike) -> int:
    """Loads the saved weights and optimizer state into a built model; returns the epoch reached."""
    epoch = read_epoch(state_dir)
    if epoch:
        weights = Path(state_dir) / STATE_WEIGHTS
        try:
            model.load_weights(str(weights), objects_to_skip=frozen_parts(model) or None)
        except Exception as err:  # h5py's OSError for a truncated file, Keras' ValueError for a foreign one
            raise DamagedState(weights, err) from None
        states = json.loads((Path(state_dir) / STATE_JSON).read_text()).get("seed_generators", [])
        generators = seed_generators(model)
        if len(states) == len(generators):
            for generator, state in zip(generators, states):
                generator.state.assign(state)
    return epoch


class RunCheckpoint(keras.callbacks.Callback):
    """Saves the run state at the end of every epoch and stops on a non-finite loss.

    ``watch`` lists the logged terms checked after every batch; the first
    non-finite one stops training and is reported by ``raise_if_diverged`` with
    the step, while the state of the last finished epoch is left untouched.
    ``export`` (optional) is called with the model after each save, to write
    user-facing checkpoints such as ``last.keras``.
    """

    def __init__(self, state_dir: str | os.PathLike, steps_per_epoch: int, watch=("loss",), export=None):
        super().__init__()
        self.state_dir = Path(state_dir)
        self.steps_per_epoch = steps_per_epoch
        self.watch = tuple(watch)
        self.export = export
        self.divergence: str | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        for key in self.watch:
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(float(value)):
                step = self._epoch * self.steps_per_epoch + batch + 1
                self.divergence = f"loss term '{key}' became {float(value)} at step {step}"
                self.model.stop_training = True
                return

    def on_epoch_end(self, epoch, logs=None):
        if self.divergence:
            return
        with atomic_path(self.state_dir / STATE_WEIGHTS) as tmp:
            keras.saving.save_weights(self.model, str(tmp), objects_to_skip=frozen_parts(self.model) or None)
        seeds = [[int(v) for v in g.state.numpy()] for g in seed_generators(self.model)]
        write_text(self.state_dir / STATE_JSON, json.dumps({"epoch": epoch + 1, "seed_generators": seeds}))
        if self.export is not None:
            self.export(self.model)

    def raise_if_diverged(self) -> None:
        if self.divergence:
            raise TrainingDiverged(
                f"{self.divergence}; training stopped. The last good state (epoch {read_epoch(self.state_dir)}) "
                f"is kept in {self.state_dir}")


def save_atomic(model: keras.Model, path: str | os.PathLike) -> None:
    """``model.save`` to a temporary name, then rename, so a crash never leaves half a file."""
    with atomic_path(path) as tmp:
        model.save(str(tmp))
