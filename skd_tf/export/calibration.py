"""Post-training int8 calibration: every activation's range measured by XNNPACK, not by TFLite's calibrator.

TFLite's converter quantizes a float model whose tensors carry calibration min/max, which its calibrator
(``tensorflow/lite/tools/optimize/calibration/calibrator.cc``) records by running the model on LiteRT's builtin
kernels, single-threaded, logging every op's tensors: 2 s per image for ESPNet-C at 512×1024, 3–5 s for
ESPNet, on the AMX Xeon. And it logs the input tensors of every op a second time after the op has run: when
the memory planner let that op write its output into an input's buffer (an in-place ADD or MUL on a tensor no
later op reads), the input is logged with the *output's* values, its recorded range the output's
(tensorflow/tensorflow#127842, open). In ESPNet the concatenation before each residual addition was recorded
with the range of the sum, 12× too wide; in inverted residual blocks the projection's output can get the
range of the block's sum.

``corrected_calibration`` keeps TFLite's conversion and quantizer and lets the calibrator run on the first
calibration sample only — for the model it returns, with a min/max field on each activation — then sets every
one of those ranges to the extremes the tensor takes on all the samples, running the float model with XNNPACK
(6× faster on ESPNet-C; the same ranges to float rounding, 1.5e-6 relative) with the activations made graph
outputs, which the memory planner never shares: the in-place bug cannot occur. The calibrator is wrapped, not
rewritten, because everything else it does is right.

With ``mean_extremes``, every activation's range becomes the mean over the calibration samples of the minimum
and of the maximum it takes on each sample (ranges of the kind QAT's moving averages give) instead of the
extremes over all samples. With a ``percentile`` p, every activation's range becomes the p-th and (100 − p)-th
percentiles of the values it takes on the calibration data instead of its extremes (clipping the rare values that
set a per-tensor int8 step for the whole tensor). TFLite's quantizer has neither option; its ranges are rewritten
the same way.
"""

from __future__ import annotations

import hashlib
import itertools
from contextlib import contextmanager
from typing import Callable, Iterable

import numpy as np

from skd_tf.benchmark.runtime import to_input


# Histogram bins per tensor for the percentiles: the clipping point is placed within (max − min) / BINS.
BINS = 4096
# Values histogrammed per tensor and calibration sample (drawn at random beyond this): bounds the cost.
SAMPLED_VALUES = 1 << 18
# Bytes of tensors one probe interpreter keeps as outputs (no buffer reuse): larger sets take several passes.
PROBE_BYTES = 1 << 31
# Inside ``shared_extremes``: the models ``measured_ranges`` made, by the digest of the calibrator's model.
_SHARED: dict | None = None


@contextmanager
def corrected_calibration(percentile: float | None = None, mean_extremes: bool = False, kept: dict | None = None):
    """Within the block, TFLite's post-training calibration records each activation's true min/max — or, with
    ``percentile`` p in (50, 100), its (100 − p)-th and p-th percentiles (``percentile_ranges``), or with
    ``mean_extremes`` the mean of its per-sample min and max (``mean_extreme_ranges``). The calibrated float
    model the quantizer then quantizes goes to ``kept["float_twin"]`` when ``kept`` is given (its tensors have
    the names of the quantized file's: ``bias_correction``).

    Hooks ``tensorflow.lite.python.optimize.calibrator.Calibrator.calibrate`` (private, the step every
    full-integer conversion with a representative dataset goes through; tests/test_export.py fails loudly if
    it moves)."""
    from ai_edge_litert.tools import flatbuffer_utils
    from tensorflow.lite.python.optimize import calibrator

    if percentile is not None and mean_extremes:
        raise ValueError("int8 ranges at a percentile or at the mean of the extremes, not both")
    original = calibrator.Calibrator.calibrate

    def calibrate(self, dataset_gen):
        calibrated = original(self, lambda: itertools.islice(dataset_gen(), 1))
        if len(flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated)).subgraphs) > 1:
            calibrated = original(self, dataset_gen)  # ranges in other subgraphs: the calibrator records them all
        if mean_extremes:
            calibrated = mean_extreme_ranges(calibrated, dataset_gen)
        else:
            calibrated = _extremes(calibrated, dataset_gen)
            if percentile is not None:
                calibrated = percentile_ranges(calibrated, dataset_gen, percentile)
        if kept is not None:
            kept["float_twin"] = calibrated
        return calibrated

    calibrator.Calibrator.calibrate = calibrate
    try:
        yield
    finally:
        calibrator.Calibrator.calibrate = original


@contextmanager
def shared_extremes():
    """Within the block, conversions of one graph on one calibration set measure its activations' extremes
    once: ``corrected_calibration`` keeps the model ``measured_ranges`` made, by the digest of the model the
    calibrator gave it (the same graph with the first sample's ranges), and a later conversion with the same
    digest reuses it — the int8 files of ``calibration_ranges: auto`` (extremes, then a percentile, whose
    histograms are bounded by those extremes) take two passes over the samples instead of three. The caller
    vouches that the block's conversions calibrate on the same samples."""
    global _SHARED
    outer, _SHARED = _SHARED, {} if _SHARED is None else _SHARED
    try:
        yield
    finally:
        _SHARED = outer


def _extremes(calibrated: bytes, dataset_gen: Callable[[], Iterable]) -> bytes:
    """``measured_ranges``, made once per calibrator model within ``shared_extremes``."""
    if _SHARED is None:
        return measured_ranges(calibrated, dataset_gen)
    key = hashlib.sha256(calibrated).hexdigest()
    if key not in _SHARED:
        _SHARED[key] = measured_ranges(calibrated, dataset_gen)
    return _SHARED[key]


def measured_ranges(calibrated: bytes, dataset_gen: Callable[[], Iterable]) -> bytes:
    """``calibrated`` (a float TFLite model whose tensors carry calibration min/max) with the range of every
    per-tensor activation of its main subgraph set to the min/max that tensor takes on ``dataset_gen()``'s
    samples (lists of inputs in the model's input order, or dicts by input name), measured with XNNPACK and
    the activations as graph outputs (``visit_values``); a tensor that holds no value keeps its range."""
    return _ranges_from_sample_extremes(calibrated, dataset_gen, lambda lows, highs: (min(lows), max(highs)))


def mean_extreme_ranges(calibrated: bytes, dataset_gen: Callable[[], Iterable]) -> bytes:
    """``calibrated`` with every per-tensor activation range of its main subgraph set to [mean_s min x_s,
    mean_s max x_s]: the mean over ``dataset_gen()``'s samples s of the tensor's minimum and of its maximum on
    each, widened to hold 0 as int8 ranges must (measured as ``measured_ranges`` measures). The rare values that
    only some samples reach saturate; the others get finer int8 steps."""
    return _ranges_from_sample_extremes(
        calibrated, dataset_gen, lambda lows, highs: (min(float(np.mean(lows)), 0.0), max(float(np.mean(highs)), 0.0)))


def _ranges_from_sample_extremes(calibrated: bytes, dataset_gen: Callable[[], Iterable], combine) -> bytes:
    """``calibrated`` with the range of every per-tensor activation of its main subgraph set to
    ``combine(lows, highs)``, the lists of that tensor's minimum and maximum on each of ``dataset_gen()``'s
    samples (``visit_values``); a tensor that holds no value keeps its range."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    tensors = model.subgraphs[0].tensors
    ranged = sorted(_ranged(model))
    lows, highs = {i: [] for i in ranged}, {i: [] for i in ranged}

    def extremes(i, value):
        lows[i].append(float(value.min()))
        highs[i].append(float(value.max()))

    visit_values(calibrated, ranged, dataset_gen, extremes)
    for i in ranged:
        if lows[i]:
            low, high = combine(lows[i], highs[i])
            tensors[i].quantization.min = np.array([low], np.float32)
            tensors[i].quantization.max = np.array([high], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def percentile_ranges(calibrated: bytes, dataset_gen: Callable[[], Iterable], percentile: float) -> bytes:
    """``calibrated`` with every per-tensor activation range of its main subgraph set to [P₁₀₀₋ₚ, Pₚ] of the
    values that tensor takes on ``dataset_gen()``'s samples (p = ``percentile``), widened to hold 0 as int8
    ranges must. The recorded ranges must be the true extremes (``measured_ranges``): they bound a histogram of
    ``BINS`` bins per tensor, from which Pₚ, the smallest value with a share p of the values at or below it, is
    read by linear interpolation inside its bin: within (max − min) / ``BINS`` of it (``SAMPLED_VALUES`` per
    tensor and sample, drawn with a fixed seed from a larger tensor: a stride would pick the same channels of
    every pixel)."""
    from ai_edge_litert.tools import flatbuffer_utils

    if not 50 < percentile < 100:
        raise ValueError(f"a calibration percentile must lie between 50 and 100 (exclusive), not {percentile}")
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    tensors = model.subgraphs[0].tensors
    edges = {i: (float(tensors[i].quantization.min[0]), float(tensors[i].quantization.max[0]))
             for i in sorted(_ranged(model))}
    counts = {i: np.zeros(BINS, np.int64) for i in edges}
    rng = np.random.default_rng(0)

    def histogram(i, value):
        flat = value.ravel()
        if flat.size > SAMPLED_VALUES:
            flat = flat[rng.integers(0, flat.size, SAMPLED_VALUES)]
        low, high = edges[i]
        if high > low:
            counts[i] += np.bincount(np.clip(((flat - low) * (BINS / (high - low))).astype(np.int64), 0, BINS - 1),
                                     minlength=BINS)

    visit_values(calibrated, list(edges), dataset_gen, histogram)
    for i, (low, high) in edges.items():
        total = counts[i].sum()
        if not total:
            continue
        cumulative = np.concatenate([[0], np.cumsum(counts[i])]) / total
        grid = np.linspace(low, high, BINS + 1)
        bottom, top = (_quantile(cumulative, grid, q) for q in (1 - percentile / 100, percentile / 100))
        tensors[i].quantization.min = np.array([min(bottom, 0.0)], np.float32)
        tensors[i].quantization.max = np.array([max(top, 0.0)], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _quantile(cumulative: np.ndarray, grid: np.ndarray, q: float) -> float:
    """The smallest value whose share of values at or below it reaches ``q`` (0 < q < 1), from the cumulative
    shares ``cumulative`` at the bin edges ``grid``, linearly inside the bin where ``q`` is reached."""
    j = int(np.searchsorted(cumulative, q, side="left"))  # cumulative[j - 1] < q ≤ cumulative[j]
    share = (q - cumulative[j - 1]) / (cumulative[j] - cumulative[j - 1])
    return float(grid[j - 1] + share * (grid[j] - grid[j - 1]))


def _ranged(model) -> set[int]:
    """The main subgraph's tensors with one calibrated min/max (per-tensor activations)."""
    return {i for i, t in enumerate(model.subgraphs[0].tensors)
            if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min) == 1}


def visit_values(content: bytes, tensor_ids: list[int], dataset_gen: Callable[[], Iterable],
                 visit: Callable[[int, np.ndarray], None]) -> None:
    """``visit(i, value)`` for each of ``tensor_ids`` and each of ``dataset_gen()``'s samples (lists of float
    inputs in the model's input order, or dicts by input name), the model ``content`` run (``_interpreter``)
    with those tensors made graph outputs, which the memory planner never shares — in as many passes over the
    samples as keep each probe's outputs under ``PROBE_BYTES``. An integer input (a full-integer file's) gets
    each sample quantized with its scale and zero point, as the converter's quantize op would; values are
    visited as the interpreter holds them (integer tensors not dequantized)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    graph = model.subgraphs[0]
    chunks, chunk, size = [], [], 0
    for i in tensor_ids:
        nbytes = 4 * abs(int(np.prod(graph.tensors[i].shape if graph.tensors[i].shape is not None else [])))
        if chunk and size + nbytes > PROBE_BYTES:
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(i)
        size += nbytes
    if chunk:
        chunks.append(chunk)
    outputs = np.asarray(graph.outputs, np.int32)
    for ids in chunks:
        graph.outputs = np.concatenate([outputs, np.asarray(ids, np.int32)])
        interpreter = _interpreter(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
        inputs = interpreter.get_input_details()
        shapes = [tuple(d["shape"]) for d in inputs]
        seen = False
        for sample in dataset_gen():
            values = [sample[d["name"]] for d in inputs] if isinstance(sample, dict) else list(sample)
            if len(values) != len(inputs):
                raise ValueError(f"a calibration sample has {len(values)} inputs, the model {len(inputs)}")
            values = [to_input(np.asarray(value, np.float32), detail) for detail, value in zip(inputs, values)]
            if [v.shape for v in values] != shapes:  # samples of other sizes, as the calibrator takes them
                shapes = [v.shape for v in values]
                for detail, shape in zip(inputs, shapes):
                    interpreter.resize_tensor_input(detail["index"], shape)
                interpreter.allocate_tensors()
            for detail, value in zip(inputs, values):
                interpreter.set_tensor(detail["index"], value)
            interpreter.invoke()
            for i in ids:
                value = interpreter.get_tensor(i)
                if value.size:
                    visit(i, value)
            seen = True
        if not seen:
            raise ValueError("the representative dataset yielded no sample")


def _interpreter(model_content: bytes):
    """A planned interpreter of ``model_content`` with LiteRT's default delegate (XNNPACK) on 2 threads: the
    values of TFLite's builtin kernels (the calibrator's) to float rounding, several times faster."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_content, num_threads=2)
    interpreter.allocate_tensors()
    return interpreter
