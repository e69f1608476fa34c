"""The uniform interface of every distillation loss, and the helpers they share.

A loss is a ``keras.layers.Layer`` (so the ones with weights, such as adapters
or the critic, are tracked and saved like any layer) called as::

    value = loss(student, teacher, labels=None, images=None)

``student`` and ``teacher`` are the dict outputs of two segmentation models
(``{"logits", "features"[, "aux_logits"]}``) or, for convenience, the single
tensor the loss reads (``loss.reads``). The result is a float32 scalar already
averaged over the GLOBAL batch: per-image values are summed and divided by the
global batch size (tf.nn.compute_average_loss), so that summing gradients over
tf.distribute replicas gives the single-device gradient (SPEC §5). Teacher
inputs pass through ``stop_gradient``; every computation runs in float32 even
under a mixed-precision policy.
"""

from __future__ import annotations

import keras
import tensorflow as tf

EPS = 1e-12


def as_float32(x):
    return tf.cast(x, tf.float32)


def l2_normalize(x, axis=-1):
    """x / max(‖x‖₂, 1e-6): an all-zero vector stays zero instead of becoming NaN."""
    return tf.math.l2_normalize(x, axis=axis, epsilon=EPS)


def safe_norm(x, axis=-1):
    """‖x‖₂ along ``axis`` with a finite gradient at 0 (where the norm is exactly 0)."""
    squared = tf.reduce_sum(tf.square(x), axis=axis)
    nonzero = squared > 0
    return tf.where(nonzero, tf.sqrt(tf.where(nonzero, squared, 1.0)), 0.0)


def resize_to(x, reference):
    """Bilinearly resizes B×h×w×C ``x`` to the spatial size of ``reference`` when they differ."""
    if x.shape[1:3] == reference.shape[1:3] and x.shape[1] is not None:
        return x
    return tf.image.resize(x, tf.shape(reference)[1:3], method="bilinear")


def average_over_global_batch(per_example, global_batch_size=None):
    """Σ_b loss_b / global batch size (the per-replica share under tf.distribute)."""
    return tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)


def gather_global_batch(x):
    """All replicas' rows of ``x`` (axis 0) and the replica count, for batch-level losses.

    A relational loss over the whole batch is computed on every replica from the
    gathered rows and divided by the replica count; the all-gather gradient sums
    the replicas' shares, which gives the single-device gradient.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x, 1
    return ctx.all_gather(x, axis=0), ctx.num_replicas_in_sync


class DistillationLoss(keras.layers.Layer):
    """Base class: ``loss(student, teacher, labels=None, images=None) -> scalar``.

    Subclasses set ``reads`` (the model output the loss compares, ``"logits"``
    or ``"features"``) and implement ``per_example(student, teacher, labels,
    images) -> (B,)`` for per-image losses, or override ``compute`` for
    batch-level ones. Inputs arrive as float32, teacher already stop-gradient.
    """

    reads = "logits"

    def __init__(self, global_batch_size: int | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.global_batch_size = global_batch_size
        # Sublayers (adapters, the critic) build on the first real call. Without this, Keras would
        # "build" the loss by tracing call() symbolically, creating their variables in a scratch
        # graph where gradients never reach them.
        self.built = True

    def select(self, outputs, key=None):
        """The tensor this loss reads from a model's output dict (or the tensor itself)."""
        if isinstance(outputs, dict):
            key = key or self.reads
            if key not in outputs:
                raise KeyError(f"{type(self).__name__} reads '{key}' but the outputs have {sorted(outputs)}")
            return outputs[key]
        return outputs

    def call(self, student, teacher, labels=None, images=None):
        s = as_float32(self.select(student))
        t = tf.stop_gradient(as_float32(self.select(teacher)))
        return self.compute(s, t, labels=labels, images=images)

    def compute(self, student, teacher, labels=None, images=None):
        return average_over_global_batch(self.per_example(student, teacher, labels, images),
                                         self.global_batch_size)

    def per_example(self, student, teacher, labels=None, images=None):
        raise NotImplementedError

    def component_names(self) -> tuple[str, ...]:
        """The names of the parts the Distiller logs separately (empty: the loss is logged whole)."""
        return ()

    def components(self, student, teacher, training=False) -> dict:
        """``{part name: value}`` for a loss with parts (``component_names``); ``combine`` weighs them into
        the loss. ``training`` is the mode of the loss's own layers (an adapter's batch norm)."""
        raise NotImplementedError(f"{type(self).__name__} has no parts")

    def combine(self, parts: dict):
        """The loss from its parts (``components``)."""
        raise NotImplementedError(f"{type(self).__name__} has no parts")

    def get_config(self):
        return {**super().get_config(), "global_batch_size": self.global_batch_size}
