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
* ``exact_two_class_switch``: the int8 ``two_class`` label head's last step
  (``label_heads._integer_switch``) becomes exact — a step function and class
  indices at scale 1 — by setting the scales of its few tensors and casting
  its class indices from int32 to int8 directly.
* ``shorten_tensor_names``: the converter names each tensor after every op
  fused into it (hundreds of characters each, 25 % of a tiny int8 student's
  file); keep the first name, without the model scope.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert.tools import flatbuffer_utils
from ai_edge_litert import schema_py_generated as schema

from skd_tf.export.label_heads import SWITCH_NAMES


# integer kernels of these ops rescale each input by its own scale, so the input's scale is free
_RESCALING_OPS = {"QUANTIZE", "SUB", "ADD", "MUL"}
# these read their input's scale at preparation too, but store their int32 bias at input scale × filter scale
_BIASED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D"}


def set_constant(model, graph, tensor, values: np.ndarray) -> None:
    """Writes ``values`` (their bytes) as the constant data of ``tensor`` in ``graph`` of ``model`` (flatbuffer
    objects), in a buffer of its own when it shared one: the converter gives equal constants one buffer (the
    all-zero biases of several convolutions, say), and an edit of one must not change the others."""
    if sum(t.buffer == tensor.buffer for t in graph.tensors) != 1:
        model.buffers.append(schema.BufferT())
        tensor.buffer = len(model.buffers) - 1
    model.buffers[tensor.buffer].data = np.ascontiguousarray(values).view(np.uint8)


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
    if bias.type != schema.TensorType.INT32:
        raise ValueError("a convolution's bias after the image input is not int32; cannot re-scale it")
    values = np.frombuffer(np.asarray(model.buffers[bias.buffer].data, np.uint8).tobytes(), np.int32)
    set_constant(model, graph, bias, np.rint(values.astype(np.float64) * old_scale).astype(np.int32))
    bias.quantization.scale = (np.asarray(bias.quantization.scale, np.float64) / old_scale).astype(np.float32)


# ops whose output has its input's quantization (they move bytes)
_SAME_SCALE_OPS = {"RESHAPE", "DEPTH_TO_SPACE"}
# the step's requantization multiplier: one accumulator unit takes it from 0 to 255 steps (saturated), and
# XNNPACK takes int8 convolutions with multipliers below 256
_STEP_MULTIPLIER = 255.5


def exact_two_class_switch(model_bytes: bytes) -> bytes:
    """The int8 file with its ``two_class`` switch (``label_heads._integer_switch``) exact, or unchanged when it
    has none. The step's convolution keeps its int8 weights (each channel scaled by a positive factor: the sign
    of its output is the interpolated difference's) and gets per-channel scales that make its requantization
    multiplier 255.5 and an int32 bias of +1: its accumulator a ≥ 0 gives 255 · 255.5/255 ≥ 255 steps above the
    zero point, saturating to 6, and a ≤ −1 gives at most 0 (ReLU6 at scale 6/255). c₂ and the labels are held
    at scale 1, (c₁ − c₂)/6 at ⅙ (zero point 0; the class indices cast straight from int32 to int8, without the
    converter's float32 detour), so the MUL gives (c₁ − c₂) · (q + 128)/255 ∈ {0, c₁ − c₂} and the ADD the class
    index. The labels leave the file as int8 at scale 1 (``convert``): the bytes uint8 labels would have."""
    if SWITCH_NAMES["labels"].encode() not in model_bytes:  # no switch: spare parsing a large file
        return model_bytes
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    graph = model.subgraphs[0]
    producer = {out: op for op in graph.operators for out in op.outputs}
    consumers: dict = {}
    for op in graph.operators:
        for i in op.inputs:
            consumers.setdefault(i, []).append(op)
    ops = {"step": "CONV_2D", "second": "CAST", "change": "CAST", "sixths": "MUL", "switched": "MUL", "labels": "ADD"}
    named = {}
    for index, tensor in enumerate(graph.tensors):
        parts = {part.split("/")[-1] for part in (tensor.name or b"").decode(errors="replace").split(";")}
        for key, name in SWITCH_NAMES.items():
            if name in parts and index in producer and builtin_name(model, producer[index]) == ops[key]:
                named.setdefault(name, []).append(index)
    if SWITCH_NAMES["labels"] not in named:
        return model_bytes
    unclear = [n for n in SWITCH_NAMES.values() if len(named.get(n, [])) != 1]
    if unclear:
        raise ValueError(f"the two_class switch's tensors {', '.join(unclear)} are not each one op's output in the "
                         "int8 file")
    named = {name: indices[0] for name, indices in named.items()}

    def linked(index: int) -> set:
        """``index`` and every tensor only reshaped or laid out from or into it."""
        found, todo = {index}, [index]
        while todo:
            t = todo.pop()
            ops = [o for o in consumers.get(t, []) if builtin_name(model, o) in _SAME_SCALE_OPS]
            before = producer.get(t)
            near = [o.outputs[0] for o in ops]
            if before is not None and builtin_name(model, before) in _SAME_SCALE_OPS:
                near.append(before.inputs[0])
            for n in near:
                if n not in found:
                    found.add(n)
                    todo.append(n)
        return found

    def hold(index: int, scale: float, zero_point: int = 0) -> None:
        for t in linked(index):
            quantization = graph.tensors[t].quantization
            if graph.tensors[t].type != schema.TensorType.INT8 or quantization is None:
                raise ValueError(f"the two_class switch's tensor {graph.tensors[t].name!r} is not int8")
            quantization.scale = np.array([scale], np.float32)
            quantization.zeroPoint = np.array([zero_point], np.int64)
            quantization.min = quantization.max = None

    def integer_cast(name: str, scale: float) -> None:
        """The converter's CAST of class indices to float32 and QUANTIZE to int8, as one CAST to int8 held at
        ``scale`` (the indices' bytes, read at ``scale``): the file stays integer-only (the QUANTIZE's int8
        tensor is left unused)."""
        cast = producer[named[name]]
        quantize = consumers.get(cast.outputs[0], [])
        if (graph.tensors[cast.inputs[0]].type != schema.TensorType.INT32
                or len(quantize) != 1 or builtin_name(model, quantize[0]) != "QUANTIZE"):
            raise ValueError(f"the two_class switch's {name} is not a cast of int32 class indices")
        out, quantized = cast.outputs[0], quantize[0].outputs[0]
        graph.operators.remove(quantize[0])
        for op in consumers.get(quantized, []):
            op.inputs = [out if i == quantized else i for i in op.inputs]
        consumers[out] = consumers.pop(quantized, [])
        graph.outputs = [out if i == quantized else i for i in graph.outputs]
        graph.tensors[out].type = schema.TensorType.INT8  # the float32 tensor becomes the int8 one
        graph.tensors[out].quantization = graph.tensors[out].quantization or schema.QuantizationParametersT()
        if getattr(cast, "builtinOptions", None) is not None and hasattr(cast.builtinOptions, "outDataType"):
            cast.builtinOptions.outDataType = schema.TensorType.INT8
        hold(out, scale)

    hold(named[SWITCH_NAMES["labels"]], 1.0)
    integer_cast(SWITCH_NAMES["second"], 1.0)
    integer_cast(SWITCH_NAMES["change"], 1.0)
    hold(named[SWITCH_NAMES["sixths"]], 1 / 6)
    hold(named[SWITCH_NAMES["switched"]], 1.0)
    step = named[SWITCH_NAMES["step"]]
    conv = producer[step]
    if len(conv.inputs) < 3 or conv.inputs[2] < 0:  # a CONV_2D: ``named`` holds the ops' outputs by kind
        raise ValueError("the two_class switch's step convolution has no bias")
    hold(step, 6 / 255, -128)
    source, kernel, bias = (graph.tensors[i] for i in conv.inputs[:3])
    channels = len(kernel.quantization.scale)
    kernel_scale = _STEP_MULTIPLIER * (6 / 255) / float(source.quantization.scale[0])
    kernel.quantization.scale = np.full(channels, kernel_scale, np.float32)
    bias.quantization.scale = np.full(channels, kernel_scale * float(source.quantization.scale[0]), np.float32)
    bias.quantization.zeroPoint = np.zeros(channels, np.int64)
    set_constant(model, graph, bias, np.ones(channels, np.int32))
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


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
