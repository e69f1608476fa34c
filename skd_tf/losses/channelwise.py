"""Channel-wise distillation (CWD, Shu et al., ICCV 2021; SPEC §3)."""

from __future__ import annotations

import keras
import tensorflow as tf

from skd_tf.losses.base import DistillationLoss, resize_to


class ChannelwiseDistillation(DistillationLoss):
    """L_cwd = τ²/C · Σ_c KL(p_c^T ‖ p_c^S), p_c = softmax over the h·w positions of channel c / τ.

    τ = 4 by default (CIRKD). Averaged over the global batch (the N_batch of the
    definition). Reads the logits by default (``reads="features"`` for feature
    maps); when the student has other channels than the teacher, pass
    ``align_channels`` (the teacher's count) to map them with a trainable 1×1
    convolution first. Student maps at another resolution are resized to the
    teacher's.
    """

    def __init__(self, temperature: float = 4.0, reads: str = "logits", align_channels: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.temperature = float(temperature)
        self.reads = reads
        self.align_channels = align_channels
        self.align = keras.layers.Conv2D(align_channels, 1, name="align", dtype="float32") if align_channels else None

    def per_example(self, student, teacher, labels=None, images=None):
        if self.align is not None:
            student = self.align(student)
        if student.shape[-1] != teacher.shape[-1]:
            raise ValueError(f"CWD: student has {student.shape[-1]} channels, teacher {teacher.shape[-1]}; "
                             f"set align_channels={teacher.shape[-1]}")
        student = resize_to(student, teacher)
        tau = self.temperature
        shape = tf.shape(teacher)
        # B×C×(h·w): one distribution over positions per channel
        s = tf.reshape(tf.transpose(student, [0, 3, 1, 2]), [shape[0], shape[3], -1]) / tau
        t = tf.reshape(tf.transpose(teacher, [0, 3, 1, 2]), [shape[0], shape[3], -1]) / tau
        log_p_t = tf.nn.log_softmax(t, -1)
        log_p_s = tf.nn.log_softmax(s, -1)
        kl = tf.reduce_sum(tf.exp(log_p_t) * (log_p_t - log_p_s), -1)  # B×C
        return tau * tau * tf.reduce_mean(kl, -1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "reads": self.reads,
                "align_channels": self.align_channels}
