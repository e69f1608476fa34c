"""Exact Gram-form pair-wise loss vs the explicit N×N form: time and peak memory, forward + backward.

    python -m benchmarks.pairwise                      # N = 1024, 4096, 8192; C_S = 128, C_T = 512
    python -m benchmarks.pairwise --find-max           # also the largest N the explicit form fits in
                                                       # --budget-gib (24) and the Gram form at that N

Each measurement runs in a fresh subprocess, so "peak" is that process's peak
resident memory minus the same process's resident memory just before the
loss ran (TensorFlow's own footprint and the inputs are not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def measure_one(nodes: int, c_s: int, c_t: int, exact: bool, repeats: int, seed: int = 0) -> dict:
    """Times loss + gradient on a 1×nodes×1 map; returns seconds (median) and peak memory (MiB)."""
    import time

    import numpy as np
    import tensorflow as tf

    from skd_tf.benchmark.device import peak_rss_mb
    from skd_tf.losses.pairwise import PairwiseDistillation

    rng = np.random.default_rng(seed)
    student = tf.constant(rng.normal(size=(1, nodes, 1, c_s)).astype("float32"))
    teacher = tf.constant(rng.normal(size=(1, nodes, 1, c_t)).astype("float32"))
    loss = PairwiseDistillation(exact=exact)

    @tf.function
    def step(s, t):
        with tf.GradientTape() as tape:
            tape.watch(s)
            value = loss(s, t)
        return value, tape.gradient(value, s)

    def rss_mib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    step.get_concrete_function(student, teacher)  # trace outside the timed region
    before = rss_mib()
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        value, grad = step(student, teacher)
        grad.numpy()
        times.append(time.perf_counter() - start)
    peak = peak_rss_mb()
    return {"nodes": nodes, "exact": exact, "seconds": float(np.median(times[1:])),
            "peak_mib": peak - before, "value": float(value)}


def run_child(nodes, c_s, c_t, exact, repeats) -> dict | None:
    cmd = [sys.executable, __file__, "--child", str(nodes), str(c_s), str(c_t), str(int(exact)), str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 8192], help="node counts N")
    parser.add_argument("--cs", type=int, default=128, help="student channels")
    parser.add_argument("--ct", type=int, default=512, help="teacher channels")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median reported)")
    parser.add_argument("--find-max", action="store_true", help="search the largest N for the explicit form")
    parser.add_argument("--budget-gib", type=float, default=24.0, help="memory budget for --find-max")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        n, c_s, c_t, exact, repeats = (int(v) for v in args.child)
        print(json.dumps(measure_one(n, c_s, c_t, bool(exact), repeats)))
        return 0

    print(f"pair-wise loss, forward + backward, C_S = {args.cs}, C_T = {args.ct}, CPU, {os.cpu_count()} cores")
    header = f"{'N':>7} | {'explicit s':>10} {'explicit MiB':>12} | {'Gram s':>8} {'Gram MiB':>9} | {'speed-up':>8} {'mem ratio':>9} | {'rel. diff':>9}"
    print(header)
    print("-" * len(header))
    rows = []
    for n in args.sizes:
        explicit = run_child(n, args.cs, args.ct, False, args.repeats)
        gram = run_child(n, args.cs, args.ct, True, args.repeats)
        if explicit is None or gram is None:
            print(f"{n:>7} | failed (out of memory?)")
            continue
        rel = abs(explicit["value"] - gram["value"]) / abs(explicit["value"])
        print(f"{n:>7} | {explicit['seconds']:>10.3f} {explicit['peak_mib']:>12.0f} | {gram['seconds']:>8.3f} "
              f"{gram['peak_mib']:>9.0f} | {explicit['seconds'] / gram['seconds']:>7.1f}x "
              f"{explicit['peak_mib'] / max(gram['peak_mib'], 1):>8.1f}x | {rel:>9.1e}", flush=True)
        rows.append((n, explicit, gram))

    if args.find_max and rows:
        n0, e0, _ = rows[-1]
        per_n2 = e0["peak_mib"] / n0 ** 2  # the explicit form's memory grows as N²
        predicted = int((args.budget_gib * 1024 * 0.9 / per_n2) ** 0.5) // 1024 * 1024
        print(f"\nexplicit form uses {per_n2 * 1e6:.2f} MiB per million N²; predicted largest N in "
              f"{args.budget_gib:g} GiB (90% usable): {predicted}")
        n = predicted
        for _ in range(4):
            explicit = run_child(n, args.cs, args.ct, False, 1)
            if explicit is not None:
                gram = run_child(n, args.cs, args.ct, True, 1)
                print(f"largest N run by the explicit form: {n} ({explicit['seconds']:.1f} s, "
                      f"{explicit['peak_mib'] / 1024:.1f} GiB); Gram form at that N: {gram['seconds']:.2f} s, "
                      f"{gram['peak_mib']:.0f} MiB")
                break
            print(f"explicit form failed at N = {n}")
            n = int(n * 0.9) // 1024 * 1024
    return 0


if __name__ == "__main__":
    sys.exit(main())
