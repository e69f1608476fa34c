"""Pixel-wise distillation (SPEC §1.1)."""

from __future__ import annotations

import tensorflow as tf

from skd_tf.losses.base import DistillationLoss, resize_to


def valid_pixel_mask(labels, size, ignore_label: int):
    """B×h×w float mask of pixels whose (nearest-neighbour downsampled) label is not ignored."""
    labels = tf.image.resize(tf.cast(labels, tf.int32)[..., None], size, method="nearest")[..., 0]
    return tf.cast(tf.not_equal(labels, ignore_label), tf.float32)


class PixelwiseDistillation(DistillationLoss):
    """L_pi = τ² · (1/N) Σ_i KL(q_i^T ‖ q_i^S), q = softmax(z/τ) over the K classes of pixel i.

    The paper's form (KL averaged over the N = h·w pixels of each image, then over
    the global batch; τ = 1 by default, as in the paper and the reference code).
    The reference code divides by h·w only and so grows with the batch size; this
    averages over the batch too. With ``ignore_label`` set and labels given, the
    pixels whose label (downsampled nearest-neighbour to the logits' size) is the
    ignore label are left out and N counts the others. Student logits at another
    resolution are resized to the teacher's.

    The reference code's value is the cross-entropy Σ_i −q_i^T·log q_i^S / (h·w);
    KL = cross-entropy − H(q^T), and the teacher's entropy H(q^T) does not depend
    on the student: same gradient, values lower by (1/N) Σ_i H(q_i^T) per image.
    """

    reads = "logits"

    def __init__(self, temperature: float = 1.0, ignore_label: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.temperature = float(temperature)
        self.ignore_label = ignore_label

    def per_example(self, student, teacher, labels=None, images=None):
        student = resize_to(student, teacher)
        tau = self.temperature
        log_p_t = tf.nn.log_softmax(teacher / tau, axis=-1)
        log_p_s = tf.nn.log_softmax(student / tau, axis=-1)
        kl = tf.reduce_sum(tf.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)  # B×h×w
        if self.ignore_label is not None and labels is not None:
            mask = valid_pixel_mask(labels, tf.shape(kl)[1:3], self.ignore_label)
            per_image = tf.reduce_sum(kl * mask, axis=[1, 2]) / tf.maximum(tf.reduce_sum(mask, axis=[1, 2]), 1.0)
        else:
            per_image = tf.reduce_mean(kl, axis=[1, 2])
        return tau * tau * per_image

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "ignore_label": self.ignore_label}
