"""``distill(config)``: end-to-end distillation of the config's student from a saved teacher.

Run directory (``train.out_dir``; a non-chief multi-worker task writes to ``worker<i>/`` in it)::

    state/                     resumable state: student, losses, critic and both optimizers + epoch
    autoencoder.weights.h5     knowledge adaptation stage 1 (trained once, then reused)
    checkpoints/last.keras     the student after the last finished epoch
    model.keras                the distilled student
    critic.weights.h5          the critic, when a holistic term is used
    eval.json                  the student's validation scores
    logs/                      TensorBoard (every loss term, the critic loss, the Wasserstein estimate)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import tensorflow as tf

from skd_tf.atomic import atomic_path
from skd_tf.config import RunConfig
from skd_tf.data import train_dataset, val_dataset
from skd_tf.distill.config import DistillConfig, parse_distill
from skd_tf.distill.diagnostics import GradientShareLogger, read_gradient_shares, teacher_distances
from skd_tf.distill.distiller import Distiller
from skd_tf.evaluation import evaluate_network
from skd_tf.losses import LOSSES, pretrain_autoencoder
from skd_tf.models import at_input_size, build_model, load_model
from skd_tf.training.checkpointing import DamagedState
from skd_tf.training.run import fit_resumable, make_optimizer, run_directory, setup_precision, write_json


def make_strategy(name: str) -> tf.distribute.Strategy:
    """default: one device; mirrored: every GPU, or every logical CPU when there is none;
    multi_worker: the cluster described by TF_CONFIG."""
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy multi_worker needs the TF_CONFIG environment variable (cluster and task)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def worker_dir(out: Path, strategy: tf.distribute.Strategy) -> Path:
    """The chief (or a single process) writes to ``out``; every other worker to ``out/<task><id>``."""
    if getattr(strategy.extended, "should_checkpoint", True):
        return out
    resolver = strategy.cluster_resolver
    return out / f"{resolver.task_type}{resolver.task_id}"


def load_teacher(path: str, num_classes: int, input_size, data=None) -> keras.Model:
    """The frozen teacher at the training input size, fed ``data``'s normalisation converted to its own
    input convention when it has one; errors name the file and the mismatch."""
    teacher = load_model(path, data)
    classes = int(teacher.output["logits"].shape[-1])
    if classes != num_classes:
        raise ValueError(f"teacher {path} predicts {classes} classes but the student config has {num_classes}")
    teacher = at_input_size(teacher, input_size)
    teacher.trainable = False
    return teacher


def build_losses(dcfg: DistillConfig, teacher: keras.Model, student: keras.Model) -> dict:
    """``{name: (loss, λ)}`` for every configured loss, with the arguments that depend on the models
    (each registry entry's ``model_arguments``)."""
    return {name: (LOSSES[name].build(spec.options, teacher, student, dcfg.knowledge_adaptation), spec.weight)
            for name, spec in dcfg.losses.items()}


def _optimizers(cfg: RunConfig, dcfg: DistillConfig):
    student_opt = make_optimizer(cfg.train)
    critic_opt = None
    if dcfg.holistic is not None:
        h = dcfg.holistic
        schedule = keras.optimizers.schedules.PolynomialDecay(
            h.learning_rate, decay_steps=cfg.train.steps * h.n_critic, end_learning_rate=0.0,
            power=cfg.train.poly_power)
        if h.optimizer == "adam":
            critic_opt = keras.optimizers.Adam(schedule, beta_1=h.momentum, beta_2=0.9,
                                               weight_decay=h.weight_decay or None)
        else:
            critic_opt = keras.optimizers.SGD(schedule, momentum=h.momentum, weight_decay=h.weight_decay or None)
    return student_opt, critic_opt


def distill(cfg: RunConfig, fresh: bool = False, verbose: int = 1, extra_callbacks=()) -> dict:
    """Distils ``cfg.model`` from ``distill.teacher`` on ``cfg.data``; resumes from ``train.out_dir``.

    Returns the student's validation scores with its distances to the teacher (``teacher_distance``, unless
    ``distill.teacher_distances`` is false) and the gradient shares sampled during training
    (``gradient_share``); also written to ``eval.json``.
    """
    dcfg = parse_distill(cfg.distill, cfg.origin)
    strategy = make_strategy(dcfg.strategy)  # first: multi-worker must start before other TF work
    keras.utils.set_random_seed(cfg.seed)
    setup_precision(cfg.train)
    out = worker_dir(Path(cfg.train.out_dir), strategy)
    with run_directory(out, json.dumps(cfg.model_dump(), indent=2), fresh):
        return _distill(cfg, dcfg, strategy, out, verbose, extra_callbacks)


def _distill(cfg: RunConfig, dcfg, strategy, out: Path, verbose: int, extra_callbacks) -> dict:
    size = tuple(cfg.data.crop_size)

    with strategy.scope():
        # the student first, straight after the seed: it starts from the weights (and dropout seeds) that
        # `skd-tf train` gives the baseline under the same seed, so a distilled row and the baseline differ only
        # by the distillation terms (loading the teacher draws from the same global generator)
        student = build_model(cfg.model, cfg.data.num_classes, size, name="student",
                              pipeline=(cfg.data.mean, cfg.data.std))
        teacher = load_teacher(dcfg.teacher, cfg.data.num_classes, size, cfg.data)
        losses = build_losses(dcfg, teacher, student)
        holistic = None
        if dcfg.holistic is not None:
            holistic = dcfg.holistic.build(cfg.seed)
        distiller = Distiller(teacher, student, losses, cfg.data.num_classes, holistic,
                              dcfg.holistic.weight if holistic else 0.0,
                              dcfg.holistic.n_critic if holistic else 1,
                              cfg.data.ignore_label, cfg.train.aux_weight, cfg.train.batch_size,
                              critic_loss_weight=dcfg.holistic.critic_scale if holistic else 1.0,
                              rampup_steps=dcfg.rampup_steps)
        student_opt, critic_opt = _optimizers(cfg, dcfg)
        distiller.compile(optimizer=student_opt, critic_optimizer=critic_opt, jit_compile=cfg.train.jit_compile)

    autoencoder_report = _pretrain_ka(cfg, dcfg, teacher, losses["ka"][0], out, strategy, verbose) \
        if "ka" in losses else None

    callbacks = list(extra_callbacks)
    if dcfg.diagnostics_every:
        batch = next(iter(train_dataset(cfg.data, cfg.train.batch_size, cfg.seed + 7)))
        callbacks.append(GradientShareLogger(distiller, batch, dcfg.diagnostics_every, out))
    fit_resumable(distiller, student, cfg, out, watch=distiller.term_names if dcfg.nan_check else (),
                  verbose=verbose, extra_callbacks=callbacks)
    if holistic is not None:
        with atomic_path(out / "critic.weights.h5") as tmp:
            holistic.critic.save_weights(str(tmp))
    scores = evaluate_network(student, cfg.data, cfg.eval.batch_size, progress=verbose > 0)
    if dcfg.teacher_distances:
        scores["teacher_distance"] = teacher_distances(student, teacher, cfg.data, cfg.eval.batch_size,
                                                       holistic=holistic)
    scores["gradient_share"] = read_gradient_shares(out)
    if autoencoder_report is not None:
        scores["autoencoder"] = autoencoder_report
    write_json(out / "eval.json", scores)
    return scores


def _pretrain_ka(cfg, dcfg, teacher, ka_loss, out: Path, strategy, verbose) -> dict:
    """Knowledge adaptation stage 1, run once: train the auto-encoder on the teacher's features.

    Returns (and keeps in ``autoencoder.json``) its reconstruction quality during and after training,
    measured on 4 validation batches (``autoencoder_quality``).
    """
    path, report = out / "autoencoder.weights.h5", out / "autoencoder.json"
    autoencoder = ka_loss.autoencoder
    quality = {}
    if path.is_file():
        try:
            autoencoder.load_weights(str(path))
        except Exception as err:  # a truncated or foreign file
            raise DamagedState(path, err) from None
        quality = json.loads(report.read_text()) if report.is_file() else {}
    else:
        k = dcfg.knowledge_adaptation
        if verbose:
            print(f"knowledge adaptation stage 1: training the auto-encoder for {k.pretrain_steps} steps")
        ds = train_dataset(cfg.data, cfg.train.batch_size, cfg.seed + 1).map(lambda x, y: x)
        probe_ds, _ = val_dataset(cfg.data, cfg.train.batch_size, limit=4 * cfg.train.batch_size)
        probe = [images for images, _ in probe_ds]
        autoencoder.trainable = True
        with strategy.scope():
            result = pretrain_autoencoder(teacher, autoencoder, ds, k.pretrain_steps, k.pretrain_learning_rate,
                                          verbose=verbose, alpha=k.alpha, probe_batches=probe)
        with atomic_path(path) as tmp:
            autoencoder.save_weights(str(tmp))
        quality = {"final": result["curve"][-1], "curve": result["curve"], "last_loss": result["loss"]}
        write_json(report, quality)
        if verbose:
            final = quality["final"]
            print(f"auto-encoder: relative reconstruction error {final['relative_reconstruction_error']:.3f}, "
                  f"dead code channels {100 * final['dead_code_channels']:.0f} %")
    autoencoder.trainable = False
    return quality
