"""Keras segmentation network → TFLite flatbuffer, with the export-only input and output heads.

The exported graph is ``serving_function``: optional baked pre-processing
(raw uint8 RGB → (x − mean)/std), the network's logits, and optionally the
label head (``label_heads``: the logits to a label map at the input size,
uint8 when the classes fit; SPEC §4: Keras' argmax does not lower to a
builtin). Conversion allows TFLite builtin ops only: a graph that would need
Flex (Select TF) ops fails with ``UnsupportedOpsError`` listing the ops and the
layers they come from, never a silent Flex model.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
import tensorflow as tf

from skd_tf.benchmark.native_log import native_stderr, without_tflite_notes
from skd_tf.export.bias_correction import corrected_biases
from skd_tf.export.calibration import corrected_calibration
from skd_tf.export.flatbuffer_edit import exact_two_class_switch
from skd_tf.export.label_heads import label_head


class UnsupportedOpsError(ValueError):
    """The graph needs ops that are not TFLite builtins."""


@dataclass(frozen=True)
class ServingSpec:
    """The exported model's interface."""

    input_size: tuple[int, int]
    num_classes: int
    output: str = "labels"          # "labels" | "logits"
    preprocess: bool = True         # the app feeds raw RGB in [0, 255]
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    label_head: str = "bilinear"    # how "labels" are made from the logits: one of label_heads.LABEL_HEADS
    align_corners: bool = False     # the head's bilinear resizes as the network's code did (models.logits)

    @property
    def label_dtype(self):
        return tf.uint8 if self.num_classes <= 256 else tf.int32


def normalise(x: tf.Tensor, mean, std) -> tf.Tensor:
    """(x − mean) / std per channel, written as one 1×1 depthwise convolution with bias: x · (1/std) +
    (−mean/std). TFLite keeps ``(x - mean) * (1 / std)`` as a SUB and a MUL that broadcast a 3-vector, two
    passes over the full-size image (XNNPACK, 512×1024, 1 thread, AVX-VNNI host: 3.7 ms in int8 and 5.1 ms in
    float32, against 1.6 and 2.3 ms as one DEPTHWISE_CONV_2D); int8 also keeps −mean/std in the int32 bias
    rather than the mean rounded to a whole grey level in SUB's int8 constant."""
    scale = 1.0 / np.asarray(std, np.float32)
    kernel = tf.constant(scale.reshape(1, 1, -1, 1))
    bias = tf.constant(-np.asarray(mean, np.float32) * scale)
    return tf.nn.bias_add(tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "VALID"), bias)


def serving_function(logits_fn: Callable[[tf.Tensor], tf.Tensor], spec: ServingSpec,
                     integer_model: bool = False) -> tf.types.experimental.ConcreteFunction:
    """The concrete function that is converted, for a fixed 1×H×W×3 input.

    ``logits_fn`` maps a normalised float batch to model-resolution logits. With
    ``spec.preprocess`` the input is raw RGB: uint8 for float models; for integer
    models (int8/QAT) a float placeholder of raw values, which the converter turns
    into an integer input (``flatbuffer_edit.raw_pixel_input`` then gives it scale 1).
    """
    h, w = spec.input_size
    input_dtype = tf.uint8 if spec.preprocess and not integer_model else tf.float32

    # autograph off: plain Python branches only, and it would convert tfmot's layers call by call (slow)
    @tf.function(input_signature=[tf.TensorSpec([1, h, w, 3], input_dtype, name="image")], autograph=False)
    def serve(image):
        x = tf.cast(image, tf.float32)
        if spec.preprocess:
            x = normalise(x, spec.mean, spec.std)
        logits = tf.cast(logits_fn(x), tf.float32)
        if spec.output == "logits":
            return {"logits": logits}
        return {"labels": label_head(logits, (h, w), spec.label_head, spec.label_dtype, spec.align_corners,
                                     integer=integer_model)}

    return serve.get_concrete_function()


def keras_logits_fn(network) -> Callable[[tf.Tensor], tf.Tensor]:
    """The logits of a network with this project's dict outputs, in inference mode."""
    return lambda x: network(x, training=False)["logits"]


def convert(concrete_fn, quantization: str, representative: Optional[Callable[[], Iterable]] = None,
            int8_io: str = "uint8", trackable=None, float_output: bool = True,
            calibration_percentile: Optional[float] = None, calibration_ranges: str = "extremes",
            bias_correction_samples: int = 0, report: Optional[dict] = None) -> bytes:
    """Converts ``concrete_fn`` with TFLite builtins only.

    ``float32``: no optimisation. ``float16``: float16 weights. ``dynamic``: int8
    weights, float activations. ``int8``: full-integer post-training quantization
    calibrated on ``representative`` (a generator factory yielding input lists, the same samples at each
    call: calibration iterates it more than once), integer input (``int8_io``) and, for float outputs,
    integer output; each activation's range its extremes on that data, or with ``calibration_percentile`` p its
    (100 − p)-th to p-th percentiles (``calibration.percentile_ranges``), or with ``calibration_ranges``
    ``mean_extremes`` the mean of its per-sample extremes (``calibration.mean_extreme_ranges``). ``qat``:
    a graph with fake-quant nodes converted to full integer the same way. With ``bias_correction_samples`` N, an
    int8 file's biases are corrected on the first N calibration samples (``bias_correction.corrected_biases``; its
    facts go to ``report["bias_correction"]``).
    """
    # Without trackable_obj TF warns of a "deprecated path", but that path freezes the variables; with it,
    # int8 calibration fails on READ_VARIABLE nodes (TF 2.21).
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete_fn], trackable)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization in ("int8", "qat"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if representative is not None:
            converter.representative_dataset = representative
        io_type = tf.uint8 if int8_io == "uint8" else tf.int8
        converter.inference_input_type = io_type
        if float_output:
            converter.inference_output_type = io_type
        outputs = concrete_fn.structured_outputs
        if isinstance(outputs, dict) and getattr(outputs.get("labels"), "dtype", None) == tf.float32:
            # the two_class head's int8 switch: class indices at scale 1 (flatbuffer_edit.exact_two_class_switch),
            # the bytes of uint8 labels below 128; a uint8 output would cost a full-size requantization (1.5 ms at
            # 1024×2048 on builtin kernels: 15 % of the head)
            converter.inference_output_type = tf.int8
    elif quantization != "float32":
        raise ValueError(f"unknown quantization {quantization!r}")
    if calibration_percentile is not None and quantization != "int8":
        raise ValueError(f"a calibration percentile applies to int8 post-training quantization, not {quantization}")
    if calibration_ranges not in ("extremes", "mean_extremes"):
        raise ValueError(f"unknown calibration ranges {calibration_ranges!r} (extremes or mean_extremes)")
    if calibration_ranges != "extremes" and quantization != "int8":
        raise ValueError(f"calibration ranges {calibration_ranges} apply to int8 post-training quantization, not "
                         f"{quantization}")
    if bias_correction_samples and (quantization != "int8" or representative is None):
        raise ValueError("bias correction applies to int8 post-training quantization with calibration data, not "
                         + (quantization if quantization != "int8" else "int8 without it"))
    kept: dict = {}
    calibration = (corrected_calibration(calibration_percentile, calibration_ranges == "mean_extremes", kept)
                   if representative is not None else contextlib.nullcontext())
    try:
        with warnings.catch_warnings(), native_stderr(converter_log), calibration:
            # the converter asks for input statistics it then computes from the representative data
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
            content = converter.convert()
    except Exception as err:  # ConverterError, or ValueError/RuntimeError from the quantizer
        raise _explain(err) from None
    if quantization in ("int8", "qat"):
        content = exact_two_class_switch(content)
    if bias_correction_samples:
        content, facts = corrected_biases(content, kept["float_twin"],
                                          itertools.islice(representative(), bias_correction_samples))
        if report is not None:
            report["bias_correction"] = facts
    return content


# An MLIR diagnostic: ``loc(<where>): error: <message>``, where <where> is the op's name and the Python frames
# that made it (kilobytes per op).
_DIAGNOSTIC = re.compile(r"^loc\((?P<where>.*)\): (?P<level>error|warning|note|remark): (?P<message>.*)$")
_OP_NAME = re.compile(r'(?:callsite\(|loc\(|^)"(?P<name>[^"]+)"')
# MLIR diagnostics of files the converter then writes correctly, said for what they are. A batch norm whose
# scale γ_c is 0 (or denormal: the published Cityscapes ESPNet's decoder, `conv.bn` channel 10, γ 6e-42) folds
# into the convolution before it as an all-zero output channel; the quantizer finds no range for it, reports
# this, and gives the channel a tiny scale (~4e-9), on which its zeros stay zeros
# (tests/test_export.py::test_qat_espnet_converts_and_computes_what_its_fake_quantized_model_computes).
_HARMLESS = {"scale out of expressed type range": "an output channel whose weights are all zero (a batch norm's "
                                                  "scale γ of 0 folded into them): the quantizer gives it a tiny "
                                                  "weight scale instead of none; the channel computes what it did"}


def converter_log(text: str) -> list[str]:
    """What the converter printed, as ``without_tflite_notes`` keeps it, with each MLIR diagnostic's location
    shortened to the op's name (``converter: <op>: error: <message>``), a diagnostic repeated at once
    (the same op, or the message alone after it) kept once, and the known harmless ones (``_HARMLESS``) said
    as notes of what they mean."""
    kept: list[str] = []
    worded = None  # the diagnostic just kept, as the converter worded it (its bare copy may follow)
    for line in without_tflite_notes(text):
        match = _DIAGNOSTIC.match(line)
        if match:
            op = _OP_NAME.search(match["where"])
            op = op["name"] if op else "an op"
            worded = f"converter: {op}: {match['level']}: {match['message']}"
            known = next((k for k in _HARMLESS if match["message"].startswith(k)), None)
            line = worded if known is None else f"converter: {op}: note: {_HARMLESS[known]}"
        elif worded and worded.endswith(f": {line}"):
            continue  # the bare message after its located copy
        else:
            worded = None
        if not kept or kept[-1] != line:
            kept.append(line)
    return kept


def _explain(err: Exception) -> Exception:
    """A conversion error as UnsupportedOpsError naming ops and layers, or the original error.

    TF's ConverterError carries structured ``errors``: the op (``tf.Erf``) and
    the call-site location whose first name is ``model/layer/Op@function``.
    """
    ops, layers = set(), set()
    for detail in getattr(err, "errors", []) or []:
        if "NEEDS_FLEX_OPS" not in str(detail) and "NEEDS_CUSTOM_OPS" not in str(detail):
            continue
        ops.add(detail.operator.name.removeprefix("tf."))
        names = [c.name for c in detail.location.call if c.name]
        if names:
            layers.add(_layer_of(names[0]))
    text = str(err)
    if not ops:  # older converters only put the op names in the message
        ops = set(re.findall(r"\btf\.(\w+)\(", text)) if ("not supported" in text or "Flex" in text) else set()
    if not ops:
        if type(err).__name__ == "ConverterError":  # the MLIR message: the first "error: ..." is the cause
            found = re.search(r"error: (.*)", text)
            return ValueError(f"TFLite conversion failed: {(found.group(1) if found else text.splitlines()[0])[:300]}")
        return err
    where = f" (from layers: {', '.join(sorted(layers - {''}))})" if layers - {""} else ""
    return UnsupportedOpsError(
        f"the model needs ops that are not TFLite builtins: {', '.join(sorted(ops))}{where}. skd-tf never "
        "exports Flex/Select-TF models (the standalone runtime cannot run them): replace those layers or ops")


def _layer_of(location: str) -> str:
    """The layer path in a converter location such as ``"functional_1/head_erf_1/Erf@__inference_serve_77"``."""
    path = [p for p in location.split("@")[0].split("/") if p]
    return "/".join(path[1:-1]) if len(path) > 2 else (path[0] if len(path) == 2 else "")
