"""Segmentation metrics (streaming confusion-matrix mIoU, wrong pixels by kind) and validation-set evaluation."""

from skd_tf.evaluation.errors import error_counts, error_fractions, format_errors
from skd_tf.evaluation.evaluate import (compiled_for_any_batch, evaluate_network, format_scores, predicted_batches,
                                       sized_batches)
from skd_tf.evaluation.metrics import MeanIoU, confusion_matrix, scores_from_confusion

__all__ = ["MeanIoU", "compiled_for_any_batch", "confusion_matrix", "error_counts", "error_fractions",
           "evaluate_network", "format_errors", "format_scores", "predicted_batches", "scores_from_confusion",
           "sized_batches"]
