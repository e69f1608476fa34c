"""``Distiller``: structured knowledge distillation as a Keras model trained with ``fit``."""

from __future__ import annotations

import keras
import tensorflow as tf

from skd_tf.evaluation.metrics import MeanIoU
from skd_tf.losses.holistic import HolisticDistillation
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
    ``losses`` maps a name to ``(loss, λ)``. Each term (unweighted), the total,
    the critic loss and the critic's Wasserstein estimate E[D(Q^T)] − E[D(Q^S)]
    are metrics, so they appear in the progress bar and in TensorBoard.
    Compile with ``compile(optimizer=..., critic_optimizer=...)``.
    """

    def __init__(self, teacher: keras.Model, student: keras.Model, losses: dict, num_classes: int,
                 holistic: HolisticDistillation | None = None, holistic_weight: float = 0.1, n_critic: int = 1,
                 ignore_label: int = 255, aux_weight: float = 0.4, global_batch_size: int | None = None,
                 critic_loss_weight: float = 1.0, rampup_steps: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.teacher = teacher
        self.teacher.trainable = False
        self.student = student
        self.distill_losses = dict(losses)
        for loss, _ in self.distill_losses.values():
            loss.global_batch_size = global_batch_size
        self.holistic = holistic
        if holistic is not None:
            holistic.global_batch_size = global_batch_size
        self.holistic_weight = holistic_weight
        self.n_critic = n_critic
        self.critic_loss_weight = critic_loss_weight
        self.rampup_steps = int(rampup_steps)
        self.ignore_label = ignore_label
        self.aux_weight = aux_weight
        self.global_batch_size = global_batch_size
        self.has_aux = "aux_logits" in student.output
        names = ["loss", "ce"] + (["aux_ce"] if self.has_aux else [])
        for name, (loss, _) in self.distill_losses.items():
            names += list(loss.component_names()) if hasattr(loss, "component_names") else [name]
        if holistic is not None:
            names += ["holistic", "critic", "wasserstein"]
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.miou = MeanIoU(num_classes, ignore_label, name="miou")
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
        super().compile(optimizer=optimizer, **kwargs)
        if self.holistic is not None and critic_optimizer is None:
            raise ValueError("a holistic term needs compile(critic_optimizer=...)")
        self.critic_optimizer = critic_optimizer

    def call(self, images, training=False):
        return self.student(images, training=training)

    @property
    def student_variables(self) -> list:
        """The student's trainable variables and those of the losses (adapters), not the critic's."""
        variables = list(self.student.trainable_variables)
        for loss, _ in self.distill_losses.values():
            variables += loss.trainable_variables
        return variables

    def build_state(self, image_shape) -> None:
        """Creates every variable eagerly (models, losses, critic, optimizers) before ``fit``."""
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
        terms, total = supervised_losses(s_out, labels, self.ignore_label, self.aux_weight, self.global_batch_size)
        if self.rampup_steps:
            scale = self.distillation_scale()
            s_out = tf.nest.map_structure(lambda x: scale_gradient(x, scale), s_out)
        for name, (loss, weight) in self.distill_losses.items():
            if hasattr(loss, "components"):
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
        images, labels = data
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
        images, labels = data
        s_out, t_out = self.student(images, training=False), self.teacher(images, training=False)
        terms, total = self._terms(s_out, t_out, labels, images, training=False)
        return self._record({**terms, "loss": total}, labels, s_out["logits"])

    def _record(self, values: dict, labels, logits) -> dict:
        return record_step(self.trackers, values, self.miou, labels, logits)
