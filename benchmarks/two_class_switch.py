"""The int8 `two_class` label head with its last step as a comparison and SELECT_V2 against the int8 switch
(issue #29, "a cheap label head"; docs/real-size.md).

    python -m benchmarks.two_class_switch                  # measure what is not recorded for this host
    python -m benchmarks.two_class_switch --table-only --docs

Since 2026-12-07 an int8 file's `two_class` head ends in a ReLU6 convolution, a MUL and an ADD that XNNPACK
runs (``skd_tf.export.label_heads._integer_switch``, made exact by
``skd_tf.export.flatbuffer_edit.exact_two_class_switch``) instead of GREATER_EQUAL and SELECT_V2 on TFLite's
builtin kernels; the SELECT form is still the head of networks with more than 128 classes, and this script
exports it by setting ``label_heads.INTEGER_SWITCH_CLASSES`` to 0. Each student (benchmarks/label_head.py's
``STUDENTS``: untrained, BN statistics set from 4 fabricated street scenes) at 512×1024 and 1024×2048 is
exported to int8 three times — logits only, the SELECT head, the switch — calibrated on 8 fabricated street
scenes, and the three files are timed in one process with 1 and 2 threads, in ``--rounds`` interleaved rounds
of at least 0.3 s each (XNNPACK): a head's time is the median over the rounds of t(head file) − t(logits file)
in the round (paired; until 2026-12-08 the difference of the two medians, which a drift of the VM within the
run moved by milliseconds), its share head / (t(logits) + head), t(logits) the median. The two heads' labels
on the first calibration scene are compared too.
Records: benchmarks/results/two_class_switch.json, one entry per host, student, size and thread count; a
recorded entry is not measured again (``--fresh``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "two_class_switch.json"
SIZES = ((512, 1024), (1024, 2048))
KINDS = ("logits", "select", "switch")


def load_record() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def save_record(record: dict) -> None:
    from skd_tf.atomic import write_text

    write_text(RESULTS, json.dumps(record, indent=2) + "\n")


def timed_rounds(paths: dict, image: np.ndarray, threads: int, rounds: int) -> tuple[dict, dict, dict]:
    """Median ms per file over ``rounds`` interleaved rounds (each file ≥ 0.3 s and 3 runs per round) with
    ``threads``; each head file's time minus the logits file's, the median over the rounds of that round's
    difference (paired: a drift of the VM that slows one round slows both files); and the label outputs of
    the head files."""
    from skd_tf.benchmark import runtime

    interpreters, labels = {}, {}
    for kind, path in paths.items():
        interpreters[kind] = runtime.make_interpreter(str(path), threads)
        output = runtime.run(interpreters[kind], image)  # the input stays set for the timed runs
        if kind != "logits":
            labels[kind] = output.astype(np.int32)
    times = {kind: [] for kind in interpreters}
    for _ in range(rounds):
        for kind, interpreter in interpreters.items():
            start, runs = time.perf_counter(), 0
            while runs < 3 or time.perf_counter() - start < 0.3:
                interpreter.invoke()
                runs += 1
            times[kind].append(1e3 * (time.perf_counter() - start) / runs)
    heads = {kind: float(np.median(np.subtract(ms, times["logits"]))) for kind, ms in times.items() if kind != "logits"}
    return {kind: float(np.median(ms)) for kind, ms in times.items()}, heads, labels


def measure(record: dict, students: list[str], rounds: int, fresh: bool) -> None:
    from benchmarks.label_head import export_int8, untrained_student
    from skd_tf.benchmark.device import host_device
    from skd_tf.export import label_heads

    host = host_device()
    rows = record.setdefault(host, {})
    switch_classes = label_heads.INTEGER_SWITCH_CLASSES
    for name in students:
        for size in SIZES:
            keys = {threads: f"{name} {size[0]}x{size[1]} {threads}t" for threads in (1, 2)}
            if all(key in rows for key in keys.values()) and not fresh:
                continue
            print(f"{name} {size[0]}x{size[1]}: exporting and timing", flush=True)
            network, calibration = untrained_student(name, size)
            with tempfile.TemporaryDirectory() as tmp:
                paths = {kind: Path(tmp) / f"{kind}.tflite" for kind in KINDS}
                try:
                    for kind, path in paths.items():
                        label_heads.INTEGER_SWITCH_CLASSES = 0 if kind == "select" else switch_classes
                        export_int8(network, size, None if kind == "logits" else "two_class", calibration, path)
                finally:
                    label_heads.INTEGER_SWITCH_CLASSES = switch_classes
                for threads, key in keys.items():
                    ms, heads, labels = timed_rounds(paths, calibration[:1], threads, rounds)
                    rows[key] = {"ms": {kind: round(value, 2) for kind, value in ms.items()},
                                 "head_ms": {kind: round(value, 2) for kind, value in heads.items()},
                                 "rounds": rounds,
                                 "labels_equal": float(np.mean(labels["select"] == labels["switch"]))}
                    print(f"  {threads} thread(s): " + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items()), flush=True)
            save_record(record)


def table(record: dict) -> str:
    """One markdown table per host: each head's time t(head) − t(logits) in ms and its share of the file."""
    blocks = []
    for host, rows in record.items():
        lines = ["| student | input | threads | int8 logits ms | SELECT head: ms (share) | int8 switch: ms (share) "
                 "| labels equal |", "|---|---|---|---|---|---|---|"]
        for key, row in rows.items():
            name, size, threads = key.split()
            ms = row["ms"]
            # records before 2026-12-08 have no paired head times: the difference of the medians
            heads = row.get("head_ms") or {kind: ms[kind] - ms["logits"] for kind in ("select", "switch")}
            cells = [f"{heads[kind]:.2f} ({100 * heads[kind] / (ms['logits'] + heads[kind]):.1f} %)"
                     for kind in ("select", "switch")]
            lines.append(f"| {name} | {size.replace('x', '×')} | {threads[:-1]} | {ms['logits']:.1f} | "
                         f"{cells[0]} | {cells[1]} | {100 * row['labels_equal']:.2f} % |")
        rounds = sorted({row["rounds"] for row in rows.values()})
        blocks.append("\n".join(lines) + f"\n\nint8, XNNPACK, medians of {'/'.join(map(str, rounds))} interleaved "
                      f"rounds in one process; {host}.")
    return "\n\n".join(blocks)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.label_head import STUDENTS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", default="lraspp_mobilenetv2,lraspp_mobilenetv3_small,espnet_c",
                        help=f"comma-separated of {', '.join(STUDENTS)} (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="measure again what is recorded for this host")
    parser.add_argument("--table-only", action="store_true", help="measure nothing; print the recorded table")
    parser.add_argument("--docs", action="store_true", help="write the table into docs/real-size.md")
    args = parser.parse_args(argv)
    students = [s for s in args.students.split(",") if s]
    unknown = sorted(set(students) - set(STUDENTS))
    if unknown:
        parser.error(f"unknown student(s) {', '.join(unknown)}; choose from {', '.join(STUDENTS)}")
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    record = load_record()
    if not args.table_only:
        from skd_tf.console import QUIET, start_tensorflow

        start_tensorflow(QUIET)
        start = time.time()
        measure(record, students, args.rounds, args.fresh)
        print(f"done in {(time.time() - start) / 60:.1f} min", flush=True)
    from benchmarks.docs_pages import show

    show(table(record), "real-size.md", "two-class-switch", args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
