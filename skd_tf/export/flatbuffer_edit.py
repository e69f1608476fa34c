"""Small, checked edits of a converted TFLite flatbuffer (via LiteRT's flatbuffer_utils).

* ``raw_pixel_input``: a full-integer model calibrated on raw RGB gets an input
  scale equal to the calibration range (e.g. 0.94 for pixels up to 240), so an
  app would have to re-quantize its pixels. The converter puts a QUANTIZE op
  right after the input; giving the input tensor scale 1 (zero point 0 for
  uint8, −128 for int8) turns that op into an exact requantization from raw
  pixel values, and the app feeds its camera bytes as they are. (With int8 I/O
  the input feeds the normalisation's 1×1 depthwise convolution directly, whose int32
  bias is stored in steps of the input's scale times each channel's filter scale:
  it is re-scaled with the input, exact up to rounding it to a whole step of the
  new scale.) (A fake-quant
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
# these read their input's scale at preparation too, but store their int32 bias at input scale × filter scale
_BIASED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D"}


def builtin_name(model, op) -> str:
    """The TFLite builtin operator name of ``op`` in ``model`` (flatbuffer objects): ``CONV_2D``, ..."""
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
    readers = [op for op in graph.operators if input_index in list(op.inputs)]
    consumers = [builtin_name(model, op) for op in readers]
    if not consumers or not set(consumers) <= _RESCALING_OPS | _BIASED_OPS:
        raise ValueError(f"the image input feeds {', '.join(consumers) or 'nothing'}; re-scaling it is exact only "
                         f"when it feeds ops that requantize their inputs ({', '.join(sorted(_RESCALING_OPS))}) "
                         f"or convolutions whose bias can follow ({', '.join(sorted(_BIASED_OPS))})")
    old_scale = float(tensor.quantization.scale[0])
    for op, name in zip(readers, consumers):
        if name in _BIASED_OPS:
            _rescale_bias(model, graph, op, input_index, old_scale)
    zero_point = 0 if tensor.type == schema.TensorType.UINT8 else -128
    tensor.quantization.scale = np.array([1.0], np.float32)
    tensor.quantization.zeroPoint = np.array([zero_point], np.int64)
    tensor.quantization.min = tensor.quantization.max = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _rescale_bias(model, graph, op, input_index: int, old_scale: float) -> None:
    """A convolution reading the input (its first operand) keeps its function when the input's scale goes
    from ``old_scale`` to 1: its int32 bias (real value = int · input scale · filter scale) is multiplied by
    ``old_scale`` and its recorded scale divided by it."""
    inputs = list(op.inputs)
    if inputs[0] != input_index or input_index in inputs[1:]:
        raise ValueError("the image input is a convolution's filter or bias; it cannot be re-scaled")
    if len(inputs) < 3 or inputs[2] < 0:
        return  # no bias: the kernel reads the new scale at preparation
    bias = graph.tensors[inputs[2]]
    if sum(t.buffer == bias.buffer for t in graph.tensors) != 1 or bias.type != schema.TensorType.INT32:
        raise ValueError("a convolution's bias after the image input is shared or not int32; cannot re-scale it")
    buffer = model.buffers[bias.buffer]
    values = np.frombuffer(np.asarray(buffer.data, np.uint8).tobytes(), np.int32).astype(np.float64)
    buffer.data = np.rint(values * old_scale).astype(np.int32).view(np.uint8)
    bias.quantization.scale = (np.asarray(bias.quantization.scale, np.float64) / old_scale).astype(np.float32)


def shorten_tensor_names(model_bytes: bytes, max_length: int = 96) -> bytes:
    """The model with each tensor named by its first fused op only, at most ``max_length`` characters."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    for graph in model.subgraphs:
        keep = set(graph.inputs) | set(graph.outputs)
        for index, tensor in enumerate(graph.tensors):
            if index in keep or not tensor.name:
                continue
            tensor.name = short_tensor_name(tensor.name, max_length)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def short_tensor_name(name: bytes | str, max_length: int = 96) -> str:
    """A converter's tensor name by its first fused op, without the outer function / model scope, at most
    ``max_length`` characters: ``student_1/conv1_bn_1/batchnorm/add_1;student_1/...`` →
    ``conv1_bn_1/batchnorm/add_1``."""
    first = (name.decode(errors="replace") if isinstance(name, bytes) else name).split(";")[0]
    parts = first.split("/")
    if len(parts) > 2:
        first = "/".join(parts[1:])
    return first[:max_length]
