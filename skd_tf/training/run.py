"""``train(config)``: trains a teacher or a baseline student end to end and evaluates it.

Run directory layout (``train.out_dir``)::

    state/state.weights.h5, state/state.json   resumable state (weights + optimizer + epoch)
    checkpoints/last.keras                     the network after the last finished epoch
    model.keras                                the final network
    eval.json                                  validation scores of the final network
    timing.json                                seconds per training step, peak memory (StepTimer)
    logs/                                      TensorBoard
"""

from __future__ import annotations

import json
import math
import shutil
from contextlib import contextmanager
from pathlib import Path

import keras

from skd_tf.atomic import write_text
from skd_tf.config import RunConfig, TrainConfig
from skd_tf.console import fit_verbose
from skd_tf.data import train_dataset
from skd_tf.evaluation import evaluate_network
from skd_tf.models import build_model
from skd_tf.training.checkpointing import RunCheckpoint, restore, save_atomic
from skd_tf.training.timing import StepTimer
from skd_tf.training.trainer import SegmentationTrainer


def make_optimizer(cfg: TrainConfig, steps: int | None = None) -> keras.optimizers.Optimizer:
    """SGD with momentum (the paper's) or AdamW, decoupled weight decay (not on BN parameters or
    biases), poly LR: lr(t) = lr₀ · (1 − t/T)^power, T = ``train.steps``."""
    schedule = keras.optimizers.schedules.PolynomialDecay(
        cfg.learning_rate, decay_steps=steps or cfg.steps, end_learning_rate=0.0, power=cfg.poly_power)
    if cfg.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=cfg.weight_decay)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay or None)
    if cfg.weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer


def setup_precision(cfg: TrainConfig) -> None:
    """Sets the global dtype policy (float32 unless train.mixed_precision names one)."""
    keras.mixed_precision.set_global_policy(cfg.mixed_precision or "float32")


def write_json(path: Path, payload: dict) -> None:
    """JSON with NaN written as null (absent classes have no IoU), written whole or not at all."""
    def clean(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v
    write_text(path, json.dumps(clean(payload), indent=2) + "\n")


def _holds_progress(out: Path) -> bool:
    """Whether a run directory holds anything besides its config.json and TensorBoard logs."""
    return any(p.is_file() and p.name != "config.json" and "logs" not in p.relative_to(out).parts
               for p in out.rglob("*"))


@contextmanager
def run_directory(out: Path, config_json: str, fresh: bool = False):
    """Prepares a run's ``out`` directory (emptied first with ``fresh``) with its ``config.json``.

    When the body fails before the run saved anything (e.g. a bad image in the first batch), a directory
    this run created is removed again, and an existing one gets its previous config.json back: a failed
    start changes nothing on disk. A run that saved state keeps it (rerunning resumes).
    """
    if fresh and out.exists():
        shutil.rmtree(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.json"
    previous = config_path.read_bytes() if config_path.is_file() else None
    config_path.write_text(config_json)
    try:
        yield out
    except BaseException:
        if created and not _holds_progress(out):
            shutil.rmtree(out, ignore_errors=True)
        elif not created and previous is not None:
            config_path.write_bytes(previous)
        elif not created:
            config_path.unlink(missing_ok=True)
        raise


def fit_resumable(model: keras.Model, network: keras.Model, cfg: RunConfig, out: Path, watch=("loss",),
                  verbose: int = 1, extra_callbacks=()) -> None:
    """Fits a built, compiled ``model`` for ``train.steps``, resuming from ``out/state``.

    The data stream starts at the resumed step, the state is saved every
    ``train.steps_per_epoch`` steps (``network`` also as ``checkpoints/last.keras``),
    a non-finite value of a ``watch`` term stops the run (TrainingDiverged), and
    the final ``network`` is saved as ``model.keras``.
    """
    state_dir = out / "state"
    start_epoch = restore(model, state_dir)
    epochs, per_epoch = cfg.train.epochs, cfg.train.steps_per_epoch
    if start_epoch:
        print(f"resuming {out} from epoch {start_epoch}/{epochs} (step {start_epoch * per_epoch})")
    if start_epoch < epochs:
        ds = train_dataset(cfg.data, cfg.train.batch_size, cfg.seed, start_step=start_epoch * per_epoch)
        checkpoint = RunCheckpoint(state_dir, per_epoch, watch=watch,
                                   export=lambda m: save_atomic(network, out / "checkpoints" / "last.keras"))
        callbacks = [checkpoint, keras.callbacks.TensorBoard(str(out / "logs"), update_freq=50),
                     StepTimer(out / "timing.json", cfg.train.batch_size), *extra_callbacks]
        model.fit(ds, epochs=epochs, initial_epoch=start_epoch, steps_per_epoch=per_epoch, callbacks=callbacks,
                  verbose=fit_verbose(verbose), shuffle=False)
        checkpoint.raise_if_diverged()
    save_atomic(network, out / "model.keras")


def train(cfg: RunConfig, fresh: bool = False, verbose: int = 1, extra_callbacks=()) -> dict:
    """Trains ``cfg.model`` on ``cfg.data`` (resuming from ``train.out_dir``), saves and evaluates it.

    Returns the validation scores written to ``eval.json``.
    """
    with run_directory(Path(cfg.train.out_dir), cfg.model_dump_json(indent=2), fresh) as out:
        return _train(cfg, out, verbose, extra_callbacks)


def _train(cfg: RunConfig, out: Path, verbose: int, extra_callbacks) -> dict:
    keras.utils.set_random_seed(cfg.seed)
    setup_precision(cfg.train)

    network = build_model(cfg.model, cfg.data.num_classes, cfg.data.crop_size, pipeline=(cfg.data.mean, cfg.data.std))
    trainer = SegmentationTrainer(network, cfg.data.num_classes, cfg.data.ignore_label,
                                  cfg.train.aux_weight, global_batch_size=cfg.train.batch_size)
    optimizer = make_optimizer(cfg.train)
    trainer.compile(optimizer=optimizer, jit_compile=cfg.train.jit_compile)
    trainer.build_optimizer()  # before fit: resuming restores its state

    fit_resumable(trainer, network, cfg, out, verbose=verbose, extra_callbacks=extra_callbacks)
    scores = evaluate_network(network, cfg.data, cfg.eval.batch_size, progress=verbose > 0)
    write_json(out / "eval.json", scores)
    return scores
