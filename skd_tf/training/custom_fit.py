"""Support for Keras models with a custom ``train_step`` that run on one device or under tf.distribute."""

from __future__ import annotations

import tensorflow as tf


def _multi_worker(strategy) -> bool:
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def record_step(trackers: dict, values: dict, miou=None, labels=None, logits=None) -> dict:
    """Updates the Mean ``trackers`` (and ``miou``) with one (replica-)step and returns the logs.

    Each replica holds its share of a global-batch mean, so values are scaled
    back by the replica count for display. Under multi-worker training the logs
    are shape-[1] tensors: Keras 3 reduces them with ``axis=0``, which fails on
    scalars (tensorflow/tensorflow#72388).
    """
    strategy = tf.distribute.get_strategy()
    replicas = tf.cast(strategy.num_replicas_in_sync, tf.float32)
    for name, value in values.items():
        if name in trackers:
            trackers[name].update_state(value * replicas)
    metrics = list(trackers.values())
    if miou is not None:
        miou.update_state(labels, logits)
        metrics.append(miou)
    logs = {m.name: m.result() for m in metrics}
    if _multi_worker(strategy):
        logs = {k: tf.reshape(v, [1]) for k, v in logs.items()}
    return logs


class Prebuilt:
    """Mixin for models that create every variable (theirs, losses', optimizers') before ``fit``.

    Keras's ``fit`` first "symbolically builds" a model made under a strategy by
    reducing its first distributed batch, which fails under
    MultiWorkerMirroredStrategy; a model that is already built does not need it.
    """

    @property
    def trained_variables(self) -> list:
        """The variables the compiled optimizer updates."""
        raise NotImplementedError

    def build_optimizer(self) -> None:
        """Makes the optimizer's variables for ``trained_variables`` (under the model's strategy) if the model is
        built and they are not: on one device Keras leaves them to the first traced train step, and a
        tf.function that creates variables is traced twice."""
        if self.built and self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trained_variables)

    def fit(self, *args, shuffle: bool = False, **kwargs):
        """Keras' ``fit`` after ``build_optimizer``; ``shuffle`` defaults to False, as the data pipelines shuffle
        (and Keras warns that it ignores ``shuffle=True`` for a tf.data.Dataset)."""
        self.build_optimizer()
        return super().fit(*args, shuffle=shuffle, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self.built and self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
