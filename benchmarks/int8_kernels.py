"""Where a phone student's int8 time goes on this CPU: every convolution timed alone, float32 against int8.

    python -m benchmarks.int8_kernels                      # time the students not recorded for this host
    python -m benchmarks.int8_kernels --students espnet_c  # a subset (names of benchmarks/phone_students.py)
    python -m benchmarks.int8_kernels --table-only --docs  # the recorded table into docs/real-size.md

Issue #29 asks for int8 ≤ 0.5 × float32 latency for every mobile student; PSPNet ResNet-18 is far under it
and the light students are not. This script says why, per kind of convolution: each student of
benchmarks/phone_students.py is built at 512×1024 with its BN statistics set as there, and each of its
``Conv2D`` and ``DepthwiseConv2D`` layers is rebuilt alone (same configuration and weights, its input shape
in the network) and converted twice — float32, and int8 with int8 input and output (calibrated on normal
noise: the scale does not change the kernels XNNPACK picks). Both are timed in this process with XNNPACK on
``--threads`` threads (``skd-tf benchmark``'s measurement), and summed by kind (depthwise k×k, stride 2;
1×1 convolution; k×k convolution). The whole network's logits file, float32 and int8 (the phone students'
export, calibrated on fabricated street scenes), is timed the same way, so the table also shows what the
convolutions leave to the other ops (additions, poolings, resizes, activations XNNPACK does not fuse).

Records: one JSON per host and thread count in benchmarks/results/int8_kernels/, named by the host's
instruction-set features (int8 against float32 is what those change most); a student recorded for this host
and thread count is skipped unless ``--fresh``. Timing needs the machine alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
from benchmarks.ablation import host_cpu  # noqa: E402
from benchmarks.phone_students import LATENCY_STUDENTS, export_file, host_key, settled_student  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "int8_kernels"
SIZE = (512, 1024)
DEFAULT_STUDENTS = ("lraspp_mobilenetv2", "lraspp_mobilenetv3_large", "lraspp_mobilenetv3_small", "espnet_c",
                    "pspnet_resnet18")


def record_path(host: dict, threads: int) -> Path:
    return RESULTS / f"{host_key(host)}_{threads}t.json"


def layer_kind(config: dict, depthwise: bool) -> str:
    """The row a convolution is summed in: ``depthwise 3×3``, ``depthwise 3×3 /2`` (stride 2), ``1×1 conv``,
    ``3×3 conv`` …; a dilated kernel keeps its own size (XNNPACK runs dilation with the same kernels)."""
    kh, kw = config["kernel_size"]
    stride = f" /{max(config['strides'])}" if max(config["strides"]) > 1 else ""
    if depthwise:
        return f"depthwise {kh}×{kw}{stride}"
    return f"{kh}×{kw} conv{stride}"


def lone_layer(layer, input_shape: tuple[int, ...]):
    """``layer`` rebuilt alone as a Keras model on inputs of ``input_shape`` (batch 1), with its weights."""
    import keras

    twin = type(layer).from_config(layer.get_config())
    inputs = keras.Input(input_shape, batch_size=1)
    model = keras.Model(inputs, twin(inputs))
    twin.set_weights(layer.get_weights())
    return model


def converted(model, quantize: bool, seed: int = 0) -> bytes:
    """A single-layer model as a TFLite flatbuffer through `skd-tf export`'s conversion
    (skd_tf.export.convert.convert): float32, or int8 throughout (int8 input and output, per-channel weights,
    ranges from four normal-noise inputs)."""
    import tensorflow as tf

    from skd_tf.export.convert import convert

    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    function = tf.function(lambda x: model(x)).get_concrete_function(tf.TensorSpec((1, *shape), tf.float32))
    if not quantize:
        return convert(function, "float32")
    rng = np.random.default_rng(seed)
    samples = [[rng.normal(size=(1, *shape)).astype(np.float32)] for _ in range(4)]
    return convert(function, "int8", lambda: iter(samples), int8_io="int8")


def timed_ms(path: Path, threads: int, settings) -> float:
    """Mean latency of one file (XNNPACK, ``threads``), measured in this process."""
    from skd_tf.benchmark.measure import measure

    return measure(str(path), threads, True, settings.warmup, settings.runs, settings.min_seconds)[
        "latency_ms"]["mean"]


def time_student(student: str, threads: int, settings, tmp: Path) -> dict:
    """Every convolution of ``student`` at ``SIZE`` timed alone in float32 and int8, and the whole logits
    file in both; the record's entry for the student."""
    import keras

    from benchmarks.cityscapes_fabric import street_scenes

    scenes = street_scenes(8, SIZE)
    network = settled_student(student, SIZE, scenes)
    rows = []
    convolutions = [layer for layer in network._flatten_layers()
                    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    for i, layer in enumerate(convolutions):
        input_shape = tuple(int(d) for d in layer.input.shape[1:])
        model = lone_layer(layer, input_shape)
        row = {"layer": layer.name, "kind": layer_kind(layer.get_config(),
                                                        isinstance(layer, keras.layers.DepthwiseConv2D)),
               "input": list(input_shape), "output": [int(d) for d in model.outputs[0].shape[1:]]}
        for quantization in ("float32", "int8"):
            path = tmp / f"{student}_{i}_{quantization}.tflite"
            path.write_bytes(converted(model, quantization == "int8"))
            row[f"{quantization}_ms"] = round(timed_ms(path, threads, settings), 3)
        rows.append(row)
        print(f"  {i + 1}/{len(convolutions)} {row['kind']:18s} {row['input']}: float32 {row['float32_ms']:.2f} ms,"
              f" int8 {row['int8_ms']:.2f} ms", flush=True)
    whole = {}
    for quantization in ("float32", "int8"):
        path = tmp / f"{student}_whole_{quantization}.tflite"
        export_file(network, SIZE, quantization, "logits", scenes, path)
        whole[f"{quantization}_ms"] = round(timed_ms(path, threads, settings), 2)
    print(f"  whole network: float32 {whole['float32_ms']:.1f} ms, int8 {whole['int8_ms']:.1f} ms", flush=True)
    return {"layers": rows, "network": whole}


def summed_by_kind(layers: list[dict]) -> list[tuple[str, int, float, float]]:
    """(kind, layers, float32 ms, int8 ms) per kind of convolution, most int8 time first."""
    sums: dict[str, list] = {}
    for row in layers:
        entry = sums.setdefault(row["kind"], [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += row["float32_ms"]
        entry[2] += row["int8_ms"]
    return sorted(((kind, n, f, q) for kind, (n, f, q) in sums.items()), key=lambda r: -r[3])


def _ratio(f: float, q: float) -> str:
    return f"{q / f:.2f}" if f > 0 else "–"


def table(records: list[dict]) -> str:
    """One markdown table per host: per student, each kind of convolution's summed float32 and int8 time and
    ratio, all convolutions, the whole logits file, and what the convolutions leave to the other ops."""
    blocks = []
    for record in records:
        lines = ["| student | convolutions | layers | float32 ms | int8 ms | int8 / float32 |",
                 "|---|---|---|---|---|---|"]
        for student, entry in record["students"].items():
            kinds = summed_by_kind(entry["layers"])
            for kind, n, f, q in kinds:
                lines.append(f"| {student} | {kind} | {n} | {f:.1f} | {q:.1f} | {_ratio(f, q)} |")
            f_all, q_all = sum(k[2] for k in kinds), sum(k[3] for k in kinds)
            lines.append(f"| {student} | **all convolutions, timed alone** | {sum(k[1] for k in kinds)} | "
                         f"{f_all:.1f} | {q_all:.1f} | {_ratio(f_all, q_all)} |")
            f_net, q_net = entry["network"]["float32_ms"], entry["network"]["int8_ms"]
            lines.append(f"| {student} | **whole network (logits file)** | – | {f_net:.1f} | {q_net:.1f} | "
                         f"**{_ratio(f_net, q_net)}** |")
            lines.append(f"| {student} | whole − convolutions (other ops, fusion) | – | {f_net - f_all:.1f} | "
                         f"{q_net - q_all:.1f} | – |")
        host = record["host"]
        blocks.append("\n".join(lines) + f"\n\n{SIZE[0]}×{SIZE[1]} input, XNNPACK, {record['threads']} thread(s), "
                      f"mean of ≥ {record['settings']['runs']} runs and {record['settings']['min_seconds']} s; "
                      f"host: {host['model']} [{' '.join(host['features'])}].")
    return "\n\n".join(blocks)


def records() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--students", default=",".join(DEFAULT_STUDENTS),
                        help=f"comma-separated (default {','.join(DEFAULT_STUDENTS)})")
    parser.add_argument("--threads", type=int, default=1, help="XNNPACK threads (default 1)")
    parser.add_argument("--fresh", action="store_true", help="redo the students this host has recorded")
    parser.add_argument("--table-only", action="store_true", help="print the recorded table, run nothing")
    parser.add_argument("--docs", action="store_true", help="write the table into docs/real-size.md")
    args = parser.parse_args(argv)
    students = [s for s in args.students.split(",") if s]
    if unknown := set(students) - set(LATENCY_STUDENTS):
        parser.error(f"--students: unknown {', '.join(sorted(unknown))} (one of {', '.join(LATENCY_STUDENTS)})")
    if args.threads < 1:
        parser.error("--threads: at least 1")
    if not args.table_only:
        from skd_tf.atomic import write_text
        from skd_tf.benchmark.measure import Settings

        settings = Settings(warmup=2, runs=10, min_seconds=0.5)
        host = host_cpu()
        target = record_path(host, args.threads)
        record = json.loads(target.read_text()) if target.exists() else {}
        record.update({"host": host, "threads": args.threads,
                       "settings": {"warmup": settings.warmup, "runs": settings.runs,
                                    "min_seconds": settings.min_seconds}})
        record.setdefault("students", {})
        with tempfile.TemporaryDirectory() as tmp:
            for student in students:
                if student in record["students"] and not args.fresh:
                    continue
                print(f"{student} {SIZE[0]}x{SIZE[1]}: timing each convolution alone", flush=True)
                record["students"][student] = time_student(student, args.threads, settings, Path(tmp))
                write_text(target, json.dumps(record, indent=2) + "\n")  # each student kept as it ends
    found = records()
    if not found:
        print("no records yet: run without --table-only")
        return 0
    from benchmarks.docs_pages import show

    show(table(found), "real-size.md", "int8-kernels", args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
