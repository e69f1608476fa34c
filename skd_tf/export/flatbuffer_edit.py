"""Small, checked edits of a converted TFLite flatbuffer (via LiteRT's flatbuffer_utils).

* ``raw_pixel_input``: a full-integer model calibrated on raw RGB gets an input
  scale equal to the calibration range (e.g. 0.94 for pixels up to 240), so an
  app would have to re-quantize its pixels. The converter puts a QUANTIZE op
  right after the input; giving the input tensor scale 1 (zero point 0 for
  uint8, −128 for int8) turns that op into an exact requantization from raw
  pixel values, and the app feeds its camera bytes as they are. (With int8 I/O
  the input feeds the mean subtraction directly; SUB rescales its inputs too.) (A fake-quant
  node pinning [0, 255] in the graph instead leaves a float DEQUANTIZE/QUANTIZE
  pair behind, which we measured with TF 2.21's converter.)
* ``shorten_tensor_names``: the converter names each tensor after every op
  fused into it (hundreds of characters each, 25 % of a tiny int8 student's
  file); keep the first name, without the model scope.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert.tools import flatbuffer_utils
from ai_edge_litert import schema_py_generated as schema


# integer kernels of these ops rescale each input by its own scale, so the input's scale is free
_RESCALING_OPS = {"QUANTIZE", "SUB", "ADD", "MUL"}


def _builtin_name(model, op) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    value = max(code.builtinCode, code.deprecatedBuiltinCode)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return names.get(value, str(value))


def raw_pixel_input(model_bytes: bytes) -> bytes:
    """The model with its integer image input re-scaled to raw pixel values (scale 1)."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    graph = model.subgraphs[0]
    (input_index,) = graph.inputs
    tensor = graph.tensors[input_index]
    if tensor.type not in (schema.TensorType.UINT8, schema.TensorType.INT8):
        raise ValueError("raw_pixel_input needs an integer-input model")
    consumers = [_builtin_name(model, op) for op in graph.operators if input_index in list(op.inputs)]
    if not consumers or not set(consumers) <= _RESCALING_OPS:
        raise ValueError(f"the image input feeds {', '.join(consumers) or 'nothing'}; re-scaling it is exact only "
                         f"when it feeds ops that requantize their inputs ({', '.join(sorted(_RESCALING_OPS))})")
    zero_point = 0 if tensor.type == schema.TensorType.UINT8 else -128
    tensor.quantization.scale = np.array([1.0], np.float32)
    tensor.quantization.zeroPoint = np.array([zero_point], np.int64)
    tensor.quantization.min = tensor.quantization.max = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def shorten_tensor_names(model_bytes: bytes, max_length: int = 96) -> bytes:
    """The model with each tensor named by its first fused op only, at most ``max_length`` characters."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    for graph in model.subgraphs:
        keep = set(graph.inputs) | set(graph.outputs)
        for index, tensor in enumerate(graph.tensors):
            if index in keep or not tensor.name:
                continue
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name
            first = name.split(";")[0]
            parts = first.split("/")
            if len(parts) > 2:  # drop the outer function / model scope
                first = "/".join(parts[1:])
            tensor.name = first[:max_length]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
