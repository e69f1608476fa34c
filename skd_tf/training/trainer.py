"""``SegmentationTrainer``: trains one segmentation network with ``model.fit``."""

from __future__ import annotations

import keras
import tensorflow as tf

from skd_tf.evaluation.metrics import MeanIoU
from skd_tf.models.logits import logits_align_corners
from skd_tf.training.cross_entropy import segmentation_cross_entropy
from skd_tf.training.custom_fit import Prebuilt, record_step


def supervised_losses(outputs: dict, labels, ignore_label: int, aux_weight: float,
                      global_batch_size: int | None, align_corners: bool = False) -> tuple[dict, tf.Tensor]:
    """``{"ce"[, "aux_ce"]}`` (each averaged over the global batch) and CE + aux_weight·CE_aux; the logits
    upsampled to the labels as ``upsample_logits(..., align_corners)``."""
    terms = {"ce": segmentation_cross_entropy(outputs["logits"], labels, ignore_label, global_batch_size,
                                              align_corners)}
    total = terms["ce"]
    if "aux_logits" in outputs:
        terms["aux_ce"] = segmentation_cross_entropy(outputs["aux_logits"], labels, ignore_label,
                                                     global_batch_size, align_corners)
        total = total + aux_weight * terms["aux_ce"]
    return terms, total


class SegmentationTrainer(Prebuilt, keras.Model):
    """Wraps a segmentation network; minimises CE + aux_weight·CE_aux with the compiled optimizer.

    ``fit`` takes ``(image, label)`` batches. Losses are averaged over the GLOBAL
    batch (``global_batch_size``) so that under tf.distribute the summed replica
    gradients equal the single-device gradient. Reports ``loss``, ``ce``
    (and ``aux_ce``) and the running training ``miou``.
    """

    def __init__(self, network: keras.Model, num_classes: int, ignore_label: int = 255,
                 aux_weight: float = 0.4, global_batch_size: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.ignore_label = ignore_label
        self.aux_weight = aux_weight
        self.global_batch_size = global_batch_size
        self.has_aux = "aux_logits" in network.output
        self.align_corners = logits_align_corners(network)
        names = ["loss", "ce"] + (["aux_ce"] if self.has_aux else [])
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self.miou = MeanIoU(num_classes, ignore_label, name="miou", align_corners=self.align_corners)
        self.built = network.built  # no weights of its own: built when its network is (fit builds the optimizer)

    @property
    def metrics(self):
        return list(self.trackers.values()) + [self.miou]

    @property
    def trained_variables(self) -> list:
        return self.network.trainable_variables

    def call(self, images, training=False):
        return self.network(images, training=training)

    def compute_losses(self, outputs: dict, labels) -> tuple[dict, tf.Tensor]:
        """The loss terms of one (replica-)batch and their weighted total."""
        return supervised_losses(outputs, labels, self.ignore_label, self.aux_weight, self.global_batch_size,
                                 self.align_corners)

    def _record(self, terms: dict, total, labels, logits):
        return record_step(self.trackers, {**terms, "loss": total}, self.miou, labels, logits)

    def train_step(self, data):
        images, labels = data[0], data[1]  # (x, y) or, from train_on_batch / evaluate, (x, y, sample_weight)
        variables = self.trained_variables
        with tf.GradientTape() as tape:
            outputs = self.network(images, training=True)
            terms, total = self.compute_losses(outputs, labels)
            scaled = self.optimizer.scale_loss(total)
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        return self._record(terms, total, labels, outputs["logits"])

    def test_step(self, data):
        images, labels = data[0], data[1]  # (x, y) or, from train_on_batch / evaluate, (x, y, sample_weight)
        outputs = self.network(images, training=False)
        terms, total = self.compute_losses(outputs, labels)
        return self._record(terms, total, labels, outputs["logits"])
