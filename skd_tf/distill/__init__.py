"""Distillation: the ``Distiller`` Keras model, its config section and the end-to-end ``distill`` run.

From Python: ``from skd_tf.distill import Distiller`` (see docs/python.md)."""

from skd_tf.distill.distiller import Distiller, scale_gradient, weighted_losses

__all__ = ["Distiller", "scale_gradient", "weighted_losses"]
