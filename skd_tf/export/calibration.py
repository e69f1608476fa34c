"""Post-training int8 calibration with the activation ranges TFLite's calibrator should have recorded.

TensorFlow 2.21's calibrator (``tensorflow/lite/tools/optimize/calibration/calibrator.cc``) logs the input
tensors of every op a second time after the op has run. When the memory planner let that op write its output
into an input's buffer (an in-place ADD or MUL on a tensor no later op reads), the input is logged with the
*output's* values: its recorded range becomes the output's (tensorflow/tensorflow#127842, open). In ESPNet the
concatenation before each residual addition was recorded with the range of the sum, 12× too wide (its int8
step then larger than the spread of most of its channels); in inverted residual blocks the projection's output
can get the range of the block's sum.

``corrected_calibration`` keeps TFLite's conversion and quantizer and replaces only the ranges that are wrong:
those of the inputs an op overwrote in place. They are found by address — an interpreter without delegates
(as the calibrator's) is planned, and an op input whose buffer is its output's is shared — and re-measured
by running the calibrated float model once more on the same data with exactly those tensors made graph
outputs, which the planner never shares. The calibrator is wrapped, not rewritten, because everything else
it does is right. The price: one more pass over the calibration images when the graph has in-place ops, and
memory for those tensors only (keeping every activation, as a first version did, took 24 GB for PSPNet
ResNet-18 at 1024×2048).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable

import numpy as np


@contextmanager
def corrected_calibration():
    """Within the block, TFLite's post-training calibration records each activation's true min/max.

    Hooks ``tensorflow.lite.python.optimize.calibrator.Calibrator.calibrate`` (private, the step every
    full-integer conversion with a representative dataset goes through; tests/test_export.py fails loudly if
    it moves)."""
    from tensorflow.lite.python.optimize import calibrator

    original = calibrator.Calibrator.calibrate

    def calibrate(self, dataset_gen):
        return recorded_ranges(original(self, dataset_gen), dataset_gen)

    calibrator.Calibrator.calibrate = calibrate
    try:
        yield
    finally:
        calibrator.Calibrator.calibrate = original


def recorded_ranges(calibrated: bytes, dataset_gen: Callable[[], Iterable]) -> bytes:
    """``calibrated`` (a float TFLite model whose tensors carry calibration min/max) with the range of every
    per-tensor activation of its main subgraph that an op overwrote in place set to the min/max that tensor
    takes on ``dataset_gen()``'s samples (lists of inputs in the model's input order, or dicts by input
    name); every other range is the calibrator's."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    tensors = model.subgraphs[0].tensors
    ranged = {i for i, t in enumerate(tensors)
              if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min) == 1}
    shared = sorted(in_place_inputs(calibrated) & ranged)
    if not shared:
        return calibrated
    probe = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    graph = probe.subgraphs[0]
    graph.outputs = np.concatenate([np.asarray(graph.outputs, np.int32), np.asarray(shared, np.int32)])
    interpreter = _interpreter(bytes(flatbuffer_utils.convert_object_to_bytearray(probe)))
    inputs = interpreter.get_input_details()
    low, high = {i: np.inf for i in shared}, {i: -np.inf for i in shared}
    seen = False
    for sample in dataset_gen():
        values = [sample[d["name"]] for d in inputs] if isinstance(sample, dict) else list(sample)
        if len(values) != len(inputs):
            raise ValueError(f"a calibration sample has {len(values)} inputs, the model {len(inputs)}")
        for detail, value in zip(inputs, values):
            interpreter.set_tensor(detail["index"], np.asarray(value, detail["dtype"]))
        interpreter.invoke()
        for i in shared:
            value = interpreter.get_tensor(i)
            if value.size:
                low[i] = min(low[i], float(value.min()))
                high[i] = max(high[i], float(value.max()))
        seen = True
    if not seen:
        raise ValueError("the representative dataset yielded no sample")
    for i in shared:
        if np.isfinite(low[i]):
            tensors[i].quantization.min = np.array([low[i]], np.float32)
            tensors[i].quantization.max = np.array([high[i]], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def in_place_inputs(model_content: bytes) -> set[int]:
    """The main subgraph's tensors that an op overwrites in place: inputs planned into their op's output
    buffer by an interpreter without delegates (the calibrator's kind)."""
    interpreter = _interpreter(model_content)
    addresses = {}
    for detail in interpreter.get_tensor_details():
        try:
            view = interpreter.tensor(detail["index"])()
        except ValueError:  # no data (e.g. an optional input)
            continue
        if isinstance(view, np.ndarray) and view.size:  # 0-d tensors come back as numpy scalars, not views
            addresses[detail["index"]] = view.ctypes.data
    shared = set()
    for op in interpreter._get_ops_details():  # private, but the only op list the Python runtime has
        outputs = {addresses.get(o) for o in op["outputs"]} - {None}
        shared.update(i for i in op["inputs"] if addresses.get(i) in outputs)
    return shared


def _interpreter(model_content: bytes):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=model_content,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return interpreter
