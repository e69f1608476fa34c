"""The same segmentation network rebuilt as a tf_keras (Keras 2) model, with the same weights.

Quantization-aware training (tensorflow-model-optimization) only accepts
tf_keras models (SPEC §4), and our networks are Keras 3 functional models. The
graph is walked from the Keras 3 config: every layer is recreated from its
class name and config (Keras 3-only keys dropped), wired to the same inputs,
and given the trained weights; operation nodes on a tensor and a number
(MobileNetV3's ``x + 3``) get small twins, and an average pooling becomes the
frozen depthwise convolution it is (``_average_pool_as_depthwise`` says why).
The graph mirrored is the one the int8 export converts
(``integer_graph.for_integer_export``): hard-swish with its ⅙ in the next
kernels, PReLU as y + ReLU((α − 1) · y) or a · y + b · LeakyReLU_β(y), unfoldable batch norms as 1×1
depthwise convolutions, stride-sized transposed convolutions as a 1×1
convolution and DEPTH_TO_SPACE — written here in tf_keras' own layers
(``COMPOSITES``), so that tfmot fake-quantizes each tensor the int8 file
rounds and the QAT file has the ops XNNPACK runs in int8 (ESPNet's QAT file
with PRELU and TRANSPOSE_CONV, 512×1024 on one core: 336 ms in 21 XNNPACK
partitions; as the int8 graph, 146 ms).
Rebuilding from the graph rather than from the model builders means every
architecture the builders make (ResNet, MobileNetV2/V3 backbones,
PSPNet/DeepLabV3/LR-ASPP heads) mirrors without a second builder.
Only the ``logits`` output is kept. Imports tf_keras; only the QAT path uses it.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
import tf_keras

from skd_tf.export.integer_graph import for_integer_export
from skd_tf.models.input_convention import conversion
from skd_tf.models.layers import (BatchNormAsDepthwise, PaddedAveragePoolAsDepthwise, PReLUAsDepthwiseReLU,
                                  PReLUAsLeakyReLU, TransposedConvAsDepthToSpace, adaptive_average_pool)
from skd_tf.models.logits import resize_bilinear
from skd_tf.models.torch_layers import ceil_mode_pads

# config keys that are Keras 3-only or irrelevant once the weights are copied
_DROPPED_KEYS = ("name", "dtype", "build_config", "seed")
_DROPPED_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
_PASSTHROUGH = {"Identity", "InputLayer", "Logits"}


@tf_keras.utils.register_keras_serializable(package="skd_tf_mirror")
class AdaptiveAveragePooling2D(tf_keras.layers.Layer):
    """tf_keras twin of ``skd_tf.models.layers.AdaptiveAveragePooling2D`` (same cells, same maths)."""

    def __init__(self, bins: int, **kwargs):
        super().__init__(**kwargs)
        self.bins = int(bins)

    def call(self, x):
        return adaptive_average_pool(x, (self.bins, self.bins))

    def get_config(self):
        return {**super().get_config(), "bins": self.bins}


@tf_keras.utils.register_keras_serializable(package="skd_tf_mirror")
class ResizeLike(tf_keras.layers.Layer):
    """tf_keras twin of ``skd_tf.models.layers.ResizeLike``."""

    def __init__(self, interpolation: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        self.interpolation = interpolation

    def call(self, inputs):
        x, reference = inputs
        size = (int(reference.shape[1]), int(reference.shape[2]))
        if tuple(x.shape[1:3]) == size:
            return tf.identity(x)
        return tf.image.resize(x, size, method=self.interpolation)

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation}


@tf_keras.utils.register_keras_serializable(package="skd_tf_mirror")
class ConvertInput(tf_keras.layers.Layer):
    """tf_keras twin of ``skd_tf.models.input_convention.ConvertInput``."""

    def __init__(self, pipeline_mean, pipeline_std, channel_order="rgb", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                 value_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.settings = dict(pipeline_mean=list(pipeline_mean), pipeline_std=list(pipeline_std),
                             channel_order=channel_order, mean=list(mean), std=list(std), value_scale=value_scale)

    def call(self, x):
        matrix, bias = conversion(*(self.settings[k] for k in ("pipeline_mean", "pipeline_std", "channel_order",
                                                                "mean", "std", "value_scale")))
        return tf.matmul(x, tf.constant(matrix, x.dtype)) + tf.constant(bias, x.dtype)

    def get_config(self):
        return {**super().get_config(), **self.settings}


@tf_keras.utils.register_keras_serializable(package="skd_tf_mirror")
class CropLike(tf_keras.layers.Layer):
    """tf_keras twin of ``skd_tf.models.torch_layers.CropLike``."""

    def call(self, inputs):
        x, reference = inputs
        return x[:, : int(reference.shape[1]), : int(reference.shape[2]), :]


@tf_keras.utils.register_keras_serializable(package="skd_tf_mirror")
class CeilModeMaxPool2D(tf_keras.layers.Layer):
    """tf_keras twin of ``skd_tf.models.torch_layers.CeilModeMaxPool2D``."""

    def __init__(self, pool=3, strides=2, padding=1, **kwargs):
        super().__init__(**kwargs)
        self.pool, self.strides, self.padding = int(pool), int(strides), int(padding)

    def call(self, x):
        pads = [list(ceil_mode_pads(int(n), self.pool, self.strides, self.padding)) for n in x.shape[1:3]]
        return tf.nn.max_pool2d(tf.pad(x, [[0, 0], *pads, [0, 0]]), self.pool, self.strides, "VALID")

    def get_config(self):
        return {**super().get_config(), "pool": self.pool, "strides": self.strides, "padding": self.padding}


@tf_keras.utils.register_keras_serializable(package="skd_tf_mirror")
class ResizeLikeAlignCorners(tf_keras.layers.Layer):
    """tf_keras twin of ``skd_tf.models.torch_layers.ResizeLikeAlignCorners``."""

    def call(self, inputs):
        x, reference = inputs
        size = (int(reference.shape[1]), int(reference.shape[2]))
        if tuple(x.shape[1:3]) == size:
            return tf.identity(x)
        return resize_bilinear(x, size, align_corners=True)


@tf_keras.utils.register_keras_serializable(package="skd_tf_mirror")
class HardSwish(tf_keras.layers.Layer):
    """Keras 3's ``hard_swish`` activation, x · ReLU6(x + 3) / 6 (tf_keras has none), written as
    (x · ⅙) · ReLU6(x + 3) so that the converter leaves ADD, MUL, MUL, which XNNPACK runs in int8, rather than
    fusing one HARD_SWISH, which it runs in float only (``skd_tf.models.layers.HardSwish``)."""

    def call(self, x):
        return (x * (1.0 / 6.0)) * tf.nn.relu6(x + 3.0)


@tf_keras.utils.register_keras_serializable(package="skd_tf_mirror")
class SixfoldHardSwish(tf_keras.layers.Layer):
    """tf_keras twin of ``skd_tf.models.layers.SixfoldHardSwish``, x · ReLU6(x + 3), for a hard-swish whose ⅙
    the following kernels carry (as in the int8 export: ``integer_graph``)."""

    def call(self, x):
        return x * tf.nn.relu6(x + 3.0)


@tf_keras.utils.register_keras_serializable(package="skd_tf_mirror")
class DepthToSpace(tf_keras.layers.Layer):
    """``tf.nn.depth_to_space`` as a tf_keras layer (DEPTH_TO_SPACE in TFLite; it moves values, so its int8
    output keeps its input's scale and tfmot is not asked to quantize it)."""

    def __init__(self, block_size: int, **kwargs):
        super().__init__(**kwargs)
        self.block_size = int(block_size)

    def call(self, x):
        return tf.nn.depth_to_space(x, self.block_size)

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


@tf_keras.utils.register_keras_serializable(package="skd_tf_mirror")
class ScalarOp(tf_keras.layers.Layer):
    """A Keras 3 operation node on a tensor and a Python number (``x + 3.0``, ``x * (1 / 6)`` in
    keras.applications' MobileNetV3 hard sigmoid)."""

    OPS = {"Add": tf.add, "Subtract": tf.subtract, "Multiply": tf.multiply, "Divide": tf.divide}

    def __init__(self, op: str, value: float, **kwargs):
        super().__init__(**kwargs)
        if op not in self.OPS:
            raise ValueError(f"no tf_keras twin for the operation {op}")
        self.op, self.value = op, float(value)

    def call(self, x):
        return self.OPS[self.op](x, tf.constant(self.value, x.dtype))

    def get_config(self):
        return {**super().get_config(), "op": self.op, "value": self.value}


CUSTOM_LAYERS = {"AdaptiveAveragePooling2D": AdaptiveAveragePooling2D, "ResizeLike": ResizeLike,
                 "ConvertInput": ConvertInput, "CropLike": CropLike, "CeilModeMaxPool2D": CeilModeMaxPool2D,
                 "ResizeLikeAlignCorners": ResizeLikeAlignCorners, "HardSwish": HardSwish,
                 "SixfoldHardSwish": SixfoldHardSwish, "ScalarOp": ScalarOp, "DepthToSpace": DepthToSpace}
# layers that only move values: fake-quantizing their output would only add a requantization
UNQUANTIZED = (DepthToSpace,)


def _is_operation(entry: dict) -> bool:
    """A Keras 3 operation (keras.ops.*) called on a symbolic tensor, not a layer."""
    return str(entry.get("module", "")).startswith("keras.src.ops")


def _operation_from(entry: dict):
    args = entry["inbound_nodes"][0]["args"]
    if len(args) != 2 or not isinstance(args[1], (int, float)) or entry["inbound_nodes"][0].get("kwargs"):
        raise ValueError(f"operation {entry['name']!r} ({entry['class_name']}) is not a tensor-and-number "
                         f"operation; it has no tf_keras twin")
    return ScalarOp(entry["class_name"], args[1], name=entry["name"])


def _average_pool_as_depthwise(name: str, config: dict):
    """A valid-padded average pooling as the depthwise convolution it is: a frozen kernel of 1/(k_h·k_w).

    TFLite's int8 AVERAGE_POOL_2D must keep its input's scale, which tfmot's own range on the pooling
    contradicts (the conversion fails on the same-scale constraint); a depthwise convolution has a scale of
    its own, as in the fake-quantized graph. (ESPNet's zero-padded poolings arrive here already as
    ``PaddedAveragePoolAsDepthwise``, from the integer graph.)"""
    size = tuple(config["pool_size"])
    return tf_keras.layers.DepthwiseConv2D(
        size, strides=config.get("strides") or size, padding="valid", use_bias=False, trainable=False,
        depthwise_initializer=tf_keras.initializers.Constant(1.0 / (size[0] * size[1])), name=name)


def _per_channel_factor(name: str):
    """A 1×1 depthwise convolution without bias: x · k_c, quantized per channel (a MUL by a per-channel
    constant would be quantized with one scale for all channels)."""
    return tf_keras.layers.DepthwiseConv2D(1, use_bias=False, name=name)


def _prelu_as_leaky_relu(name: str, config: dict):
    """``PReLUAsLeakyReLU``, a · y + b · LeakyReLU_β(y) with b = (1 − α)/(1 − β), a = 1 − b, in tf_keras
    layers: two per-channel factors, LeakyReLU and Add (the int8 export writes the same ops)."""
    slope = float(config["slope"])
    linear, leaky = _per_channel_factor(f"{name}_linear"), tf_keras.layers.LeakyReLU(slope, name=f"{name}_leaky")
    scaled, total = _per_channel_factor(f"{name}_scaled"), tf_keras.layers.Add(name=name)

    def weights(alpha):
        a, b = PReLUAsLeakyReLU.factors(alpha.reshape(1, 1, -1, 1), slope)
        return {linear: [a], scaled: [b]}

    return lambda y: total([linear(y), scaled(leaky(y))]), weights


def _prelu_as_depthwise_relu(name: str, config: dict):
    """``PReLUAsDepthwiseReLU``, y + ReLU((α − 1) · y): a 1×1 depthwise convolution with a ReLU, and Add."""
    negative = tf_keras.layers.DepthwiseConv2D(1, use_bias=False, activation="relu", name=f"{name}_negative")
    total = tf_keras.layers.Add(name=name)

    def weights(alpha):
        return {negative: [PReLUAsDepthwiseReLU.kernel(alpha)]}

    return lambda y: total([y, negative(y)]), weights


def _batch_norm_as_depthwise(name: str, config: dict):
    """``BatchNormAsDepthwise``: a 1×1 depthwise convolution with kernel k = γ / √(σ² + ε), bias β − k · μ."""
    layer = tf_keras.layers.DepthwiseConv2D(1, use_bias=True, name=name)

    def weights(gamma, beta, mean, variance):
        k, offset = BatchNormAsDepthwise.affine(gamma, beta, mean, variance, config["epsilon"])
        return {layer: [np.reshape(k, (1, 1, -1, 1)), offset]}

    return layer, weights


def _transposed_conv_as_depth_to_space(name: str, config: dict):
    """``TransposedConvAsDepthToSpace``: a 1×1 convolution to s²·O channels (channel (a·s + b)·O + o) and
    DEPTH_TO_SPACE(s)."""
    s, filters = int(config["stride"]), int(config["filters"])
    pointwise = tf_keras.layers.Conv2D(s * s * filters, 1, use_bias=config["use_bias"], name=f"{name}_pointwise")
    shuffle = DepthToSpace(s, name=name)

    def weights(kernel, *bias):
        matrix, tiled = TransposedConvAsDepthToSpace.pointwise(kernel, bias[0] if bias else None, s)
        return {pointwise: [matrix] + ([tiled] if bias else [])}

    return lambda x: shuffle(pointwise(x)), weights


def _padded_average_pool_as_depthwise(name: str, config: dict):
    """``PaddedAveragePoolAsDepthwise``: a frozen 4×4 depthwise kernel of ninths, stride 2, "same" padding."""
    layer = tf_keras.layers.DepthwiseConv2D(4, strides=2, padding="same", use_bias=False, trainable=False, name=name)

    def weights():
        return {layer: [PaddedAveragePoolAsDepthwise.kernel(int(layer.depthwise_kernel.shape[2]))]}

    return layer, weights


# the integer graph's layers whose twins are other tf_keras layers (several, or one with weights of its own):
# name, config → (call, weights), where
# weights maps the Keras 3 layer's weights to each tf_keras layer's
COMPOSITES = {"PReLUAsLeakyReLU": _prelu_as_leaky_relu, "PReLUAsDepthwiseReLU": _prelu_as_depthwise_relu,
              "BatchNormAsDepthwise": _batch_norm_as_depthwise,
              "TransposedConvAsDepthToSpace": _transposed_conv_as_depth_to_space,
              "PaddedAveragePoolAsDepthwise": _padded_average_pool_as_depthwise}


def _layer_from(entry: dict):
    if _is_operation(entry):
        return _operation_from(entry)
    cls_name = entry["class_name"]
    config = {k: v for k, v in entry["config"].items()
              if k not in _DROPPED_KEYS and not k.endswith(_DROPPED_SUFFIXES)}
    if cls_name == "AveragePooling2D" and config.get("padding", "valid") == "valid":
        return _average_pool_as_depthwise(entry["name"], config)
    if cls_name == "BatchNormalization":
        config["synchronized"] = False  # QAT fine-tuning runs on one device
    if cls_name == "LeakyReLU" and "negative_slope" in config:  # Keras 2 calls the slope alpha
        config["alpha"] = config.pop("negative_slope")
    cls = CUSTOM_LAYERS.get(cls_name) or getattr(tf_keras.layers, cls_name, None)
    if cls is None:
        raise ValueError(f"layer {entry['name']!r} of class {cls_name} has no tf_keras counterpart")
    try:
        return cls(name=entry["name"], **config)
    except TypeError as err:
        raise ValueError(f"cannot rebuild layer {entry['name']!r} ({cls_name}) in tf_keras: {err}") from None


def _inbound(entry: dict):
    """The (layer name, tensor index) pairs a layer's single call reads, and whether it took a list."""
    nodes = entry["inbound_nodes"]
    if len(nodes) != 1:
        raise ValueError(f"layer {entry['name']!r} is called {len(nodes)} times; shared layers are not supported")
    args = nodes[0]["args"]
    first = args[0]
    as_list = isinstance(first, list)
    tensors = first if as_list else [first]
    return [(t["config"]["keras_history"][0], t["config"]["keras_history"][2]) for t in tensors], as_list


def mirror(network) -> tf_keras.Model:
    """A tf_keras model computing ``network``'s logits from the same input, with the same weights — written
    as the int8 export writes it (``integer_graph.for_integer_export``)."""
    network = for_integer_export(network)
    config = network.get_config()
    outputs: dict[str, object] = {}
    created, composite_weights = [], []
    for entry in config["layers"]:
        name, cls_name = entry["name"], entry["class_name"]
        if cls_name == "InputLayer":
            shape = entry["config"]["batch_shape"][1:]
            outputs[name] = tf_keras.Input(shape, name=name)
            continue
        sources, as_list = _inbound(entry)
        inputs = [outputs[src] for src, _ in sources]
        if cls_name in _PASSTHROUGH:
            outputs[name] = inputs[0]
            continue
        if cls_name in COMPOSITES:
            call, weights = COMPOSITES[cls_name](name, entry["config"])
            outputs[name] = call(inputs[0])
            composite_weights.append((name, weights))
            continue
        layer = _layer_from(entry)
        outputs[name] = layer(inputs if as_list else inputs[0])
        created.append(layer)
    logits_layer = config["output_layers"]["logits"][0]
    model = tf_keras.Model(outputs[config["input_layers"][0]], outputs[logits_layer], name=network.name)
    for layer in created:
        if isinstance(layer, (ScalarOp, HardSwish, SixfoldHardSwish)):  # weightless; operations are not layers
            continue
        weights = network.get_layer(layer.name).get_weights()
        if weights and any(l is layer for l in model.layers):
            layer.set_weights(weights)
    for name, weights in composite_weights:
        for layer, values in weights(*network.get_layer(name).get_weights()).items():
            layer.set_weights([np.asarray(keras.ops.convert_to_numpy(v), np.float32) for v in values])
    return model
