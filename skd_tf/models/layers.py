"""Size-agnostic layers that let one architecture be rebuilt at any static input size.

Both layers derive their spatial sizes from the static shapes of their inputs,
so a model's config carries no image size except its Input; rebuilding a model
at another size (``skd_tf.models.at_input_size``) needs only the Input changed.
Both lower to TFLite builtins (AVERAGE_POOL_2D or RESHAPE / TRANSPOSE /
FULLY_CONNECTED, and RESIZE_BILINEAR).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops


def cell_averaging_matrix(n: int, bins: int) -> np.ndarray:
    """M (bins×n) with M[i, k] = 1/|cell i| for k in cell i = [⌊in/b⌋, ⌈(i+1)n/b⌉), else 0."""
    m = np.zeros((bins, n), np.float32)
    for i in range(bins):
        start, stop = (i * n) // bins, math.ceil((i + 1) * n / bins)
        m[i, start:stop] = 1.0 / (stop - start)
    return m


@keras.saving.register_keras_serializable(package="skd_tf")
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """Average-pools an H×W map to ``bins``×``bins`` cells, as PyTorch's adaptive pooling.

    Cell (i, j) averages rows [⌊iH/b⌋, ⌈(i+1)H/b⌉) and columns [⌊jW/b⌋, ⌈(j+1)W/b⌉).
    When b divides H and W this is a plain average pool with kernel = stride = H/b.
    """

    def __init__(self, bins: int, **kwargs):
        super().__init__(**kwargs)
        self.bins = int(bins)

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        if h is None or w is None:
            raise ValueError(f"{self.name} needs a static spatial shape; build the model with a fixed input size")
        b = self.bins
        if h % b == 0 and w % b == 0:
            return ops.average_pool(x, (h // b, w // b), strides=(h // b, w // b), padding="valid")
        # Overlapping cells: two small averaging matrices (b×H and b×W) applied along each axis.
        # That lowers to ~10 ops (RESHAPE/TRANSPOSE/FULLY_CONNECTED) where slicing out b² cells
        # took ~2b² ops, each with its own tensors: a third of a tiny int8 student's file.
        rows = ops.convert_to_tensor(cell_averaging_matrix(h, b), dtype=x.dtype)
        cols = ops.convert_to_tensor(cell_averaging_matrix(w, b), dtype=x.dtype)
        y = ops.einsum("ih,bhwc->biwc", rows, x)
        return ops.einsum("jw,biwc->bijc", cols, y)

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
