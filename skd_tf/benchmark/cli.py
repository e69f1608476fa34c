"""Latency of .tflite models on this machine (host) or on an Android phone over adb: the command line.

Runs with only numpy and a TFLite runtime installed (no TensorFlow, no Keras), so this folder can be
copied to a small Linux board and run as a package of its own::

    python -m benchmark model.tflite --threads 1,2,4 --json out.json     # the copied folder
    python -m skd_tf.benchmark model.tflite --threads 1,2,4              # installed (= skd-tf benchmark)

Each model × thread count × XNNPACK setting runs in a fresh worker process, so
init time, first inference and peak RSS belong to that configuration alone.
Pillow is needed only for ``--input`` and matplotlib only for ``--plot``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import runtime
from .errors import BenchmarkError
from .labels import load_image, save_label_png
from .measure import Settings, run_isolated
from .report import export_facts, format_table, plot

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="+", help=".tflite file(s) to benchmark")
    p.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2,4 (default 1)")
    p.add_argument("--xnnpack", default="on", choices=["on", "off", "both"],
                   help="host: run with the XNNPACK delegate, without it, or both (default on)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs after the first inference (default 5)")
    p.add_argument("--runs", type=int, default=50, help="timed runs, at least (default 50)")
    p.add_argument("--min-seconds", type=float, default=0.0,
                   help="keep timing for at least this many seconds (default 0: just --runs)")
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
    a.add_argument("--delegate", default="xnnpack",
                   help="Android: comma-separated of cpu,xnnpack,gpu,nnapi (default xnnpack)")
    a.add_argument("--taskset", help="Android: CPU affinity mask in hex for taskset, e.g. f0 (big cores)")
    a.add_argument("--op-profiling", action="store_true", help="Android: per-op profile (benchmark_model's table)")
    a.add_argument("--adb", default="adb", help="adb executable (default: adb on PATH)")
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("--quiet", action="store_true", help="only the table and the files written (no progress lines)")
    noise.add_argument("--verbose", action="store_true", help="also each worker's raw JSON result")


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
    settings = Settings(args.warmup, args.runs, args.min_seconds, args.seed, args.runtime)
    settings.check()
    for model in args.model:
        runtime.check_model_file(model)
    if args.input and not os.path.isfile(args.input):
        raise BenchmarkError(f"input image not found: {args.input}")
    results = []
    if args.android:
        from . import android

        results = android.benchmark(args.model, threads, settings, android.Phone(
            args.benchmark_binary, args.adb, args.serial, args.delegate, args.taskset, args.op_profiling))
    else:
        xnnpack_modes = {"on": [True], "off": [False], "both": [True, False]}[args.xnnpack]
        total = len(args.model) * len(threads) * len(xnnpack_modes)
        done = 0
        for model in args.model:
            for t in threads:
                for xnnpack in xnnpack_modes:
                    done += 1
                    if not args.quiet:
                        print(f"[{done}/{total}] {Path(model).name}: {t} thread(s), "
                              f"{'XNNPACK' if xnnpack else 'no delegate'}", file=sys.stderr, flush=True)
                    results.append(run_isolated(model, t, xnnpack, settings))
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
    parser = argparse.ArgumentParser(prog=f"python -m {__package__}", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(args)
    except (BenchmarkError, ValueError, runtime.RuntimeUnavailable) as err:
        print(f"benchmark: error: {err}", file=sys.stderr)
        return 2
    return 0
