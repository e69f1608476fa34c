"""The two feature baselines the paper compares pair-wise distillation against."""

from __future__ import annotations

import keras
import tensorflow as tf

from skd_tf.losses.base import DistillationLoss, l2_normalize, resize_to
from skd_tf.models.layers import cell_averaging_matrix


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


def adaptive_average_pool(feature_map, size):
    """Average-pools a B×H×W×C map to at most ``size`` = (h, w) per axis (only axes larger than
    the target shrink), with torch's adaptive cells [⌊ih/n⌋, ⌈(i+1)H/n⌉). Needs static H and W."""
    height, width = feature_map.shape[1], feature_map.shape[2]
    if height is None or width is None:
        raise ValueError("adaptive_average_pool needs static spatial sizes")
    h, w = min(height, int(size[0])), min(width, int(size[1]))
    if (h, w) == (height, width):
        return feature_map
    rows = tf.constant(cell_averaging_matrix(height, h), feature_map.dtype)
    cols = tf.constant(cell_averaging_matrix(width, w), feature_map.dtype)
    return tf.einsum("ih,jw,bhwc->bijc", rows, cols, feature_map)


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
            student, teacher = adaptive_average_pool(student, teacher.shape[1:3]), \
                adaptive_average_pool(teacher, student.shape[1:3])
        else:
            student = resize_to(student, teacher)
        return tf.reduce_mean(tf.square(attention_map(student, self.p) - attention_map(teacher, self.p)), -1)

    def get_config(self):
        return {**super().get_config(), "p": self.p, "match": self.match}
