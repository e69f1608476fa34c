"""Datasets: sources (synthetic, tfds, folder), seeded augmentation and batched pipelines."""

from skd_tf.data.pipeline import train_dataset, val_dataset
from skd_tf.data.sources import DataError, class_names, load_source

__all__ = ["DataError", "class_names", "load_source", "train_dataset", "val_dataset"]
