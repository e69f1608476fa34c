"""Supervised training of segmentation networks (teachers and baseline students).

From Python: ``SegmentationTrainer(network, num_classes)`` is a Keras model to ``compile`` and ``fit`` on
(image, label) batches; ``segmentation_cross_entropy`` is its per-pixel loss with an ignore label."""

from skd_tf.training.cross_entropy import segmentation_cross_entropy
from skd_tf.training.trainer import SegmentationTrainer

__all__ = ["SegmentationTrainer", "segmentation_cross_entropy"]
