"""How fast a run trains: wall time of every training step and the process's peak memory, in timing.json."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import keras

from skd_tf.benchmark.device import peak_rss_mb


class StepTimer(keras.callbacks.Callback):
    """Times each training step (batch begin to batch end) and, when fit ends, writes ``path``:

    ``{"steps": n, "first_step_s": ..., "median_step_s": ..., "mean_step_s": ..., "images_per_second": ...,
    "peak_rss_mib": ...}`` — the median and mean leave the first step out (it traces and compiles the step
    function), and are null when fit ran a single step. A resumed run's file describes its own steps only.
    """

    def __init__(self, path: Path, batch_size: int):
        super().__init__()
        self.path, self.batch_size = Path(path), batch_size
        self.seconds: list[float] = []
        self._began = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._began = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds.append(time.perf_counter() - self._began)

    def summary(self) -> dict:
        later = self.seconds[1:]
        median = statistics.median(later) if later else None
        return {"steps": len(self.seconds), "first_step_s": self.seconds[0] if self.seconds else None,
                "median_step_s": median, "mean_step_s": statistics.mean(later) if later else None,
                "images_per_second": self.batch_size / median if median else None,
                "peak_rss_mib": round(peak_rss_mb(), 1)}

    def on_train_end(self, logs=None):
        self.path.write_text(json.dumps(self.summary(), indent=1))
