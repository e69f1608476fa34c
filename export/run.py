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
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from export import checks
from export.config import ExportConfig
from export.convert import ServingSpec, convert, keras_logits_fn, serving_function
from export.file_bytes import byte_breakdown
from export.flatbuffer_edit import raw_pixel_input, shorten_tensor_names
from skd_tf.config import RunConfig
from skd_tf.data import DataError, class_names
from skd_tf.data.augment import normalize
from skd_tf.models import at_input_size, load_model, output_stride
from skd_tf.training.run import write_json


class ExportError(ValueError):
    """A bad input to the export (size, data, checkpoint) explained in one line."""


def representative_images(cfg: RunConfig, spec: ServingSpec, count: int, seed: int):
    """A generator factory of ``count`` calibration inputs drawn from the training stream.

    Raw pixel values when pre-processing is baked in, else normalised images;
    ExportError when the training data yields nothing.
    """
    from skd_tf.data.pipeline import train_dataset

    mean, std = np.asarray(cfg.data.mean, np.float32), np.asarray(cfg.data.std, np.float32)

    try:
        stream = train_dataset(cfg.data, 1, seed).take(count)
    except DataError as err:
        raise ExportError(f"the representative dataset is empty or unreadable: {err}") from None

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


def _atomic_write(path: Path, content: bytes) -> None:
    """Writes ``content`` to a temporary file beside ``path`` and renames it, with the usual file mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make the shipped file private
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def prepare_network(checkpoint: str, cfg: RunConfig, ecfg: ExportConfig):
    """The checkpoint rebuilt at the export input size, with every input check done first."""
    network = load_model(checkpoint, cfg.data)
    classes = int(network.output["logits"].shape[-1])
    if classes != cfg.data.num_classes:
        raise ExportError(f"{checkpoint} predicts {classes} classes but the config's data has "
                          f"{cfg.data.num_classes}")
    size = tuple(ecfg.input_size or cfg.data.eval_size)
    stride = output_stride(network)
    if size[0] % stride or size[1] % stride or min(size) < stride:
        raise ExportError(f"input size {size[0]}x{size[1]} cannot be taken by this network: both sides must "
                          f"be positive multiples of its output stride {stride}")
    spec = ServingSpec(size, classes, ecfg.output, ecfg.preprocess, tuple(cfg.data.mean), tuple(cfg.data.std))
    return at_input_size(network, size), spec


def _teacher_for_qat(cfg: RunConfig, ecfg: ExportConfig, size):
    path = ecfg.teacher or (cfg.distill or {}).get("teacher")
    if not path:
        return None, None
    from skd_tf.distill.run import load_teacher

    return load_teacher(path, cfg.data.num_classes, size, cfg.data), path


def export_one(network, spec: ServingSpec, cfg: RunConfig, ecfg: ExportConfig, quantization: str,
               progress: bool = True) -> tuple[bytes, dict]:
    """Converts ``network`` with one quantization; returns the flatbuffer and facts about how it was made."""
    facts: dict = {}
    integer = quantization in ("int8", "qat")
    representative = representative_images(cfg, spec, ecfg.calibration_samples, cfg.seed) if integer else None
    if quantization == "qat":
        from export.qat import finetune, qat_logits_fn

        teacher, teacher_path = _teacher_for_qat(cfg, ecfg, tuple(cfg.data.crop_size))
        if teacher is None and progress:
            print("note: no teacher (export.teacher or distill.teacher): QAT fine-tunes with cross-entropy only")
        result = finetune(network, teacher, cfg.data, ecfg.qat, spec.input_size, progress)
        facts["qat"] = {**ecfg.qat.model_dump(), "teacher": teacher_path, "first_loss": result.first_loss,
                        "last_loss": result.last_loss}
        logits_fn = qat_logits_fn(result.model)
    else:
        logits_fn = keras_logits_fn(network)
    concrete = serving_function(logits_fn, spec, integer_model=integer)
    content = convert(concrete, quantization, representative, ecfg.int8_io,
                      float_output=spec.output == "logits")
    if integer and spec.preprocess:
        content = raw_pixel_input(content)
    if integer:
        facts["calibration_samples"] = ecfg.calibration_samples
    return shorten_tensor_names(content), facts


def save_savedmodel(network, spec: ServingSpec, path: Path) -> None:
    """A TensorFlow SavedModel of the float graph (same input and output as the .tflite) for servers."""
    module = tf.Module()
    module.network = network
    module.serve = serving_function(keras_logits_fn(network), spec)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def export_student(cfg: RunConfig, checkpoint: str, ecfg: ExportConfig, quantizations: list[str],
                   out_dir: str | os.PathLike, progress: bool = True) -> dict:
    """Exports and checks ``checkpoint`` for every quantization; returns the export.json content."""
    out = Path(out_dir)
    network, spec = prepare_network(checkpoint, cfg, ecfg)
    record_path = out / "export.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if record.get("checkpoint") not in (None, os.path.abspath(checkpoint)):
        record = {}  # another checkpoint was exported here before: start a fresh record
    record.update({"checkpoint": os.path.abspath(checkpoint), "config": cfg.name,
                   "input_size": list(spec.input_size), "num_classes": spec.num_classes,
                   "output": spec.output, "preprocess": spec.preprocess, "mean": list(spec.mean),
                   "std": list(spec.std), "class_names": class_names(cfg.data)})
    exports = record.setdefault("exports", {})
    reference = tf.function(lambda x: keras_logits_fn(network)(
        normalize(x, spec.mean, spec.std) if spec.preprocess else x))
    twin: Optional[str] = None
    for quantization in quantizations:
        start = time.time()
        content, facts = export_one(network, spec, cfg, ecfg, quantization, progress)
        path = out / f"{cfg.name}_{quantization}.tflite"
        _atomic_write(path, content)
        if quantization == "float32" and spec.output == "labels":
            twin_spec = ServingSpec(spec.input_size, spec.num_classes, "logits", spec.preprocess, spec.mean, spec.std)
            twin_bytes = convert(serving_function(keras_logits_fn(network), twin_spec), "float32")
            twin_file = tempfile.NamedTemporaryFile(suffix=".tflite", delete=False)
            twin_file.write(twin_bytes)
            twin_file.close()
            twin = twin_file.name
        try:
            parity = checks.parity(str(path), reference, spec, cfg.data, ecfg.eval_limit,
                                   logits_twin=twin if quantization == "float32" else None,
                                   parity_images=ecfg.parity_images, progress=progress)
        finally:
            if twin and quantization == "float32":
                os.unlink(twin)
                twin = None
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

