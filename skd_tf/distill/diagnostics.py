"""Diagnostics that say why a distillation term helps or not.

* ``gradient_norms``: ‖∇_θ(λ_k·L_k)‖₂ over the student's trainable variables for the supervised
  cross-entropy (CE + aux) and for each weighted distillation term. Their ratio to CE's
  (``gradient_shares``) tells whether a term is drowned out (≪ 1) or drowns out the labels (≫ 1).
  ``GradientShareLogger`` samples them every N steps on one fixed training batch, writes them to
  TensorBoard (``logs/diagnostics``) and appends them to ``gradient_shares.jsonl`` (kept across resumes).
* ``teacher_distances``: how far a student is from its teacher on the validation split under each
  criterion — pixel-wise KL, pair-wise distance, and (given a trained critic) the critic's
  Wasserstein estimate E[D(Q^T)] − E[D(Q^S)] — for any student, the baseline included. If the
  baseline's pair-wise distance is already small, or pixel-wise alone closes it, the pair-wise
  term cannot add much by construction.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from skd_tf.config import DataConfig, RunConfig
from skd_tf.data import val_dataset
from skd_tf.distill.config import parse_distill
from skd_tf.evaluation import compiled_for_any_batch, sized_batches
from skd_tf.losses import HolisticDistillation, PairwiseDistillation, PixelwiseDistillation
from skd_tf.training.trainer import supervised_losses


def gradient_norms(distiller, images, labels) -> dict[str, float]:
    """``{"ce": ‖∇CE‖, name: ‖∇(λ·L_name)‖, ["holistic": ‖∇(λ_ho·L_ho)‖]}`` on one batch.

    The student runs in training mode (as in a training step); its batch-norm statistics and every
    other non-trainable variable are restored afterwards, so sampling does not change training.
    The computation is one compiled function per distiller (traced at the first sample).
    """
    stateful = distiller.student.non_trainable_variables + [
        v for loss, _ in distiller.distill_losses.values() for v in loss.non_trainable_variables]
    saved = [v.numpy() for v in stateful]
    compute = getattr(distiller, "_gradient_norms_fn", None)
    if compute is None:
        compute = distiller._gradient_norms_fn = tf.function(lambda x, y: _weighted_term_norms(distiller, x, y))
    norms = {name: float(value) for name, value in compute(images, labels).items()}
    for v, value in zip(stateful, saved):
        v.assign(value)
    return norms


def _weighted_term_norms(distiller, images, labels) -> dict:
    variables = distiller.student.trainable_variables
    t_out = distiller.teacher(images, training=False)
    with tf.GradientTape(persistent=True) as tape:
        s_out = distiller.student(images, training=True)
        weighted = {"ce": supervised_losses(s_out, labels, distiller.ignore_label, distiller.aux_weight,
                                            distiller.global_batch_size, distiller.align_corners)[1]}
        scale = distiller.distillation_scale()  # the weights as the training step uses them
        for name, (loss, weight) in distiller.distill_losses.items():
            weighted[name] = scale * weight * loss(s_out, t_out, labels=labels, images=images)
        if distiller.holistic is not None:
            weighted["holistic"] = scale * distiller.holistic_weight * distiller.holistic(s_out, t_out, images=images)
    norms = {name: tf.linalg.global_norm([g for g in tape.gradient(value, variables) if g is not None])
             for name, value in weighted.items()}
    del tape
    return norms


def gradient_shares(norms: dict[str, float]) -> dict[str, float]:
    """Each distillation term's gradient norm divided by the cross-entropy's."""
    ce = norms["ce"]
    return {name: (value / ce if ce > 0 else float("inf")) for name, value in norms.items() if name != "ce"}


class GradientShareLogger(keras.callbacks.Callback):
    """Every ``every`` steps: gradient norms and shares on a fixed batch → TensorBoard and a JSONL file."""

    def __init__(self, distiller, batch, every: int, out: Path):
        super().__init__()
        self.distiller = distiller
        self.images, self.labels = batch
        self.every = int(every)
        self.path = Path(out) / "gradient_shares.jsonl"
        self.writer = tf.summary.create_file_writer(str(Path(out) / "logs" / "diagnostics"))

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.distiller.optimizer.iterations.numpy())
        if self.every <= 0 or step % self.every:
            return
        norms = gradient_norms(self.distiller, self.images, self.labels)
        shares = gradient_shares(norms)
        with self.writer.as_default(step=step):
            for name, value in shares.items():
                tf.summary.scalar(f"gradient_share/{name}", value)
            for name, value in norms.items():
                tf.summary.scalar(f"gradient_norm/{name}", value)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "norms": norms, "shares": shares}) + "\n")


def read_gradient_shares(out: Path) -> dict:
    """Summary of ``gradient_shares.jsonl``: per term the mean share over the run, and the last one."""
    path = Path(out) / "gradient_shares.jsonl"
    if not path.exists():
        return {}
    records = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            records[record["step"]] = record  # a resumed run may repeat a step: keep the last sample
    if not records:
        return {}
    ordered = [records[s] for s in sorted(records)]
    names = ordered[-1]["shares"].keys()
    return {"samples": len(ordered), "steps": [r["step"] for r in ordered],
            "mean": {n: float(np.mean([r["shares"][n] for r in ordered])) for n in names},
            "last": dict(ordered[-1]["shares"])}


def teacher_distances(student: keras.Model, teacher: keras.Model, data: DataConfig, batch_size: int = 8,
                      limit: int | None = None, holistic: HolisticDistillation | None = None) -> dict:
    """Mean distance of ``student`` to ``teacher`` over the validation split (both in inference mode).

    ``pixel_kl``: (1/N) Σ_i KL(p_i^T ‖ p_i^S) per image (τ = 1); ``pairwise``: the full-graph
    pair-wise distance of the head features (PairwiseDistillation's defaults); ``critic``: E[D(Q^T|I)]
    − E[D(Q^S|I)] under ``holistic``'s trained critic (only when given). Images are resized to the
    models' common input size (``data.eval_size`` rounded up to the output stride) as in evaluation.
    """
    ds, count = val_dataset(data, batch_size, limit)
    pixel, pairwise = PixelwiseDistillation(), PairwiseDistillation()

    def distances(s_net, t_net, images):
        s_out, t_out = s_net(images, training=False), t_net(images, training=False)
        out = {"pixel_kl": pixel(s_out, t_out), "pairwise": pairwise(s_out, t_out)}
        if holistic is not None:  # E[D(Q^T)] − E[D(Q^S)] over this batch
            out["critic"] = tf.reduce_mean(holistic.score(t_out["logits"], images)
                                           - holistic.score(s_out["logits"], images))
        return out

    # Compiled, as evaluation is: a functional model called eagerly keeps every layer's output until the
    # call returns — 24 GiB was not enough for a ResNet-101 teacher on one 1024×2048 image (real_size.py).
    compiled = {}
    sums = {"pixel_kl": 0.0, "pairwise": 0.0} | ({"critic": 0.0} if holistic is not None else {})
    for images, _, (s_net, t_net) in sized_batches([student, teacher], ds):
        key = (id(s_net), id(t_net))
        if key not in compiled:
            compiled[key] = compiled_for_any_batch(lambda x, s=s_net, t=t_net: distances(s, t, x), images)
        n = int(images.shape[0])
        for name, value in compiled[key](images).items():
            sums[name] += n * float(value)
    return {name: value / count for name, value in sums.items()}


def load_critic(cfg: RunConfig, weights: str) -> HolisticDistillation:
    """The holistic term of ``cfg``'s ``distill.holistic`` section with a trained critic's weights."""
    if not cfg.distill:
        raise ValueError(f"--critic needs a config with a distill.holistic section ({cfg.name} has no distill:)")
    dcfg = parse_distill(cfg.distill, cfg.origin)
    if dcfg.holistic is None:
        raise ValueError(f"--critic needs a config with a distill.holistic section ({cfg.name} has none)")
    if not Path(weights).is_file():
        raise FileNotFoundError(f"critic weights not found: {weights}")
    holistic = dcfg.holistic.build(cfg.seed)
    size = tuple(cfg.data.crop_size)
    holistic.score(tf.zeros((1, size[0] // 8, size[1] // 8, cfg.data.num_classes)), tf.zeros((1, *size, 3)))
    try:
        holistic.critic.load_weights(weights)
    except (ValueError, OSError) as err:
        raise ValueError(f"{weights} does not hold this config's critic ({err})") from None
    return holistic


def format_distances(distances: dict) -> str:
    """One line: the student's distances to the teacher."""
    names = {"pixel_kl": "pixel KL", "pairwise": "pair-wise", "critic": "critic W-estimate"}
    return "distance to the teacher: " + ", ".join(f"{names[k]} {v:.4g}" for k, v in distances.items())
