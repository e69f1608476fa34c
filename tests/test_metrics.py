import numpy as np
import pytest
import tensorflow as tf

from skd_tf.evaluation import error_counts, error_fractions
from skd_tf.evaluation.metrics import MeanIoU, confusion_matrix, scores_from_confusion


def one_hot_logits(pred, k):
    return tf.one_hot(pred, k) * 10.0


def test_confusion_matrix_by_hand_with_ignore():
    labels = np.array([[0, 0, 1, 255], [2, 2, 1, 1]])
    preds = np.array([[0, 1, 1, 2], [2, 0, 1, 0]])
    cm = confusion_matrix(labels, preds, 3).numpy()
    # rows = truth: class 0 -> (0, 1); class 1 -> (1, 1, 0); class 2 -> (2, 0); ignore dropped
    expected = np.array([[1, 1, 0], [1, 2, 0], [1, 0, 1]])
    np.testing.assert_array_equal(cm, expected)


def test_scores_by_hand_with_absent_class():
    cm = np.array([[3, 1, 0, 0], [2, 4, 0, 0], [0, 0, 0, 0], [0, 0, 0, 5]])
    s = scores_from_confusion(cm)
    iou = [3 / (3 + 1 + 2), 4 / (4 + 2 + 1), np.nan, 1.0]
    np.testing.assert_allclose(s["per_class_iou"], iou)
    assert s["miou"] == pytest.approx(np.mean([iou[0], iou[1], iou[3]]))
    assert s["pixel_accuracy"] == pytest.approx(12 / 15)


def test_scores_without_labelled_pixels_are_nan_like_cityscapes_scripts():
    s = scores_from_confusion(np.zeros((3, 3), np.int64))
    assert np.isnan(s["miou"]) and np.isnan(s["pixel_accuracy"]) and all(np.isnan(s["per_class_iou"]))


def test_streaming_metric_matches_hand_values_and_resets():
    m = MeanIoU(3, ignore_label=255)
    labels1 = np.array([[[0, 1], [2, 255]]])
    preds1 = np.array([[[0, 1], [1, 0]]])
    labels2 = np.array([[[2, 2], [0, 0]]])
    preds2 = np.array([[[2, 2], [0, 1]]])
    m.update_state(labels1, one_hot_logits(preds1, 3))
    m.update_state(labels2, one_hot_logits(preds2, 3))
    # cm: truth0 -> [2,1,0]; truth1 -> [0,1,0]; truth2 -> [0,1,2]
    iou = [2 / 3, 1 / (1 + 2), 2 / 3]
    assert float(m.result()) == pytest.approx(np.mean(iou), rel=1e-6)
    np.testing.assert_allclose(m.scores()["per_class_iou"], iou)
    m.reset_state()
    assert float(m.result()) == 0.0


def test_metric_upsamples_low_resolution_logits():
    m = MeanIoU(2)
    labels = np.zeros((1, 8, 8), np.int32)
    labels[:, :, 4:] = 1
    logits = one_hot_logits(np.array([[[0, 1], [0, 1]]]), 2)  # 2x2 prediction of the same split
    m.update_state(labels, logits)
    assert float(m.result()) == pytest.approx(1.0)


def test_error_split_by_hand():
    """Four objects (two of class 1, one of 2, one of 3) on background 0; one ignored pixel."""
    labels = np.array([[0, 0, 0, 0, 0, 0, 0, 0],
                       [0, 1, 1, 1, 0, 2, 2, 0],
                       [0, 1, 1, 1, 0, 2, 2, 0],
                       [0, 1, 1, 1, 0, 0, 0, 0],
                       [0, 0, 0, 0, 0, 3, 3, 255],
                       [1, 0, 0, 0, 0, 3, 3, 0]])
    predicted = np.array([[2, 0, 0, 0, 0, 0, 0, 0],
                          [0, 1, 1, 3, 0, 3, 3, 0],   # class-1 object: 6 right, 2 split (3), 1 edge (0)
                          [0, 1, 1, 3, 0, 3, 2, 0],   # class-2 object read as 3: 3 whole-object pixels
                          [0, 0, 1, 1, 0, 1, 0, 0],   # (3, 5): background taken, like (0, 0)
                          [0, 0, 0, 0, 0, 0, 1, 1],   # class-3 object: 0 and 1 tie, majority 0 (lower index):
                          [0, 0, 0, 0, 0, 0, 1, 0]])  # 2 whole-object (missed) + 2 split; (5, 0) missed
    counts = error_counts(labels[None], predicted[None], num_classes=4)
    assert counts == {"whole_object": 3 + 2 + 1, "split": 2 + 2, "edge": 1, "spill": 2, "scored": 47,
                      "wrong": 13, "objects": 4, "objects_misread": 3}
    assert counts["wrong"] == np.sum((labels != predicted) & (labels != 255))
    fractions = error_fractions(counts)
    assert fractions["split"] == pytest.approx(4 / 47) and fractions["objects_misread"] == pytest.approx(3 / 4)
    # without a background class every region is an object: class 0 forms two ((5, 7) touches no other 0),
    # the large one with majority 0, so its two wrong pixels are split, as is the class-1 pixel predicted 0
    flat = error_counts(labels[None], predicted[None], num_classes=4, background=None)
    assert flat["objects"] == 6 and flat["edge"] == flat["spill"] == 0
    assert flat["whole_object"] == 6 and flat["split"] == 2 + 2 + 1 + 2 and flat["wrong"] == 13
    with pytest.raises(ValueError, match="B×H×W"):
        error_counts(labels, predicted, num_classes=4)
