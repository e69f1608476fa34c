"""The phone students side by side (issue #29): accuracy over seeds, and latency as deployed.

    python -m benchmarks.phone_students --part accuracy --seeds 0,1,2   # train what is not recorded yet
    python -m benchmarks.phone_students --part latency                  # export and time what is not recorded
    python -m benchmarks.phone_students --part race                     # LR-ASPP V2 against V3-Large, int8, paired
                                                                        # (and V3-Large with ReLU: hard-swish's cost)
    python -m benchmarks.phone_students --table-only --docs             # the recorded tables into docs/real-size.md

Accuracy: each ``configs/synthetic_lraspp_<backbone>.yaml`` (LR-ASPP on MobileNetV2, MobileNetV3-Large,
MobileNetV3-Small; same data, schedule and head) trained from random weights with ``--set seed=S``; its
validation mIoU recorded per (student, seed) in benchmarks/results/phone_students/accuracy/, and each
MobileNetV3 student reported as the paired difference to MobileNetV2 over the seeds both have, with its 95 %
t-interval. A record made with another config (its digest) is rerun.

Latency: every phone student — the three LR-ASPPs, ESPNet and ESPNet-C, PSPNet ResNet-18 — built for
Cityscapes' 19 classes, untrained but with its BN statistics set from 4 fabricated street scenes
(``settle_batch_norm``: an untrained network's shrinking activations make int8 files that XNNPACK only
partly delegates, a latency no trained network has), exported to float32, float16
and int8 at 512×1024 and 1024×2048, once with the label head (bilinear upsampling + argmax, the export's
default, chosen in docs/real-size.md "The label head") and once without (model-resolution logits);
int8 calibrated on 8 fabricated street scenes (benchmarks/cityscapes_fabric.py). Each file is timed by
``skd-tf benchmark``'s measurement (a fresh process, XNNPACK) with 1 and 2 threads, in ``--latency-rounds``
interleaved rounds (each cell the median; int8 / float32 and the heads' shares paired by round). Records, one per
(student, size) in a folder per host, named by its instruction-set features
(benchmarks/results/phone_students/latency/<features>/), so a host with other features (VNNI or not,
AVX-512 or not) adds its own table instead of replacing another's; the CPU is in each record.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
from benchmarks.ablation import config_digest, host_cpu, interval_cell, log_of, paired_difference, run_cli  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "phone_students"
ACCURACY_STUDENTS = ("mobilenetv2", "mobilenetv3_large", "mobilenetv3_large_reduced_tail", "mobilenetv3_small")
BASELINE = "mobilenetv2"
LATENCY_STUDENTS = {  # name: model config (19 classes)
    "lraspp_mobilenetv2": {"arch": "lraspp", "backbone": "mobilenetv2", "output_stride": 16, "head_channels": 128},
    "lraspp_mobilenetv3_large": {"arch": "lraspp", "backbone": "mobilenetv3_large", "output_stride": 16,
                                 "head_channels": 128},
    "lraspp_mobilenetv3_large_reduced_tail": {"arch": "lraspp", "backbone": "mobilenetv3_large",
                                              "output_stride": 16, "head_channels": 128, "reduced_tail": True},
    "lraspp_mobilenetv3_small": {"arch": "lraspp", "backbone": "mobilenetv3_small", "output_stride": 16,
                                 "head_channels": 128},
    "espnet": {"arch": "espnet"},
    "espnet_c": {"arch": "espnet_c"},
    "pspnet_resnet18": {"arch": "pspnet", "backbone": "resnet18", "output_stride": 8, "head_channels": 512},
}
SIZES = ((512, 1024), (1024, 2048))
QUANTIZATIONS = ("float32", "float16", "int8")
THREADS = (1, 2)
OUTPUTS = ("labels", "logits")
# the label map by the two_class head (skd_tf.export.label_heads), timed in int8 only: the phone's file
TWO_CLASS = "labels_two_class"
FILES = [(q, o) for q in QUANTIZATIONS for o in OUTPUTS] + [("int8", TWO_CLASS)]
PIXEL_MEAN, PIXEL_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)  # ImageNet's, on 0–255 pixels
BN_IMAGES = 4  # calibration scenes that set an untrained network's BN statistics


# ------------------------------------------------------------------------------------------------ accuracy

def accuracy_record_path(student: str, seed: int) -> Path:
    return RESULTS / "accuracy" / f"{student}_seed{seed}.json"


def train_student(student: str, seed: int, runs: Path, fresh: bool) -> dict | None:
    """Trains one (student, seed) unless recorded with the current config; returns the new record."""
    config = f"synthetic_lraspp_{student}"
    digest = config_digest(config, [])
    target = accuracy_record_path(student, seed)
    if target.exists() and not fresh and json.loads(target.read_text())["digest"] == digest:
        return None
    out = runs / student / f"seed{seed}"
    if out.exists():
        import shutil

        shutil.rmtree(out)  # a run left by another config or an interrupted one: from scratch
    print(f"{student} seed {seed}: training (log {log_of(out)})", flush=True)
    run_cli(["train", "--config", str(ROOT / "configs" / f"{config}.yaml"), "--quiet",
             "--set", f"seed={seed}", "--set", f"train.out_dir={out}"], log_of(out))
    scores = json.loads((out / "eval.json").read_text())
    timing = json.loads((out / "timing.json").read_text())
    record = {"student": student, "config": config, "seed": seed, "digest": digest, "miou": scores["miou"],
              "per_class_iou": scores["per_class_iou"], "steps": timing["steps"],
              "median_step_s": timing["median_step_s"], "host": host_cpu()}
    from skd_tf.atomic import write_text

    write_text(target, json.dumps(record, indent=2) + "\n")
    print(f"  mIoU {100 * record['miou']:.2f}", flush=True)
    return record


def accuracy_records() -> dict[str, dict[int, float]]:
    """{student: {seed: mIoU}} of the records made with the current configs."""
    found: dict[str, dict[int, float]] = {s: {} for s in ACCURACY_STUDENTS}
    digests = {s: config_digest(f"synthetic_lraspp_{s}", []) for s in ACCURACY_STUDENTS}
    for path in sorted((RESULTS / "accuracy").glob("*.json")):
        record = json.loads(path.read_text())
        if record["student"] in found and record["digest"] == digests[record["student"]]:
            found[record["student"]][record["seed"]] = record["miou"]
    return found


def accuracy_table(found: dict[str, dict[int, float]]) -> str:
    lines = ["| student (synthetic config) | seeds | mIoU per seed | mean | paired Δ vs MobileNetV2 [95 % CI] |",
             "|---|---|---|---|---|"]
    for student in ACCURACY_STUDENTS:
        scores = found.get(student, {})  # a student without records has no row
        if not scores:
            continue
        per_seed = ", ".join(f"{100 * scores[s]:.2f}" for s in sorted(scores))
        delta = "" if student == BASELINE else interval_cell(paired_difference(scores, found[BASELINE]))
        lines.append(f"| LR-ASPP {student} (`synthetic_lraspp_{student}`) | {','.join(map(str, sorted(scores)))} | "
                     f"{per_seed} | {100 * np.mean(list(scores.values())):.2f} | {delta} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- latency

def host_key(host: dict) -> str:
    """The folder of one host's latency records: its instruction-set features (what changes XNNPACK's code
    paths, above all int8 against float32), e.g. ``avx2-fma-avx512f-avx512_vnni-avx512_bf16``."""
    return "-".join(host["features"]) or "no-simd-features"


def latency_record_path(student: str, size: tuple[int, int], host: dict) -> Path:
    return RESULTS / "latency" / host_key(host) / f"{student}_{size[0]}x{size[1]}.json"


def export_file(network, size, quantization: str, output: str, calibration: np.ndarray, path: Path,
                head: str = "bilinear", mean=PIXEL_MEAN, std=PIXEL_STD, align_corners: bool = False,
                calibration_percentile: float | None = None, calibration_ranges: str = "extremes") -> None:
    """``network`` at ``size`` as a TFLite file taking raw uint8 pixels, as `skd-tf export` writes it: the label
    map (made by ``head``, skd_tf.export.label_heads.label_head) or the model-resolution logits; int8 calibrated on
    ``calibration`` (raw pixels), its logits coming out as int8 as an app reading them would take them; the
    file normalises with ``mean`` and ``std`` (0–255 pixels) as the network's pipeline does; ``align_corners``
    for the heads' resizes of networks trained that way (skd_tf.models.logits_align_corners); int8 ranges from
    ``calibration_percentile`` when given (`skd-tf export --calibration-percentile`), else as
    ``calibration_ranges`` says (`--calibration-ranges`)."""
    from skd_tf.export import checks
    from skd_tf.export.convert import ServingSpec
    from skd_tf.export.run import network_logits_fn, serving_flatbuffer

    spec = ServingSpec(tuple(size), int(network.output["logits"].shape[-1]), output, preprocess=True,
                       mean=tuple(mean), std=tuple(std), label_head=head, align_corners=align_corners)

    def representative():
        for raw in calibration:
            yield [checks.model_input(raw[None].astype(np.float32), spec).astype(np.float32)]

    path.write_bytes(serving_flatbuffer(network_logits_fn(network, quantization), spec, quantization,
                                        representative if quantization == "int8" else None,
                                        calibration_percentile=calibration_percentile,
                                        calibration_ranges=calibration_ranges))


def normalised(pixels: np.ndarray) -> np.ndarray:
    """Raw 0–255 pixels as the networks take them: (pixel − ImageNet mean) / std."""
    return ((pixels.astype(np.float32) - np.float32(PIXEL_MEAN)) / np.float32(PIXEL_STD)).astype(np.float32)


def settle_batch_norm(network, images: np.ndarray) -> int:
    """Sets every BatchNormalization's moving mean and variance to the statistics of its input on ``images``
    (the network's normalised input), as training would settle them; returns how many layers were set.

    An untrained network keeps BN's initial statistics (mean 0, variance 1), and through a random network's
    depth its activations shrink (to 1e-8 of the input's scale in LR-ASPP MobileNetV3-Large): int8 then
    quantizes them with scales whose ratios XNNPACK's int8 ADD does not take, and those ops fall back to the
    reference kernels — a latency no trained network has. With each BN's statistics those of its input, as
    after training, every activation is of unit scale. (One pass in training mode with momentum 0: every BN
    then holds the batch statistics it normalised with, so inference reproduces that pass.)"""
    import keras

    layers = [layer for layer in network._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0
        network(images, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers)


def settled_student(student: str, size: tuple[int, int], scenes: np.ndarray, rewrite=None):
    """``student`` built for 19 classes at ``size`` (seed 0), changed by ``rewrite`` (network → network) if
    given, then its BN statistics set from the first ``BN_IMAGES`` of ``scenes`` (raw pixels)."""
    import keras

    from skd_tf.config import ModelConfig
    from skd_tf.models import build_model

    keras.utils.set_random_seed(0)
    network = build_model(ModelConfig(**LATENCY_STUDENTS[student]), 19, size)
    if rewrite is not None:
        network = rewrite(network)
    settle_batch_norm(network, normalised(scenes[:BN_IMAGES]))
    return network


def time_student(student: str, size: tuple[int, int], fresh: bool, settings, rounds: int = 1) -> dict | None:
    """Exports ``student`` at ``size`` to each of ``FILES`` and times each file with each of ``THREADS`` in
    ``rounds`` interleaved rounds (each round times every file once, in a rotated order, so that the VM's
    drift falls on all of them alike); records each file's median over the rounds and the rounds themselves.
    A record that lacks one of ``FILES`` (made before it was timed) is made again whole: shares and ratios only
    compare timings of one run (single measurements of a shared VM differ by several ms between sessions)."""
    from benchmarks.cityscapes_fabric import street_scenes
    from skd_tf.benchmark.device import host_device
    from skd_tf.benchmark.measure import run_isolated
    from skd_tf.export.label_heads import effective_head

    host = host_cpu()
    target = latency_record_path(student, size, host)
    if target.exists() and not fresh:
        earlier = json.loads(target.read_text())
        have = {(r["quantization"], r["output"]) for r in earlier["rows"]}
        have |= {tuple(f) for f in earlier.get("not_applicable", [])}
        if set(FILES) <= have:
            return None
    print(f"{student} {size[0]}x{size[1]}: exporting and timing", flush=True)
    calibration = street_scenes(8, size)
    network = settled_student(student, size, calibration)
    skipped, paths = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for quantization, output in FILES:
            head = "two_class" if output == TWO_CLASS else "bilinear"
            if effective_head(head, network.output["logits"].shape[1:3], size) != head:
                skipped.append([quantization, output])  # logits at the input size: every head is the argmax
                continue
            paths[quantization, output] = Path(tmp) / f"{quantization}_{output}.tflite"
            export_file(network, size, quantization, "logits" if output == "logits" else "labels", calibration,
                        paths[quantization, output], head)
        jobs = [(quantization, output, threads) for quantization, output in paths for threads in THREADS]
        timed: dict[tuple, list[dict]] = {job: [] for job in jobs}
        for r in range(rounds):
            for job in jobs[r % len(jobs):] + jobs[:r % len(jobs)]:
                timed[job].append(run_isolated(str(paths[job[:2]]), job[2], True, settings)["latency_ms"])
            print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{q} {o} {t}t {timed[q, o, t][-1]['mean']:.1f} ms"
                                                           for q, o, t in jobs), flush=True)
        rows = [{"quantization": q, "output": o, "threads": t,
                 "mean_ms": round(float(np.median([ms["mean"] for ms in timed[q, o, t]])), 2),
                 "p95_ms": round(float(np.median([ms["p95"] for ms in timed[q, o, t]])), 2),
                 "rounds_ms": [round(ms["mean"], 2) for ms in timed[q, o, t]],
                 "bytes": paths[q, o].stat().st_size} for q, o, t in jobs]
    record = {"student": student, "size": list(size), "parameters": int(network.count_params()),
              "logits_shape": list(network.output["logits"].shape[1:3]),
              "bn_statistics": f"set from {BN_IMAGES} fabricated street scenes", "device": host_device(),
              "host": host, "settings": {"warmup": settings.warmup, "runs": settings.runs,
                                         "min_seconds": settings.min_seconds, "rounds": rounds},
              "rows": rows, "not_applicable": skipped}
    from skd_tf.atomic import write_text

    write_text(target, json.dumps(record, indent=2) + "\n")
    return record


def latency_records() -> list[dict]:
    """Every host's records (one folder per host, ``host_key``)."""
    return [json.loads(p.read_text()) for p in sorted((RESULTS / "latency").glob("*/*.json"))]


def latency_tables(records: list[dict]) -> str:
    """``latency_table`` for each host's records, the host with the most instruction-set features first."""
    hosts: dict[str, list[dict]] = {}
    for record in records:
        hosts.setdefault(host_key(record["host"]), []).append(record)
    ranked = sorted(hosts.values(), key=lambda found: (-len(found[0]["host"]["features"]), host_key(found[0]["host"])))
    return "\n".join(latency_table(found) for found in ranked)


def paired_ratio(row: dict, other: dict) -> float:
    """``row``'s time over ``other``'s: the median of the per-round ratios when both were timed in the same
    interleaved rounds (``time_student``), else the ratio of their times."""
    a, b = row.get("rounds_ms", []), other.get("rounds_ms", [])
    if len(a) > 1 and len(a) == len(b):
        return float(np.median(np.asarray(a) / np.asarray(b)))
    return row["mean_ms"] / other["mean_ms"]


def latency_table(records: list[dict]) -> str:
    """One line per student, size and thread count: each quantization's ms with the label head and without
    (logits), int8 with the two_class head, int8's latency as a fraction of float32's (with the head), and each
    head's share of int8 — medians over the record's interleaved rounds, ratios and shares paired by round;
    one host's records."""
    order = {name: i for i, name in enumerate(LATENCY_STUDENTS)}
    records = sorted(records, key=lambda r: (r["size"][0], order.get(r["student"], 99)))
    head = " | ".join(f"{q} ms" for q in QUANTIZATIONS)
    lines = [f"| student | params | input | threads | {head} (each: with label head / logits only) | "
             f"int8 ms, two_class head | int8 / float32 | head's share of int8: bilinear / two_class | int8 MiB |",
             "|---|---|---|---|" + "---|" * len(QUANTIZATIONS) + "---|---|---|---|"]

    def share(with_head, logits):
        # rounded to an int first: a share just under zero prints 0 %, not -0 %
        return f"{round(100 * (1 - paired_ratio(logits, with_head)))} %" if with_head and logits else "–"

    for record in records:
        by = {(r["quantization"], r["output"], r["threads"]): r for r in record["rows"]}
        argmax_only = ["int8", TWO_CLASS] in record.get("not_applicable", [])
        for threads in THREADS:
            cells = []
            for q in QUANTIZATIONS:
                labels, logits = by.get((q, "labels", threads)), by.get((q, "logits", threads))
                cells.append(f"{labels['mean_ms']:.1f} / {logits['mean_ms']:.1f}" if labels and logits else "–")
            fp32, int8, int8_logits, two_class = (by.get(("float32", "labels", threads)),
                                                  by.get(("int8", "labels", threads)),
                                                  by.get(("int8", "logits", threads)),
                                                  by.get(("int8", TWO_CLASS, threads)))
            cells.append("= argmax" if argmax_only else f"{two_class['mean_ms']:.1f}" if two_class else "–")
            ratio = f"{paired_ratio(int8, fp32):.2f}" if fp32 and int8 else "–"
            shares = share(int8, int8_logits) + " / " + ("–" if argmax_only else share(two_class, int8_logits))
            size = f"{int8['bytes'] / 2 ** 20:.2f}" if int8 else "–"
            mark = "" if "bn_statistics" in record else " †"
            lines.append(f"| {record['student']}{mark} | {record['parameters'] / 1e6:.2f} M | "
                         f"{record['size'][0]}×{record['size'][1]} | {threads} | " + " | ".join(cells) +
                         f" | {ratio} | {shares} | {size} |")
    devices = sorted({f"{r['host']['model']} ({', '.join(r['host']['features'])})" for r in records})
    rounds = sorted({r.get("settings", {}).get("rounds", 1) for r in records})
    if rounds[-1] > 1:  # records made before rounds were: one run each
        devices[-1] += f"; each cell the median of {' or '.join(map(str, rounds))} interleaved rounds"
    note = ("\n† made before the BN statistics were set (`settle_batch_norm`): an untrained network's int8 "
            "file, slower than a trained one's\n" if any("bn_statistics" not in r for r in records) else "")
    argmax = ("\n= argmax: the network's logits are at the input size (ESPNet's decoder): every head is the argmax "
              "alone\n" if any(["int8", TWO_CLASS] in r.get("not_applicable", []) for r in records) else "")
    return "\n".join(lines) + "\n\nCPU: " + "; ".join(devices) + "\n" + note + argmax


# --------------------------------------------------------------------------------------------------- race

def with_relu_for_hard_swish(network):
    """``network`` (same weights) with every hard-swish activation a ReLU: a different function, used only to
    time what MobileNetV3's hard-swish costs in an int8 file (ReLU fuses into the op before it; hard-swish
    is ADD, MUL, MUL there, ``skd_tf.export.integer_graph``)."""
    from skd_tf.export.integer_graph import HARD_SWISH_ACTIVATIONS
    from skd_tf.models.rebuild import config_dicts, rebuilt

    def edit(config):
        for node in config_dicts(config):
            if node.get("class_name") == "Activation" and node.get("config", {}).get("activation") in HARD_SWISH_ACTIVATIONS:
                node["config"]["activation"] = "relu"

    return rebuilt(network, edit)


# entry: (latency student, rewrite of its network or None); the last is a timing control, not a student
RACE = {"lraspp_mobilenetv2": ("lraspp_mobilenetv2", None),
        "lraspp_mobilenetv3_large": ("lraspp_mobilenetv3_large", None),
        "lraspp_mobilenetv3_large_reduced_tail": ("lraspp_mobilenetv3_large_reduced_tail", None),
        "lraspp_mobilenetv3_large_relu": ("lraspp_mobilenetv3_large", with_relu_for_hard_swish)}
RACE_STUDENTS = tuple(RACE)
RACE_SIZE, RACE_THREADS = (512, 1024), 2  # the setting of issue #29's "V3-Large faster than V2" target


def race_record_path(host: dict) -> Path:
    return RESULTS / "race" / f"{host_key(host)}.json"


def race(rounds: int, settings) -> dict:
    """The int8 files (label head) of ``RACE_STUDENTS`` at ``RACE_SIZE`` on ``RACE_THREADS`` threads, timed in
    ``rounds`` interleaved rounds (each round times every file once, in a rotated order), so that the VM's
    drift and neighbours fall on all of them alike and each student's difference to the first is paired by
    round; recorded per host (replacing that host's record)."""
    from benchmarks.cityscapes_fabric import street_scenes
    from skd_tf.benchmark.device import host_device
    from skd_tf.benchmark.measure import run_isolated

    calibration = street_scenes(8, RACE_SIZE)
    host = host_cpu()
    times: dict[str, list[float]] = {student: [] for student in RACE_STUDENTS}
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for entry, (student, rewrite) in RACE.items():
            files[entry] = Path(tmp) / f"{entry}.tflite"
            export_file(settled_student(student, RACE_SIZE, calibration, rewrite), RACE_SIZE, "int8", "labels",
                        calibration, files[entry])
        for r in range(rounds):
            order = RACE_STUDENTS[r % len(RACE_STUDENTS):] + RACE_STUDENTS[:r % len(RACE_STUDENTS)]
            for student in order:
                times[student].append(round(run_isolated(str(files[student]), RACE_THREADS, True,
                                                         settings)["latency_ms"]["mean"], 2))
            print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{s} {times[s][-1]:.1f} ms" for s in RACE_STUDENTS),
                  flush=True)
    record = {"size": list(RACE_SIZE), "threads": RACE_THREADS, "quantization": "int8", "output": "labels",
              "device": host_device(), "host": host, "settings": {"warmup": settings.warmup, "runs": settings.runs,
                                                                   "min_seconds": settings.min_seconds},
              "mean_ms_per_round": times}
    from skd_tf.atomic import write_text

    write_text(race_record_path(host), json.dumps(record, indent=2) + "\n")
    return record


def race_table(records: list[dict]) -> str:
    """Per host and student: mean int8 ms over the rounds and the paired difference to the first student
    (ms, 95 % t-interval over rounds). A record made before a student joined the race lacks it."""
    lines = ["| CPU | student | rounds | int8 ms, mean of rounds | paired Δ vs " + RACE_STUDENTS[0] + " ms [95 % CI] |",
             "|---|---|---|---|---|"]
    for record in records:
        times = record["mean_ms_per_round"]
        base = dict(enumerate(times[RACE_STUDENTS[0]]))
        cpu = f"{record['host']['model']} ({', '.join(record['host']['features'])})"
        for student, found in times.items():
            cell = ""
            if student != RACE_STUDENTS[0]:
                d = paired_difference(dict(enumerate(found)), base)
                cell = f"{d['mean']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]" if d and d["low"] is not None else ""
            lines.append(f"| {cpu} | {student} | {len(found)} | {np.mean(found):.1f} | {cell} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--part", choices=("accuracy", "latency", "both", "race"), default="both",
                        help="race: the LR-ASPP int8 files timed against each other in interleaved rounds")
    parser.add_argument("--rounds", type=int, default=10, help="race: interleaved rounds (default 10)")
    parser.add_argument("--latency-rounds", type=int, default=3,
                        help="latency: interleaved rounds per (student, size); each cell their median (default 3)")
    parser.add_argument("--seeds", default="0,1,2", help="accuracy: comma-separated seeds (default 0,1,2)")
    parser.add_argument("--students", default=None,
                        help="comma-separated subset (accuracy: backbones; latency: student names)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "phone_students",
                        help="where the training runs go (not committed)")
    parser.add_argument("--fresh", action="store_true",
                        help="redo recorded (student, seed|size); latency: this host's records only")
    parser.add_argument("--table-only", action="store_true", help="print the recorded tables, run nothing")
    parser.add_argument("--docs", action="store_true", help="write the tables into docs/real-size.md")
    args = parser.parse_args(argv)
    chosen = args.students.split(",") if args.students else None
    if not args.table_only and args.part in ("accuracy", "both"):
        try:
            seeds = [int(s) for s in args.seeds.split(",")]
        except ValueError:
            parser.error(f"--seeds: comma-separated integers, not {args.seeds!r}")
        students = chosen or list(ACCURACY_STUDENTS)
        if unknown := set(students) - set(ACCURACY_STUDENTS):
            parser.error(f"--students: unknown {', '.join(sorted(unknown))} (accuracy: {', '.join(ACCURACY_STUDENTS)})")
        for seed in seeds:  # seed-major: an interrupted session leaves whole pairs
            for student in students:
                train_student(student, seed, args.runs, args.fresh)
    if not args.table_only and args.part in ("latency", "both"):
        from skd_tf.benchmark.measure import Settings

        students = chosen or list(LATENCY_STUDENTS)
        if unknown := set(students) - set(LATENCY_STUDENTS):
            parser.error(f"--students: unknown {', '.join(sorted(unknown))} (latency: {', '.join(LATENCY_STUDENTS)})")
        if args.latency_rounds < 1:
            parser.error("--latency-rounds: at least 1")
        settings = Settings(warmup=1, runs=5, min_seconds=2.0)
        for size in SIZES:
            for student in students:
                time_student(student, size, args.fresh, settings, args.latency_rounds)
    if not args.table_only and args.part == "race":
        from skd_tf.benchmark.measure import Settings

        if args.rounds < 2:
            parser.error("--rounds: at least 2 (the interval needs two pairs)")
        race(args.rounds, Settings(warmup=1, runs=5, min_seconds=2.0))
    from benchmarks.docs_pages import show

    show(accuracy_table(accuracy_records()), "real-size.md", "phone-students-accuracy", args.docs)
    records = latency_records()
    if records:
        show(latency_tables(records), "real-size.md", "phone-students-latency", args.docs)
    races = [json.loads(p.read_text()) for p in sorted((RESULTS / "race").glob("*.json"))]
    if races:
        show(race_table(races), "real-size.md", "phone-students-race", args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
