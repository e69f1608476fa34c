"""The image side of ``skd-tf predict``: which files to read and the PNGs written for each."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skd_tf.benchmark.labels import palette
from skd_tf.data import DataError
from skd_tf.data.photos import image_files


def find_images(inputs: list[str]) -> list[Path]:
    """The images named by ``inputs`` (``skd_tf.data.photos.image_files``: files, folders, glob patterns); a
    DataError names two inputs whose outputs would collide (the same file name in two folders)."""
    stems: dict[str, Path] = {}
    for path in image_files(inputs):
        if path.stem in stems:
            raise DataError(f"two inputs share the name {path.stem!r} ({stems[path.stem]} and {path}), so their "
                            f"outputs would overwrite each other; predict them into different --out folders")
        stems[path.stem] = path
    return list(stems.values())


def output_paths(image: Path, out: Path) -> tuple[Path, Path]:
    """``(<out>/<stem>_labels.png, <out>/<stem>_overlay.png)``."""
    return out / f"{image.stem}_labels.png", out / f"{image.stem}_overlay.png"


def save_labels(labels: np.ndarray, num_classes: int, path: Path) -> None:
    """An H×W map of class indices as a palette PNG: the pixel values are the indices (read it back with
    ``np.asarray(Image.open(path))``) and viewers show each class in its colour."""
    from PIL import Image

    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(palette(max(num_classes, 1)).reshape(-1).tolist())
    image.save(path)


def save_overlay(image: np.ndarray, labels: np.ndarray, num_classes: int, path: Path, alpha: float) -> None:
    """The RGB image with each pixel's class colour blended in: (1 − alpha) · image + alpha · colour."""
    from PIL import Image

    colours = palette(max(num_classes, 1))[labels.astype(np.int64)].astype(np.float32)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colours
    Image.fromarray(np.clip(np.round(blended), 0, 255).astype(np.uint8)).save(path)
