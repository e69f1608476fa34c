"""Per-pixel cross-entropy with an ignore label (the L_mc term of SPEC §1.4)."""

from __future__ import annotations

import tensorflow as tf

from skd_tf.models.logits import upsample_logits


def per_image_cross_entropy(logits: tf.Tensor, labels: tf.Tensor, ignore_label: int = 255,
                            align_corners: bool = False) -> tf.Tensor:
    """CE_b = (1/|V_b|) Σ_{p∈V_b} −log softmax(z_p)[y_p] for each image b.

    The logits are upsampled to the label size first (``upsample_logits``); V_b is the set of pixels of
    image b whose label is not ``ignore_label`` (an image with none gives 0).
    Returns a float32 vector of length B.
    """
    labels = tf.cast(labels, tf.int32)
    logits = upsample_logits(tf.cast(logits, tf.float32), labels, align_corners)
    valid = tf.not_equal(labels, ignore_label)
    safe = tf.where(valid, labels, tf.zeros_like(labels))
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=logits)
    validf = tf.cast(valid, tf.float32)
    return tf.reduce_sum(ce * validf, axis=[1, 2]) / tf.maximum(tf.reduce_sum(validf, axis=[1, 2]), 1.0)


def segmentation_cross_entropy(logits, labels, ignore_label: int = 255, global_batch_size: int | None = None,
                               align_corners: bool = False):
    """Mean of ``per_image_cross_entropy`` over the GLOBAL batch (sum / global batch size).

    Averaging per image, then over the global batch, makes the gradients summed
    across tf.distribute replicas equal to those of one device on the whole batch.
    """
    return tf.nn.compute_average_loss(per_image_cross_entropy(logits, labels, ignore_label, align_corners),
                                      global_batch_size=global_batch_size)
