"""What int8 activation ranges other than the extremes do to the published ESPNets: at percentiles
(`skd-tf export --calibration-percentile`) and at the mean of each image's extremes (`--calibration-ranges
mean_extremes`).

    python -m benchmarks.import_reference ../shared/reference-weights/skd-cvpr19   # imports the six files first
    python -m benchmarks.calibration_percentile                  # measure what is not recorded, print the table
    python -m benchmarks.calibration_percentile --table-only --docs  # the recorded table into docs/export.md

Each of the six checkpoints import_reference.py imported (``--imports``, its ``--out``) at a reduced size
(Cityscapes 256×512, CamVid 360×480, as its int8 diagnosis) exported as `skd-tf export` exports it: float32,
and int8 calibrated on 8 fabricated street scenes with each of ``--ranges``' activation ranges: their extremes
(TFLite's own calibration), percentiles, the mean of each scene's extremes. Recorded per (file, ranges): the
share of the float32 file's labels the int8 file keeps on the 7 natural photos (what docs/published-weights.md's
table scores) and on 8 other fabricated scenes (images like the calibration's). One JSON per (file, ranges) in
benchmarks/results/calibration_percentile/; what is recorded is skipped (``--fresh`` redoes it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "calibration_percentile"
SIZES = {19: (256, 512), 11: (360, 480)}  # by class count: Cityscapes, CamVid
CALIBRATION = 8
HELD_OUT = 8
RANGE_KINDS = ("extremes", "mean_extremes")  # `--calibration-ranges`; a number is a percentile
RANGES = ("extremes", 99.99, 99.95, 99.9, 99.8, "mean_extremes")


def ranges_name(ranges: str | float) -> str:
    """A --ranges choice as its records are named: a range kind as it is, a percentile P as pP."""
    return ranges if isinstance(ranges, str) else f"p{ranges}"


def ranges_choice(item: str) -> str | float:
    """One item of --ranges: a range kind, or a percentile in (50, 100) (with or without its p); ValueError
    otherwise."""
    if item in RANGE_KINDS:
        return item
    try:
        value = float(item.removeprefix("p"))
    except ValueError:
        kinds = f"{', '.join(RANGE_KINDS[:-1])} or {RANGE_KINDS[-1]}"
        raise ValueError(f"{item!r} is not {kinds}, nor a percentile") from None
    if not 50 < value < 100:
        raise ValueError(f"the percentile {value} is not in (50, 100)")
    return value


def measure(imports: Path, entry, choices, fresh: bool) -> None:
    """Records (file, ranges) pairs of ``entry`` that are not recorded yet (all with ``fresh``)."""
    from benchmarks.import_reference import (PACKAGE_PHOTOS, chosen_photos, config_of, file_stem, load_photos,
                                             tflite_labels)
    from benchmarks.cityscapes_fabric import street_scenes
    from benchmarks.phone_students import export_file

    from skd_tf.atomic import write_text
    from skd_tf.models import at_input_size, load_model, logits_align_corners

    rel, config, _, classes, _ = entry
    stem = file_stem(rel)
    todo = [c for c in choices if fresh or not (RESULTS / f"{stem}_{ranges_name(c)}.json").is_file()]
    if not todo:
        return
    path = imports / f"{stem}.keras"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run benchmarks/import_reference.py with the checkpoint folder first")
    cfg = config_of(config)
    size = SIZES[classes]
    network = load_model(path, cfg.data)
    aligned = logits_align_corners(network)
    network = at_input_size(network, size)
    photos = load_photos(chosen_photos(None), size)
    if len(photos) < len(PACKAGE_PHOTOS):  # the recorded rows are on all of them: fewer would not compare
        raise SystemExit(f"{len(photos)} of the {len(PACKAGE_PHOTOS)} photos found: pip install scikit-image")
    scenes = street_scenes(CALIBRATION + HELD_OUT, size)
    calibration, held_out = scenes[:CALIBRATION], scenes[CALIBRATION:]
    with tempfile.TemporaryDirectory() as tmp:
        def labels(quantization, choice="extremes"):
            file = Path(tmp) / f"{quantization}.tflite"
            percentile = None if isinstance(choice, str) else choice
            export_file(network, size, quantization, "labels", calibration, file, mean=cfg.data.mean,
                        std=cfg.data.std, align_corners=aligned, calibration_percentile=percentile,
                        calibration_ranges=choice if isinstance(choice, str) else "extremes")
            return tflite_labels(file, photos), tflite_labels(file, held_out)

        float_photos, float_scenes = labels("float32")
        for choice in todo:
            int8_photos, int8_scenes = labels("int8", choice)
            record = {"file": rel, "input_size": list(size), "ranges": ranges_name(choice),
                      "percentile": None if isinstance(choice, str) else choice, "calibration": CALIBRATION,
                      "photos": len(photos), "held_out": HELD_OUT,
                      "photos_kept": float((int8_photos == float_photos).mean()),
                      "scenes_kept": float((int8_scenes == float_scenes).mean())}
            RESULTS.mkdir(parents=True, exist_ok=True)
            write_text(RESULTS / f"{stem}_{ranges_name(choice)}.json", json.dumps(record, indent=2) + "\n")
            print(f"{rel} {ranges_name(choice)}: photos {100 * record['photos_kept']:.2f} %, "
                  f"scenes {100 * record['scenes_kept']:.2f} %", flush=True)


def table(choices) -> str:
    from benchmarks.import_reference import FILES, file_stem

    names = {"extremes": "extremes", "mean_extremes": "mean of each image's extremes"}
    heads = [names[c] if isinstance(c, str) else f"ranges at {c} %" for c in choices]
    lines = ["| file | input | " + " | ".join(f"int8, {head}: photos / scenes" for head in heads) + " |",
             "|---|---|" + "---|" * len(heads)]
    for rel, *_ in FILES:
        cells, size = [], None
        for choice in choices:
            path = RESULTS / f"{file_stem(rel)}_{ranges_name(choice)}.json"
            if path.is_file():
                r = json.loads(path.read_text())
                size = r["input_size"]
                cells.append(f"{100 * r['photos_kept']:.1f} / {100 * r['scenes_kept']:.1f} %")
            else:
                cells.append("–")
        where = f"{size[0]}×{size[1]}" if size else "–"
        lines.append(f"| {rel} | {where} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imports", default="runs/import_reference",
                        help="the .keras imports of benchmarks/import_reference.py (its --out)")
    parser.add_argument("--ranges", "--percentiles", default=",".join(ranges_name(c) for c in RANGES),
                        help="comma-separated int8 activation ranges: extremes, mean_extremes and percentiles in "
                             "(50, 100), e.g. extremes,99.9,mean_extremes (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="redo recorded (file, ranges) pairs")
    parser.add_argument("--table-only", action="store_true", help="print (and --docs) the recorded table")
    parser.add_argument("--docs", action="store_true", help="write the table into docs/export.md")
    args = parser.parse_args()
    choices = []
    for item in (s.strip() for s in args.ranges.split(",") if s.strip()):
        try:
            choices.append(ranges_choice(item))
        except ValueError as error:
            parser.error(f"--ranges: {error}")
    if not args.table_only:
        from benchmarks.import_reference import FILES

        from skd_tf.console import QUIET, start_tensorflow

        start_tensorflow(QUIET)
        for entry in FILES:
            measure(Path(args.imports), entry, choices, args.fresh)
    from benchmarks.docs_pages import show

    show(table(choices), "export.md", "calibration_percentile", args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
