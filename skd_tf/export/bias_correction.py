"""Empirical bias correction of a post-training int8 file: each layer's mean output put back where the float
network has it.

Rounding a tensor to int8 does not average out where a channel's values sit within a step or two of a constant
(half of the live channels in the middle of ESPNet, docs/published-weights.md): every pixel of such a channel
rounds the same way, and the layers after it receive the same error at every pixel. Nagel et al. (2019,
"Data-Free Quantization Through Weight Equalization and Bias Correction", §4.2) take that error out of each
layer's bias; here in its empirical form. For each convolution and fully connected op of the int8 file, in the
order the data flows through them, the mean over the samples of each output channel is compared with the
same tensor of the float model the quantizer started from (TFLite's calibrated float twin, whose tensors carry
the same names) and the difference is taken out of the op's int32 bias:

    b_c ← b_c − round((mean(deq(y_int8,c)) − mean(y_float,c)) / (s_in · s_w,c))

An op is corrected with every op before it already corrected, so each correction sees the errors left
upstream. Ops whose output passes through a fused activation (ReLU, ReLU6) are left alone: a mean after a
ReLU does not move with the bias as the mean before it does (CamVid's ESPNet-C, 233 test images: correcting
them too kept 93.83 % of PyTorch's labels, leaving them 96.00 %, uncorrected 95.81 %).

Written here because TFLite's converter has no bias correction (NNCF's and AIMET's work on their own graphs,
not on a TFLite file), and it edits nothing but int32 bias constants of the file the converter wrote.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from skd_tf.export.calibration import visit_values
from skd_tf.export.flatbuffer_edit import builtin_name, set_constant, short_tensor_name

# the ops whose int32 bias is corrected (with a bias input), by TFLite builtin operator name
CORRECTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def corrected_biases(quantized: bytes, float_twin: bytes, samples: Iterable[list[np.ndarray]]) -> tuple[bytes, dict]:
    """``quantized`` (a full-integer TFLite file as the converter wrote it, tensor names unshortened) with the
    int32 bias of each ``CORRECTED_OPS`` op without a fused activation corrected so that the mean of each of its
    output channels over ``samples`` (float inputs in the input order, as calibration takes them) is the one
    ``float_twin`` gives (the calibrated float model that was quantized). Ops are corrected a generation at a
    time (the ops no uncorrected op feeds), on the file with the earlier generations' corrections.

    Returns the file and facts: ``ops`` corrected, ``samples``, ``largest_error_steps`` (the largest channel
    mean error before its correction, in output steps) and the op it was in."""
    from ai_edge_litert.tools import flatbuffer_utils

    samples = [list(sample) for sample in samples]
    if not samples:
        raise ValueError("bias correction needs at least one sample")
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(quantized))
    twin = flatbuffer_utils.convert_bytearray_to_object(bytearray(float_twin))
    graph, twin_graph = model.subgraphs[0], twin.subgraphs[0]
    twin_ids = {t.name: i for i, t in enumerate(twin_graph.tensors)}
    targets = []  # (op, output tensor id in the file, output tensor id in the twin)
    for op in graph.operators:
        if builtin_name(model, op) not in CORRECTED_OPS or len(op.inputs) < 3 or op.inputs[2] < 0:
            continue
        if getattr(op.builtinOptions, "fusedActivationFunction", 0):
            continue
        output = graph.tensors[op.outputs[0]]
        if output.quantization is None or output.quantization.scale is None or output.name not in twin_ids:
            continue
        targets.append((op, op.outputs[0], twin_ids[output.name]))
    facts = {"ops": len(targets), "samples": len(samples), "largest_error_steps": 0.0, "largest_error_op": None}
    if not targets:
        return quantized, facts
    float_means = _channel_means(twin, [t for _, _, t in targets], samples)
    for generation in _generations(graph, [op for op, _, _ in targets]):
        chosen = [targets[k] for k in generation]
        file_means = _channel_means(model, [t for _, t, _ in chosen], samples)
        for op, tensor, twin_tensor in chosen:
            error = file_means[tensor] - float_means[twin_tensor]
            step = float(graph.tensors[tensor].quantization.scale[0])
            if np.abs(error).max() / step > facts["largest_error_steps"]:
                facts["largest_error_steps"] = float(np.abs(error).max() / step)
                facts["largest_error_op"] = short_tensor_name(graph.tensors[tensor].name)
            bias = graph.tensors[op.inputs[2]]
            values = np.frombuffer(bytes(bytearray(model.buffers[bias.buffer].data)), np.int32)
            scale = np.broadcast_to(np.asarray(bias.quantization.scale, np.float64), values.shape)
            shift = np.round(error.astype(np.float64) / scale)
            corrected = np.clip(values - shift, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
            set_constant(model, graph, bias, corrected)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), facts


def _generations(graph, ops: list) -> list[list[int]]:
    """The indices into ``ops`` grouped by generation: an op's generation is one more than the highest of the
    ``ops`` whose outputs reach its inputs (0 for none), so no op depends on another of its own generation."""
    chosen = {id(op): k for k, op in enumerate(ops)}
    depth: dict[int, int] = {}  # tensor id → the generation of the last chosen op it depends on (+1), 0 for none
    generation_of: dict[int, int] = {}
    for op in graph.operators:  # operators are stored in execution order
        reached = max((depth.get(int(i), 0) for i in op.inputs if i >= 0), default=0)
        if id(op) in chosen:
            generation_of[chosen[id(op)]] = reached
            reached += 1
        for o in op.outputs:
            depth[int(o)] = reached
    groups: dict[int, list[int]] = {}
    for k, g in generation_of.items():
        groups.setdefault(g, []).append(k)
    return [sorted(groups[g]) for g in sorted(groups)]


def _channel_means(model, tensor_ids: list[int], samples: list[list[np.ndarray]]) -> dict[int, np.ndarray]:
    """The mean over ``samples`` and pixels of each channel (last axis) of the tensors ``tensor_ids`` of
    ``model`` (a flatbuffer object), dequantized where they are integer, as LiteRT's default delegate computes
    them (``calibration.visit_values``)."""
    from ai_edge_litert.tools import flatbuffer_utils

    tensors = model.subgraphs[0].tensors
    sums = {i: 0.0 for i in tensor_ids}

    def add(i, value):
        quantization = tensors[i].quantization
        if np.issubdtype(value.dtype, np.integer) and quantization is not None and quantization.scale is not None:
            value = (value.astype(np.float32) - float(quantization.zeroPoint[0])) * float(quantization.scale[0])
        sums[i] = sums[i] + value.reshape(-1, value.shape[-1]).astype(np.float64).mean(0)

    visit_values(bytes(flatbuffer_utils.convert_object_to_bytearray(model)), tensor_ids, lambda: iter(samples), add)
    return {i: total / len(samples) for i, total in sums.items()}
