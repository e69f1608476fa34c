"""The export stage: TFLite conversion, quantization (float16, dynamic, int8, QAT) and the checks of every file
(parity with Keras, integer-only ops, GPU-delegate compatibility, where the bytes go).

From Python: ``from skd_tf.export import export_tflite`` (see docs/python.md); the command is ``skd-tf export``."""

from skd_tf.export.run import ExportError, export_student, export_tflite

__all__ = ["ExportError", "export_student", "export_tflite"]
