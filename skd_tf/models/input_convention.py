"""What a network expects as input, and the layer that converts this project's input to it.

Every skd-tf pipeline feeds a network ``(rgb − data.mean) / data.std`` with RGB values in 0..255. A
network trained elsewhere expects its own convention: the SKD reference code feeds OpenCV's BGR minus
its own means, torchvision's ImageNet models RGB in 0..1 minus (0.485, 0.456, 0.406) over (0.229, 0.224,
0.225). Feeding the wrong one costs points without any error (a port of the SKD PSPNet-R101 teacher
scored 73 instead of 78 mIoU that way). A network built with a ``model.input_convention`` therefore
starts with ``ConvertInput``, which maps the pipeline's input to the network's own; evaluate, export,
predict and distill all feed the pipeline's input, so each network gets exactly its convention, a
teacher and a student with different conventions included.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from skd_tf.models.rebuild import rebuilt

CHANNEL_ORDERS = {"rgb": (0, 1, 2), "bgr": (2, 1, 0)}


def conversion(pipeline_mean, pipeline_std, channel_order: str, mean, std, value_scale: float):
    """``(M, b)`` with ``network_input = pipeline_input @ M + b``.

    The pipeline's input x_c = (rgb_c − μ_c)/σ_c; the network's channel k reads the colour π(k)
    (π = ``CHANNEL_ORDERS[channel_order]``) as (s·rgb_π(k) − m_k)/d_k, with s = ``value_scale``
    (1 for 0..255, 1/255 for 0..1). Hence M[π(k), k] = s·σ_π(k)/d_k and b_k = (s·μ_π(k) − m_k)/d_k.
    """
    order = CHANNEL_ORDERS[channel_order]
    pm, ps = np.asarray(pipeline_mean, np.float64), np.asarray(pipeline_std, np.float64)
    m, d = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    matrix, bias = np.zeros((3, 3)), np.zeros(3)
    for k, colour in enumerate(order):
        matrix[colour, k] = value_scale * ps[colour] / d[k]
        bias[k] = (value_scale * pm[colour] - m[k]) / d[k]
    return matrix.astype(np.float32), bias.astype(np.float32)


@keras.saving.register_keras_serializable(package="skd_tf")
class ConvertInput(keras.layers.Layer):
    """Maps the pipeline's normalised RGB input to the network's own convention (see ``conversion``).

    Its config records both conventions, so a saved model says what it expects; ``rebound`` gives the
    config for another pipeline normalisation.
    """

    def __init__(self, pipeline_mean, pipeline_std, channel_order="rgb", mean=(0.0, 0.0, 0.0),
                 std=(1.0, 1.0, 1.0), value_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.pipeline_mean = tuple(float(v) for v in pipeline_mean)
        self.pipeline_std = tuple(float(v) for v in pipeline_std)
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {', '.join(CHANNEL_ORDERS)}, got {channel_order!r}")
        self.channel_order = channel_order
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.value_scale = float(value_scale)

    def call(self, x):
        matrix, bias = conversion(self.pipeline_mean, self.pipeline_std, self.channel_order, self.mean,
                                  self.std, self.value_scale)
        # one matmul: a channel permutation times a scale plus a shift, exact in float32
        return ops.matmul(x, ops.convert_to_tensor(matrix, x.dtype)) + ops.convert_to_tensor(bias, x.dtype)

    def get_config(self):
        return {**super().get_config(), "pipeline_mean": list(self.pipeline_mean),
                "pipeline_std": list(self.pipeline_std), "channel_order": self.channel_order,
                "mean": list(self.mean), "std": list(self.std), "value_scale": self.value_scale}

    def describe(self) -> str:
        scale = "0..255" if self.value_scale == 1.0 else "0..1" if abs(self.value_scale - 1 / 255) < 1e-9 \
            else f"0..{255 * self.value_scale:g}"
        return (f"{self.channel_order.upper()} in {scale}, mean {[round(v, 4) for v in self.mean]}, "
                f"std {[round(v, 4) for v in self.std]}")


def input_conventions(model: keras.Model) -> list[ConvertInput]:
    """The ConvertInput layers of ``model`` (none for a network that takes the pipeline's input)."""
    return [layer for layer in model.layers if isinstance(layer, ConvertInput)]


def for_pipeline(model: keras.Model, mean, std) -> keras.Model:
    """``model`` fed ``(rgb − mean)/std``: the same network and weights, its ConvertInput layers rebound to
    that normalisation when they were built for another one (a model without them is returned as is)."""
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    stale = [layer for layer in input_conventions(model)
             if not (np.allclose(layer.pipeline_mean, mean) and np.allclose(layer.pipeline_std, std))]
    if not stale:
        return model

    def rebind(config):
        for layer in config["layers"]:
            if layer["class_name"].endswith("ConvertInput"):
                layer["config"]["pipeline_mean"], layer["config"]["pipeline_std"] = list(mean), list(std)

    return rebuilt(model, rebind)
