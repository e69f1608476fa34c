"""Seeded image/label transforms; every random draw is stateless, keyed by a seed pair.

Images stay float32 in [0, 255] until ``normalize``; labels are int32 with the
ignore label used for padding, so a label never moves relative to its pixel.
"""

from __future__ import annotations

import tensorflow as tf


def _subseeds(seed: tf.Tensor, count: int) -> tf.Tensor:
    """``count`` independent stateless seed pairs derived from one seed pair."""
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=count)


def random_scale(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor, low: float, high: float):
    """Resizes by a uniform factor in [low, high]: bilinear image, nearest-neighbour label."""
    factor = tf.random.stateless_uniform([], seed=seed, minval=low, maxval=high)
    size = tf.cast(tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * factor), tf.int32)
    size = tf.maximum(size, 1)
    image = tf.image.resize(image, size, method="bilinear")
    label = tf.image.resize(label[..., None], size, method="nearest")[..., 0]
    return image, label


def pad_to_at_least(image: tf.Tensor, label: tf.Tensor, height: int, width: int,
                    image_fill: tf.Tensor, ignore_label: int):
    """Pads bottom/right to at least height×width: image with ``image_fill``, label with ignore."""
    shape = tf.shape(image)
    pad_h = tf.maximum(height - shape[0], 0)
    pad_w = tf.maximum(width - shape[1], 0)
    paddings = [[0, pad_h], [0, pad_w]]
    image = tf.concat([
        tf.pad(image[..., c:c + 1], paddings + [[0, 0]], constant_values=image_fill[c]) for c in range(3)
    ], axis=-1)
    label = tf.pad(label, paddings, constant_values=ignore_label)
    return image, label


# Not tf.image.stateless_random_crop / stateless_random_flip_left_right on the image and label stacked: the same
# transforms, but other draws from the same seed, so no recorded run (benchmarks/results) would replay from its seed.
def random_crop(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor, height: int, width: int):
    """Crops the same random height×width window from image and label (both at least that big)."""
    shape = tf.shape(image)
    offsets = tf.random.stateless_uniform([2], seed=seed, minval=0, maxval=2**30, dtype=tf.int32)
    top = offsets[0] % (shape[0] - height + 1)
    left = offsets[1] % (shape[1] - width + 1)
    image = image[top:top + height, left:left + width]
    label = label[top:top + height, left:left + width]
    return tf.ensure_shape(image, [height, width, 3]), tf.ensure_shape(label, [height, width])


def random_hflip(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor):
    """Mirrors image and label together with probability 0.5."""
    flip = tf.random.stateless_uniform([], seed=seed) < 0.5
    image = tf.cond(flip, lambda: image[:, ::-1], lambda: image)
    label = tf.cond(flip, lambda: label[:, ::-1], lambda: label)
    return image, label


def normalize(image: tf.Tensor, mean, std) -> tf.Tensor:
    """(image − mean) / std per channel, image in [0, 255]."""
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def train_transform(image, label, seed, crop_size, scale_range, hflip, mean, ignore_label):
    """Random scale, pad (image with the mean colour, label with ignore), random crop, flip."""
    seeds = _subseeds(seed, 3)
    image = tf.cast(image, tf.float32)
    label = tf.cast(label, tf.int32)
    if scale_range[0] != 1.0 or scale_range[1] != 1.0:
        image, label = random_scale(image, label, seeds[0], *scale_range)
    image, label = pad_to_at_least(image, label, crop_size[0], crop_size[1],
                                   tf.constant(mean, tf.float32), ignore_label)
    image, label = random_crop(image, label, seeds[1], crop_size[0], crop_size[1])
    if hflip:
        image, label = random_hflip(image, label, seeds[2])
    return image, label


def resize_pair(image, label, size):
    """Deterministic resize to ``size``: bilinear image, nearest-neighbour label."""
    image = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
    label = tf.image.resize(tf.cast(label, tf.int32)[..., None], size, method="nearest")[..., 0]
    return image, label
