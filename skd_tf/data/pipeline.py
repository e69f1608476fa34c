"""Batched tf.data pipelines for training and validation.

The training stream is infinite and a pure function of ``(seed, position)``:
epoch ``e`` permutes the source's undecoded records inside consecutive windows
of ``data.shuffle_buffer`` records (the whole split when it fits) with the
stateless seed ``(seed, e, window)``, and the sample at
global position ``k`` is augmented with the stateless seed ``(seed, k)``. A
run resumed at step ``s`` therefore sees exactly the batches an uninterrupted
run would have seen from step ``s`` on.
"""

from __future__ import annotations

import tensorflow as tf

from skd_tf.config import DataConfig
from skd_tf.data import augment
from skd_tf.data.sources import load_source


def _check_labels(example: dict, num_classes: int, ignore_label: int) -> dict:
    label = tf.cast(example["label"], tf.int32)
    valid = tf.reduce_all((label < num_classes) | (label == ignore_label))
    where = example.get("path", tf.constant("a mask"))
    message = tf.strings.join([
        where, f" has label values outside [0, {num_classes}) that are not the ignore label {ignore_label}"])
    with tf.control_dependencies([tf.debugging.Assert(valid, [message])]):
        label = tf.identity(label)
    shapes_match = tf.reduce_all(tf.shape(example["image"])[:2] == tf.shape(label)[:2])
    size_message = tf.strings.join([where, " and its image have different sizes"])
    with tf.control_dependencies([tf.debugging.Assert(shapes_match, [size_message])]):
        label = tf.identity(label)
    return {"image": example["image"], "label": label}


def pipeline_options() -> tf.data.Options:
    """The options of every pipeline here: deterministic element order, and no tf.data autotuning.

    Autotuning runs a model thread per iterator that sleeps between optimisations for periods that double up to
    a minute, and destroying the iterator joins that thread: in TensorFlow 2.21 the join sometimes waited
    10–50 s with every thread of the process idle (RootDataset::Iterator's destructor in the native stack; at
    the end of QAT fine-tuning, an evaluation, a fit; 1–3 times in each `make test` on 2 AVX2 cores, none
    without autotuning). Without it, parallel maps run on every core and prefetch sizes its own buffer: the
    same images/s (54–58 either way, 768² synthetic scenes cropped to 512², batches of 8, 2 cores).
    """
    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = False
    return options


def train_dataset(cfg: DataConfig, batch_size: int, seed: int, start_step: int = 0) -> tf.data.Dataset:
    """Infinite stream of augmented ``(normalised float image, int32 label)`` batches.

    ``start_step`` skips the batches of steps already taken, so resuming is exact.
    """
    source = load_source(cfg, cfg.train_split)
    count = source.count
    if count == 0:
        raise ValueError(f"the {cfg.source} split {cfg.train_split!r} is empty")
    start = start_step * batch_size
    first_epoch = start // count
    window = min(cfg.shuffle_buffer, count)

    def epoch(e):
        def permute(w, records):
            size = tf.shape(tf.nest.flatten(records)[0])[0]
            window_seed = tf.stack([tf.cast(seed, tf.int64), e * 2**20 + w])
            order = tf.random.experimental.stateless_shuffle(tf.range(size), seed=window_seed)
            return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(lambda t: tf.gather(t, order), records))
        return source.records.batch(window).enumerate().flat_map(permute)

    stream = tf.data.Dataset.range(first_epoch, 2**40).flat_map(epoch)
    stream = stream.enumerate(start=first_epoch * count).skip(start - first_epoch * count)

    def transform(k, record):
        ex = _check_labels(source.decode(record), cfg.num_classes, cfg.ignore_label)
        image, label = augment.train_transform(
            ex["image"], ex["label"], tf.stack([tf.cast(seed, tf.int64), k]),
            cfg.crop_size, cfg.scale_range, cfg.hflip, cfg.mean, cfg.ignore_label)
        return augment.normalize(image, cfg.mean, cfg.std), label

    stream = stream.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    return stream.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE).with_options(pipeline_options())


def val_transform(image: tf.Tensor, label: tf.Tensor, cfg: DataConfig) -> tuple[tf.Tensor, tf.Tensor]:
    """What evaluation (and ``skd-tf predict``) does to a decoded uint8 image and its label: resize both to
    ``data.eval_size`` (``val_mode: resize``; bilinear image, nearest label) or keep them (``whole``), then
    normalise the image."""
    if cfg.val_mode == "resize":
        image, label = augment.resize_pair(image, label, cfg.eval_size)
    else:
        image, label = tf.cast(image, tf.float32), tf.cast(label, tf.int32)
    return augment.normalize(image, cfg.mean, cfg.std), label


def val_dataset(cfg: DataConfig, batch_size: int, limit: int | None = None) -> tuple[tf.data.Dataset, int]:
    """Deterministic validation batches and the number of images.

    ``val_mode: resize`` resizes every image to ``data.eval_size``; ``whole``
    keeps each image as it is (batch size 1 unless all images share one size).
    """
    source = load_source(cfg, cfg.val_split)
    records, count = source.records, source.count
    if limit is not None:
        records, count = records.take(limit), min(limit, count)
    if count == 0:
        raise ValueError(f"the {cfg.source} split {cfg.val_split!r} is empty")
    decoded = records.map(lambda r: _check_labels(source.decode(r), cfg.num_classes, cfg.ignore_label),
                          num_parallel_calls=tf.data.AUTOTUNE)
    ds = decoded.map(lambda ex: val_transform(ex["image"], ex["label"], cfg), num_parallel_calls=tf.data.AUTOTUNE)
    static = ds.element_spec[0].shape
    if cfg.val_mode == "whole" and not static[:2].is_fully_defined():
        batch_size = 1
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(pipeline_options()), count
