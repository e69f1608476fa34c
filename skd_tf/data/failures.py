"""One-line explanations for errors raised inside a tf.data pipeline.

A bad file surfaces deep inside ``fit`` or an evaluation loop as a TensorFlow op error whose text
is a page of iterator internals, and a decoder's message (``Invalid PNG data, size 5023``) does not
say which file. ``explain_pipeline_error`` turns such an error into a ``DataError`` naming the file:
the pipeline's own label check already carries the path in its assertion message; for a file that
fails to decode, the folder dataset's files are decoded again with Pillow, only after the failure
(decoding every file up front would slow every start for the rare broken one).
"""

from __future__ import annotations

import re

import tensorflow as tf

from skd_tf.config import DataConfig
from skd_tf.data.sources import DataError, folder_pairs

_ASSERTION = re.compile(r"assertion failed: \[(.*?)\]", re.S)
# what TensorFlow puts before the kernel's own words, e.g. "Error in user-defined function passed to
# ParallelMapDatasetV2:7 transformation with iterator: Iterator::Root::Prefetch::...: "
_ITERATOR_PREFIX = re.compile(r"^.*?transformation with iterator: [\w:]+: ", re.S)


def from_pipeline(err: tf.errors.OpError) -> bool:
    """Whether ``err`` was raised while a tf.data pipeline produced an element."""
    return "Iterator" in err.message or "IteratorGetNext" in err.message


def first_unreadable(cfg: DataConfig) -> str | None:
    """``"cannot decode <file>: <reason>"`` for the first image or mask of the folder dataset that Pillow
    cannot decode completely, or None."""
    from PIL import Image

    if cfg.source != "folder":
        return None
    folders = (cfg.folder_dirs(training=True), cfg.folder_dirs(training=False))
    for root, masks in dict.fromkeys(f for f in folders if f[0]):
        for pair in folder_pairs(root, masks):
            for path in pair:
                try:
                    with Image.open(path) as handle:
                        handle.load()
                except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError... per format
                    return f"cannot decode {path}: {err}"
    return None


def explain_pipeline_error(err: tf.errors.OpError, cfg: DataConfig) -> DataError:
    """A one-line DataError for an op error raised inside ``cfg``'s input pipeline."""
    found = _ASSERTION.search(err.message)
    if found:
        return DataError(found.group(1).strip())
    unreadable = first_unreadable(cfg)
    if unreadable:
        return DataError(unreadable)
    words = _ITERATOR_PREFIX.sub("", err.message.strip()).splitlines()[0]
    return DataError(f"reading the {cfg.source} data failed: {words}")
