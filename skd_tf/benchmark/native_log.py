"""What native (C/C++) code prints to stderr, captured and filtered.

Standard library only: it is copied to boards with the runtime (``runtime`` uses it) and
``skd_tf.console`` uses it for TensorFlow's start-up log.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

# Notes the TFLite runtime and converter print on every interpreter or quantisation, whatever the log level.
TFLITE_NOTES = ("Created TensorFlow Lite XNNPACK delegate", "fully_quantize:", "Estimated count of arithmetic ops",
                "MLIR V1 optimization pass is not enabled")
_notes = {"shown": False}


@contextlib.contextmanager
def native_stderr(keep):
    """Captures what C/C++ code writes to file descriptor 2 inside the block and prints ``keep(text)``'s
    lines to ``sys.stderr`` afterwards (also when the block raises)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in keep(captured.read().decode(errors="replace")):
                print(line, file=sys.stderr)


def show_native_notes(shown: bool) -> None:
    """``--verbose``: let ``without_tflite_notes`` keep every line."""
    _notes["shown"] = shown


def without_tflite_notes(text: str) -> list[str]:
    """The lines of captured native stderr that are not ``TFLITE_NOTES`` (all of them after
    ``show_native_notes(True)`` or with ``TF_CPP_MIN_LOG_LEVEL=0``)."""
    if _notes["shown"] or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return [line for line in text.splitlines() if line.strip()]
    return [line for line in text.splitlines() if line.strip() and not any(n in line for n in TFLITE_NOTES)]
