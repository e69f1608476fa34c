"""Bringing a network's class scores to the size of its labels."""

from __future__ import annotations

import tensorflow as tf


def upsample_logits(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Bilinearly resizes B×h×w×K logits to the B×H×W size of ``labels`` (no-op when equal)."""
    size = labels.shape[1:3]
    if size.is_fully_defined():
        if tuple(logits.shape[1:3]) == tuple(size):
            return logits
        return tf.image.resize(logits, size, method="bilinear")
    return tf.image.resize(logits, tf.shape(labels)[1:3], method="bilinear")
