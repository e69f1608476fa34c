"""The two feature baselines the paper compares pair-wise distillation against."""

from __future__ import annotations

import keras
import tensorflow as tf

from skd_tf.losses.base import DistillationLoss, l2_normalize, resize_to
from skd_tf.models.layers import adaptive_average_pool


class FitNetDistillation(DistillationLoss):
    """L_fit = (1/(h·w·C_T)) Σ (W·F_S − F_T)², W a trainable 1×1 convolution to the teacher's channels.

    FitNets-style feature mimicking ("MIMIC" in the paper's Table 2) on the head
    features; the student map is resized to the teacher's when they differ.
    """

    reads = "features"

    def __init__(self, teacher_channels: int, **kwargs):
        super().__init__(**kwargs)
        self.teacher_channels = teacher_channels
        self.adapter = keras.layers.Conv2D(teacher_channels, 1, name="adapter", dtype="float32")

    def per_example(self, student, teacher, labels=None, images=None):
        adapted = resize_to(self.adapter(student), teacher)
        return tf.reduce_mean(tf.square(adapted - teacher), axis=[1, 2, 3])

    def get_config(self):
        return {**super().get_config(), "teacher_channels": self.teacher_channels}


def attention_map(feature_map, p: float = 2.0):
    """Q = normalise(mean_c |F_c|^p) flattened over positions (Zagoruyko & Komodakis 2017)."""
    attention = tf.reduce_mean(tf.pow(tf.abs(feature_map), p), axis=-1)
    shape = tf.shape(attention)
    return l2_normalize(tf.reshape(attention, [shape[0], shape[1] * shape[2]]))


class AttentionTransfer(DistillationLoss):
    """L_at = (1/(h·w)) Σ_j (Q_S,j − Q_T,j)², Q = attention_map(F, p), p = 2 (RepDistiller's form).

    Channel counts may differ (the attention map has one channel). When the maps' sizes differ,
    ``match="resize_student"`` (default) resizes the student's features bilinearly to the teacher's
    size; ``match="pool_larger"`` is RepDistiller's choice: the larger feature map is
    adaptive-average-pooled (as torch's ``adaptive_avg_pool2d``) down to the smaller one's size.
    """

    reads = "features"

    def __init__(self, p: float = 2.0, match: str = "resize_student", **kwargs):
        super().__init__(**kwargs)
        if match not in ("resize_student", "pool_larger"):
            raise ValueError(f"match must be 'resize_student' or 'pool_larger', got {match!r}")
        self.p = p
        self.match = match

    def per_example(self, student, teacher, labels=None, images=None):
        if self.match == "pool_larger":
            student, teacher = _pool_to_smaller(student, teacher), _pool_to_smaller(teacher, student)
        else:
            student = resize_to(student, teacher)
        return tf.reduce_mean(tf.square(attention_map(student, self.p) - attention_map(teacher, self.p)), -1)

    def get_config(self):
        return {**super().get_config(), "p": self.p, "match": self.match}


def _pool_to_smaller(x, other):
    """``x`` adaptive-average-pooled down to ``other``'s size along each axis where ``x`` is larger."""
    return adaptive_average_pool(x, (min(x.shape[1], other.shape[1]), min(x.shape[2], other.shape[2])))
