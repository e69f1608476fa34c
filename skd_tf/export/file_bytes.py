"""Where a .tflite file's bytes go: weights, biases, quantization parameters, tensor names, the rest.

A per-channel int8 file stores, for every convolution's weights *and* its int32 bias, one float32 scale and
one int64 zero point per output channel (12 bytes a channel, twice): for a small network (LR-ASPP on
MobileNetV2, 0.56 M parameters, ~8 k conv channels) that is a quarter of the file, and the reason its
int8 / float32 size ratio stays above 0.3 while a ResNet's, with more weights per channel, is ~0.25.
"""

from __future__ import annotations

from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_INTEGER_TYPES = {"INT32", "INT64"}


def _vector_bytes(values, item: int) -> int:
    return 0 if values is None else 4 + item * len(values)  # a flatbuffer vector: length prefix + items


def byte_breakdown(model_bytes: bytes) -> dict:
    """``{"total", "weights", "biases_and_shapes", "quantization", "names", "structure"}`` in bytes.

    ``weights``: constant float/int8/int16 tensors (kernels); ``biases_and_shapes``: constant int32/int64
    tensors (int8 biases, shape and axis operands); ``quantization``: every tensor's scale (float32) and
    zero-point (int64) vectors; ``names``: tensor names; ``structure``: the rest (operators, options, tensor
    records, flatbuffer padding)."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    parts = {"weights": 0, "biases_and_shapes": 0, "quantization": 0, "names": 0}
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            parts["names"] += len(tensor.name or b"")
            q = tensor.quantization
            if q is not None:
                parts["quantization"] += _vector_bytes(q.scale, 4) + _vector_bytes(q.zeroPoint, 8)
            data = model.buffers[tensor.buffer].data if 0 < tensor.buffer < len(model.buffers) else None
            if data is not None and len(data):
                key = "biases_and_shapes" if _TYPE_NAMES.get(tensor.type) in _INTEGER_TYPES else "weights"
                parts[key] += len(data)
    total = len(model_bytes)
    return {"total": total, **parts, "structure": total - sum(parts.values())}


def describe(breakdown: dict) -> str:
    """One line: each part's KiB and share of the file."""
    total = breakdown["total"]
    return ", ".join(f"{name.replace('_', ' ')} {breakdown[name] / 1024:.1f} KiB "
                     f"({100 * breakdown[name] / total:.0f} %)"
                     for name in ("weights", "biases_and_shapes", "quantization", "names", "structure"))
