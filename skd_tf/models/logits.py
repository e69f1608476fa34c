"""Bringing a network's class scores to the size of its labels, the way the network was trained to."""

from __future__ import annotations

import keras
import tensorflow as tf


def upsample_logits(logits: tf.Tensor, labels: tf.Tensor, align_corners: bool = False) -> tf.Tensor:
    """Bilinearly resizes B×h×w×K logits to the B×H×W size of ``labels`` (no-op when equal).

    ``align_corners``: torch's ``F.interpolate(..., align_corners=True)`` — the corner pixels of both grids
    coincide — which the SKD and CIRKD reference code use for training and evaluation; otherwise half-pixel
    centres (``tf.image.resize``, torch's default)."""
    size = labels.shape[1:3]
    if not size.is_fully_defined():
        size = tf.shape(labels)[1:3]
    elif tuple(logits.shape[1:3]) == tuple(size):
        return logits
    return resize_bilinear(logits, size, align_corners)


def resize_bilinear(x: tf.Tensor, size, align_corners: bool = False) -> tf.Tensor:
    """B×h×w×K → B×H×W×K bilinearly, with half-pixel centres or (``align_corners``) the corners aligned."""
    if align_corners:  # tf.image.resize has no align_corners; the op under it has (and TFLite's RESIZE_BILINEAR)
        # the op itself: tf.compat.v1.image.resize_bilinear, its deprecated wrapper, logs a warning on first use
        return tf.raw_ops.ResizeBilinear(images=x, size=size, align_corners=True)
    return tf.image.resize(x, size, method="bilinear")


@keras.saving.register_keras_serializable(package="skd_tf")
class Logits(keras.layers.Layer):
    """The ``logits`` output of a network whose scores are brought to label size with
    ``align_corners=True`` (the SKD reference code's PSPNet and ESPNets, CIRKD's networks): an identity that
    records it in the saved model, so training, evaluation and export upsample as the network's own code did."""

    def __init__(self, align_corners: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.align_corners = bool(align_corners)

    def call(self, x):
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "align_corners": self.align_corners}


def logits_align_corners(network: keras.Model) -> bool:
    """Whether ``network``'s logits are upsampled with ``align_corners=True`` (its ``logits`` layer says so)."""
    try:
        layer = network.get_layer("logits")
    except ValueError:
        return False
    return bool(getattr(layer, "align_corners", False))
