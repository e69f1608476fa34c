"""The image side of ``skd-tf predict``: which files to read and the PNGs written for each."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from skd_tf.benchmark.labels import palette
from skd_tf.data import DataError
from skd_tf.data.sources import IMAGE_SUFFIXES


def find_images(inputs: list[str]) -> list[Path]:
    """The images named by ``inputs``: files, folders (their .jpg/.jpeg/.png files, not recursing) and glob
    patterns (quote them so the shell leaves them alone), in the given order, each folder's sorted. A
    folder dataset's root (``images/`` and ``masks/`` inside) stands for its ``images/`` folder.
    Errors name the input that matches nothing and two inputs whose outputs would collide."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and (path / "images").is_dir() and not any(p.suffix.lower() in IMAGE_SUFFIXES
                                                                     for p in path.iterdir()):
            path = path / "images"
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not matches:
                raise DataError(f"no .jpg or .png images in {path}")
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(item) if os.path.isfile(p))
            if not matches:
                raise DataError(f"input not found: {item} (no such file or folder, and no file matches it)")
        found.extend(matches)
    stems: dict[str, Path] = {}
    for path in dict.fromkeys(found):
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
