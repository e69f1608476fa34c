"""Distillation: the ``Distiller`` Keras model, its config section and the end-to-end ``distill`` run."""
