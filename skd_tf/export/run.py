"""``skd-tf export``: a student checkpoint → checked .tflite files and ``export.json``.

For each requested quantization the checkpoint is converted (``convert``;
``qat`` fine-tunes first), written atomically to ``DIR/<name>_<quantization>.tflite``,
then checked (``checks``) and recorded under ``exports.<quantization>`` in
``DIR/export.json`` (entries of other quantizations already there are kept).
Nothing is written for a quantization whose conversion fails.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from skd_tf.atomic import atomic_path, write_bytes
from skd_tf.export import checks
from skd_tf.export.calibration import shared_extremes
from skd_tf.export.config import QUANTIZATIONS, ExportConfig
from skd_tf.export.convert import ServingSpec, convert, keras_logits_fn, serving_function
from skd_tf.export.file_bytes import byte_breakdown
from skd_tf.export.flatbuffer_edit import raw_pixel_input, shorten_tensor_names
from skd_tf.export.integer_graph import for_integer_export
from skd_tf.export.label_heads import effective_head
from skd_tf.export.summary import ranges_named
from skd_tf.config import DataConfig, RunConfig
from skd_tf.data import DataError, class_names
from skd_tf.data.augment import normalize
from skd_tf.data.photos import image_files
from skd_tf.data.pipeline import val_dataset
from skd_tf.models import at_input_size, load_model, output_stride, segmentation_outputs
from skd_tf.models.logits import logits_align_corners
from skd_tf.training.run import write_json


class ExportError(ValueError):
    """A bad input to the export (size, data, checkpoint) explained in one line."""


def representative_images(cfg: RunConfig, spec: ServingSpec, count: int, seed: int,
                          photos: Optional[list[Path]] = None):
    """A generator factory of ``count`` calibration inputs drawn from the training stream — or the first
    ``count`` of ``photos`` (unlabelled image files, ``export --images``), resized to the input as an app would.

    Raw pixel values when pre-processing is baked in, else normalised images; DataError when the training
    data cannot be read, ExportError when it yields nothing.
    """
    from skd_tf.data.pipeline import train_dataset

    if photos is not None:
        return lambda: ([checks.model_input(checks.raw_photo(p, spec.input_size), spec).astype(np.float32)]
                        for p in photos[:count])
    mean, std = np.asarray(cfg.data.mean, np.float32), np.asarray(cfg.data.std, np.float32)

    try:
        stream = train_dataset(cfg.data, 1, seed).take(count)
    except DataError as err:
        raise DataError(f"the representative dataset is empty or unreadable: {err}") from None

    def images():
        produced = 0
        for image, _ in stream:
            if tuple(image.shape[1:3]) != tuple(spec.input_size):
                image = tf.image.resize(image, spec.input_size, method="bilinear")
            raw = np.clip(np.round(image.numpy() * std + mean), 0, 255)
            yield [checks.model_input(raw, spec).astype(np.float32)]
            produced += 1
        if produced == 0:
            raise ExportError("the representative dataset is empty: the training split yielded no images")

    return images


def prepare_network(checkpoint, cfg: RunConfig, ecfg: ExportConfig):
    """The checkpoint (a ``.keras`` path, or a Keras model with dict or plain-logits outputs) rebuilt at the
    export input size, with every input check done first."""
    if isinstance(checkpoint, keras.Model):
        network = segmentation_outputs(checkpoint)
    else:
        network = load_model(checkpoint, cfg.data)
    classes = int(network.output["logits"].shape[-1])
    if classes != cfg.data.num_classes:
        raise ExportError(f"{_describe(checkpoint)} predicts {classes} classes but the config's data has "
                          f"{cfg.data.num_classes}")
    size = tuple(ecfg.input_size or cfg.data.eval_size)
    stride = output_stride(network)
    if size[0] % stride or size[1] % stride or min(size) < stride:
        raise ExportError(f"input size {size[0]}x{size[1]} cannot be taken by this network: both sides must "
                          f"be positive multiples of its output stride {stride}")
    aligned = logits_align_corners(network)
    network = at_input_size(network, size)
    # recorded as computed: two_class is the bilinear head where it cannot work (label_heads.effective_head)
    head = effective_head(ecfg.label_head, network.output["logits"].shape[1:3], size, aligned)
    spec = ServingSpec(size, classes, ecfg.output, ecfg.preprocess, tuple(cfg.data.mean), tuple(cfg.data.std),
                       head, aligned)
    return network, spec


def _teacher_for_qat(cfg: RunConfig, ecfg: ExportConfig, size):
    path = ecfg.teacher or (cfg.distill or {}).get("teacher")
    if not path:
        return None, None
    from skd_tf.distill.run import load_teacher

    return load_teacher(path, cfg.data.num_classes, size, cfg.data), path


def export_one(network, spec: ServingSpec, cfg: RunConfig, ecfg: ExportConfig, quantization: str,
               progress: bool = True, photos: Optional[list[Path]] = None,
               ranges: Optional[str] = None, serving=None) -> tuple[bytes, dict]:
    """Converts ``network`` with one quantization; returns the flatbuffer and facts about how it was made.
    ``photos``: unlabelled image files to calibrate on instead of the training split; ``ranges``: int8's
    activation ranges, one of ``ecfg.int8_calibrations()`` (default: the first); ``serving``: int8's traced
    ``serving_function`` of the integer network, when one export converts it more than once."""
    facts: dict = {}
    integer = quantization in ("int8", "qat")
    representative = (representative_images(cfg, spec, ecfg.calibration_samples, cfg.seed, photos) if integer
                      else None)
    if quantization == "qat":
        from skd_tf.export.qat import finetune, qat_logits_fn

        teacher, teacher_path = _teacher_for_qat(cfg, ecfg, tuple(cfg.data.crop_size))
        if teacher is None and (photos is not None or not ecfg.qat.ce_weight):
            # no labels to learn from: the int8 twin learns to give the float network's own outputs
            teacher, teacher_path = network, "the float network"
        if teacher is None and progress:
            print("note: no teacher (export.teacher or distill.teacher): QAT fine-tunes with cross-entropy only")
        if photos is not None and progress:
            print(f"qat: fine-tuning on {len(photos)} of the --images without labels (pixel-wise KL to "
                  f"{teacher_path} alone)", flush=True)
        result = finetune(network, teacher, cfg.data, ecfg.qat, spec.input_size, progress, photos)
        facts["qat"] = {**ecfg.qat.model_dump(), "teacher": teacher_path, "first_loss": result.first_loss,
                        "last_loss": result.last_loss, "data": "images" if photos is not None else "training split"}
        if photos is not None:
            facts["qat"]["ce_weight"] = 0.0  # no labels, no cross-entropy
        logits_fn = qat_logits_fn(result.model)
    elif serving is None:
        logits_fn = network_logits_fn(network, quantization)
    else:
        logits_fn = None  # the serving function is traced already
    ranges = (ranges or ecfg.int8_calibrations()[0]) if quantization == "int8" else "extremes"
    percentile = float(ranges[1:]) if ranges.startswith("p") else None
    ranges_kind = "extremes" if percentile is not None else ranges
    if integer:
        facts["calibration_samples"] = (min(ecfg.calibration_samples, len(photos)) if photos
                                        else ecfg.calibration_samples)
    if quantization == "int8":
        if percentile is not None:
            facts["calibration_percentile"] = percentile
        else:
            facts["calibration_ranges"] = ranges_kind
        if progress:  # TFLite's calibrator is slow at large sizes (docs/export.md)
            print(f"int8: calibrating on {facts['calibration_samples']} "
                  f"{'of the --images' if photos else 'training images'}, ranges at {ranges_named(ranges)} ...",
                  flush=True)
    corrected = min(ecfg.bias_correction_samples, facts["calibration_samples"]) if quantization == "int8" else 0
    if corrected and progress:
        print(f"int8: correcting the biases on {corrected} of the calibration images ...", flush=True)
    return serving_flatbuffer(logits_fn, spec, quantization, representative, ecfg.int8_io, percentile,
                              ranges_kind, corrected, facts, serving), facts


def network_logits_fn(network, quantization: str):
    """The logits function converted for ``quantization``: integer files trace the network's integer form
    (``integer_graph.for_integer_export``), float files the network itself."""
    return keras_logits_fn(for_integer_export(network) if quantization in ("int8", "qat") else network)


def serving_flatbuffer(logits_fn, spec: ServingSpec, quantization: str, representative=None,
                       int8_io: str = "uint8", calibration_percentile: float | None = None,
                       calibration_ranges: str = "extremes", bias_correction_samples: int = 0,
                       report: dict | None = None, concrete_fn=None) -> bytes:
    """The .tflite file of ``logits_fn`` with ``spec``'s input and output heads (or of ``concrete_fn``, that
    ``serving_function`` traced already): converted (integer files calibrated on ``representative``; int8
    activation ranges from ``calibration_percentile`` or ``calibration_ranges`` when given; int8 biases corrected
    on ``bias_correction_samples`` of its samples, the facts in ``report``), integer inputs rescaled to raw pixels
    when pre-processing is baked in, tensor names shortened — the bytes `skd-tf export` writes."""
    integer = quantization in ("int8", "qat")
    concrete_fn = concrete_fn or serving_function(logits_fn, spec, integer_model=integer)
    content = convert(concrete_fn, quantization, representative,
                      int8_io, float_output=spec.output == "logits", calibration_percentile=calibration_percentile,
                      calibration_ranges=calibration_ranges, bias_correction_samples=bias_correction_samples,
                      report=report)
    if integer and spec.preprocess:
        content = raw_pixel_input(content)
    return shorten_tensor_names(content)


def save_savedmodel(network, spec: ServingSpec, path: Path) -> None:
    """A TensorFlow SavedModel of the float graph (same input and output as the .tflite) for servers."""
    module = tf.Module()
    module.network = network
    module.serve = serving_function(keras_logits_fn(network), spec)
    with atomic_path(path) as tmp:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})


def _describe(checkpoint) -> str:
    """A checkpoint path as export.json records it, or an in-memory model by its name."""
    if isinstance(checkpoint, keras.Model):
        return f"<in-memory model {checkpoint.name}>"
    return os.path.abspath(checkpoint)


def export_student(cfg: RunConfig, checkpoint, ecfg: ExportConfig, quantizations: list[str],
                   out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Exports and checks ``checkpoint`` (a ``.keras`` path or a Keras model) for every quantization into
    ``out_dir/<cfg.name>_<quantization>.tflite``; returns the export.json content."""
    out = Path(out_dir)
    network, spec = prepare_network(checkpoint, cfg, ecfg)
    photos = image_files(ecfg.images) if ecfg.images else None
    if photos is not None and "qat" in quantizations and len(photos) < ecfg.qat.batch_size:  # before any file
        raise ExportError(f"qat on --images fine-tunes on batches of {ecfg.qat.batch_size} of them: "
                          f"{len(photos)} given; give more or lower export.qat.batch_size")
    if photos is None:  # the validation split checks every file: a missing one stops the export before any is written
        val_dataset(cfg.data, 1, ecfg.eval_limit)
    record_path = out / "export.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if record.get("checkpoint") not in (None, _describe(checkpoint)):
        record = {}  # another checkpoint was exported here before: start a fresh record
    record.update({"checkpoint": _describe(checkpoint), "config": cfg.name,
                   "input_size": list(spec.input_size), "num_classes": spec.num_classes,
                   "output": spec.output, "label_head": spec.label_head if spec.output == "labels" else None,
                   "align_corners": spec.align_corners,
                   "preprocess": spec.preprocess, "mean": list(spec.mean),
                   "std": list(spec.std), "class_names": class_names(cfg.data),
                   "images": [str(p) for p in photos] if photos is not None else None})
    exports = record.setdefault("exports", {})
    reference = tf.function(lambda x: keras_logits_fn(network)(
        normalize(x, spec.mean, spec.std) if spec.preprocess else x))
    for quantization in quantizations:
        start = time.time()
        path = out / f"{cfg.name}_{quantization}.tflite"
        tried = {}  # int8 under calibration_ranges auto: one file per kind of ranges, the check's choice kept
        calibrations = ecfg.int8_calibrations() if quantization == "int8" else (None,)
        # several int8 files (one per kind of ranges): the integer rewrite and the trace made once, 3 of the 8 s
        # of each conversion of a tiny LR-ASPP MobileNetV3-Large; the network is held here, as the traced
        # function refers to its variables weakly
        integer_network = for_integer_export(network) if len(calibrations) > 1 else None
        serving = (serving_function(keras_logits_fn(integer_network), spec, integer_model=True)
                   if integer_network is not None else None)
        with shared_extremes():  # the files of one export calibrate on the same samples
            for ranges in calibrations:
                content, facts = export_one(network, spec, cfg, ecfg, quantization, progress, photos, ranges,
                                            serving)
                write_bytes(path, content)
                checked = _checked(path, quantization, network, reference, spec, cfg, ecfg, progress, photos)
                tried[ranges] = content, facts, checked
        if len(tried) > 1:
            agreement = {ranges: made[2]["argmax_agreement"] for ranges, made in tried.items()}
            kept = max(agreement, key=agreement.get)  # a tie keeps the first, TFLite's own extremes
            content, facts, parity = tried[kept]
            write_bytes(path, content)
            facts["calibration_agreement"] = agreement  # the summary says which was kept (summary.ranges_choice)
        else:
            _, facts, parity = tried.popitem()[1]
        deploy = checks.deployability(str(path), quantization)
        analysis_path = path.with_suffix(".analysis.txt")
        analysis_path.write_text(deploy.pop("analyzer_report"))
        exports[quantization] = {
            "file": str(path), "file_bytes": path.stat().st_size, "int8_io": ecfg.int8_io if quantization in
            ("int8", "qat") else None, "parity": parity, "deployability": deploy,
            "analyzer_report": str(analysis_path), "bytes": byte_breakdown(path.read_bytes()),
            "seconds": round(time.time() - start, 1), **facts}
        write_json(record_path, record)
    if "float32" in exports and "int8" in exports:
        record["int8_to_float32_size"] = exports["int8"]["file_bytes"] / exports["float32"]["file_bytes"]
    if ecfg.savedmodel:
        save_savedmodel(network, spec, out / "saved_model")
        record["saved_model"] = str(out / "saved_model")
    write_json(record_path, record)
    return record


def _checked(path: Path, quantization: str, network, reference, spec: ServingSpec, cfg: RunConfig,
             ecfg: ExportConfig, progress: bool, photos: Optional[list[Path]]) -> dict:
    """``checks.parity`` of the ``quantization`` file at ``path`` against ``reference`` (the Keras logits); a
    float32 label file also has its logits compared, through a float32 logits twin of the network."""
    twin = None
    if quantization == "float32" and spec.output == "labels":
        twin_spec = ServingSpec(spec.input_size, spec.num_classes, "logits", spec.preprocess, spec.mean, spec.std)
        with tempfile.NamedTemporaryFile(suffix=".tflite", delete=False) as twin_file:
            twin_file.write(convert(serving_function(keras_logits_fn(network), twin_spec), "float32"))
        twin = twin_file.name
    try:
        return checks.parity(str(path), reference, spec, cfg.data, ecfg.eval_limit, logits_twin=twin,
                             parity_images=ecfg.parity_images, progress=progress, photos=photos)
    finally:
        if twin:
            os.unlink(twin)


def export_tflite(model, data: DataConfig, out_dir: str | os.PathLike, quantizations=("float32",),
                  name: str | None = None, progress: bool = False, **options) -> dict:
    """``skd-tf export`` from Python, without a config file: ``model`` (a Keras model with this project's dict
    outputs or a plain logits output, or a ``.keras`` path) → ``out_dir/<name>_<quantization>.tflite`` for
    each quantization, checked on ``data``'s validation split, with ``export.json``. ``options`` are
    ``ExportConfig`` fields (``input_size``, ``output``, ``calibration_samples``, ``eval_limit``, ...);
    ``name`` defaults to the model's. Returns the export.json content (``record["exports"][q]["file"]``)."""
    unknown = sorted(set(options) - set(ExportConfig.model_fields))
    if unknown:
        raise TypeError(f"export_tflite: unknown option(s) {', '.join(unknown)}; ExportConfig has "
                        f"{', '.join(ExportConfig.model_fields)}")
    for q in quantizations:
        if q not in QUANTIZATIONS:
            raise ValueError(f"unknown quantization {q!r}; choose from {', '.join(QUANTIZATIONS)}")
    if name is None:
        name = model.name if isinstance(model, keras.Model) else Path(model).stem
    cfg = RunConfig(name=name, data=data)
    return export_student(cfg, model, ExportConfig(**options), list(quantizations), out_dir, progress)
