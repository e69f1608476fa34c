"""Post-training int8 calibration with the activation ranges TFLite's calibrator should have recorded.

TensorFlow 2.21's calibrator (``tensorflow/lite/tools/optimize/calibration/calibrator.cc``) logs the input
tensors of every op a second time after the op has run. When the memory planner let that op write its output
into an input's buffer (an in-place ADD or MUL on a tensor no later op reads), the input is logged with the
*output's* values: its recorded range becomes the output's (tensorflow/tensorflow#127842, open). In ESPNet the
concatenation before each residual addition was recorded with the range of the sum, 12× too wide (its int8
step then larger than the spread of most of its channels); in inverted residual blocks the projection's output
can get the range of the block's sum.

``corrected_calibration`` keeps TFLite's conversion and quantizer and replaces only the recorded ranges: the
calibrated float model is run once more on the same representative data by an interpreter that keeps every
tensor in its own buffer (no in-place sharing, no delegate), and each activation's min/max is set to what
that tensor held. The calibrator is wrapped, not rewritten, because everything else it does is right. The
price: that interpreter holds every activation of one image at once (the sum of the network's activation
sizes — for a small student at 512×1024, hundreds of MB), and the calibration images run twice.
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
    """``calibrated`` (a float TFLite model whose tensors carry calibration min/max) with every per-tensor
    activation range of its main subgraph set to the min/max that tensor takes on ``dataset_gen()``'s samples
    (lists of inputs in the model's input order, or dicts by input name); control-flow subgraphs keep the
    calibrator's ranges."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    interpreter = Interpreter(model_content=bytes(calibrated), experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    inputs = interpreter.get_input_details()
    tensors = model.subgraphs[0].tensors
    ranged = [i for i, t in enumerate(tensors)
              if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min) == 1]
    low = np.full(len(tensors), np.inf)
    high = np.full(len(tensors), -np.inf)
    seen = False
    for sample in dataset_gen():
        values = [sample[d["name"]] for d in inputs] if isinstance(sample, dict) else list(sample)
        if len(values) != len(inputs):
            raise ValueError(f"a calibration sample has {len(values)} inputs, the model {len(inputs)}")
        for detail, value in zip(inputs, values):
            interpreter.set_tensor(detail["index"], np.asarray(value, detail["dtype"]))
        interpreter.invoke()
        for i in ranged:
            try:
                value = interpreter.get_tensor(i)
            except ValueError:  # no data (e.g. an unused tensor): the calibrator's range stays
                continue
            if value.size:
                low[i] = min(low[i], float(value.min()))
                high[i] = max(high[i], float(value.max()))
        seen = True
    if not seen:
        raise ValueError("the representative dataset yielded no sample")
    for i in ranged:
        if np.isfinite(low[i]):
            tensors[i].quantization.min = np.array([low[i]], np.float32)
            tensors[i].quantization.max = np.array([high[i]], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
