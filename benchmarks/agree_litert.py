"""Does our host latency agree with LiteRT's own `litert-benchmark`? (target: means within 15 %)

    python -m benchmarks.agree_litert MODEL.tflite [MODEL2.tflite ...] --threads 2 --runs 100

For each model, runs `skd-tf benchmark`'s measurement (a fresh worker process,
the LiteRT interpreter with XNNPACK) and `litert-benchmark --result_json` with
the same threads, warm-up and run counts, alternating ``--repeats`` times, and
prints both means and their ratio (ours / litert-benchmark, median over repeats).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from skd_tf.benchmark.measure import Settings, run_isolated  # noqa: E402


def litert_mean(model: str, threads: int, runs: int, warmup: int) -> float:
    tool = shutil.which("litert-benchmark") or str(Path(sys.executable).with_name("litert-benchmark"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        proc = subprocess.run([tool, "--model", model, "--num_threads", str(threads), "--num_runs", str(runs),
                               "--warmup_runs", str(warmup), "--result_json", str(out)],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            raise SystemExit(f"litert-benchmark failed on {model}: {proc.stderr.strip().splitlines()[-1:]}")
        return float(json.loads(out.read_text())["latency"]["avg_ms"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="alternating measurements per tool")
    args = parser.parse_args()
    settings = Settings(warmup=args.warmup, runs=args.runs)
    print(f"{'model':<40} {'ours (ms)':>10} {'litert (ms)':>12} {'ratio':>7}")
    worst = 0.0
    for model in args.models:
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(run_isolated(model, args.threads, True, settings)["latency_ms"]["mean"])
            theirs.append(litert_mean(model, args.threads, args.runs, args.warmup))
        a, b = statistics.median(ours), statistics.median(theirs)
        worst = max(worst, abs(a / b - 1))
        print(f"{Path(model).name:<40} {a:>10.3f} {b:>12.3f} {a / b:>7.3f}")
    print(f"largest disagreement: {100 * worst:.1f} % (target <= 15 %), {args.threads} threads, {args.runs} runs")
    return 0 if worst <= 0.15 else 1


if __name__ == "__main__":
    sys.exit(main())
