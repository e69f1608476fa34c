"""What the export proves about a .tflite file: parity with Keras, accuracy, deployability.

* ``parity``: every validation image (raw RGB, as an app would pass it) through
  the TFLite model in the LiteRT interpreter and through the Keras reference
  graph; per-pixel label agreement, both mIoUs, and max |Δ logits| when the file
  outputs logits. With unlabelled images instead (``export --images``): the
  agreement and the logits only.
* ``deployability``: the op list (without the XNNPACK delegate, so ops are not
  hidden in a DELEGATE node), the ops touching float tensors (an int8/QAT model
  must have none: its I/O is integer), and LiteRT's model analyzer's GPU
  delegate compatibility verdict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from skd_tf.benchmark import runtime
from skd_tf.export.convert import ServingSpec
from skd_tf.export.label_heads import label_head
from skd_tf.config import DataConfig
from skd_tf.console import show_progress
from skd_tf.data.photos import read_photo
from skd_tf.data.pipeline import val_dataset
from skd_tf.evaluation.metrics import confusion_matrix, scores_from_confusion

FLOAT_TYPES = ("float32", "float16", "float64")


def raw_validation_images(data: DataConfig, input_size: tuple[int, int], limit: Optional[int] = None):
    """Yields ``(raw RGB float 1×H×W×3 at input_size, labels 1×h×w)`` for the validation split.

    The pipeline's normalised images are mapped back to pixel values and rounded
    to integers (what a camera gives), then resized to the model input if needed.
    """
    return raw_images(val_dataset(data, 1, limit)[0], data, input_size)


def raw_images(ds, data: DataConfig, input_size: tuple[int, int]):
    """Yields ``(raw_input_image(image), labels)`` for each ``(image, labels)`` of an evaluation dataset ``ds``."""
    for image, label in ds:
        yield raw_input_image(image, data, input_size), label


def raw_input_image(image: tf.Tensor, data: DataConfig, input_size: tuple[int, int]) -> np.ndarray:
    """An evaluation pipeline's normalised 1×h×w×3 image as the raw RGB float image an app feeds the
    exported model: pixel values rounded to integers, resized (bilinear) to ``input_size`` if needed."""
    mean, std = np.asarray(data.mean, np.float32), np.asarray(data.std, np.float32)
    return _pixels_at(tf.clip_by_value(tf.round(image * std + mean), 0.0, 255.0), input_size)


def raw_photo(path: Path, input_size: tuple[int, int]) -> np.ndarray:
    """An image file as the raw RGB float 1×H×W×3 image an app feeds the exported model: its pixels as a viewer
    shows them, resized (bilinear, rounded) to ``input_size`` if needed."""
    return _pixels_at(tf.constant(read_photo(path)[None], tf.float32), input_size)


def _pixels_at(raw: tf.Tensor, input_size: tuple[int, int]) -> np.ndarray:
    """Pixel values resized (bilinear) to ``input_size`` and rounded back to integers when their size differs."""
    if tuple(raw.shape[1:3]) != tuple(input_size):
        raw = tf.clip_by_value(tf.round(tf.image.resize(raw, input_size, method="bilinear")), 0.0, 255.0)
    return raw.numpy()


def model_input(raw: np.ndarray, spec: ServingSpec) -> np.ndarray:
    """What the exported model is fed for a raw image: the image itself, or normalised when not baked in."""
    if spec.preprocess:
        return raw
    return (raw - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)


def labels_from_logits(logits: np.ndarray, size: tuple[int, int], head: str = "bilinear",
                       align_corners: bool = False) -> np.ndarray:
    """The label map an export head makes from ``logits`` at ``size`` (``bilinear``: upsampling, then argmax —
    what evaluation scores; see ``skd_tf.export.label_heads.label_head``)."""
    return label_head(tf.convert_to_tensor(logits, tf.float32), size, head, tf.int32, align_corners).numpy()


def _to_label_size(pred: np.ndarray, labels) -> tf.Tensor:
    size = tuple(labels.shape[1:3])
    pred = tf.convert_to_tensor(pred.astype(np.int32))
    if tuple(pred.shape[1:3]) != size:
        pred = tf.image.resize(pred[..., None], size, method="nearest")[..., 0]
    return pred


def parity(tflite_path: str, reference_logits: Callable, spec: ServingSpec, data: DataConfig,
           limit: Optional[int] = None, logits_twin: Optional[str] = None, parity_images: int = 8,
           progress: bool = True, photos: Optional[list[Path]] = None) -> dict:
    """Agreement and accuracy of a TFLite model against its Keras reference on the validation split — or, given
    ``photos`` (unlabelled image files), agreement alone on them (the mIoUs are None).

    ``reference_logits`` maps a model input (see ``model_input``) to float logits.
    ``logits_twin``: a float logits-output TFLite file used for the max |Δ logits|
    over the first ``parity_images`` images when ``tflite_path`` outputs labels.
    """
    interpreter = runtime.make_interpreter(tflite_path)
    twin = runtime.make_interpreter(logits_twin) if logits_twin else None
    cm_tflite = np.zeros((data.num_classes, data.num_classes), np.int64)
    cm_keras = np.zeros_like(cm_tflite)
    agree = total = n = 0
    max_diff = 0.0
    if photos is not None:
        photos = photos[:limit]
        count, images = len(photos), ((raw_photo(p, spec.input_size), None) for p in photos)
    else:
        ds, count = val_dataset(data, 1, limit)
        images = raw_images(ds, data, spec.input_size)
    for raw, labels in tqdm(images, total=count, desc="check TFLite", unit="img",
                            disable=not show_progress(progress), leave=False):
        x = model_input(raw, spec)
        ref_logits = np.asarray(reference_logits(tf.constant(x, tf.float32)))
        # agreement: against the Keras graph with the file's own head (the export's fidelity); mIoU Keras: with
        # the bilinear head, what `skd-tf evaluate` scores (so a cheaper head's cost shows in the mIoU)
        ref_labels = labels_from_logits(ref_logits, spec.input_size, spec.label_head, spec.align_corners)
        eval_labels = ref_labels if spec.label_head == "bilinear" or labels is None else labels_from_logits(
            ref_logits, spec.input_size, align_corners=spec.align_corners)
        out = runtime.run(interpreter, x)
        if spec.output == "logits":
            out = np.asarray(out, np.float32)
            if n < parity_images:
                max_diff = max(max_diff, float(np.max(np.abs(out - ref_logits))))
            tfl_labels = labels_from_logits(out, spec.input_size, spec.label_head, spec.align_corners)
        else:
            tfl_labels = out.astype(np.int32)
            if twin is not None and n < parity_images:
                max_diff = max(max_diff, float(np.max(np.abs(runtime.run(twin, x) - ref_logits))))
        agree += int(np.sum(tfl_labels == ref_labels))
        total += tfl_labels.size
        if labels is not None:
            cm_tflite += confusion_matrix(labels, _to_label_size(tfl_labels, labels), data.num_classes,
                                          data.ignore_label).numpy()
            cm_keras += confusion_matrix(labels, _to_label_size(eval_labels, labels), data.num_classes,
                                         data.ignore_label).numpy()
        n += 1
    result = {"num_images": n, "checked_on": "images" if photos is not None else "validation split",
              "argmax_agreement": agree / max(total, 1)}
    if photos is not None:
        result.update(miou_tflite=None, miou_keras=None, per_class_iou_tflite=None, per_class_iou_keras=None)
    else:
        tfl, ker = scores_from_confusion(cm_tflite), scores_from_confusion(cm_keras)
        result.update(miou_tflite=tfl["miou"], miou_keras=ker["miou"], per_class_iou_tflite=tfl["per_class_iou"],
                      per_class_iou_keras=ker["per_class_iou"])
    if spec.output == "logits" or twin is not None:
        result["max_abs_logit_diff"] = max_diff
        result["logit_diff_images"] = min(n, parity_images)
    return result


def gpu_compatibility(tflite_path: str) -> dict:
    """LiteRT's model analyzer with the GPU delegate check: verdict, warnings and the full report."""
    # A private module on purpose: TensorFlow's public tf.lite.experimental.Analyzer.analyze wraps this same
    # analyzer but prints the report to stdout, and ai-edge-litert ships no public wrapper; we need the text.
    # tests/test_export.py::test_the_private_litert_apis_we_use_exist fails loudly if either moves.
    try:
        from ai_edge_litert import _pywrap_analyzer_wrapper as analyzer
    except ImportError:  # older stacks ship the same analyzer inside TensorFlow
        from tensorflow.lite.python import _pywrap_analyzer_wrapper as analyzer
    report = analyzer.ModelAnalyzer(tflite_path, True, True)
    warnings = [line.strip() for line in report.splitlines() if "GPU COMPATIBILITY WARNING" in line]
    return {"compatible": "looks compatible with GPU delegate" in report and not warnings,
            "warnings": warnings, "report": report}


def deployability(tflite_path: str, quantization: str) -> dict:
    """Op counts, the ops touching float tensors, whether an integer model is all-integer, GPU verdict."""
    interpreter = runtime.make_interpreter(tflite_path, xnnpack=False)
    ops = runtime.op_list(interpreter)
    counts: dict[str, int] = {}
    for op in ops:
        counts[op["op"]] = counts.get(op["op"], 0) + 1
    float_ops = sorted({op["op"] for op in ops if any(t in FLOAT_TYPES for t in op["inputs"] + op["outputs"])})
    gpu = gpu_compatibility(tflite_path)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    return {
        "ops": dict(sorted(counts.items())),
        "num_ops": len(ops),
        "float_ops": float_ops,
        "all_integer": not float_ops if quantization in ("int8", "qat") else None,
        "input": _tensor_summary(inp),
        "output": _tensor_summary(out),
        "gpu_delegate_compatible": gpu["compatible"],
        "gpu_warnings": gpu["warnings"],
        "analyzer_report": gpu["report"],
    }


def _tensor_summary(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    return {"name": detail["name"], "shape": [int(d) for d in detail["shape"]],
            "dtype": np.dtype(detail["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zero_point)} if scale else None}
