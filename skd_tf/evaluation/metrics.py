"""Streaming segmentation metrics from a confusion matrix."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from skd_tf.models.logits import upsample_logits


def confusion_matrix(labels, predictions, num_classes: int, ignore_label: int = 255) -> tf.Tensor:
    """K×K int64 counts, rows = ground truth, columns = prediction; ignore pixels dropped."""
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.int32), [-1])
    bins = num_classes * num_classes
    # ignored pixels go to a spare last bin; fixed shapes throughout, so this compiles under XLA
    index = tf.where(tf.not_equal(labels, ignore_label), labels * num_classes + predictions, bins)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(index), index, num_segments=bins + 1)
    return tf.reshape(tf.cast(counts[:bins], tf.int64), [num_classes, num_classes])


def scores_from_confusion(cm: np.ndarray) -> dict:
    """IoU_k = TP_k / (TP_k + FP_k + FN_k); mIoU averages the classes with a non-empty union.

    Returns ``{"miou", "per_class_iou" (NaN for absent classes), "pixel_accuracy"}``. When no pixel is
    labelled (every ground-truth pixel ignored) mIoU and pixel accuracy are NaN, as cityscapesScripts
    reports them (there is nothing to score), and JSON records them as null.
    """
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    total = cm.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.any(union > 0) else float("nan"),
        "per_class_iou": [float(v) for v in iou],
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
    }


# Not keras.metrics.MeanIoU(ignore_class=...): its confusion matrix is int32 (a Cityscapes training split's 6·10⁹
# pixels overflow a cell), it drops out-of-range labels silently, and it takes class ids at the labels' size; nor
# tf.math.confusion_matrix(weights=...), which asserts every label < num_classes, so the ignore label would have to
# be remapped and weighted out first — the one segment sum below does both. Ours counts in int64 and is checked
# against cityscapesScripts (tests/test_metrics.py).
class MeanIoU(keras.metrics.Metric):
    """Streaming mIoU over a confusion matrix; ``update_state(labels, logits)``.

    Logits at a lower resolution are bilinearly upsampled to the label size
    (``align_corners`` as ``upsample_logits``) before the argmax; ignore-label
    pixels are not counted. ``result()`` is the mean IoU over classes that
    occur in the labels or the predictions.
    """

    def __init__(self, num_classes: int, ignore_label: int = 255, name: str = "miou", align_corners: bool = False,
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.align_corners = align_corners
        self.total = self.add_variable(shape=(num_classes, num_classes), initializer="zeros",
                                       dtype="int64", aggregation="sum", name="confusion")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.int32)
        logits = upsample_logits(tf.cast(y_pred, tf.float32), y_true, self.align_corners)
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
        self.total.assign_add(confusion_matrix(y_true, predictions, self.num_classes, self.ignore_label))

    def result(self):
        cm = tf.cast(self.total, tf.float64)
        tp = tf.linalg.diag_part(cm)
        union = tf.reduce_sum(cm, 0) + tf.reduce_sum(cm, 1) - tp
        present = union > 0
        iou = tf.where(present, tp / tf.where(present, union, 1.0), 0.0)
        count = tf.reduce_sum(tf.cast(present, tf.float64))
        return tf.cast(tf.math.divide_no_nan(tf.reduce_sum(iou), count), tf.float32)

    def scores(self) -> dict:
        """The full report (mIoU, per-class IoU, pixel accuracy) from the current counts."""
        return scores_from_confusion(self.total.numpy())

    def reset_state(self):
        self.total.assign(tf.zeros_like(self.total))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "ignore_label": self.ignore_label}
