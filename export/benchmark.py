"""Latency of .tflite models on this machine (host) or on an Android phone over adb.

Runs with only numpy and a TFLite runtime installed (no TensorFlow, no Keras),
so it can be copied to a small Linux board::

    python -m export.benchmark model.tflite --threads 1,2,4 --json out.json

Each model × thread count × XNNPACK setting runs in a fresh worker process, so
init time, first inference and peak RSS belong to that configuration alone.
Pillow is needed only for ``--input`` and matplotlib only for ``--plot``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from export import runtime

LATENCY_KEYS = ("init", "first", "mean", "median", "p5", "p95", "min", "max", "std")


class BenchmarkError(ValueError):
    """A bad input or a failed run, explained in one line."""


def latency_stats(samples_ms: list[float]) -> dict:
    """mean, median, p5, p95 (linear interpolation), min, max and population std of the timed runs."""
    a = np.asarray(samples_ms, np.float64)
    return {"mean": float(a.mean()), "median": float(np.median(a)), "p5": float(np.percentile(a, 5)),
            "p95": float(np.percentile(a, 95)), "min": float(a.min()), "max": float(a.max()),
            "std": float(a.std())}


# The instruction-set features TFLite's CPU kernels (XNNPACK, ruy, the int8 GEMMs) pick code paths by, as
# /proc/cpuinfo spells them, with the name a reader knows: int8 against float32 latency turns on them.
CPU_FEATURES = (
    ("avx2", "avx2"), ("fma", "fma"), ("avx512f", "avx512f"), ("avx512_vnni", "avx512_vnni"),
    ("avx_vnni", "avx_vnni"), ("avx512_bf16", "avx512_bf16"), ("amx_int8", "amx_int8"), ("amx_bf16", "amx_bf16"),
    ("asimddp", "dotprod"), ("i8mm", "i8mm"), ("asimdhp", "fp16"), ("bf16", "bf16"), ("sve", "sve"),
)


def cpu_features(cpuinfo: str) -> list[str]:
    """The CPU_FEATURES present in a /proc/cpuinfo text (x86 ``flags``, ARM ``Features``), in that order."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return [name for flag, name in CPU_FEATURES if flag in flags]


def describe_cpu(cpuinfo: str, fallback: str) -> str:
    """``"<model name> x<count> [features]"`` from a /proc/cpuinfo text (ARM: the ``Hardware`` or
    ``CPU part`` when there is no model name)."""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
             if line.split(":", 1)[0].strip() in ("model name", "Hardware")]
    cores = sum(1 for line in cpuinfo.splitlines() if line.split(":", 1)[0].strip() == "processor")
    cpu = f"{names[0]} x{cores or 1}" if names else f"{fallback} x{cores or 1}"
    features = cpu_features(cpuinfo)
    return f"{cpu} [{' '.join(features) if features else 'no SIMD extensions listed'}]"


def host_device() -> str:
    """``host: <OS> <arch>, <CPU model> x<cores> [<instruction-set features>]``."""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = describe_cpu(f.read(), platform.processor() or platform.machine())
    except OSError:
        cpu = platform.processor() or platform.machine()
    return f"host: {platform.system()} {platform.machine()}, {cpu}"


def _peak_rss_mb() -> float:
    """This process's peak resident set size. Linux: VmHWM, because ru_maxrss survives exec and would
    report the parent's peak (628 MB from a TensorFlow-loaded parent, measured)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / (1024.0 * 1024.0)


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
              "runs": len(samples), "peak_rss_mb": _peak_rss_mb()}
    if image is not None:
        result["output"] = interpreter.get_tensor(out["index"])
    return result


def _worker(args) -> int:
    """Runs one configuration and prints its result as JSON (the parent process reads it)."""
    try:
        result = measure(args.model[0], args.threads[0], args.xnnpack == "on", args.warmup, args.runs,
                         args.min_seconds, args.seed, runtime_name=args.runtime)
    except (ValueError, runtime.RuntimeUnavailable) as err:
        print(json.dumps({"error": str(err)}))
        return 2
    print(json.dumps(result))
    return 0


def run_isolated(model: str, threads: int, xnnpack: bool, args) -> dict:
    """``measure`` in a fresh Python process (clean init time, first inference and peak RSS)."""
    cmd = [sys.executable, "-m", "export.benchmark", "--worker", model, "--threads", str(threads),
           "--xnnpack", "on" if xnnpack else "off", "--warmup", str(args.warmup), "--runs", str(args.runs),
           "--min-seconds", str(args.min_seconds), "--seed", str(args.seed)]
    if args.runtime:
        cmd += ["--runtime", args.runtime]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchmarkError(f"benchmark of {model} crashed (exit {proc.returncode}): {tail}")
    result = json.loads(lines[-1])
    if "error" in result:
        raise BenchmarkError(result["error"])
    return result


# ----------------------------------------------------------------------------------------------- images

def load_image(path: str, detail: dict, normalise: tuple | None) -> tuple[np.ndarray, bool]:
    """The image as the model's input tensor; returns (tensor, resized). Images of another size are
    resized (bilinear) to the model input, which is fixed-size."""
    try:
        from PIL import Image
    except ImportError:
        raise BenchmarkError("--input needs Pillow (pip install pillow)") from None
    try:
        img = Image.open(path).convert("RGB")
    except (OSError, ValueError) as err:
        raise BenchmarkError(f"cannot read image {path}: {err}") from None
    _, h, w, _ = [int(d) for d in detail["shape"]]
    resized = img.size != (w, h)
    if resized:
        img = img.resize((w, h), Image.BILINEAR)
    raw = np.asarray(img, np.float32)[None]
    if normalise is not None and np.issubdtype(np.dtype(detail["dtype"]), np.floating):
        mean, std = normalise
        raw = (raw - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return runtime.to_input(raw, detail), resized


def palette(num_classes: int) -> np.ndarray:
    """A fixed colour per class (Pascal VOC's bit-interleaved palette)."""
    colours = np.zeros((max(num_classes, 1), 3), np.uint8)
    for c in range(num_classes):
        v, r, g, b = c, 0, 0, 0
        for bit in range(8):
            r |= ((v >> 0) & 1) << (7 - bit)
            g |= ((v >> 1) & 1) << (7 - bit)
            b |= ((v >> 2) & 1) << (7 - bit)
            v >>= 3
        colours[c] = (r, g, b)
    return colours


def save_label_png(output: np.ndarray, size: tuple[int, int], path: str) -> None:
    """Colours a label map (or the argmax of logits), at ``size`` (W, H), as a PNG."""
    from PIL import Image

    labels = np.asarray(output)[0]
    if labels.ndim == 3:
        labels = labels.argmax(-1)
    colours = palette(int(labels.max()) + 1)[labels.astype(np.int64)]
    Image.fromarray(colours).resize(size, Image.NEAREST).save(path)


def export_facts(model: str) -> dict:
    """The export.json entry that describes ``model`` when one sits next to it."""
    record_path = Path(model).with_name("export.json")
    if not record_path.exists():
        return {}
    try:
        record = json.loads(record_path.read_text())
    except ValueError:
        return {}
    return record


# ----------------------------------------------------------------------------------------------- output

def distinct_names(paths: list[str]) -> dict[str, str]:
    """Each path's shortest trailing part that no other path shares: the file name, or as many parent
    folders as it takes (``a/export/x.tflite`` and ``b/export/x.tflite`` → ``a/export/x.tflite`` …)."""
    unique = list(dict.fromkeys(paths))
    parts = {p: Path(p).parts for p in unique}
    names = {}
    for p in unique:
        for depth in range(1, len(parts[p]) + 1):
            tail = parts[p][-depth:]
            if not any(q != p and parts[q][-depth:] == tail for q in unique):
                break
        names[p] = str(Path(*tail))
    return names


def format_table(results: list[dict]) -> str:
    """One row per model × configuration, latencies in ms."""
    rows = [("model", "KiB", "threads", "delegate", "init", "first", "mean", "median", "p5", "p95", "std",
             "runs", "RSS MB")]
    names = distinct_names([r["model"] for r in results])
    for r in results:
        lat = r["latency_ms"]
        rows.append((names[r["model"]], f"{r['model_bytes'] / 1024:.0f}", str(r["threads"]), r["delegate"],
                     *(("-" if lat.get(k) is None else f"{lat[k]:.2f}")
                       for k in ("init", "first", "mean", "median", "p5", "p95", "std")),
                     str(r["runs"]), "-" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.0f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    device = results[0]["device"] if results else ""
    return "\n".join(lines + [f"{results[0]['runtime'] if results else ''} on {device}"])


def plot(results: list[dict], path: str, export_records: list[dict]) -> None:
    """Latency per model and thread count; with export records, the latency–mIoU Pareto chart too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = pareto_points(results, export_records)
    fig, axes = plt.subplots(1, 2 if points else 1, figsize=(12 if points else 7, 4.5), squeeze=False)
    draw_latency(axes[0][0], results)
    if points:
        draw_pareto(axes[0][1], points)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_latency(ax, results: list[dict]) -> None:
    """Grouped bars: mean latency (± std) of each model, one bar per thread count × delegate."""
    models = list(dict.fromkeys(Path(r["model"]).name for r in results))
    configs = list(dict.fromkeys((r["threads"], r["delegate"]) for r in results))
    width = 0.8 / max(len(configs), 1)
    for i, config in enumerate(configs):
        chosen = {Path(r["model"]).name: r for r in results if (r["threads"], r["delegate"]) == config}
        values = [chosen[m]["latency_ms"]["mean"] if m in chosen else np.nan for m in models]
        errors = [chosen[m]["latency_ms"]["std"] or 0.0 if m in chosen else 0.0 for m in models]
        ax.bar(np.arange(len(models)) + i * width, values, width, yerr=errors,
               label=f"{config[0]} thread{'s' if config[0] > 1 else ''}, {config[1]}")
    ax.set_xticks(np.arange(len(models)) + width * (len(configs) - 1) / 2, models, rotation=20, ha="right")
    ax.set_ylabel("mean latency (ms)")
    ax.set_title(results[0]["device"][:60] if results else "")
    ax.legend(fontsize=8)


def draw_pareto(ax, points: list[tuple[float, float, str]]) -> None:
    """TFLite mIoU against latency for each file, with the Pareto front (faster or more accurate)."""
    points = sorted(points)
    # One marker per file, named in the legend: labels written next to the points overlap whenever
    # two files are about as fast and as accurate (a float32 and a float16 export, say).
    markers = "osD^v<>ph*"
    for i, (lat, miou, name) in enumerate(points):
        ax.scatter([lat], [miou], marker=markers[i % len(markers)], s=50, label=f"{name}: {miou:.1f} %, {lat:.2f} ms",
                   zorder=3)
    front, best = [], -math.inf
    for lat, miou, _ in points:
        if miou > best:
            front.append((lat, miou))
            best = miou
    ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="grey", label="Pareto front")
    ax.set_xlabel("mean latency (ms, fastest configuration)")
    ax.set_ylabel("TFLite mIoU (%)")
    ax.set_title("latency vs mIoU")
    ax.legend(fontsize=8, loc="best")


def pareto_points(results: list[dict], export_records: list[dict],
                  labels: dict[str, str] | None = None) -> list[tuple[float, float, str]]:
    """(fastest mean latency, TFLite mIoU in %, name) of every benchmarked file an export record describes;
    the name is ``labels[absolute path]`` when given (e.g. "distilled, int8"), else the file name."""
    labels = {os.path.abspath(k): v for k, v in (labels or {}).items()}
    miou = {}
    for record in export_records:
        for entry in record.get("exports", {}).values():
            miou[os.path.abspath(entry["file"])] = 100.0 * entry["parity"]["miou_tflite"]
    points = {}
    for r in results:
        key = os.path.abspath(r["model"])
        if key in miou:
            lat = r["latency_ms"]["mean"]
            points[key] = min(points.get(key, (math.inf,))[0], lat), miou[key], labels.get(key, Path(key).name)
    return list(points.values())


# ----------------------------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="+", help=".tflite file(s) to benchmark")
    p.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2,4 (default 1)")
    p.add_argument("--xnnpack", default="on", choices=["on", "off", "both"],
                   help="host: run with the XNNPACK delegate, without it, or both (default on)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs after the first inference (default 5)")
    p.add_argument("--runs", type=int, default=50, help="timed runs, at least (default 50)")
    p.add_argument("--min-seconds", type=float, default=0.0, help="keep timing for at least this many seconds (default 0: just --runs)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    p.add_argument("--input", help="a real image to run (PNG/JPEG); saves the coloured label map next to it. "
                                   "Images of another size are resized to the model input (bilinear)")
    p.add_argument("--runtime", choices=list(runtime.RUNTIMES), help="force a runtime (default: first installed)")
    p.add_argument("--json", help="write every result to this JSON file")
    p.add_argument("--plot", help="draw latency per model and thread count (and the Pareto chart) to this PNG")
    p.add_argument("--exports", nargs="*", default=[], help="export.json files giving the mIoU for the Pareto chart "
                                                           "(default: the export.json next to each model)")
    a = p.add_argument_group("Android (over adb)")
    a.add_argument("--android", action="store_true", help="run on an Android device with TFLite's benchmark_model")
    a.add_argument("--serial", help="adb serial of the device (needed when several are connected)")
    a.add_argument("--benchmark-binary", help="path of the Android benchmark_model binary to push")
    a.add_argument("--delegate", default="xnnpack", help="Android: comma-separated of cpu,xnnpack,gpu,nnapi (default xnnpack)")
    a.add_argument("--taskset", help="Android: CPU affinity mask in hex for taskset, e.g. f0 (big cores)")
    a.add_argument("--op-profiling", action="store_true", help="Android: per-op profile (benchmark_model's table)")
    a.add_argument("--adb", default="adb", help="adb executable (default: adb on PATH)")
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("--quiet", action="store_true", help="only the table and the files written (no progress lines)")
    noise.add_argument("--verbose", action="store_true", help="also each worker's raw JSON result")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)


def parse_threads(text: str) -> list[int]:
    try:
        threads = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise BenchmarkError(f"--threads must be comma-separated integers (got {text!r})") from None
    if not threads or min(threads) < 1:
        raise BenchmarkError(f"thread counts must be >= 1 (got {text!r})")
    return threads


def run(args) -> list[dict]:
    """Benchmarks every model × configuration of ``args``; prints the table; writes JSON and the plot."""
    threads = parse_threads(args.threads)
    if args.runs < 1 or args.warmup < 0:
        raise BenchmarkError("--runs must be >= 1 and --warmup >= 0")
    for model in args.model:
        runtime.check_model_file(model)
    if args.input and not os.path.isfile(args.input):
        raise BenchmarkError(f"input image not found: {args.input}")
    results = []
    if args.android:
        from export import android

        results = android.benchmark(args, threads)
    else:
        settings = {"on": [True], "off": [False], "both": [True, False]}[args.xnnpack]
        total = len(args.model) * len(threads) * len(settings)
        done = 0
        for model in args.model:
            for t in threads:
                for xnnpack in settings:
                    done += 1
                    if not args.quiet:
                        print(f"[{done}/{total}] {Path(model).name}: {t} thread(s), "
                              f"{'XNNPACK' if xnnpack else 'no delegate'}", file=sys.stderr, flush=True)
                    results.append(run_isolated(model, t, xnnpack, args))
                    if args.verbose:
                        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
            if args.input:
                _run_image(model, args)
    print(format_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"results: {args.json}")
    if args.plot:
        records = [json.loads(Path(p).read_text()) for p in args.exports] if args.exports else \
            [r for r in {str(Path(m).with_name('export.json')): export_facts(m) for m in args.model}.values() if r]
        plot(results, args.plot, records)
        print(f"plot: {args.plot}")
    return results


def _run_image(model: str, args) -> None:
    interpreter = runtime.make_interpreter(model, 1)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    facts = export_facts(model)
    normalise = None if facts.get("preprocess", True) else (facts["mean"], facts["std"])
    tensor, resized = load_image(args.input, inp, normalise)
    interpreter.set_tensor(inp["index"], tensor)
    interpreter.invoke()
    result = runtime.from_output(interpreter.get_tensor(out["index"]), out)
    from PIL import Image

    size = Image.open(args.input).size
    target = str(Path(args.input).with_name(f"{Path(args.input).stem}.{Path(model).stem}.labels.png"))
    save_label_png(result, size, target)
    note = " (image resized to the model input)" if resized else ""
    print(f"label map: {target}{note}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.benchmark", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.worker:
        args.threads = parse_threads(args.threads)
        return _worker(args)
    try:
        run(args)
    except (BenchmarkError, ValueError, runtime.RuntimeUnavailable) as err:
        print(f"benchmark: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
