"""Size-agnostic layers that let one architecture be rebuilt at any static input size.

Both layers derive their spatial sizes from the static shapes of their inputs,
so a model's config carries no image size except its Input; rebuilding a model
at another size (``skd_tf.models.at_input_size``) needs only the Input changed.
Both lower to TFLite builtins (MEAN for one cell, AVERAGE_POOL_2D or RESHAPE / TRANSPOSE /
FULLY_CONNECTED, and RESIZE_BILINEAR).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops


def cell_averaging_matrix(n: int, bins: int) -> np.ndarray:
    """M (bins×n) with M[i, k] = 1/|cell i| for k in cell i = [⌊in/b⌋, ⌈(i+1)n/b⌉), else 0."""
    m = np.zeros((bins, n), np.float32)
    for i in range(bins):
        start, stop = (i * n) // bins, math.ceil((i + 1) * n / bins)
        m[i, start:stop] = 1.0 / (stop - start)
    return m


def adaptive_average_pool(x, size):
    """Average-pools a B×H×W×C map (static H, W) to ``size`` = (h, w) cells as PyTorch's adaptive pooling:
    cell (i, j) averages rows [⌊iH/h⌋, ⌈(i+1)H/h⌉) and columns [⌊jW/w⌋, ⌈(j+1)W/w⌉). The one implementation
    behind the pyramid's layer, its tf_keras mirror (QAT) and the attention-transfer loss."""
    height, width = x.shape[1], x.shape[2]
    if height is None or width is None:
        raise ValueError("adaptive average pooling needs a static spatial shape; build the model with a fixed "
                         "input size")
    h, w = int(size[0]), int(size[1])
    if (h, w) == (height, width):
        return x
    if (h, w) == (1, 1):  # MEAN, which XNNPACK runs in int8 (its int8 AVERAGE_POOL_2D falls back to builtins)
        return tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    if height % h == 0 and width % w == 0:
        return tf.nn.avg_pool2d(x, (height // h, width // w), (height // h, width // w), "VALID")
    # Overlapping cells: two small averaging matrices (h×H and w×W) applied along each axis.
    # That lowers to ~10 ops (RESHAPE/TRANSPOSE/FULLY_CONNECTED) where slicing out h·w cells
    # took ~2hw ops, each with its own tensors: a third of a tiny int8 student's file.
    rows = tf.constant(cell_averaging_matrix(height, h), x.dtype)
    cols = tf.constant(cell_averaging_matrix(width, w), x.dtype)
    return tf.einsum("jw,biwc->bijc", cols, tf.einsum("ih,bhwc->biwc", rows, x))


@keras.saving.register_keras_serializable(package="skd_tf")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """Average-pools an H×W map to ``bins``×``bins`` cells, as PyTorch's adaptive pooling.

    Cell (i, j) averages rows [⌊iH/b⌋, ⌈(i+1)H/b⌉) and columns [⌊jW/b⌋, ⌈(j+1)W/b⌉).
    When b divides H and W this is a plain average pool with kernel = stride = H/b.
    """

    # Not keras.layers.AdaptiveAveragePooling2D (Keras 3.15): it computes the same cells (max |Δ| 6e-8 at
    # 13×17 → 6×6, 3, 2, 1) and lowers to AVERAGE_POOL_2D + GATHER + CONCATENATION, but the QAT path needs a
    # tf_keras twin of the very same maths (tf_keras has no such layer), and saved models name this class.

    def __init__(self, bins: int, **kwargs):
        super().__init__(**kwargs)
        self.bins = int(bins)

    def call(self, x):
        return adaptive_average_pool(x, (self.bins, self.bins))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.bins, self.bins, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "bins": self.bins}


@keras.saving.register_keras_serializable(package="skd_tf")
class ResizeLike(keras.layers.Layer):
    """Bilinearly resizes its first input to the spatial size of its second input."""

    def __init__(self, interpolation: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        self.interpolation = interpolation

    def call(self, inputs):
        x, reference = inputs
        size = (reference.shape[1], reference.shape[2])
        if x.shape[1] == size[0] and x.shape[2] == size[1]:
            return x
        return ops.image.resize(x, size, interpolation=self.interpolation)

    def compute_output_shape(self, input_shapes):
        x, reference = input_shapes
        return (x[0], reference[1], reference[2], x[3])

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation}


@keras.saving.register_keras_serializable(package="skd_tf")
class HardSwish(keras.layers.Layer):
    """Hard-swish, x · ReLU6(x + 3) / 6, computed as (x · ⅙) · ReLU6(x + 3).

    The same function as Keras' ``hard_silu`` activation; written in this order the TFLite converter keeps
    it as ADD, MUL, MUL instead of fusing it into one HARD_SWISH op, which XNNPACK (LiteRT 2.3) runs in
    float only: an int8 MobileNetV3 with HARD_SWISH leaves every activation to the reference kernels
    (``skd_tf.export.integer_graph`` swaps this layer in for integer exports).
    """

    def call(self, x):
        return (x * (1.0 / 6.0)) * ops.relu6(x + 3.0)


@keras.saving.register_keras_serializable(package="skd_tf")
class SixfoldHardSwish(keras.layers.Layer):
    """Six times hard-swish, x · ReLU6(x + 3): ADD and MUL in a TFLite file, one elementwise op fewer than
    ``HardSwish``. Its consumers' kernels carry the ⅙ (``skd_tf.export.integer_graph`` swaps it in where every
    path from the activation reaches a convolution through layers that commute with a factor)."""

    def call(self, x):
        return x * ops.relu6(x + 3.0)


@keras.saving.register_keras_serializable(package="skd_tf")
class PReLUAsDepthwiseReLU(keras.layers.Layer):
    """Per-channel PReLU, max(y, 0) + α · min(y, 0), for α ≤ 1 in every channel, computed as
    y + ReLU(k · y) with k = α − 1 ≤ 0: for y ≥ 0, k · y ≤ 0 and the ReLU gives 0; for y < 0,
    k · y = (1 − α) · (−y) ≥ 0 and y + (1 − α) · (−y) = α · y.

    k · y is a 1×1 depthwise convolution (its kernel quantized per channel in int8) with the ReLU fused into
    it, so the converter writes two ops XNNPACK runs in int8, DEPTHWISE_CONV_2D and ADD, where
    ``PReLUAsLeakyReLU`` takes four (MUL, LEAKY_RELU, MUL, ADD, its factors quantized per tensor): an untrained
    ESPNet's int8 logits at 512×1024 on one core of the AMX Xeon 133.2 → 123.1 ms, and the published Cityscapes
    ESPNet's int8 labels 54.8 → 63.3 % of its float ones on 8 fabricated scenes at 256×512. Holds the PReLU's
    α (1, 1, C) as its one weight (``skd_tf.export.integer_graph`` swaps it in for integer exports of a PReLU
    whose slopes are all at most 1)."""

    def build(self, input_shape):
        self.alpha = self.add_weight(name="alpha", shape=(1, 1, input_shape[-1]), initializer="zeros")

    @staticmethod
    def kernel(alpha):
        """The depthwise kernel k = α − 1, shaped (1, 1, C, 1)."""
        return ops.reshape(alpha - 1.0, (1, 1, -1, 1))

    def call(self, y):
        return y + ops.relu(ops.depthwise_conv(y, self.kernel(self.alpha), 1, "valid"))


@keras.saving.register_keras_serializable(package="skd_tf")
class PReLUAsLeakyReLU(keras.layers.Layer):
    """Per-channel PReLU, max(y, 0) + α · min(y, 0), computed as a · y + b · LeakyReLU_β(y) with
    b = (1 − α)/(1 − β), a = 1 − b (both sides agree for y > 0 and y < 0; β = ``slope``).

    XNNPACK (LiteRT 2.3) runs PRELU, RELU, MINIMUM and ABS in float only but LEAKY_RELU (one slope), MUL
    and ADD in int8: an int8 ESPNet with PRELU falls apart into one delegate partition per activation. For
    any α; a PReLU whose slopes are all at most 1 takes ``PReLUAsDepthwiseReLU``'s two ops instead. Holds
    the PReLU's α (1, 1, C) as its one weight (``skd_tf.export.integer_graph`` swaps it in for integer
    exports)."""

    def __init__(self, slope: float = 0.25, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= slope < 1.0:
            raise ValueError(f"slope must be in [0, 1), got {slope}")
        self.slope = float(slope)

    def build(self, input_shape):
        self.alpha = self.add_weight(name="alpha", shape=(1, 1, input_shape[-1]), initializer="zeros")

    @staticmethod
    def factors(alpha, slope: float):
        """(a, b) with a = 1 − b, b = (1 − α)/(1 − β), shaped as α."""
        b = (1.0 - alpha) / (1.0 - slope)
        return 1.0 - b, b

    def call(self, y):
        a, b = self.factors(self.alpha, self.slope)
        return a * y + b * ops.leaky_relu(y, negative_slope=self.slope)

    def get_config(self):
        return {**super().get_config(), "slope": self.slope}


@keras.saving.register_keras_serializable(package="skd_tf")
class BatchNormAsDepthwise(keras.layers.Layer):
    """Inference batch normalisation, y = k · (x − μ) + β with k = γ / √(σ² + ε) per channel, computed as a
    1×1 depthwise convolution with kernel k and bias β − k · μ.

    A batch norm the converter cannot fold into a preceding convolution (ESPNet's, after a concatenation or
    a residual sum) becomes MUL and ADD by per-channel constants, and int8 quantizes those constants with
    one scale per tensor: ESPNet's factors k span 0 … 9 within a tensor, so the small ones lose most of
    their digits. A depthwise convolution's kernel is quantized per channel and its bias in int32. Holds the
    batch norm's four weights in its order (γ, β, μ, σ²) (``skd_tf.export.integer_graph`` swaps it in for
    integer exports)."""

    def __init__(self, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        shape = (input_shape[-1],)
        self.gamma = self.add_weight(name="gamma", shape=shape, initializer="ones")
        self.beta = self.add_weight(name="beta", shape=shape, initializer="zeros")
        self.moving_mean = self.add_weight(name="moving_mean", shape=shape, initializer="zeros", trainable=False)
        self.moving_variance = self.add_weight(name="moving_variance", shape=shape, initializer="ones",
                                               trainable=False)

    @staticmethod
    def affine(gamma, beta, mean, variance, epsilon: float):
        """(k, β − k · μ) with k = γ / √(σ² + ε), per channel."""
        k = gamma / ops.sqrt(variance + epsilon)
        return k, beta - k * mean

    def call(self, x, training=None, mask=None):
        k, offset = self.affine(self.gamma, self.beta, self.moving_mean, self.moving_variance, self.epsilon)
        return ops.depthwise_conv(x, ops.reshape(k, (1, 1, -1, 1)), 1, "valid") + offset

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="skd_tf")
class TransposedConvAsDepthToSpace(keras.layers.Layer):
    """A transposed convolution whose kernel is its stride s (windows that do not overlap, ESPNet's 2×2 / 2
    decoder), y[s·i + a, s·j + b, o] = Σ_c x[i, j, c] · K[a, b, o, c] + bias_o, computed as a 1×1 convolution
    to s²·O channels, channel (a·s + b)·O + o, followed by DEPTH_TO_SPACE(s).

    LiteRT's XNNPACK delegate (2.3) leaves an int8 TRANSPOSE_CONV to the builtin kernel: 2×2 / 2 from
    256×512×19 to 512×1024×19 took 61 ms in int8 on one core of an AMX Xeon, 15 ms in float32; the 1×1
    convolution and DEPTH_TO_SPACE, both delegated, 4.9 ms in int8. Holds ``Conv2DTranspose``'s weights in its
    order (kernel s×s×O×C, then the bias if any; ``skd_tf.export.integer_graph`` swaps it in for integer
    exports)."""

    def __init__(self, filters: int, stride: int, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.stride, self.use_bias = int(filters), int(stride), bool(use_bias)

    def build(self, input_shape):
        s = self.stride
        self.kernel = self.add_weight(name="kernel", shape=(s, s, self.filters, input_shape[-1]))
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None

    @staticmethod
    def pointwise(kernel, bias, stride: int):
        """The 1×1 convolution's kernel (1, 1, C, s²·O) and bias (s²·O, or None) for ``kernel`` (s, s, O, C)."""
        s, filters, channels = stride, kernel.shape[2], kernel.shape[3]
        matrix = ops.reshape(ops.transpose(kernel, (3, 0, 1, 2)), (1, 1, channels, s * s * filters))
        return matrix, None if bias is None else ops.tile(bias, (s * s,))

    def call(self, x):
        matrix, bias = self.pointwise(self.kernel, self.bias, self.stride)
        y = ops.conv(x, matrix, 1, "valid")
        if bias is not None:
            y = y + bias
        return tf.nn.depth_to_space(y, self.stride)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride, "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package="skd_tf")
class PaddedAveragePoolAsDepthwise(keras.layers.Layer):
    """torch's ``AvgPool2d(3, stride=2, padding=1)`` (zeros padded in and counted in every mean: ESPNet's
    input pyramid) computed from the unpadded input as one depthwise convolution with "same" padding and
    the frozen 4×4 kernel K = 1/9 on rows and columns 0–2, 0 on row and column 3:
    y[i, j] = Σ_{a,b<3} x[2i − 1 + a, 2j − 1 + b] / 9.

    "same" padding of a 4-wide kernel at stride 2 puts one zero before the first row and one (even sides) or
    two (odd sides) after the last, so the window starts one row up as torch's does, and the fourth tap reads
    a weight of 0. Integer exports use it (``skd_tf.export.integer_graph``): the int8 file then has no PAD
    before the pooling — PAD and AVERAGE_POOL_2D must keep their input's scale, and where the padded tensor
    also fed a concatenation the converter left the pooling in float — and no int8 AVERAGE_POOL_2D, which
    XNNPACK leaves to the builtin kernels (1/9 is exact per channel in int8: 127 steps of 1/1143)."""

    @staticmethod
    def kernel(channels: int) -> np.ndarray:
        """The 4×4×C×1 depthwise kernel."""
        kernel = np.zeros((4, 4, channels, 1), np.float32)
        kernel[:3, :3] = 1.0 / 9.0
        return kernel

    def call(self, x):
        return ops.depthwise_conv(x, self.kernel(x.shape[-1]), 2, "same")

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else -(-h // 2), None if w is None else -(-w // 2), c)
