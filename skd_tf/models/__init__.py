"""Segmentation networks as Keras 3 functional models with dict outputs.

Every model built here maps a normalised image batch (B×H×W×3) to a dict:

* ``"logits"``: class scores Q at the head's resolution (H/8 for output stride 8),
* ``"features"``: the head feature map before the classifier (the map the
  pair-wise and feature-based distillation losses read),
* ``"aux_logits"``: only when ``model.aux_head`` is set.

That dict is the one documented way to reach both; ``SEGMENTATION_OUTPUTS``
names the two keys that are always present.
"""

from __future__ import annotations

import keras

from skd_tf.config import ModelConfig
from skd_tf.models import backbones, heads
from skd_tf.models.layers import AdaptiveAveragePooling2D, ResizeLike

SEGMENTATION_OUTPUTS = ("logits", "features")


def build_model(cfg: ModelConfig, num_classes: int, input_size: tuple[int, int], name: str | None = None) -> keras.Model:
    """Builds the configured segmentation network for a fixed input size."""
    stride = cfg.output_stride
    inputs = keras.Input((input_size[0], input_size[1], 3), name="image")
    if cfg.backbone == "mobilenetv2":
        ends = backbones.mobilenetv2(inputs, stride, cfg.width, cfg.pretrained == "imagenet")
    else:
        ends = backbones.resnet(inputs, int(cfg.backbone[len("resnet"):]), stride, cfg.width)
    if cfg.arch == "pspnet":
        features, logits = heads.pspnet_head(ends["out"], num_classes, cfg.head_channels, dropout=cfg.dropout)
    elif cfg.arch == "deeplabv3":
        features, logits = heads.deeplabv3_head(ends["out"], num_classes, cfg.head_channels, stride, cfg.dropout)
    else:
        features, logits = heads.lraspp_head(ends["out"], ends["stride8"], num_classes, cfg.head_channels)
    outputs = {"logits": keras.layers.Identity(name="logits")(logits),
               "features": keras.layers.Identity(name="features")(features)}
    if cfg.aux_head:
        outputs["aux_logits"] = keras.layers.Identity(name="aux_logits")(
            heads.aux_head(ends["aux"], num_classes, max(cfg.head_channels // 2, 8), cfg.dropout))
    model = keras.Model(inputs, outputs, name=name or f"{cfg.arch}_{cfg.backbone}")
    if cfg.pretrained == "imagenet" and cfg.backbone.startswith("resnet"):
        backbones.load_imagenet_weights(model, int(cfg.backbone[len("resnet"):]))
    return model


def output_stride(network: keras.Model) -> int:
    """The network's output stride: the power of two s that gives its ⌈H/s⌉×⌈W/s⌉ logits (a network built
    for an odd input such as 769 has ⌈769/8⌉ = 97 logit rows, and 769 // 97 would say 7)."""
    (height, width), (rows, cols) = network.input.shape[1:3], network.output["logits"].shape[1:3]
    for stride in (1, 2, 4, 8, 16, 32, 64):
        if -(-height // stride) == rows and -(-width // stride) == cols:
            return stride
    return height // rows


def is_segmentation_model(model) -> bool:
    """True for a model whose outputs are this project's dict with logits and features."""
    outputs = getattr(model, "output", None)
    return isinstance(outputs, dict) and all(k in outputs for k in SEGMENTATION_OUTPUTS)


def at_input_size(model: keras.Model, input_size: tuple[int, int]) -> keras.Model:
    """The same network with the same weights, rebuilt for another static input size."""
    if tuple(model.input.shape[1:3]) == tuple(input_size):
        return model
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            shape = list(layer["config"]["batch_shape"])
            layer["config"]["batch_shape"] = [shape[0], input_size[0], input_size[1], shape[3]]
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def load_model(path) -> keras.Model:
    """Loads a ``.keras`` segmentation checkpoint written by this project."""
    import os
    import zipfile

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" for a file that exists
        raise ValueError(f"cannot load checkpoint {path}: not a .keras file (a .keras checkpoint is a zip "
                         f"archive; this file is truncated or of another format)")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as err:  # keras raises several types for a corrupt archive
        raise ValueError(f"cannot load checkpoint {path}: {err}") from None
    if not is_segmentation_model(model):
        raise ValueError(f"{path} is not an skd-tf segmentation model (its outputs must be a dict "
                         f"with {' and '.join(SEGMENTATION_OUTPUTS)})")
    return model


__all__ = ["SEGMENTATION_OUTPUTS", "AdaptiveAveragePooling2D", "ResizeLike", "at_input_size",
           "build_model", "is_segmentation_model", "load_model"]
