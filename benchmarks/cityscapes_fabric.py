"""Cityscapes manual-download zips with procedurally drawn street scenes, for runs at the real size offline.

``write_cityscapes_zips(folder, counts)`` writes ``leftImg8bit_trainvaltest.zip`` and
``gtFine_trainvaltest.zip`` in the official layout (``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_
leftImg8bit.png`` and ``gtFine/.../..._gtFine_labelIds.png``), 2048×1024 like the real data, with the real
label ids (road 7, sidewalk 8, building 11, pole 17, traffic sign 20, vegetation 21, sky 23, person 24,
car 26, ego vehicle 1 — ignored like the real one), so the real tfds builder prepares them and the real label
table maps them. Every image is drawn from its own seed: the same call writes the same bytes.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HEIGHT, WIDTH = 1024, 2048
# label id -> (mean RGB, pixel noise std)
PALETTE = {1: ((20, 20, 20), 4), 7: ((128, 64, 128), 10), 8: ((232, 35, 244), 12), 11: ((70, 70, 70), 18),
           17: ((153, 153, 153), 6), 20: ((220, 220, 0), 8), 21: ((107, 142, 35), 25), 23: ((70, 130, 180), 6),
           24: ((220, 20, 60), 15), 26: ((0, 0, 142), 12)}
SPLITS = {"train": "aachen", "val": "frankfurt", "test": "berlin"}


def draw_scene(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One street scene: (image uint8 HxWx3, label ids uint8 HxW)."""
    rng = np.random.default_rng(seed)
    label = Image.new("L", (WIDTH, HEIGHT), 23)  # sky
    pen = ImageDraw.Draw(label)
    horizon = int(rng.integers(380, 480))
    x = 0
    while x < WIDTH:  # a row of buildings with uneven roofs
        w = int(rng.integers(120, 400))
        pen.rectangle([x, int(rng.integers(60, horizon - 80)), x + w, horizon + 120], fill=11)
        x += w
    for _ in range(int(rng.integers(2, 6))):  # trees
        cx, cy, r = int(rng.integers(0, WIDTH)), int(rng.integers(horizon - 200, horizon)), int(rng.integers(60, 180))
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=21)
    pen.polygon([(0, HEIGHT), (0, horizon + 120), (WIDTH, horizon + 120), (WIDTH, HEIGHT)], fill=8)  # sidewalks
    left, right = int(rng.integers(300, 700)), int(rng.integers(1350, 1750))
    pen.polygon([(-400, HEIGHT), (left + 350, horizon + 40), (right - 350, horizon + 40), (WIDTH + 400, HEIGHT)],
                fill=7)  # the road narrowing to the horizon
    for _ in range(int(rng.integers(2, 5))):  # poles with signs
        px = int(rng.integers(0, WIDTH - 20))
        top = int(rng.integers(100, horizon - 50))
        pen.rectangle([px, top, px + 14, horizon + 200], fill=17)
        pen.rectangle([px - 30, top, px + 44, top + 60], fill=20)
    for _ in range(int(rng.integers(2, 7))):  # cars on the road, nearer ones larger
        depth = float(rng.uniform(0.2, 1.0))
        w, h = int(140 + 500 * depth), int(70 + 220 * depth)
        bottom = int(horizon + 60 + (HEIGHT - 200 - horizon) * depth)
        cx = int(rng.integers(left, right))
        pen.rounded_rectangle([cx - w // 2, bottom - h, cx + w // 2, bottom], radius=h // 5, fill=26)
    for _ in range(int(rng.integers(1, 6))):  # people on the sidewalks
        px = int(rng.choice([rng.integers(0, max(left, 1)), rng.integers(right, WIDTH)]))
        size = int(rng.integers(120, 320))
        foot = int(rng.integers(horizon + 150, HEIGHT - 120))
        pen.ellipse([px - size // 10, foot - size, px + size // 10, foot - size + size // 5], fill=24)
        pen.rectangle([px - size // 7, foot - size + size // 6, px + size // 7, foot], fill=24)
    pen.rectangle([0, HEIGHT - 110, WIDTH, HEIGHT], fill=1)  # ego vehicle: ignored, as in the real data
    labels = np.asarray(label)
    image = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    for class_id, (colour, noise) in PALETTE.items():
        mask = labels == class_id
        image[mask] = colour
        image[mask] += rng.normal(0.0, noise, (int(mask.sum()), 3)).astype(np.float32)
    image *= np.linspace(1.1, 0.8, HEIGHT, dtype=np.float32)[:, None, None]  # light falls off downwards
    return np.clip(image, 0, 255).astype(np.uint8), labels


def street_scenes(count: int, size, seed: int = 1000) -> np.ndarray:
    """``count`` scenes' images (no labels) resized to ``size`` = (H, W): N×H×W×3 uint8, e.g. to calibrate int8."""
    return np.stack([np.asarray(Image.fromarray(draw_scene(seed + i)[0]).resize((size[1], size[0]), Image.BILINEAR))
                     for i in range(count)])


def png_bytes(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 array (fast compression: these files are written once and read once)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_cityscapes_zips(folder: Path, counts: dict[str, int], seed: int = 0) -> dict[str, int]:
    """Writes the two manual-download zips into ``folder`` with ``counts[split]`` scenes per split (train,
    val, test); returns the zips' sizes in bytes. Each zip is written to a temporary name and renamed, so an
    interrupted call never leaves a zip that looks complete."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = folder / "leftImg8bit_trainvaltest.zip", folder / "gtFine_trainvaltest.zip"
    partial = [images.with_suffix(".zip.partial"), labels.with_suffix(".zip.partial")]
    with zipfile.ZipFile(partial[0], "w") as zi, zipfile.ZipFile(partial[1], "w") as zl:
        for s, (split, city) in enumerate(SPLITS.items()):
            for i in range(counts.get(split, 0)):
                image, label = draw_scene(seed * 100_000 + s * 10_000 + i)
                stem = f"{city}_{i:06d}_000019"
                zi.writestr(f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png", png_bytes(image))
                zl.writestr(f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png", png_bytes(label))
    partial[0].replace(images)
    partial[1].replace(labels)
    return {images.name: images.stat().st_size, labels.name: labels.stat().st_size}
