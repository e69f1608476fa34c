"""Unlabelled images named on a command line: which files (``image_files``) and their pixels as a viewer shows
them (``read_photo``). ``skd-tf predict`` labels them; ``skd-tf export --images`` calibrates and checks on them."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from skd_tf.data.sources import IMAGE_SUFFIXES, DataError


def image_files(inputs: list[str]) -> list[Path]:
    """The images named by ``inputs``: files, folders (their .jpg/.jpeg/.png files, not recursing) and glob
    patterns (quote them so the shell leaves them alone), in the given order, each folder's sorted, each file
    once. A folder dataset's root (``images/`` and ``masks/`` inside) stands for its ``images/`` folder.
    DataError names an input that matches nothing."""
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
    return list(dict.fromkeys(found))


def read_photo(path: Path) -> np.ndarray:
    """The file's pixels as uint8 H×W×3 as every viewer shows them: turned by the EXIF orientation a phone
    writes instead of rotating the pixels (Pillow's ``exif_transpose``; TensorFlow's decoder ignores it, and a
    portrait photo would get the labels of its sideways pixels). Errors name the file, in our words."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except UnidentifiedImageError:
        raise DataError(f"cannot decode {path}: not an image file Pillow can read (JPEG, PNG, ...)") from None
    except (OSError, SyntaxError, ValueError) as err:  # a truncated or damaged file
        raise DataError(f"cannot decode {path}: the file is truncated or damaged ({err})") from None
