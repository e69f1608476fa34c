"""FLOP count of a segmentation network at its static input size."""

from __future__ import annotations

import math

import keras


def count_flops(model: keras.Model) -> int:
    """FLOPs of one image: Σ over convolution, depthwise and dense layers of 2 · |kernel| · output positions.

    A k_h×k_w conv from C_in to C_out channels at H×W output positions costs
    2·k_h·k_w·(C_in/groups)·C_out·H·W (a multiply and an add per weight and
    position; the kernel's shape already holds C_in/groups, or the depth
    multiplier for depthwise). Biases, normalisation, activations, pooling and
    resizing are not counted (the usual convention; they are a few percent).
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_flops(layer)
            continue
        kernel = getattr(layer, "depthwise_kernel", None) or getattr(layer, "kernel", None)
        if kernel is None or not isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                                                    keras.layers.Dense)):
            continue
        positions = math.prod(int(d) for d in layer.output.shape[1:-1])
        total += 2 * math.prod(int(d) for d in kernel.shape) * positions
    return total

