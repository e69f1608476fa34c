"""Pair-wise similarity distillation (SPEC §1.2), exact at full resolution."""

from __future__ import annotations

import tensorflow as tf

from skd_tf.losses.base import EPS, DistillationLoss, l2_normalize, resize_to


def pool_nodes(x, size: int, mode: str = "max"):
    """Aggregates size×size patches into graph nodes (ceil mode: partial edge patches count).

    ``mode`` "max" (the reference code's choice) or "avg" (padding excluded from the mean).
    """
    if size <= 1:
        return x
    pad_h = -tf.shape(x)[1] % size
    pad_w = -tf.shape(x)[2] % size
    paddings = [[0, 0], [0, pad_h], [0, pad_w], [0, 0]]
    if mode == "max":
        return tf.nn.max_pool2d(tf.pad(x, paddings, constant_values=x.dtype.min), size, size, "VALID")
    if mode == "avg":
        total = tf.nn.avg_pool2d(tf.pad(x, paddings), size, size, "VALID")
        count = tf.nn.avg_pool2d(tf.pad(tf.ones_like(x[..., :1]), paddings), size, size, "VALID")
        return total / count
    raise ValueError(f"node pooling must be 'max' or 'avg', got {mode!r}")


def normalize_features(x, detach_norm: bool = False):
    """x / ‖x‖₂ along the last axis (zero vectors stay zero); optionally no gradient through the norm."""
    if not detach_norm:
        return l2_normalize(x)
    norm = tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(x), -1, keepdims=True), EPS))
    return x / tf.stop_gradient(norm)


def normalized_nodes(feature_map, detach_norm: bool = False):
    """B×h×w×C map → B×N×C matrix F̂ of L2-normalised node features (zero rows stay zero)."""
    shape = tf.shape(feature_map)
    flat = tf.reshape(feature_map, [shape[0], shape[1] * shape[2], feature_map.shape[-1]])
    return normalize_features(flat, detach_norm)


def gram_pairwise_distance(nodes_s, nodes_t):
    """(1/N²)‖A_S − A_T‖²_F per image, with A = F̂F̂ᵀ, via the Gram identity (SPEC §1.2).

    ‖A_S − A_T‖²_F = ‖F̂_SᵀF̂_S‖²_F − 2‖F̂_SᵀF̂_T‖²_F + ‖F̂_TᵀF̂_T‖²_F: O(N·C²) time and
    O(C²) memory instead of O(N²·C) and O(N²). Channel counts may differ.
    """
    n = tf.cast(tf.shape(nodes_s)[1], tf.float32)
    ss = tf.einsum("bnc,bnd->bcd", nodes_s, nodes_s)
    st = tf.einsum("bnc,bnd->bcd", nodes_s, nodes_t)
    tt = tf.einsum("bnc,bnd->bcd", nodes_t, nodes_t)
    total = (tf.reduce_sum(tf.square(ss), [1, 2]) - 2.0 * tf.reduce_sum(tf.square(st), [1, 2])
             + tf.reduce_sum(tf.square(tt), [1, 2]))
    return tf.maximum(total, 0.0) / (n * n)  # rounding can leave a tiny negative


def explicit_pairwise_distance(nodes_s, nodes_t):
    """(1/N²) Σ_ij (a_ij^S − a_ij^T)² per image from the explicit N×N similarity matrices."""
    a_s = tf.einsum("bic,bjc->bij", nodes_s, nodes_s)
    a_t = tf.einsum("bic,bjc->bij", nodes_t, nodes_t)
    return tf.reduce_mean(tf.square(a_s - a_t), axis=[1, 2])


def windowed_pairwise_distance(map_s, map_t, window: int):
    """Mean of (a_ij^S − a_ij^T)² over node pairs (i, j) with j ≠ i in the window×window around i.

    The α-neighbour graph of the paper with α = window² − 1; pairs that would
    leave the map are not counted. Inputs are node maps with normalised features.
    """
    r = window // 2
    pad = [[0, 0], [r, r], [r, r], [0, 0]]
    ps, pt = tf.pad(map_s, pad), tf.pad(map_t, pad)
    valid = tf.pad(tf.ones_like(map_s[..., 0]), pad[:3])
    h, w = tf.shape(map_s)[1], tf.shape(map_s)[2]
    total = tf.zeros(tf.shape(map_s)[:1])
    count = tf.zeros(tf.shape(map_s)[:1])
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx == 0:
                continue
            window_s = ps[:, r + dy:r + dy + h, r + dx:r + dx + w]
            window_t = pt[:, r + dy:r + dy + h, r + dx:r + dx + w]
            mask = valid[:, r + dy:r + dy + h, r + dx:r + dx + w]
            diff = tf.reduce_sum(map_s * window_s, -1) - tf.reduce_sum(map_t * window_t, -1)
            total += tf.reduce_sum(tf.square(diff) * mask, [1, 2])
            count += tf.reduce_sum(mask, [1, 2])
    return total / tf.maximum(count, 1.0)


class PairwiseDistillation(DistillationLoss):
    """L_pa = (1/|R|²) Σ_i Σ_j (a_ij^S − a_ij^T)², a_ij = f_i·f_j / (‖f_i‖‖f_j‖) on the head features.

    Nodes R are β×β patches (``granularity`` β; default 1 = every pixel, the
    paper's full-resolution form) aggregated by ``pool`` ("max" as in the
    reference code, or "avg"). ``scale`` selects the reference code's form
    instead: β = int(W'·scale), e.g. 0.5 → 2×2 nodes. ``window`` (odd) restricts
    j to the window×window neighbourhood of i (the paper's α); the default is
    the full graph, computed exactly with the Gram identity (``exact=True``) or
    with the explicit N×N matrices (``exact=False``, for comparison).
    ``detach_norm`` stops the gradient through the student's L2 norms, as the
    reference code does. Student features at another resolution are resized to
    the teacher's; channel counts may differ.
    """

    reads = "features"

    def __init__(self, granularity: int = 1, scale: float | None = None, pool: str = "max",
                 window: int | None = None, exact: bool = True, detach_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        if granularity < 1:
            raise ValueError("granularity must be at least 1")
        if window is not None and (window < 3 or window % 2 == 0):
            raise ValueError("window must be an odd number of at least 3")
        if scale is not None and not 0 < scale <= 1:
            raise ValueError("scale must be in (0, 1]")
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        self.granularity = int(granularity)
        self.scale = scale
        self.pool = pool
        self.window = window
        self.exact = exact
        self.detach_norm = detach_norm

    def patch_size(self, feature_map) -> int:
        if self.scale is None:
            return self.granularity
        width = feature_map.shape[2]
        if width is None:
            raise ValueError("scale needs a static feature-map width")
        return max(1, int(width * self.scale))

    def per_example(self, student, teacher, labels=None, images=None):
        student = resize_to(student, teacher)
        size = self.patch_size(teacher)
        map_s = pool_nodes(student, size, self.pool)
        map_t = pool_nodes(teacher, size, self.pool)
        if self.window:
            return windowed_pairwise_distance(
                normalize_features(map_s, self.detach_norm), normalize_features(map_t), self.window)
        nodes_s = normalized_nodes(map_s, self.detach_norm)
        nodes_t = normalized_nodes(map_t)
        if self.exact:
            return gram_pairwise_distance(nodes_s, nodes_t)
        return explicit_pairwise_distance(nodes_s, nodes_t)

    def get_config(self):
        return {**super().get_config(), "granularity": self.granularity, "scale": self.scale, "pool": self.pool,
                "window": self.window, "exact": self.exact, "detach_norm": self.detach_norm}
