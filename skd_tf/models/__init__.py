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

from skd_tf.config import DEEP_STEM_ARCHS, ESPNET_ARCHS, IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from skd_tf.models import backbones, cirkd, espnet, heads, skd_pspnet
from skd_tf.models.input_convention import ConvertInput, for_pipeline, input_conventions
from skd_tf.models.keras_saving import cache_attribute_skipsets
from skd_tf.models.layers import AdaptiveAveragePooling2D, ResizeLike
from skd_tf.models.logits import Logits, logits_align_corners
from skd_tf.models.outputs import SEGMENTATION_OUTPUTS, is_segmentation_model, segmentation_outputs
from skd_tf.models.rebuild import rebuilt

cache_attribute_skipsets()  # Keras 3.15 rebuilds one for every object it saves or loads


def build_model(cfg: ModelConfig, num_classes: int, input_size: tuple[int, int], name: str | None = None,
                pipeline: tuple = (IMAGENET_MEAN, IMAGENET_STD)) -> keras.Model:
    """Builds the configured segmentation network for a fixed input size.

    ``pipeline`` is the (mean, std) the data pipeline normalises with (``data.mean``, ``data.std``); a
    network with ``cfg.input_convention`` converts that input to its own first (``ConvertInput``).
    ``cfg.pretrained`` naming a PyTorch checkpoint initialises the backbone from it, strictly.
    """
    stride = cfg.output_stride
    inputs = keras.Input((input_size[0], input_size[1], 3), name="image")
    x = inputs
    if cfg.input_convention is not None:
        x = ConvertInput(pipeline[0], pipeline[1], **cfg.input_convention.model_dump(), name="input_convention")(x)
    ends, aux_logits = None, None
    if cfg.arch in ESPNET_ARCHS:
        features, logits = espnet.espnet(x, num_classes, tuple(cfg.espnet_blocks), decoder=cfg.arch == "espnet")
    elif cfg.arch == "skd_pspnet":
        features, logits, aux_logits = skd_pspnet.skd_pspnet(x, num_classes, int(cfg.backbone[len("resnet"):]),
                                                             cfg.head_channels, cfg.dropout, cfg.aux_head)
    elif cfg.arch in ("cirkd_deeplabv3", "cirkd_pspnet"):
        builder = cirkd.cirkd_deeplabv3 if cfg.arch == "cirkd_deeplabv3" else cirkd.cirkd_pspnet
        features, logits, aux_logits = builder(x, num_classes, int(cfg.backbone[len("resnet"):]), cfg.dropout,
                                               cfg.aux_head)
    else:
        if cfg.backbone == "mobilenetv2":
            ends = backbones.mobilenetv2(x, stride, cfg.width, cfg.pretrained == "imagenet")
        elif cfg.backbone in backbones.MOBILENETV3:
            ends = backbones.mobilenetv3(x, cfg.backbone, cfg.width, cfg.pretrained == "imagenet")
        else:
            ends = backbones.resnet(x, int(cfg.backbone[len("resnet"):]), stride, cfg.width)
        if cfg.arch == "pspnet":
            features, logits = heads.pspnet_head(ends["out"], num_classes, cfg.head_channels, dropout=cfg.dropout)
        elif cfg.arch == "deeplabv3":
            features, logits = heads.deeplabv3_head(ends["out"], num_classes, cfg.head_channels, stride, cfg.dropout)
        else:
            features, logits = heads.lraspp_head(ends["out"], ends["stride8"], num_classes, cfg.head_channels)
    # the published networks' code (SKD's PSPNet and ESPNets, CIRKD's) trains and evaluates with logits upsampled
    # with align_corners=True (skd_tf.models.logits); ESPNet-C's 1/8 scores need it to score what the authors did
    aligned = cfg.arch in DEEP_STEM_ARCHS + ESPNET_ARCHS
    logits_layer = Logits(name="logits") if aligned else keras.layers.Identity(name="logits")
    outputs = {"logits": logits_layer(logits),
               "features": keras.layers.Identity(name="features")(features)}
    if aux_logits is not None:
        outputs["aux_logits"] = keras.layers.Identity(name="aux_logits")(aux_logits)
    elif cfg.aux_head:
        if ends is None:
            raise ValueError(f"model.aux_head is not available for model.arch {cfg.arch!r}")
        outputs["aux_logits"] = keras.layers.Identity(name="aux_logits")(
            heads.aux_head(ends["aux"], num_classes, max(cfg.head_channels // 2, 8), cfg.dropout))
    model = keras.Model(inputs, outputs, name=name or f"{cfg.arch}_{cfg.backbone}")
    if cfg.reduced_tail:
        model = backbones.reduce_last_stage(model, cfg.backbone)
    if cfg.backbone in backbones.MOBILENETV3 and stride == 16:
        model = backbones.dilate_last_stage(model, cfg.backbone)
    if cfg.bn_momentum is not None:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = cfg.bn_momentum
    if cfg.pretrained == "imagenet" and cfg.backbone.startswith("resnet"):
        backbones.load_imagenet_weights(model, int(cfg.backbone[len("resnet"):]))
    if cfg.pretrained_file:
        load_pretrained_backbone(model, cfg, cfg.pretrained_file)
    return model


def backbone_scope(cfg: ModelConfig, model: keras.Model) -> tuple[tuple[str, ...], dict | None]:
    """The torch module prefixes a backbone checkpoint initialises, and {Keras name: torch path} where the
    layers are not named after torch's modules (None where they are)."""
    if cfg.arch in ESPNET_ARCHS:
        return espnet.ENCODER_SCOPE, None
    if cfg.arch == "skd_pspnet":
        return skd_pspnet.BACKBONE_SCOPE, None
    if cfg.arch.startswith("cirkd_"):  # an ImageNet file holds the backbone without the "pretrained." prefix
        start = len(cirkd.PREFIX) + 1
        return skd_pspnet.BACKBONE_SCOPE, {layer.name: layer.name[start:] for layer in model.layers
                                           if layer.name.startswith(cirkd.PREFIX + ".")}
    if cfg.backbone.startswith("resnet"):
        return backbones.TORCHVISION_SCOPE, backbones.torchvision_names(model)
    raise ValueError(f"model.pretrained: a PyTorch checkpoint initialises ResNet, skd_pspnet and ESPNet backbones, "
                     f"not {cfg.backbone} (use pretrained: imagenet for keras.applications' MobileNetV2/V3)")


def load_pretrained_backbone(model: keras.Model, cfg: ModelConfig, path: str) -> int:
    """Initialises the backbone layers of ``model`` from the PyTorch checkpoint ``path``: every backbone
    weight is set and every checkpoint tensor under the backbone's modules is used (its classifier and the
    model's head stay out). Returns the number of tensors used."""
    import os

    from skd_tf.models.torch_checkpoint import CheckpointError, read_state_dict
    from skd_tf.models.torch_weights import assign_state_dict

    scope, names = backbone_scope(cfg, model)
    if not os.path.isfile(path):
        raise CheckpointError(f"model.pretrained: {path} not found (see docs/published-weights.md "
                              f"for where each file comes from)")
    return assign_state_dict(model, read_state_dict(path), scope=scope, source=path, names=names)


def output_stride(network: keras.Model) -> int:
    """The network's output stride: the power of two s that gives its ⌈H/s⌉×⌈W/s⌉ logits (a network built
    for an odd input such as 769 has ⌈769/8⌉ = 97 logit rows, and 769 // 97 would say 7), or ⌊H/s⌋+1 rows
    after a ceil-mode pool (the SKD reference PSPNet: 65 rows for 512)."""
    (height, width), (rows, cols) = network.input.shape[1:3], network.output["logits"].shape[1:3]
    for stride in (1, 2, 4, 8, 16, 32, 64):
        if -(-height // stride) == rows and -(-width // stride) == cols:
            return stride
    for stride in (2, 4, 8, 16, 32, 64):  # a ceil-mode pool (skd_pspnet) adds a row: 512 -> 65 at stride 8
        if height // stride + 1 == rows and width // stride + 1 == cols:
            return stride
    return height // rows


def at_input_size(model: keras.Model, input_size: tuple[int, int]) -> keras.Model:
    """The same network with the same weights, rebuilt for another static input size."""
    if tuple(model.input.shape[1:3]) == tuple(input_size):
        return model

    def resize_input(config):
        for layer in config["layers"]:
            if layer["class_name"] == "InputLayer":
                shape = list(layer["config"]["batch_shape"])
                layer["config"]["batch_shape"] = [shape[0], input_size[0], input_size[1], shape[3]]

    return rebuilt(model, resize_input)


def load_model(path, data=None) -> keras.Model:
    """Loads a ``.keras`` segmentation checkpoint written by this project (or imported by ``skd-tf import``).

    With ``data`` (a DataConfig), a network that converts its input (``ConvertInput``) is rebound to
    that config's normalisation, so it is fed exactly its own convention."""
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
    return for_pipeline(model, data.mean, data.std) if data is not None else model


__all__ = ["SEGMENTATION_OUTPUTS", "AdaptiveAveragePooling2D", "ConvertInput", "ResizeLike", "at_input_size",
           "build_model", "for_pipeline", "input_conventions", "is_segmentation_model", "load_model",
           "load_pretrained_backbone", "segmentation_outputs"]
