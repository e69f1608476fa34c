"""``Distiller``: structured knowledge distillation as a Keras model trained with ``fit``."""

from __future__ import annotations

import keras
import tensorflow as tf

from skd_tf.evaluation.metrics import MeanIoU
from skd_tf.losses.base import DistillationLoss
from skd_tf.losses.holistic import HolisticDistillation
from skd_tf.models.logits import logits_align_corners
from skd_tf.models.outputs import FeatureSource, segmentation_outputs
from skd_tf.training.custom_fit import Prebuilt, record_step
from skd_tf.training.trainer import supervised_losses


def scale_gradient(x: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """``x`` in the forward pass (exactly); ``scale`` × the incoming gradient in the backward pass."""
    frozen = tf.stop_gradient(x)
    return frozen + tf.cast(scale, x.dtype) * (x - frozen)


class Distiller(Prebuilt, keras.Model):
    """Trains ``student`` against a frozen ``teacher`` (SPEC §1.3–1.4).

    Per batch, ``train_step``:
      1. runs the teacher in inference mode (no gradient);
      2. runs the student (training mode);
      3. when ``holistic`` is set, makes ``n_critic`` critic updates with the
         critic's own optimizer on the student map with gradients stopped,
         minimising ``critic_loss_weight`` × the critic objective (the reference
         code scales it by λ_ho; the logged ``critic`` is the unscaled objective);
      4. updates the student (and the trainable parts of the losses, such as
         adapters) on  L = CE + aux_weight·CE_aux + Σ_k λ_k·L_k − λ_ho·E[D(Q^S|I)],
         the critic term scored by the just-updated critic.
    With ``rampup_steps`` R > 0 the gradient the *student* receives from every distillation term (λ_ho's
    included) is multiplied by min(1, (t + 1)/R) at step t, so the labels alone drive the first steps and the
    terms reach their weights at step R; the terms' own trainable parts (knowledge adaptation's adapter,
    FitNet's regressor, a channel-aligning conv) learn at full weight from the first step, so the gradient
    they pass on is already meaningful when it starts to count. The logged ``loss`` is CE + Σ_k λ_k·L_k.
    ``losses`` maps a name to ``(loss, λ)`` or to a loss (λ = 1); a list of losses or ``(loss, λ)`` pairs is
    named by each loss's ``name``. Each term (unweighted), the total,
    the critic loss and the critic's Wasserstein estimate E[D(Q^T)] − E[D(Q^S)]
    are metrics, so they appear in the progress bar and in TensorBoard.

    Models: this project's (dict outputs ``logits``, ``features``, optional ``aux_logits``) as they are;
    any functional Keras model whose output is a logits tensor, with its features read from the layer named
    by ``teacher_features`` / ``student_features`` or by a function of the model
    (``skd_tf.models.segmentation_outputs``). ``num_classes`` defaults to the student's logits' last axis.
    ``critic_loss_weight`` None scales the critic's objective by ``holistic_weight`` (the reference code's
    λ_ho, as the configs do). ``global_batch_size`` (the batch of one step over all replicas) is given to
    every loss, which must not have been given another; None keeps each loss's own (one device).
    Compile with ``compile(optimizer=..., critic_optimizer=...)``; a student with a static input size has
    every variable built by ``compile``, otherwise call ``build_state((H, W, 3))`` before ``fit``.
    """

    def __init__(self, teacher: keras.Model, student: keras.Model, losses=None, num_classes: int | None = None,
                 holistic: HolisticDistillation | None = None, holistic_weight: float = 0.1, n_critic: int = 1,
                 ignore_label: int = 255, aux_weight: float = 0.4, global_batch_size: int | None = None,
                 critic_loss_weight: float | None = None, rampup_steps: int = 0,
                 teacher_features: FeatureSource = None, student_features: FeatureSource = None, **kwargs):
        super().__init__(**kwargs)
        self.teacher = segmentation_outputs(teacher, teacher_features, "teacher")
        self.teacher.trainable = False
        self.student = segmentation_outputs(student, student_features, "student")
        self.distill_losses = weighted_losses(losses)
        _check_outputs(self.distill_losses, self.teacher, self.student)
        for loss, _ in self.distill_losses.values():
            _set_global_batch(loss, global_batch_size)
        self.holistic = holistic
        if holistic is not None:
            _set_global_batch(holistic, global_batch_size)
        self.holistic_weight = holistic_weight
        self.n_critic = n_critic
        self.critic_loss_weight = holistic_weight if critic_loss_weight is None else critic_loss_weight
        self.rampup_steps = int(rampup_steps)
        self.ignore_label = ignore_label
        self.aux_weight = aux_weight
        self.global_batch_size = global_batch_size
        self.has_aux = "aux_logits" in self.student.output
        names = ["loss", "ce"] + (["aux_ce"] if self.has_aux else [])
        for name, (loss, _) in self.distill_losses.items():
            names += list(loss.component_names()) or [name]
        if holistic is not None:
            names += ["holistic", "critic", "wasserstein"]
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        if num_classes is None:
            num_classes = int(self.student.output["logits"].shape[-1])
        self.align_corners = logits_align_corners(self.student)  # how its logits reach label size
        self.miou = MeanIoU(num_classes, ignore_label, name="miou", align_corners=self.align_corners)
        self.critic_optimizer = None

    @property
    def term_names(self) -> list[str]:
        """Every logged quantity, the total last (checked for NaN in this order, so the first
        non-finite *term* is the one reported)."""
        return [n for n in self.trackers if n != "loss"] + ["loss"]

    @property
    def metrics(self):
        return list(self.trackers.values()) + [self.miou]

    def compile(self, optimizer, critic_optimizer=None, **kwargs):
        """Keras' ``compile`` with the critic's own optimizer (needed when there is a holistic term); builds
        every variable when the student's input size is static."""
        if self.holistic is not None and critic_optimizer is None:
            raise ValueError("a holistic term needs compile(critic_optimizer=...)")
        super().compile(optimizer=optimizer, **kwargs)
        self.critic_optimizer = critic_optimizer
        shape = tuple(self.student.input.shape[1:])
        if all(d is not None for d in shape):
            self.build_state(shape)

    def call(self, images, training=False):
        return self.student(images, training=training)

    def frozen_parts(self) -> list:
        """What the run state leaves out (skd_tf.training.checkpointing): the frozen teacher, never trained and
        loaded from its own file at every start."""
        return [self.teacher]

    @property
    def student_variables(self) -> list:
        """The student's trainable variables and those of the losses (adapters), not the critic's."""
        variables = list(self.student.trainable_variables)
        for loss, _ in self.distill_losses.values():
            variables += loss.trainable_variables
        return variables

    @property
    def trained_variables(self) -> list:
        return self.student_variables

    def build_state(self, image_shape) -> None:
        """Creates every variable eagerly (models, losses, critic, optimizers) before ``fit``; once."""
        if self.built and self.optimizer.built:
            return
        images = tf.zeros((2, *image_shape))
        labels = tf.zeros((2, *image_shape[:2]), tf.int32)
        # The models are built: compiled, their calls create nothing, and they free each layer's output once
        # used — called eagerly they keep all of them (15 GiB for a ResNet-101 teacher on two 769×769 crops).
        s_out, t_out = tf.function(lambda x: (self.student(x), self.teacher(x)))(images)
        for loss, _ in self.distill_losses.values():
            loss(s_out, t_out, labels=labels, images=images)
        self.optimizer.build(self.student_variables)
        if self.holistic is not None:
            self.holistic.critic_loss(s_out, t_out, images)
            self.critic_optimizer.build(self.holistic.critic.trainable_variables)
        self.built = True

    def distillation_scale(self):
        """The factor on every λ at the current step: min(1, (t + 1)/rampup_steps), or 1 without a ramp."""
        if not self.rampup_steps:
            return tf.constant(1.0)
        step = tf.cast(self.optimizer.iterations + 1, tf.float32)
        return tf.minimum(1.0, step / float(self.rampup_steps))

    def _critic_step(self, student_logits, teacher_logits, images):
        variables = self.holistic.critic.trainable_variables
        with tf.GradientTape() as tape:
            loss = self.holistic.critic_loss(student_logits, teacher_logits, images,
                                             step=self.critic_optimizer.iterations)
            scaled = self.critic_loss_weight * loss
        self.critic_optimizer.apply(tape.gradient(scaled, variables), variables)
        return loss

    def _terms(self, s_out, t_out, labels, images, training: bool) -> tuple[dict, tf.Tensor]:
        """All loss terms (each averaged over the global batch) and the weighted total; the distillation terms
        read the student's outputs through ``scale_gradient`` (the ramp-up). ``training`` is the mode of the
        losses' own layers (knowledge adaptation's adapter and its batch norm): off in evaluation, which must
        change no variable."""
        terms, total = supervised_losses(s_out, labels, self.ignore_label, self.aux_weight, self.global_batch_size,
                                         self.align_corners)
        if self.rampup_steps:
            scale = self.distillation_scale()
            s_out = tf.nest.map_structure(lambda x: scale_gradient(x, scale), s_out)
        for name, (loss, weight) in self.distill_losses.items():
            if loss.component_names():
                parts = loss.components(s_out, t_out, training=training)
                terms.update(parts)
                value = loss.combine(parts)
            else:
                value = loss(s_out, t_out, labels=labels, images=images)
                terms[name] = value
            total += weight * value
        if self.holistic is not None:
            terms["holistic"] = self.holistic(s_out, t_out, images=images)  # −E[D(Q^S|I)]
            total += self.holistic_weight * terms["holistic"]
        return terms, total

    def train_step(self, data):
        images, labels = data[0], data[1]  # (x, y) or, from train_on_batch / evaluate, (x, y, sample_weight)
        t_out = tf.nest.map_structure(tf.stop_gradient, self.teacher(images, training=False))
        variables = self.student_variables
        extra = {}
        with tf.GradientTape() as tape:
            s_out = self.student(images, training=True)
            if self.holistic is not None:
                with tape.stop_recording():
                    for _ in range(self.n_critic):
                        extra["critic"] = self._critic_step(s_out["logits"], t_out["logits"], images)
                    extra["wasserstein"] = self.holistic.wasserstein_estimate(s_out, t_out, images)
            terms, total = self._terms(s_out, t_out, labels, images, training=True)
            scaled = self.optimizer.scale_loss(total)
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._record({**terms, **extra, "loss": total}, labels, s_out["logits"])

    def test_step(self, data):
        images, labels = data[0], data[1]  # (x, y) or, from train_on_batch / evaluate, (x, y, sample_weight)
        s_out, t_out = self.student(images, training=False), self.teacher(images, training=False)
        terms, total = self._terms(s_out, t_out, labels, images, training=False)
        return self._record({**terms, "loss": total}, labels, s_out["logits"])

    def _record(self, values: dict, labels, logits) -> dict:
        return record_step(self.trackers, values, self.miou, labels, logits)


def weighted_losses(losses) -> dict:
    """``{name: (loss, λ)}`` from a dict of losses or ``(loss, λ)`` pairs, or a list of either (named by
    ``loss.name``); λ defaults to 1."""
    if losses is None:
        return {}
    items = losses.items() if isinstance(losses, dict) else [(None, entry) for entry in losses]
    result = {}
    for name, entry in items:
        loss, weight = entry if isinstance(entry, tuple) else (entry, 1.0)
        if not isinstance(loss, DistillationLoss):
            raise TypeError(f"losses: {name or entry!r} is not a loss layer (skd_tf.losses.PixelwiseDistillation(), "
                            f"or your own subclass of skd_tf.losses.DistillationLoss)")
        if isinstance(loss, HolisticDistillation):
            raise ValueError("the holistic term goes in Distiller(holistic=..., holistic_weight=λ), not in losses: "
                             "it has its own critic and optimizer")
        name = name or loss.name
        if name in result:
            raise ValueError(f"losses: two losses are named {name!r}; name them (a dict, or name=...)")
        result[name] = (loss, float(weight))
    return result


def _check_outputs(losses: dict, teacher, student) -> None:
    """Every loss that reads features finds them in both models' outputs."""
    for name, (loss, _) in losses.items():
        if "features" in loss.reads:
            for role, model in (("teacher", teacher), ("student", student)):
                if "features" not in model.output:
                    raise ValueError(f"loss {name!r} reads features, and the {role} has none: give "
                                     f"Distiller({role}_features=<layer name or function of the model>)")


def _set_global_batch(loss, global_batch_size: int | None) -> None:
    if global_batch_size is None:
        return
    own = getattr(loss, "global_batch_size", None)
    if own is not None and own != global_batch_size:
        raise ValueError(f"{loss.name} was made with global_batch_size={own}, the Distiller with "
                         f"{global_batch_size}: give it once, to the Distiller")
    loss.global_batch_size = global_batch_size
