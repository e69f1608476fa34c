"""The built-in procedural segmentation dataset ``synthetic``.

Each scene is a low-contrast textured background with a few textured objects of
different shapes. Colours and textures are drawn from the same distribution for
every object class, so a pixel's colour says nothing about its class: the class
is the *shape* of the object the pixel belongs to (disc, square, triangle,
ring, cross, ...). Local texture tells object from background, but a network
must see the object's outline, often many pixels away, to tell which class the
interior is, so receptive field and capacity matter. Every image is a pure
function of ``(seed, split, index)``.
"""

from __future__ import annotations

import numpy as np

SHAPES = ("disc", "square", "triangle", "ring", "cross", "ellipse", "frame", "star")
CLASS_NAMES = ("background",) + SHAPES
_SPLIT_IDS = {"train": 0, "validation": 1, "val": 1, "test": 2}


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of the unit-sized ``shape`` at rotated, scaled coordinates (u, v)."""
    rad = np.hypot(u, v)
    box = np.maximum(np.abs(u), np.abs(v))
    if shape == "disc":
        return rad <= 1.0
    if shape == "square":
        return box <= 0.85
    if shape == "triangle":
        inside = np.ones_like(u, dtype=bool)
        for ang in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            inside &= (u * np.cos(ang) + v * np.sin(ang)) >= -0.55
        return inside
    if shape == "ring":
        return (rad <= 1.0) & (rad >= 0.55)
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0))
    if shape == "ellipse":
        return (u / 1.1) ** 2 + (v / 0.5) ** 2 <= 1.0
    if shape == "frame":
        return (box <= 0.9) & (box >= 0.55)
    if shape == "star":
        return rad <= 0.55 + 0.45 * np.cos(5 * np.arctan2(v, u))
    raise ValueError(f"unknown shape {shape!r}")


def _texture(rng: np.random.Generator, size: int, contrast: float = 1.0) -> np.ndarray:
    """A size×size×3 float texture: two random colours mixed by a random pattern.

    ``contrast`` < 1 pulls the second colour towards the first.
    """
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    c1, c2 = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    c2 = c1 + contrast * (c2 - c1)
    kind = rng.integers(4)
    if kind == 0:  # stripes
        phi, freq = rng.uniform(0, np.pi), rng.uniform(0.08, 0.35)
        p = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (x * np.cos(phi) + y * np.sin(phi)))
    elif kind == 1:  # checkerboard
        s = rng.integers(2, 6)
        p = ((x // s + y // s) % 2).astype(np.float32)
    elif kind == 2:  # blotchy noise: low-resolution noise upsampled
        cells = rng.integers(3, 9)
        low = rng.uniform(0, 1, size=(cells, cells)).astype(np.float32)
        idx = (np.arange(size) * cells // size)
        p = low[idx][:, idx]
    else:  # linear gradient
        phi = rng.uniform(0, 2 * np.pi)
        g = x * np.cos(phi) + y * np.sin(phi)
        p = (g - g.min()) / max(float(np.ptp(g)), 1e-6)
    return c1 * (1 - p[..., None]) + c2 * p[..., None]


def render_scene(rng: np.random.Generator, size: int, num_classes: int, min_objects: int = 1,
                 max_objects: int = 3, max_rotation: float = 15.0) -> tuple[np.ndarray, np.ndarray]:
    """Draws one scene; returns (uint8 image size×size×3, uint8 label size×size).

    Objects are rotated by up to ±``max_rotation`` degrees.
    """
    image = _texture(rng, size, contrast=0.3)
    label = np.zeros((size, size), np.uint8)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(int(rng.integers(min_objects, max_objects + 1))):
        cls = int(rng.integers(1, num_classes))
        radius = rng.uniform(0.15, 0.35) * size
        cx, cy = rng.uniform(0.1, 0.9, size=2) * size
        theta = rng.uniform(-max_rotation, max_rotation) * np.pi / 180
        dx, dy = (x - cx) / radius, (y - cy) / radius
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        mask = _shape_mask(SHAPES[cls - 1], u, v)
        image[mask] = _texture(rng, size, contrast=0.25)[mask]
        label[mask] = cls
    image += rng.normal(0, 8, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def generate(split: str, num_examples: int, image_size: int, num_classes: int, seed: int,
             min_objects: int = 1, max_objects: int = 3, max_rotation: float = 15.0) -> tuple[np.ndarray, np.ndarray]:
    """Renders ``num_examples`` scenes of a split as (N×S×S×3 uint8, N×S×S uint8) arrays.

    Scene ``i`` of a split depends only on ``(seed, split, i)``, so a larger
    dataset extends a smaller one with the same seed.
    """
    if not 2 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"the synthetic dataset supports 2..{len(CLASS_NAMES)} classes, got {num_classes}")
    if split not in _SPLIT_IDS:
        raise ValueError(f"unknown synthetic split {split!r}; use one of {sorted(_SPLIT_IDS)}")
    if min_objects > max_objects:
        raise ValueError("synthetic.min_objects must not exceed synthetic.max_objects")
    images = np.empty((num_examples, image_size, image_size, 3), np.uint8)
    labels = np.empty((num_examples, image_size, image_size), np.uint8)
    for i in range(num_examples):
        rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
        images[i], labels[i] = render_scene(rng, image_size, num_classes, min_objects, max_objects, max_rotation)
    return images, labels
