"""Timing one .tflite file: init, first inference and the timed runs, in this process or a fresh one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import runtime
from .device import host_device, peak_rss_mb
from .errors import BenchmarkError

LATENCY_KEYS = ("init", "first", "mean", "median", "p5", "p95", "min", "max", "std")


@dataclass(frozen=True)
class Settings:
    """How each configuration is timed: ``warmup`` untimed runs after the first inference, then at least
    ``runs`` timed runs and at least ``min_seconds``; ``seed`` of the random input; ``runtime`` forces one
    of ``runtime.RUNTIMES`` (None: the first installed)."""
    warmup: int = 5
    runs: int = 50
    min_seconds: float = 0.0
    seed: int = 0
    runtime: str | None = None

    def check(self) -> None:
        if self.runs < 1 or self.warmup < 0:
            raise BenchmarkError("--runs must be >= 1 and --warmup >= 0")


def latency_stats(samples_ms: list[float]) -> dict:
    """mean, median, p5, p95 (linear interpolation), min, max and population std of the timed runs."""
    a = np.asarray(samples_ms, np.float64)
    return {"mean": float(a.mean()), "median": float(np.median(a)), "p5": float(np.percentile(a, 5)),
            "p95": float(np.percentile(a, 95)), "min": float(a.min()), "max": float(a.max()),
            "std": float(a.std())}


def random_input(detail: dict, seed: int = 0) -> np.ndarray:
    """A seeded random tensor of the input's shape and dtype (pixel-like values for integer inputs)."""
    rng = np.random.default_rng(seed)
    shape = [int(d) for d in detail["shape"]]
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)
    return rng.uniform(0.0, 255.0, size=shape).astype(dtype)


def measure(model: str, threads: int, xnnpack: bool, warmup: int, runs: int, min_seconds: float,
            seed: int = 0, image: np.ndarray | None = None, runtime_name: str | None = None) -> dict:
    """Init, first inference and ``runs`` timed inferences (at least ``min_seconds``) of one configuration."""
    rt = runtime.load_runtime(runtime_name)
    size = runtime.check_model_file(model)
    start = time.perf_counter()
    interpreter = runtime.make_interpreter(model, threads, xnnpack, rt)
    init_ms = 1e3 * (time.perf_counter() - start)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    data = random_input(inp, seed) if image is None else image
    interpreter.set_tensor(inp["index"], data)
    start = time.perf_counter()
    interpreter.invoke()
    first_ms = 1e3 * (time.perf_counter() - start)
    for _ in range(warmup):
        interpreter.invoke()
    samples = []
    deadline = time.perf_counter() + min_seconds
    while len(samples) < runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        interpreter.invoke()
        samples.append(1e3 * (time.perf_counter() - start))
    result = {"runtime": f"{rt.name} {rt.version}", "model": model, "model_bytes": size, "threads": threads,
              "delegate": "xnnpack" if xnnpack else "none", "device": host_device(),
              "latency_ms": {"init": init_ms, "first": first_ms, **latency_stats(samples)},
              "runs": len(samples), "peak_rss_mb": peak_rss_mb()}
    if image is not None:
        result["output"] = interpreter.get_tensor(out["index"])
    return result


def run_isolated(model: str, threads: int, xnnpack: bool, settings: Settings = Settings()) -> dict:
    """``measure`` in a fresh Python process (clean init time, first inference and peak RSS)."""
    cmd = [sys.executable, "-m", f"{__package__}.measure", model, str(threads), "on" if xnnpack else "off",
           json.dumps(settings.__dict__)]
    # the folder holding the package: skd_tf's checkout, or wherever the benchmark folder was copied to
    root = Path(__file__).resolve().parents[len(__package__.split("."))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchmarkError(f"benchmark of {model} crashed (exit {proc.returncode}): {tail}")
    result = json.loads(lines[-1])
    if "error" in result:
        raise BenchmarkError(result["error"])
    return result


def _worker(argv: list[str]) -> int:
    """``python -m <package>.measure MODEL THREADS on|off SETTINGS_JSON``: runs one configuration and prints
    its result as JSON (``run_isolated`` reads it)."""
    model, threads, xnnpack, settings = argv
    s = Settings(**json.loads(settings))
    try:
        result = measure(model, int(threads), xnnpack == "on", s.warmup, s.runs, s.min_seconds, s.seed,
                         runtime_name=s.runtime)
    except (ValueError, runtime.RuntimeUnavailable) as err:
        print(json.dumps({"error": str(err)}))
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
