"""Example sources: undecoded records plus the function that decodes one.

A ``Source`` holds ``records`` (a dataset of fixed-shape tensors: arrays, file
paths or still-encoded bytes, cheap to shuffle and skip), their ``count`` and
``decode``, which turns one record into ``{"image": uint8 H×W×3, "label": uint8
H×W}`` (plus ``"path"`` for files). Labels are already mapped to train ids in ``[0, num_classes)`` or the ignore
label 255. Sources:

* ``synthetic``: the built-in procedural dataset (skd_tf.data.synthetic).
* ``cityscapes``, ``scene_parse150`` (ADE20K), ``oxford_iiit_pet``: the
  tensorflow-datasets builders, with the official label mappings.
* ``folder``: ``<dir>/images/*.jpg|png`` with ``<dir>/masks/<same stem>.png``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from skd_tf.config import DataConfig
from skd_tf.console import quiet, show_progress
from skd_tf.data import synthetic


class DataError(ValueError):
    """A dataset is missing, malformed, or does not match the config."""


@dataclass
class Source:
    """Undecoded records of a split, how many there are, and how to decode one."""

    records: tf.data.Dataset
    count: int
    decode: Callable[[dict], dict]

    def decoded(self) -> tf.data.Dataset:
        return self.records.map(self.decode, num_parallel_calls=tf.data.AUTOTUNE)


# Official Cityscapes labelId -> trainId table (cityscapesScripts, helpers/labels.py);
# every id not listed (0-6, 9, 10, 14-16, 18, 29, 30, license plate) is ignored.
CITYSCAPES_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES_CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_ZIPS = ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip")
CITYSCAPES_URL = "https://www.cityscapes-dataset.com/downloads/"

# tfds name, image key, label key and the number of classes after mapping.
TFDS_SPECS = {
    "cityscapes": ("cityscapes/semantic_segmentation", "image_left", "segmentation_label", 19),
    "scene_parse150": ("scene_parse150", "image", "annotation", 150),
    "oxford_iiit_pet": ("oxford_iiit_pet", "image", "segmentation_mask", 3),
}


def label_lookup_table(source: str, ignore_label: int = 255) -> np.ndarray:
    """The 256-entry uint8 table that maps a source's stored label values to train ids."""
    table = np.full(256, ignore_label, np.uint8)
    if source == "cityscapes":
        for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
            table[label_id] = train_id
    elif source == "scene_parse150":
        # ADE20K: 0 is "other" (ignored), classes 1..150 become 0..149.
        table[1:151] = np.arange(150)
    elif source == "oxford_iiit_pet":
        # trimap: 1 pet, 2 background, 3 border -> 0, 1, 2.
        table[1:4] = np.arange(3)
    else:
        raise ValueError(f"no label table for source {source!r}")
    return table


def synthetic_source(cfg: DataConfig, split: str) -> Source:
    """The synthetic split, rendered into memory."""
    s = cfg.synthetic
    count = s.num_train if split == "train" else s.num_val
    images, labels = synthetic.generate(split, count, s.image_size, cfg.num_classes, s.seed,
                                        s.min_objects, s.max_objects, s.max_rotation)
    return Source(tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}), count, lambda r: r)


def _check_cityscapes_manual_dir(cfg: DataConfig) -> None:
    manual_dir = Path(cfg.manual_dir or "~/tensorflow_datasets/downloads/manual").expanduser()
    missing = [z for z in CITYSCAPES_ZIPS if not (manual_dir / z).is_file()]
    if missing:
        raise DataError(
            f"Cityscapes needs a manual download: put {' and '.join(missing)} (from {CITYSCAPES_URL}, "
            f"after registering) in {manual_dir} (set data.manual_dir to use another folder)")
    for name in CITYSCAPES_ZIPS:
        if not zipfile.is_zipfile(manual_dir / name):
            raise DataError(f"{manual_dir / name} is not a complete zip archive (an interrupted download?); "
                            f"download it again from {CITYSCAPES_URL}")


def download_failures() -> tuple[type[Exception], ...]:
    """What tensorflow-datasets' downloads raise when a file cannot be fetched (no network, server errors)."""
    import urllib.error

    import requests
    import tensorflow_datasets as tfds

    return requests.exceptions.RequestException, urllib.error.URLError, tfds.download.DownloadError


@contextlib.contextmanager
def temporary_folders_removed():
    """Runs the block with ``tempfile``'s folder set to a fresh one of its own, removed afterwards with whatever
    was left in it. tensorflow-datasets' ``DatasetInfo.initialize_from_bucket`` makes a ``mkdtemp("tfds")`` for
    every builder of a data set not yet prepared and, without network access to its bucket, never removes it:
    one empty ``/tmp/tmp*tfds`` folder per training or evaluation run otherwise."""
    previous = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="skd-tf-tfds-") as scratch:
        tempfile.tempdir = scratch
        try:
            yield
        finally:
            tempfile.tempdir = previous


def tfds_source(cfg: DataConfig, split: str) -> Source:
    """A tensorflow-datasets split (records stay PNG/JPEG bytes until decoded; labels mapped to train ids)."""
    name, image_key, label_key, classes = TFDS_SPECS[cfg.source]
    if cfg.num_classes != classes:
        raise DataError(f"data.num_classes is {cfg.num_classes} but {cfg.source} has {classes} classes")
    with temporary_folders_removed():
        return _tfds_source(cfg, split, name, image_key, label_key)


def _tfds_source(cfg: DataConfig, split: str, name: str, image_key: str, label_key: str) -> Source:
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=cfg.data_dir)
    if not builder.is_prepared():
        if cfg.source == "cityscapes":
            _check_cityscapes_manual_dir(cfg)
        manual_dir = os.path.expanduser(cfg.manual_dir) if cfg.manual_dir else None
        download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        if not show_progress(not quiet()):
            tfds.disable_progress_bar()
        try:
            builder.download_and_prepare(download_config=download_config)
        except zipfile.BadZipFile as err:
            raise DataError(f"preparing {name} failed: a downloaded archive is damaged ({err}); delete it from "
                            f"{manual_dir or builder.data_dir} and download it again") from None
        except download_failures() as err:
            root = cfg.data_dir or "~/tensorflow_datasets"
            raise DataError(f"preparing {name} failed: tensorflow-datasets downloads its files on first use, and the "
                            f"download failed ({' '.join(str(err).split())}); without network access, prepare it "
                            f"where there is one and copy {os.path.join(root, name)} into {root} here") from None
    table = tf.constant(label_lookup_table(cfg.source, cfg.ignore_label))

    def decode(record):
        image = tf.io.decode_image(record["image"], channels=3, expand_animations=False)
        label = tf.io.decode_png(record["label"], channels=0)[..., 0]
        return {"image": image, "label": tf.gather(table, tf.cast(label, tf.int32))}

    skip = tfds.decode.SkipDecoding()
    try:
        ds = builder.as_dataset(split=split, shuffle_files=False, decoders={image_key: skip, label_key: skip})
    except (ValueError, KeyError) as err:
        raise DataError(f"{cfg.source} has no split {split!r} ({err}); it has {sorted(builder.info.splits)}") from None
    if split in builder.info.splits:
        count = builder.info.splits[split].num_examples
    else:  # e.g. under tfds.testing.mock_data, which has no split metadata
        count = int(ds.cardinality()) if ds.cardinality() >= 0 else int(ds.reduce(0, lambda n, _: n + 1))
    ds = ds.map(lambda ex: {"image": ex[image_key], "label": ex[label_key]})
    return Source(ds, count, decode)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def folder_pairs(root: str | os.PathLike, masks: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """Pairs ``images/<stem>.jpg|png`` with ``masks/<stem>.png`` under ``root``, or with ``masks`` given the
    images directly in ``root`` with ``<masks>/<stem>.png`` (``~`` expanded), checking sizes and readability.

    Only the file headers are read here (fast); label values are checked as the
    pipeline decodes each mask.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root).expanduser()
    if masks is None:
        image_dir, mask_dir = root / "images", root / "masks"
    else:
        image_dir, mask_dir = root, Path(masks).expanduser()
    for d in (image_dir, mask_dir):
        if not d.is_dir():
            hint = (" (images directly in it? set the split's masks folder, data.train_masks_dir or "
                    "data.val_masks_dir)" if masks is None and d == image_dir and root.is_dir() else "")
            raise DataError(f"folder dataset {root}: missing directory {d}{hint}")
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"folder dataset {root}: no .jpg or .png files in {image_dir}")
    pairs = []
    for img in images:
        mask = mask_dir / (img.stem + ".png")
        if not mask.is_file():
            raise DataError(f"folder dataset: image {img} has no mask {mask}")
        sizes = []
        for path in (img, mask):
            try:
                with Image.open(path) as handle:
                    sizes.append(handle.size)
            except (UnidentifiedImageError, OSError) as err:
                raise DataError(f"cannot read {path}: {err}") from None
        if sizes[0] != sizes[1]:
            raise DataError(f"image {img} is {sizes[0][0]}x{sizes[0][1]} but its mask {mask} "
                            f"is {sizes[1][0]}x{sizes[1][1]}")
        pairs.append((str(img), str(mask)))
    return pairs


def folder_source(cfg: DataConfig, split: str) -> Source:
    """The folder dataset of ``data.train_dir`` (train) or ``data.val_dir`` (any other split), with its masks in
    ``data.train_masks_dir`` / ``data.val_masks_dir`` when set (``folder_pairs``)."""
    root, masks = cfg.folder_dirs(training=split == cfg.train_split)
    if not root:
        raise DataError("data.val_dir is required to evaluate a folder dataset")
    pairs = folder_pairs(root, masks)

    def decode(record):
        image = tf.io.decode_image(tf.io.read_file(record["image"]), channels=3, expand_animations=False)
        mask = tf.io.decode_png(tf.io.read_file(record["label"]), channels=1)[..., 0]
        return {"image": image, "label": mask, "path": record["label"]}

    records = tf.data.Dataset.from_tensor_slices({"image": [p[0] for p in pairs], "label": [p[1] for p in pairs]})
    return Source(records, len(pairs), decode)


HOLDOUT_SPLIT = "train_holdout"


def _stored_source(cfg: DataConfig, split: str) -> Source:
    if cfg.source == "synthetic":
        return synthetic_source(cfg, split)
    if cfg.source == "folder":
        return folder_source(cfg, split)
    return tfds_source(cfg, split)


def load_source(cfg: DataConfig, split: str) -> Source:
    """The ``Source`` of a split of the configured dataset.

    With ``data.holdout = h`` the training split loses its last ``h`` records, which become the split
    ``train_holdout``.
    """
    if split != HOLDOUT_SPLIT and (split != cfg.train_split or not cfg.holdout):
        return _stored_source(cfg, split)
    if not cfg.holdout:
        raise DataError(f"the split {HOLDOUT_SPLIT!r} needs data.holdout > 0 (how many training examples to hold out)")
    train = _stored_source(cfg, cfg.train_split)
    kept = train.count - cfg.holdout
    if kept < 1:
        raise DataError(f"data.holdout is {cfg.holdout} but the {cfg.source} split {cfg.train_split!r} "
                        f"has only {train.count} examples")
    if split == HOLDOUT_SPLIT:
        return Source(train.records.skip(kept), cfg.holdout, train.decode)
    return Source(train.records.take(kept), kept, train.decode)


def class_names(cfg: DataConfig) -> list[str]:
    """Human-readable class names of a data config (indices where none are known)."""
    if cfg.source == "synthetic":
        return list(synthetic.CLASS_NAMES[: cfg.num_classes])
    if cfg.source == "cityscapes":
        return list(CITYSCAPES_CLASS_NAMES)
    if cfg.source == "oxford_iiit_pet":
        return ["pet", "background", "border"]
    return [str(i) for i in range(cfg.num_classes)]
