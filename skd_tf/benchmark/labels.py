"""Real images in and coloured label maps out (Pillow is needed only here)."""

from __future__ import annotations

import numpy as np

from . import runtime
from .errors import BenchmarkError

def load_image(path: str, detail: dict, normalise: tuple | None) -> tuple[np.ndarray, bool]:
    """The image as the model's input tensor; returns (tensor, resized). Images of another size are
    resized (bilinear) to the model input, which is fixed-size."""
    try:
        from PIL import Image
    except ImportError:
        raise BenchmarkError("--input needs Pillow (pip install pillow)") from None
    try:
        img = Image.open(path).convert("RGB")
    except (OSError, ValueError) as err:
        raise BenchmarkError(f"cannot read image {path}: {err}") from None
    _, h, w, _ = [int(d) for d in detail["shape"]]
    resized = img.size != (w, h)
    if resized:
        img = img.resize((w, h), Image.BILINEAR)
    raw = np.asarray(img, np.float32)[None]
    if normalise is not None and np.issubdtype(np.dtype(detail["dtype"]), np.floating):
        mean, std = normalise
        raw = (raw - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return runtime.to_input(raw, detail), resized


def palette(num_classes: int) -> np.ndarray:
    """A fixed colour per class (Pascal VOC's bit-interleaved palette)."""
    colours = np.zeros((max(num_classes, 1), 3), np.uint8)
    for c in range(num_classes):
        v, r, g, b = c, 0, 0, 0
        for bit in range(8):
            r |= ((v >> 0) & 1) << (7 - bit)
            g |= ((v >> 1) & 1) << (7 - bit)
            b |= ((v >> 2) & 1) << (7 - bit)
            v >>= 3
        colours[c] = (r, g, b)
    return colours


def save_label_png(output: np.ndarray, size: tuple[int, int], path: str) -> None:
    """Colours a label map (or the argmax of logits), at ``size`` (W, H), as a PNG."""
    from PIL import Image

    labels = np.asarray(output)[0]
    if labels.ndim == 3:
        labels = labels.argmax(-1)
    colours = palette(int(labels.max()) + 1)[labels.astype(np.int64)]
    Image.fromarray(colours).resize(size, Image.NEAREST).save(path)
