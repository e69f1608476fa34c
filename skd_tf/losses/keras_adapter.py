"""Use any skd-tf loss as a ``keras.distillation.DistillationLoss`` with Keras's own Distiller."""

from __future__ import annotations

import keras


class KerasDistillationLoss(keras.distillation.DistillationLoss):
    """Wraps an skd-tf loss for ``keras.distillation.Distiller``.

    ``teacher_layer_name`` / ``student_layer_name`` name the layers whose
    outputs the wrapped loss compares (for example the head feature layer for
    pair-wise distillation); by default the models' final outputs are used.
    ``compute_loss(teacher_outputs, student_outputs)`` returns
    ``loss(student_outputs, teacher_outputs)``.
    """

    def __init__(self, loss, teacher_layer_name: str | None = None, student_layer_name: str | None = None):
        self.loss = loss
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    def validate_outputs(self, teacher_outputs, student_outputs):
        pass  # the wrapped loss handles differing channel counts and resolutions itself

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return self.loss(student_outputs, teacher_outputs)
