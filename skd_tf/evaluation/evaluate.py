"""mIoU evaluation of a segmentation network on a config's validation split."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from skd_tf.config import DataConfig
from skd_tf.console import show_progress
from skd_tf.data import class_names, val_dataset
from skd_tf.evaluation.errors import COUNTS, error_counts, error_fractions
from skd_tf.evaluation.metrics import confusion_matrix, scores_from_confusion
from skd_tf.models.logits import logits_align_corners, upsample_logits
from skd_tf.models import at_input_size, output_stride


def sized_batches(networks: list[keras.Model], ds):
    """Yields ``(images, labels, rebuilt)`` per batch of ``ds``: ``rebuilt`` are ``networks`` rebuilt for
    the batch's image size rounded up to a multiple of the first network's output stride (once per
    size), and ``images`` are resized to that size when they differ."""
    stride = output_stride(networks[0])
    rebuilt: dict[tuple[int, int], tuple[keras.Model, ...]] = {}
    for images, labels in ds:
        size = tuple(int(math.ceil(d / stride) * stride) for d in images.shape[1:3])
        if size not in rebuilt:
            rebuilt[size] = tuple(at_input_size(n, size) for n in networks)
        if tuple(images.shape[1:3]) != size:
            images = tf.image.resize(images, size, method="bilinear")
        yield images, labels, rebuilt[size]


def compiled_for_any_batch(fn, images) -> tf.types.experimental.GenericFunction:
    """``fn`` of an image batch, compiled once for batches shaped like ``images`` of any size: the batch
    dimension is left open, so a split's last, smaller batch is not traced again (seconds for a real network)."""
    return tf.function(fn, input_signature=[tf.TensorSpec((None, *images.shape[1:]), images.dtype)])


def evaluate_network(network: keras.Model, data: DataConfig, batch_size: int = 8,
                     limit: int | None = None, progress: bool = True, errors: bool = False) -> dict:
    """Scores ``network`` on ``data.val_split``.

    Each batch runs through the network rebuilt for that batch's image size
    (rounded up to a multiple of the output stride, the image resized to it),
    and the logits are upsampled to the label size before the argmax. Returns
    ``{"miou", "per_class_iou", "pixel_accuracy", "num_images"}``; with ``errors``
    also ``"errors"``: the wrong pixels split by kind (``error_counts``, as
    ``error_fractions``), objects being regions of any class but "background".
    """
    ds, count = val_dataset(data, batch_size, limit)
    cm = np.zeros((data.num_classes, data.num_classes), np.int64)
    names = class_names(data)
    background = names.index("background") if "background" in names else None
    kinds = dict.fromkeys(COUNTS, 0)
    bar = tqdm(total=count, desc="evaluate", unit="img", disable=not show_progress(progress), leave=False)
    for labels, predictions in predicted_batches(network, ds):
        cm += confusion_matrix(labels, predictions, data.num_classes, data.ignore_label).numpy()
        if errors:
            batch = error_counts(labels.numpy(), predictions.numpy(), data.num_classes, background, data.ignore_label)
            kinds = {k: kinds[k] + v for k, v in batch.items()}
        bar.update(int(labels.shape[0]))
    bar.close()
    scores = {**scores_from_confusion(cm), "num_images": count}
    if errors:
        scores["errors"] = error_fractions(kinds)
    return scores


def predicted_batches(network: keras.Model, ds):
    """Yields ``(labels, predicted labels)`` per ``(normalised images, labels)`` batch of ``ds``: the network
    rebuilt for the batch's size (``sized_batches``), its logits bilinearly upsampled to the label size (as the
    network's ``logits`` layer says: ``logits_align_corners``), the argmax. Evaluation and ``skd-tf predict``
    both predict through here."""
    predictors: dict[int, tf.types.experimental.GenericFunction] = {}  # by id of the rebuilt model
    aligned = logits_align_corners(network)
    for images, labels, (model,) in sized_batches([network], ds):
        if id(model) not in predictors:
            predictors[id(model)] = compiled_for_any_batch(lambda x, m=model: m(x, training=False)["logits"], images)
        logits = upsample_logits(tf.cast(predictors[id(model)](images), tf.float32), labels, aligned)
        yield labels, tf.argmax(logits, axis=-1, output_type=tf.int32)


def format_scores(scores: dict, class_names: list[str]) -> str:
    """A plain-text table of per-class IoU followed by mIoU and pixel accuracy."""
    width = max(len(n) for n in class_names + ["pixel accuracy"])
    lines = [f"{'class':<{width}}  IoU (%)", "-" * (width + 9)]
    for name, iou in zip(class_names, scores["per_class_iou"]):
        lines.append(f"{name:<{width}}  {'absent' if np.isnan(iou) else f'{100 * iou:6.2f}'}")
    lines.append("-" * (width + 9))
    if np.isnan(scores["miou"]):
        lines.append("mIoU: none (every ground-truth pixel is the ignore label)")
    else:
        lines.append(f"{'mIoU':<{width}}  {100 * scores['miou']:6.2f}")
        lines.append(f"{'pixel accuracy':<{width}}  {100 * scores['pixel_accuracy']:6.2f}")
    lines.append(f"({scores['num_images']} images)")
    return "\n".join(lines)
