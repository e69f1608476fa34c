"""``predict(...)``: runs a .keras checkpoint or a .tflite file on images and writes label maps and overlays.

Both kinds of model see an image exactly as evaluation does (``skd_tf.data.pipeline.val_transform``):
resized to ``data.eval_size`` with ``val_mode: resize`` or kept whole, then normalised. A .keras network
then predicts through ``predicted_batches`` (evaluation's own loop: rebuilt for the size, logits
upsampled, argmax). A .tflite file is fed what the export check feeds it (``skd_tf.export.checks``): the raw
pixels, rounded, at the file's fixed input size, normalised only when the file does not do it itself.
The label map is computed at evaluation's resolution and resized (nearest) to the image's own size.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from skd_tf.config import DataConfig, RunConfig
from skd_tf.console import show_progress
from skd_tf.data.photos import read_photo
from skd_tf.data.pipeline import val_transform
from skd_tf.predict.images import find_images, output_paths, save_labels, save_overlay


def read_image(path: Path) -> tf.Tensor:
    """The file's pixels as every viewer shows them (``skd_tf.data.photos.read_photo``: EXIF orientation
    honoured, errors in our words), as a uint8 H×W×3 tensor."""
    return tf.constant(read_photo(path), tf.uint8)


class KerasPredictor:
    """Labels of a .keras segmentation checkpoint, computed as ``skd-tf evaluate`` computes them."""

    def __init__(self, checkpoint: str, data: DataConfig):
        from skd_tf.models import load_model

        self.network = load_model(checkpoint, data)
        self.data = data
        self.num_classes = int(self.network.output["logits"].shape[-1])
        if self.num_classes != data.num_classes:
            raise ValueError(f"{checkpoint} predicts {self.num_classes} classes but the config has "
                             f"{data.num_classes}")

    def __call__(self, image: tf.Tensor) -> np.ndarray:
        from skd_tf.evaluation import predicted_batches

        x, label_shape = val_transform(image, tf.zeros(tf.shape(image)[:2], tf.uint8), self.data)
        (_, labels), = predicted_batches(self.network, [(x[None], label_shape[None])])
        return labels.numpy()[0]


class TFLitePredictor:
    """Labels of an exported .tflite file, computed as the export check (``skd_tf.export.checks.parity``) does."""

    def __init__(self, path: str, cfg: RunConfig | None, threads: int = 1):
        from skd_tf.benchmark import runtime
        from skd_tf.benchmark.report import export_facts
        from skd_tf.export.convert import ServingSpec

        runtime.check_model_file(path)
        self.interpreter = runtime.make_interpreter(path, threads)
        (inp,), (out,) = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        size = (int(inp["shape"][1]), int(inp["shape"][2]))
        output = "logits" if len(out["shape"]) == 4 else "labels"
        facts = export_facts(path)
        if facts:
            spec = ServingSpec(size, int(facts["num_classes"]), output, bool(facts["preprocess"]),
                               tuple(facts["mean"]), tuple(facts["std"]),
                               align_corners=bool(facts.get("align_corners", False)))
        elif cfg is not None:
            from skd_tf.export.config import parse_export

            preprocess = parse_export(cfg.export, source=cfg.origin).preprocess
            spec = ServingSpec(size, cfg.data.num_classes, output, preprocess, cfg.data.mean, cfg.data.std)
        else:
            raise ValueError(f"{path} has no export.json beside it: pass the --config it was exported with "
                             f"(its preprocessing, mean and std)")
        self.spec, self.num_classes = spec, spec.num_classes
        # evaluation's view of the image; without a config, straight to the file's input size
        self.data = cfg.data if cfg is not None else DataConfig(val_mode="resize", val_size=size, mean=spec.mean,
                                                                std=spec.std)

    def __call__(self, image: tf.Tensor) -> np.ndarray:
        from skd_tf.benchmark import runtime
        from skd_tf.export.checks import labels_from_logits, model_input, raw_input_image

        x, _ = val_transform(image, tf.zeros(tf.shape(image)[:2], tf.uint8), self.data)
        out = runtime.run(self.interpreter, model_input(raw_input_image(x[None], self.data, self.spec.input_size),
                                                        self.spec))
        if self.spec.output == "logits":
            return labels_from_logits(np.asarray(out, np.float32), self.spec.input_size,
                                      align_corners=self.spec.align_corners)[0]
        return np.asarray(out).astype(np.int32)[0]


def predict(model: str, inputs: list[str], out: str | Path, cfg: RunConfig | None = None, threads: int = 1,
            alpha: float = 0.5, timing: str | None = None, progress: bool = True) -> list[dict]:
    """Writes ``<out>/<stem>_labels.png`` (class indices as a palette PNG, at the image's size) and
    ``<out>/<stem>_overlay.png`` for every image of ``inputs`` (files, folders, glob patterns).

    Returns one record per image (input, outputs, inference milliseconds), also written to ``timing``
    (JSON) when given. ``cfg`` is required for a .keras model, and for a .tflite file without its
    export.json.
    """
    if not Path(model).is_file():
        raise FileNotFoundError(f"model not found: {model}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"--alpha must be in [0, 1] (got {alpha})")
    if not model.endswith((".tflite", ".keras")):
        raise ValueError(f"{model}: predict runs .keras checkpoints and .tflite files")
    if model.endswith(".keras") and cfg is None:
        raise ValueError("a .keras model needs its run config (the evaluation size, mean and std): skd-tf's --config, "
                         "or the config.json beside the model")
    images = find_images(inputs)
    predictor = TFLitePredictor(model, cfg, threads) if model.endswith(".tflite") else KerasPredictor(model, cfg.data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for path in tqdm(images, desc="predict", unit="img", disable=not show_progress(progress), leave=False):
        image = read_image(path)
        start = time.perf_counter()
        labels = predictor(image)
        elapsed = 1000 * (time.perf_counter() - start)
        height, width = int(image.shape[0]), int(image.shape[1])
        if labels.shape != (height, width):
            labels = tf.image.resize(labels[..., None], (height, width), method="nearest").numpy()[..., 0]
        labels_path, overlay_path = output_paths(path, out)
        save_labels(labels, predictor.num_classes, labels_path)
        save_overlay(image.numpy(), labels, predictor.num_classes, overlay_path, alpha)
        records.append({"input": str(path), "labels": str(labels_path), "overlay": str(overlay_path),
                        "height": height, "width": width, "ms": round(elapsed, 3)})
    if timing:
        times = [r["ms"] for r in records]
        summary = {"model": model, "threads": threads, "images": records,
                   "mean_ms": float(np.mean(times)),
                   # a .keras network traces its graph on the first image of each size
                   "mean_ms_after_first": float(np.mean(times[1:])) if len(times) > 1 else None}
        Path(timing).parent.mkdir(parents=True, exist_ok=True)
        Path(timing).write_text(json.dumps(summary, indent=2) + "\n")
    return records
