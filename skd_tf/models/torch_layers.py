"""Size-agnostic layers that reproduce PyTorch operations Keras has no exact counterpart for.

Each computes its sizes from the static shape of its input, so a model rebuilt at another input size
(``skd_tf.models.at_input_size``) stays exact, and each lowers to TFLite builtins (STRIDED_SLICE, PAD +
MAX_POOL_2D, RESIZE_BILINEAR with align_corners).
"""

from __future__ import annotations

import math

import keras
from keras import ops

from skd_tf.models.logits import resize_bilinear


@keras.saving.register_keras_serializable(package="skd_tf")
class CropLike(keras.layers.Layer):
    """Crops its first input to the spatial size of its second (rows and columns kept from the top left)."""

    def call(self, inputs):
        x, reference = inputs
        return x[:, : reference.shape[1], : reference.shape[2], :]

    def compute_output_shape(self, input_shapes):
        x, reference = input_shapes
        return (x[0], reference[1], reference[2], x[3])


def ceil_mode_size(size: int, pool: int, stride: int, padding: int) -> int:
    """torch's pooled size with ``ceil_mode=True``: ⌈(n + 2p − k)/s⌉ + 1, less one when that last window
    would start in the right padding."""
    out = math.ceil((size + 2 * padding - pool) / stride) + 1
    return out - 1 if (out - 1) * stride >= size + padding else out


def ceil_mode_pads(size: int, pool: int, stride: int, padding: int) -> tuple[int, int]:
    """(before, after) zero padding that makes a valid pooling give ``ceil_mode_size`` outputs."""
    out = ceil_mode_size(size, pool, stride, padding)
    return padding, (out - 1) * stride + pool - size - padding


@keras.saving.register_keras_serializable(package="skd_tf")
class CeilModeMaxPool2D(keras.layers.Layer):
    """torch's ``MaxPool2d(pool, stride, padding, ceil_mode=True)`` on a non-negative input (it follows a ReLU).

    Pads ``padding`` zeros at the top and left and as many at the bottom and right as the ceil-mode windows
    reach, then max-pools without padding; zeros stand in for torch's −∞ because the input is ≥ 0 and every
    window holds at least one input pixel. (A 256-pixel side gives 129, not 128.)
    """

    def __init__(self, pool: int = 3, strides: int = 2, padding: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.pool, self.strides, self.padding = int(pool), int(strides), int(padding)

    def call(self, x):
        (top, bottom), (left, right) = (ceil_mode_pads(n, self.pool, self.strides, self.padding)
                                        for n in (x.shape[1], x.shape[2]))
        x = ops.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
        return ops.max_pool(x, self.pool, strides=self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], ceil_mode_size(input_shape[1], self.pool, self.strides, self.padding),
                ceil_mode_size(input_shape[2], self.pool, self.strides, self.padding), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "pool": self.pool, "strides": self.strides, "padding": self.padding}


@keras.saving.register_keras_serializable(package="skd_tf")
class ResizeLikeAlignCorners(keras.layers.Layer):
    """Bilinearly resizes its first input to the spatial size of its second with torch's
    ``align_corners=True`` (corner pixels aligned; a 1×1 map is broadcast)."""

    def call(self, inputs):
        x, reference = inputs
        size = (reference.shape[1], reference.shape[2])
        if tuple(x.shape[1:3]) == size:
            return x
        return resize_bilinear(x, size, align_corners=True)  # keras.ops.image.resize has no align_corners

    def compute_output_shape(self, input_shapes):
        x, reference = input_shapes
        return (x[0], reference[1], reference[2], x[3])
