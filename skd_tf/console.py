"""What the commands print around their work: TensorFlow's start-up log, progress, the device line.

A leaf module (no skd_tf imports), used by the CLI and by every stage that shows progress.

* ``start_tensorflow(verbosity)`` imports TensorFlow with its C++ log at errors and above and
  its start-up lines filtered: the lines TensorFlow prints on every CPU-only machine (``Could
  not find cuda drivers``, ``failed call to cuInit`` when the machine has no NVIDIA device, the
  CPU-feature and oneDNN notices) are dropped, every other line is passed on — an NVIDIA GPU
  that fails to initialise still shows.
  Two Python warnings every export or evaluation triggers are dropped (``_PYTHON_NOISE``).
  It then prints one line of our own naming the devices. A user's own ``TF_CPP_MIN_LOG_LEVEL``
  or ``verbosity == 2`` (``--verbose``) leaves TensorFlow's output untouched.
* ``fit_verbose(verbose)``: Keras' per-step progress bar on a terminal, one line per epoch when
  stdout is a file or a pipe (Keras' own convention), nothing when quiet.
* ``show_progress(progress)``: whether a tqdm bar is drawn (never into a file or a pipe).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from skd_tf.benchmark.native_log import native_stderr

QUIET, NORMAL, VERBOSE = 0, 1, 2
_verbosity = NORMAL

# Lines TensorFlow writes at import on any machine without a usable CUDA setup, or on every x86 CPU.
_ALWAYS_BENIGN = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "Could not find cuda drivers on your machine",
    "cpu_feature_guard.cc",
    "To enable the following instructions:",
    "oneDNN custom operations are on",
    "Unable to register cuDNN factory", "Unable to register cuFFT factory", "Unable to register cuBLAS factory",
    "computation placer already registered",
)
_NO_GPU_BENIGN = ("failed call to cuInit",)
# Python-side warnings that every export or evaluation triggers and that ask nothing of the user: the
# TFLite converter's deprecation note, the retracing note when one model is evaluated at several
# input sizes (one function per size, by design), and tfds' note on a data set not prepared yet (when its
# files are missing our error says which and where they go).
_PYTHON_NOISE = ("Please consider providing the trackable_obj argument", "triggered tf.function retracing",
                 "has no dataset_info.json")


class _DropKnownNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(noise in record.getMessage() for noise in _PYTHON_NOISE)


def nvidia_device_present() -> bool:
    """True when the kernel shows an NVIDIA device (then CUDA errors are real and must be shown)."""
    return Path("/proc/driver/nvidia").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def filter_startup_log(text: str, gpu_hardware: bool) -> list[str]:
    """The lines of TensorFlow's start-up stderr a user should see."""
    benign = _ALWAYS_BENIGN + (() if gpu_hardware else _NO_GPU_BENIGN)
    return [line for line in text.splitlines() if line.strip() and not any(b in line for b in benign)]


def describe_devices(gpus: list[str], cpus: int) -> str:
    """The one device line, e.g. "devices: CPU only (no GPU visible), 2 cores"."""
    if not gpus:
        return f"devices: CPU only (no GPU visible), {cpus} core{'s' if cpus != 1 else ''}"
    return f"devices: {len(gpus)} GPU{'s' if len(gpus) != 1 else ''} ({', '.join(gpus)})"


def start_tensorflow(verbosity: int = NORMAL) -> None:
    """Imports TensorFlow as described in the module docstring and prints the device line (stdout)."""
    global _verbosity
    _verbosity = verbosity
    if "tensorflow" in sys.modules:
        return
    user_level = "TF_CPP_MIN_LOG_LEVEL" in os.environ
    if verbosity >= VERBOSE or user_level:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbosity >= VERBOSE else "2")
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
    else:
        # C++ errors only: the converter's and XLA's warnings are notes for TensorFlow's developers
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        with native_stderr(lambda text: filter_startup_log(text, nvidia_device_present())):
            import tensorflow as tf
            gpus = tf.config.list_physical_devices("GPU")
        for name in ("tensorflow", "absl"):
            logging.getLogger(name).addFilter(_DropKnownNoise())
    if verbosity > QUIET:
        names = [re.sub(r"^/physical_device:", "", g.name) for g in gpus]
        print(describe_devices(names, os.cpu_count() or 1), flush=True)


def quiet() -> bool:
    """Whether the command runs with ``--quiet`` (as told to ``start_tensorflow``): libraries' own
    progress bars (tfds' preparation) stay off too."""
    return _verbosity == QUIET


def fit_verbose(verbose: int) -> int:
    """Keras ``fit(verbose=...)``: 0 stays 0; otherwise 1 (bar) on a terminal, 2 (line per epoch) if not."""
    if not verbose:
        return 0
    return 1 if sys.stdout.isatty() else 2


def show_progress(progress: bool) -> bool:
    """Whether to draw a tqdm bar: asked for, and stderr is a terminal."""
    return bool(progress) and sys.stderr.isatty()
