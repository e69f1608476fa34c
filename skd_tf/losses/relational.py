"""Relational distillation on per-image embeddings (SPEC §3): SP, CC, IRG, RKD.

These compare relations between the images of a batch, so they are computed on
the GLOBAL batch: under tf.distribute every replica gathers all replicas'
embeddings (``gather_global_batch``) and contributes 1/replicas of the loss.
Embeddings come from a B×h×w×C map by global average pooling (``"pool"``) or
by flattening (``"flatten"``, SP's original form).
"""

from __future__ import annotations

import math

import tensorflow as tf

from skd_tf.losses.base import DistillationLoss, as_float32, gather_global_batch, l2_normalize


def embed(x, mode: str):
    """B×h×w×C map (or B×D vectors) → B×D embeddings."""
    if x.shape.rank == 2:
        return x
    if mode == "pool":
        return tf.reduce_mean(x, axis=[1, 2])
    if mode == "flatten":
        return tf.reshape(x, [tf.shape(x)[0], -1])
    raise ValueError(f"embedding must be 'pool' or 'flatten', got {mode!r}")


def huber(x, y, delta: float = 1.0):
    """Mean Huber (smooth-L1) loss, as torch.nn.functional.smooth_l1_loss with beta = δ."""
    d = tf.abs(x - y)
    return tf.reduce_mean(tf.where(d < delta, 0.5 * tf.square(d) / delta, d - 0.5 * delta))


def pairwise_distances(e, squared: bool = False):
    """B×B Euclidean distances (squared ones clamped at 1e-12 before the root; diagonal 0)."""
    sq = tf.reduce_sum(tf.square(e), -1)
    d2 = tf.maximum(sq[:, None] + sq[None, :] - 2.0 * tf.matmul(e, e, transpose_b=True), 1e-12)
    d = d2 if squared else tf.sqrt(d2)
    return d * (1.0 - tf.eye(tf.shape(e)[0]))


class RelationalLoss(DistillationLoss):
    """Base of the batch-level losses: ``relation_loss(student_emb, teacher_emb)`` on the global batch."""

    reads = "features"

    def __init__(self, embedding: str = "pool", **kwargs):
        super().__init__(**kwargs)
        if embedding not in ("pool", "flatten"):
            raise ValueError(f"embedding must be 'pool' or 'flatten', got {embedding!r}")
        self.embedding = embedding

    def compute(self, student, teacher, labels=None, images=None):
        es, replicas = gather_global_batch(embed(student, self.embedding))
        et, _ = gather_global_batch(embed(teacher, self.embedding))
        return self.relation_loss(es, et) / replicas

    def relation_loss(self, es, et):
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "embedding": self.embedding}


class SimilarityPreserving(RelationalLoss):
    """SP (Tung & Mori 2019): G = row-normalise(Q·Qᵀ), L = ‖G_T − G_S‖²_F / b² (RepDistiller weight 3000).

    Q is the b×(h·w·C) matrix of flattened features by default, as in the paper.
    """

    def __init__(self, embedding: str = "flatten", **kwargs):
        super().__init__(embedding=embedding, **kwargs)

    def relation_loss(self, es, et):
        b = tf.cast(tf.shape(es)[0], tf.float32)
        g_s = l2_normalize(tf.matmul(es, es, transpose_b=True))
        g_t = l2_normalize(tf.matmul(et, et, transpose_b=True))
        return tf.reduce_sum(tf.square(g_t - g_s)) / (b * b)


class CorrelationCongruence(RelationalLoss):
    """CC (Peng et al. 2019): L = mean_ij (k(s_i, s_j) − k(t_i, t_j))² on L2-normalised embeddings.

    ``kernel="gaussian"``: the P-th order Taylor expansion of the Gaussian RBF,
    k(x, y) ≈ Σ_{p=0..P} e^{−2γ}(2γ)^p/p!·(x·y)^p (γ = 0.4, P = 2);
    ``kernel="bilinear"``: k(x, y) = x·y. KD-Zoo weight 100.
    """

    def __init__(self, kernel: str = "gaussian", gamma: float = 0.4, order: int = 2, **kwargs):
        super().__init__(**kwargs)
        if kernel not in ("gaussian", "bilinear"):
            raise ValueError(f"kernel must be 'gaussian' or 'bilinear', got {kernel!r}")
        self.kernel, self.gamma, self.order = kernel, gamma, order

    def correlation(self, e):
        e = l2_normalize(e)
        dots = tf.matmul(e, e, transpose_b=True)
        if self.kernel == "bilinear":
            return dots
        scale = math.exp(-2.0 * self.gamma)
        # the p = 0 term is the constant e^{−2γ}; dots ** 0 would have a NaN gradient at 0
        terms = [scale * (2.0 * self.gamma) ** p / math.factorial(p) * dots ** p for p in range(1, self.order + 1)]
        return scale + tf.add_n(terms) if terms else scale + 0.0 * dots

    def relation_loss(self, es, et):
        return tf.reduce_mean(tf.square(self.correlation(es) - self.correlation(et)))

    def get_config(self):
        return {**super().get_config(), "kernel": self.kernel, "gamma": self.gamma, "order": self.order}


class InstanceRelationGraph(RelationalLoss):
    """IRG (Liu et al. 2019): w_v·L_vertex + w_e·L_edge + w_t·L_transform (defaults 0.1, 5, 5).

    L_vertex = MSE(logits_S, logits_T) over all elements;
    L_edge = MSE between the b×b squared-distance matrices of the embeddings
    (pooled ``features``), each divided by its maximum;
    L_transform = MSE between the per-image squared distances of two layers'
    pooled maps (``transform_layers``, default logits and aux_logits, which have
    the same width), each vector divided by its maximum; left out when a model
    lacks one of those outputs. Takes the models' output dicts.
    One edge term, on the head features: KD-Zoo averages edge terms over three
    backbone layers; a segmentation model's head features are the layer the other
    feature losses read, so we keep one (a deliberate difference, docs/losses.md).
    """

    def __init__(self, vertex_weight: float = 0.1, edge_weight: float = 5.0, transform_weight: float = 5.0,
                 transform_layers=("logits", "aux_logits"), **kwargs):
        super().__init__(**kwargs)
        self.vertex_weight, self.edge_weight, self.transform_weight = vertex_weight, edge_weight, transform_weight
        self.transform_layers = tuple(transform_layers)

    @staticmethod
    def _max_normalized(x):
        return x / tf.maximum(tf.reduce_max(x), 1e-12)

    def call(self, student, teacher, labels=None, images=None):
        if not isinstance(student, dict) or not isinstance(teacher, dict):
            raise TypeError("InstanceRelationGraph takes the models' output dicts (logits and features)")
        s = {k: as_float32(v) for k, v in student.items()}
        t = {k: tf.stop_gradient(as_float32(v)) for k, v in teacher.items()}
        logits_s, replicas = gather_global_batch(s["logits"])
        logits_t, _ = gather_global_batch(t["logits"])
        total = self.vertex_weight * tf.reduce_mean(tf.square(logits_s - logits_t))
        es, _ = gather_global_batch(embed(s["features"], self.embedding))
        et, _ = gather_global_batch(embed(t["features"], self.embedding))
        edge_s = self._max_normalized(pairwise_distances(es, squared=True))
        edge_t = self._max_normalized(pairwise_distances(et, squared=True))
        total += self.edge_weight * tf.reduce_mean(tf.square(edge_s - edge_t))
        a, b = self.transform_layers
        if self.transform_weight and all(k in m for m in (s, t) for k in (a, b)):
            def transform(m):
                first, _ = gather_global_batch(embed(m[a], "pool"))
                second, _ = gather_global_batch(embed(m[b], "pool"))
                return self._max_normalized(tf.reduce_sum(tf.square(first - second), -1))
            total += self.transform_weight * tf.reduce_mean(tf.square(transform(s) - transform(t)))
        return total / replicas

    def get_config(self):
        return {**super().get_config(), "vertex_weight": self.vertex_weight, "edge_weight": self.edge_weight,
                "transform_weight": self.transform_weight, "transform_layers": list(self.transform_layers)}


class RelationalKD(RelationalLoss):
    """RKD (Park et al. 2019, lenscloth/RKD): w_d·L_distance + w_a·L_angle (defaults 25, 50).

    L_distance = Huber(d_S/μ_S, d_T/μ_T): pairwise Euclidean distances, each
    matrix divided by the mean of its positive entries;
    L_angle = Huber(⟨e_ij, e_kj⟩_S, ⟨e_ij, e_kj⟩_T) over all triplets,
    e_ij = normalise(x_i − x_j). Huber δ = 1, mean reduction.
    """

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0, **kwargs):
        super().__init__(**kwargs)
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    @staticmethod
    def normalized_distances(e):
        d = pairwise_distances(e)
        positive = tf.cast(d > 0, tf.float32)
        mean = tf.math.divide_no_nan(tf.reduce_sum(d * positive), tf.reduce_sum(positive))
        return tf.math.divide_no_nan(d, mean)

    @staticmethod
    def angles(e):
        diffs = l2_normalize(e[None, :, :] - e[:, None, :])  # [i, j] = e_j − e_i, normalised
        return tf.matmul(diffs, diffs, transpose_b=True)  # [i, j, k] = cos of the angle at i

    def relation_loss(self, es, et):
        total = 0.0
        if self.distance_weight:
            total += self.distance_weight * huber(self.normalized_distances(es), self.normalized_distances(et))
        if self.angle_weight:
            total += self.angle_weight * huber(self.angles(es), self.angles(et))
        return total

    def get_config(self):
        return {**super().get_config(), "distance_weight": self.distance_weight,
                "angle_weight": self.angle_weight}
