"""What the export's label head costs and what the cheaper heads lose (issue #29, "a cheap label head").

    python -m benchmarks.label_head                      # measure what is not recorded yet, print the tables
    python -m benchmarks.label_head --table-only --docs  # the recorded tables into docs/real-size.md

Latency: each student (LR-ASPP MobileNetV2 and MobileNetV3-Small, PSPNet ResNet-18, ESPNet-C; untrained, BN
statistics set from 4 fabricated scenes as in phone_students.py) exported to int8 at 512×1024 and 1024×2048 five
times — model-resolution logits (no head), and the label map by each head of
``skd_tf.export.label_heads.label_head`` (bilinear, two_class, half, quarter, nearest) — calibrated on 8 fabricated
street scenes, each file timed with ``skd-tf benchmark``'s measurement (a fresh process, XNNPACK, 1 thread). A
head's share = 1 − t(logits) / t(head).

Accuracy: mIoU of each head's label map against the ground truth, and the pixels where it differs from the
bilinear head: the synthetic student (``--synthetic-model``, trained with ``skd-tf train --config
configs/synthetic_student.yaml``) on the synthetic validation set at 64×64, and LR-ASPP MobileNetV2 trained
here (seed 0, ``--street-steps``) on 160 fabricated street scenes at 256×512 and scored on 40 others at
512×1024 (benchmarks/cityscapes_fabric.py, label ids mapped to train ids as the Cityscapes pipeline does). The heads
are the TensorFlow functions the export converts (tests/test_export.py checks the converted files against
NumPy). Records: benchmarks/results/label_head.json; recorded parts are skipped on a rerun (``--fresh``), unless a head is
missing from them.
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
RESULTS = ROOT / "benchmarks" / "results" / "label_head.json"
HEADS = ("bilinear", "two_class", "half", "quarter", "nearest")  # skd_tf.export.label_heads.LABEL_HEADS
SIZES = ((512, 1024), (1024, 2048))
STUDENTS = {  # name: (model config, classes)
    "lraspp_mobilenetv2": ({"arch": "lraspp", "backbone": "mobilenetv2", "output_stride": 16, "width": 1.0,
                            "head_channels": 128}, 19),
    "lraspp_mobilenetv3_small": ({"arch": "lraspp", "backbone": "mobilenetv3_small", "output_stride": 16,
                                  "width": 1.0, "head_channels": 128}, 19),
    "pspnet_resnet18": ({"arch": "pspnet", "backbone": "resnet18", "output_stride": 8, "width": 1.0,
                         "head_channels": 512}, 19),
    "espnet_c": ({"arch": "espnet_c"}, 19),
}


def _complete(row: dict | None) -> bool:
    """A recorded row that has every head (a head added since is measured with the others again)."""
    return row is not None and all(head in row for head in HEADS)


def load_record() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {"latency": {}, "accuracy": {}}


def save_record(record: dict) -> None:
    from skd_tf.atomic import write_text

    write_text(RESULTS, json.dumps(record, indent=2) + "\n")


def export_int8(network, size, head: str | None, calibration: np.ndarray, path: Path) -> bool:
    """The int8 file of ``network`` at ``size`` with the label ``head`` (None: logits); returns all-integer."""
    from benchmarks.phone_students import export_file
    from skd_tf.export import checks

    export_file(network, size, "int8", "logits" if head is None else "labels", calibration, path, head or "bilinear")
    return bool(checks.deployability(str(path), "int8")["all_integer"])


def untrained_student(name: str, size) -> tuple:
    """``STUDENTS[name]`` built at ``size`` (seed 0, untrained) with its BN statistics set from
    ``phone_students.BN_IMAGES`` fabricated street scenes, and the 8 scenes that calibrate its int8 files."""
    import keras

    from benchmarks.cityscapes_fabric import street_scenes
    from benchmarks.phone_students import BN_IMAGES, normalised, settle_batch_norm
    from skd_tf.config import ModelConfig
    from skd_tf.models import build_model

    config, classes = STUDENTS[name]
    keras.utils.set_random_seed(0)
    network = build_model(ModelConfig(**config), classes, size)
    calibration = street_scenes(8, size)
    settle_batch_norm(network, normalised(calibration[:BN_IMAGES]))
    return network, calibration


def measure_latency(record: dict, students: list[str], threads: int, fresh: bool) -> None:
    from skd_tf.benchmark.device import host_device
    from skd_tf.benchmark.measure import Settings, run_isolated

    settings = Settings(warmup=2, runs=10, min_seconds=3.0)
    for name in students:
        for size in SIZES:
            key = f"{name} {size[0]}x{size[1]} {threads}t"
            if _complete(record["latency"].get(key)) and not fresh:
                continue
            print(f"{key}: exporting and timing", flush=True)
            network, calibration = untrained_student(name, size)
            row = {"device": host_device(), "logits_shape": list(network.output["logits"].shape[1:3])}
            with tempfile.TemporaryDirectory() as tmp:
                for head in (None, *HEADS):
                    path = Path(tmp) / f"{head or 'logits'}.tflite"
                    integer = export_int8(network, size, head, calibration, path)
                    ms = run_isolated(str(path), threads, True, settings)["latency_ms"]["mean"]
                    row[head or "logits"] = {"ms": round(ms, 2), "all_integer": integer}
                    print(f"  {head or 'logits'}: {ms:.1f} ms, all-integer {integer}", flush=True)
            record["latency"][key] = row
            save_record(record)


def head_scores(logit_batches, label_batches, num_classes: int, ignore: int) -> dict:
    """mIoU of each head against the labels, and the share of pixels where it differs from the bilinear head."""
    import tensorflow as tf

    from skd_tf.evaluation.metrics import confusion_matrix, scores_from_confusion
    from skd_tf.export.label_heads import label_head

    cms = {h: np.zeros((num_classes, num_classes), np.int64) for h in HEADS}
    differ = {h: 0 for h in HEADS}
    total = 0
    for logits, labels in zip(logit_batches, label_batches):
        size = tuple(labels.shape[1:3])
        maps = {h: label_head(tf.constant(logits), size, h, tf.int32).numpy() for h in HEADS}
        for h in HEADS:
            cms[h] += confusion_matrix(tf.constant(labels), tf.constant(maps[h]), num_classes, ignore).numpy()
            differ[h] += int(np.sum(maps[h] != maps["bilinear"]))
        total += maps["bilinear"].size
    return {h: {"miou": 100 * scores_from_confusion(cms[h])["miou"], "differs_from_bilinear": differ[h] / total}
            for h in HEADS}


def measure_synthetic(record: dict, model_path: str, fresh: bool) -> None:
    if _complete(record["accuracy"].get("synthetic")) and not fresh:
        return
    from skd_tf.config import load_config
    from skd_tf.data import val_dataset
    from skd_tf.models import load_model

    cfg = load_config(ROOT / "configs" / "synthetic_student.yaml")
    network = load_model(model_path, cfg.data)
    ds, count = val_dataset(cfg.data, 16)
    logits, labels = [], []
    for images, y in ds:
        logits.append(network(images, training=False)["logits"].numpy())
        labels.append(y.numpy())
    print(f"synthetic: {count} validation images at {cfg.data.eval_size}", flush=True)
    shown = Path(model_path).resolve()
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown
    record["accuracy"]["synthetic"] = {"model": str(shown), "images": count, "size": list(cfg.data.eval_size),
                                       "logits": list(logits[0].shape[1:3]),
                                       **head_scores(logits, labels, cfg.data.num_classes, cfg.data.ignore_label)}
    save_record(record)


def street_data(seeds, size):
    """Fabricated street scenes at ``size``: images normalised as the Cityscapes configs do, labels as train ids."""
    from benchmarks.cityscapes_fabric import draw_scene
    from PIL import Image

    from skd_tf.config import IMAGENET_MEAN, IMAGENET_STD
    from skd_tf.data.sources import CITYSCAPES_ID_TO_TRAIN_ID

    lut = np.full(256, 255, np.uint8)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    images, labels = [], []
    for seed in seeds:
        image, ids = draw_scene(seed)
        rgb = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR), np.float32)
        images.append((rgb - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32))
        labels.append(lut[np.asarray(Image.fromarray(ids).resize((size[1], size[0]), Image.NEAREST))])
    return np.stack(images), np.stack(labels)


def measure_street(record: dict, steps: int, fresh: bool) -> None:
    """LR-ASPP MobileNetV2 trained (seed 0) on 160 fabricated street scenes at 256×512, scored at 512×1024 on 40
    others: a Cityscapes-shaped student whose logits are at 1/8 (64×128). The trained network is kept in
    runs/label_head/ for the next run."""
    if _complete(record["accuracy"].get("lraspp_street")) and not fresh:
        return
    import keras
    import tensorflow as tf

    from skd_tf.config import ModelConfig
    from skd_tf.models import at_input_size, build_model
    from skd_tf.training import SegmentationTrainer

    config, classes = STUDENTS["lraspp_mobilenetv2"]
    saved = ROOT / "runs" / "label_head" / f"street_lraspp_{steps}.keras"
    if saved.is_file():  # trained by an earlier run (seeded: the same network)
        from skd_tf.models import load_model

        network = load_model(str(saved))
    else:
        keras.utils.set_random_seed(0)
        network = build_model(ModelConfig(**config), classes, (256, 512))
        x, y = street_data(range(160), (256, 512))
        data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(160, seed=0).repeat().batch(4)
        for layer in network.layers:  # keras.applications' 0.999 would leave the statistics unsettled after 800 steps
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
        trainer = SegmentationTrainer(network, classes)
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
        print(f"LR-ASPP on fabricated street scenes: training {steps} steps at 256x512", flush=True)
        trainer.fit(data, steps_per_epoch=steps, epochs=1, verbose=2)
        saved.parent.mkdir(parents=True, exist_ok=True)
        network.save(saved)
    network = at_input_size(network, (512, 1024))
    x, y = street_data(range(5000, 5040), (512, 1024))
    logits = [network(x[i:i + 1], training=False)["logits"].numpy() for i in range(len(x))]
    record["accuracy"]["lraspp_street"] = {"model": f"LR-ASPP MobileNetV2, {steps} steps at 256x512", "images": 40,
                                           "size": [512, 1024], "logits": list(logits[0].shape[1:3]),
                                           **head_scores(logits, [y[i:i + 1] for i in range(len(y))], classes, 255)}
    save_record(record)


def tables(record: dict) -> str:
    lines = ["| student | input | logits | int8 ms, logits only | " + " | ".join(f"{h} head: ms (share)" for h in HEADS)
             + " | all-integer |", "|---|---|---|---|" + "---|" * len(HEADS) + "---|"]
    devices = set()

    def order(key):  # by student (STUDENTS' order), then input size, whatever order the record grew in
        name, size, threads = key.split()
        return (list(STUDENTS).index(name) if name in STUDENTS else len(STUDENTS), int(size.split("x")[0]), threads)

    for key in sorted(record["latency"], key=order):
        row = record["latency"][key]
        name, size, threads = key.split()
        devices.add(row["device"])
        base = row["logits"]["ms"]
        cells = [f"{row[h]['ms']:.1f} ({100 * (1 - base / row[h]['ms']):.0f} %)" if h in row else "–" for h in HEADS]
        integer = all(row[h]["all_integer"] for h in ("logits", *HEADS) if h in row)
        lines.append(f"| {name} | {size} | {'×'.join(map(str, row['logits_shape']))} | {base:.1f} | "
                     + " | ".join(cells) + f" | {'yes' if integer else 'NO'} |")
    lines += ["", f"int8, XNNPACK, 1 thread, mean of ≥ 10 runs and 3 s; {'; '.join(sorted(devices))}.", ""]
    others = HEADS[1:]
    lines += ["| data | model | input → logits | mIoU bilinear | " + " | ".join(f"mIoU {h} (Δ)" for h in others)
              + " | pixels ≠ bilinear: " + " / ".join(others) + " |", "|---|---|---|---|" + "---|" * len(others) + "---|"]
    names = {"synthetic": ("synthetic validation set", "synthetic student (PSPNet ResNet-18 ×0.125)"),
             "lraspp_street": ("fabricated street scenes", "LR-ASPP MobileNetV2 trained on them")}
    for key, row in record["accuracy"].items():
        data, model = names[key]
        b = row["bilinear"]["miou"]
        lines.append(f"| {data} ({row['images']}) | {model} | {'×'.join(map(str, row['size']))} → "
                     f"{'×'.join(map(str, row['logits']))} | {b:.2f} | "
                     + " | ".join(f"{row[h]['miou']:.2f} ({row[h]['miou'] - b:+.2f})" if h in row else "–"
                                  for h in others) + " | "
                     + " / ".join(f"{100 * row[h]['differs_from_bilinear']:.2f} %" if h in row else "–"
                                  for h in others) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", default=",".join(STUDENTS), help=f"comma-separated of {', '.join(STUDENTS)}")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads for the latency (default 1)")
    parser.add_argument("--synthetic-model", default=str(ROOT / "runs" / "label_head" / "synthetic_student" / "model.keras"),
                        help="a trained synthetic student (.keras)")
    parser.add_argument("--street-steps", type=int, default=800,
                        help="training steps of the LR-ASPP scored on fabricated street scenes (default 800)")
    parser.add_argument("--part", choices=["all", "accuracy", "latency"], default="all",
                        help="what to measure: both tables (default), the heads' mIoU, or their latency")
    parser.add_argument("--fresh", action="store_true", help="measure again what is recorded")
    parser.add_argument("--table-only", action="store_true", help="measure nothing; print the recorded tables")
    parser.add_argument("--docs", action="store_true", help="write the tables into docs/real-size.md")
    args = parser.parse_args(argv)
    from skd_tf.console import QUIET, start_tensorflow

    start_tensorflow(QUIET)
    record = load_record()
    if not args.table_only:
        unknown = sorted(set(args.students.split(",")) - set(STUDENTS))
        if unknown:
            parser.error(f"unknown student(s) {', '.join(unknown)}; choose from {', '.join(STUDENTS)}")
        start = time.time()
        if args.part in ("all", "accuracy"):
            if not Path(args.synthetic_model).is_file():
                parser.error(f"--synthetic-model {args.synthetic_model} not found (skd-tf train --config "
                             f"configs/synthetic_student.yaml --set train.out_dir=runs/label_head/synthetic_student)")
            measure_synthetic(record, args.synthetic_model, args.fresh)
            measure_street(record, args.street_steps, args.fresh)
        if args.part in ("all", "latency"):
            measure_latency(record, args.students.split(","), args.threads, args.fresh)
        print(f"done in {(time.time() - start) / 60:.1f} min", flush=True)
    from benchmarks.docs_pages import show

    show(tables(record), "real-size.md", "label_head", args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
