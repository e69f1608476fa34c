"""Backbones: dilated ResNet-18/34/50/101, and MobileNetV2 / MobileNetV3 (keras.applications).

ResNet is written here because keras.applications has no ResNet-18/34, no
dilation (output stride 8/16) and no width multiplier. Its layer names and
shapes mirror keras.applications' ResNet50/101 (``conv4_block1_2_conv`` ...), so
at width 1.0 their ImageNet weights load by name (``load_imagenet_weights``).
MobileNetV2 is taken from keras.applications as it is; MobileNetV3 too, with its last
stage dilated instead of strided at output stride 16 (``dilate_last_stage``).

Batch norms are ``synchronized``: under tf.distribute they use the statistics of
the global batch, so a multi-replica run trains like one device (no effect on a
single device). Each backbone returns a dict of endpoints: ``stride4``, ``stride8``, ``aux``
(the map the auxiliary head reads) and ``out`` (the deepest map).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import keras
from keras import layers

from skd_tf.models.rebuild import rebuilt

BN_EPS = 1.001e-5
RESNET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def scaled(channels: int, width: float) -> int:
    """Channel count after a width multiplier (at least 8, rounded to a multiple of 4)."""
    return max(8, int(round(channels * width / 4.0)) * 4) if width != 1.0 else channels


def _conv_bn(x, filters, kernel, name, strides=1, dilation=1, relu=True):
    # No bias before a batch norm: its gradient is zero, and adaptive optimisers turn that
    # rounding noise into real updates. keras.applications' biases fold into the BN instead.
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", dilation_rate=dilation, use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPS, synchronized=True, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def _basic_block(x, filters, stride, dilation, name):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, f"{name}_0", strides=stride, relu=False)
    y = _conv_bn(x, filters, 3, f"{name}_1", strides=stride, dilation=dilation)
    y = _conv_bn(y, filters, 3, f"{name}_2", dilation=dilation, relu=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def _bottleneck_block(x, filters, stride, dilation, name):
    shortcut = x
    if stride != 1 or x.shape[-1] != 4 * filters:
        shortcut = _conv_bn(x, 4 * filters, 1, f"{name}_0", strides=stride, relu=False)
    y = _conv_bn(x, filters, 1, f"{name}_1", strides=stride)
    y = _conv_bn(y, filters, 3, f"{name}_2", dilation=dilation)
    y = _conv_bn(y, 4 * filters, 1, f"{name}_3", relu=False)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def resnet(inputs, depth: int = 18, output_stride: int = 8, width: float = 1.0) -> dict:
    """A ResNet-``depth`` whose stages 4/5 trade stride for dilation to reach ``output_stride``."""
    if depth not in RESNET_BLOCKS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_BLOCKS)}, got {depth}")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    block = _basic_block if depth < 50 else _bottleneck_block
    x = layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = layers.Conv2D(scaled(64, width), 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPS, synchronized=True, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    endpoints = {}
    # (filters, first stride, dilation) of stages conv2..conv5 for each output stride
    plans = {
        32: ((1, 1), (2, 1), (2, 1), (2, 1)),
        16: ((1, 1), (2, 1), (2, 1), (1, 2)),
        8: ((1, 1), (2, 1), (1, 2), (1, 4)),
    }[output_stride]
    for stage, (filters, blocks, (stride, dilation)) in enumerate(
            zip((64, 128, 256, 512), RESNET_BLOCKS[depth], plans), start=2):
        for b in range(blocks):
            x = block(x, scaled(filters, width), stride if b == 0 else 1, dilation, f"conv{stage}_block{b + 1}")
        if stage == 2:
            endpoints["stride4"] = x
        if stage == 3:
            endpoints["stride8"] = x
        if stage == 4:
            endpoints["aux"] = x
    endpoints["out"] = x
    return endpoints


@contextlib.contextmanager
def imagenet_weights_download(backbone: str):
    """Turns Keras' failed download of keras.applications' ImageNet weights (a bare ``Exception("URL fetch
    failure on <url>: …")``, with a traceback) into a ValueError, one line: what failed, which file to put
    where, and how to train without it."""
    try:
        yield
    except Exception as err:
        failed = re.match(r"URL fetch failure on (\S+?): (.*)", str(err), re.S)
        if failed is None:
            raise
        url, reason = failed.groups()
        reason = re.sub(r"^None -- ", "", " ".join(reason.split()))  # Keras writes "{errno} -- {reason}"
        cache = os.path.join(os.environ.get("KERAS_HOME", "~/.keras"), "models")
        raise ValueError(
            f"model.pretrained: imagenet needs keras.applications' ImageNet weights for {backbone}, which Keras "
            f"downloads on first use, and the download failed ({reason}): put "
            f"{PurePosixPath(urlsplit(url).path).name} (from {url}) in {cache}, or set model.pretrained: none to "
            f"start from random weights") from None


def load_imagenet_weights(model: keras.Model, depth: int) -> int:
    """Copies keras.applications ResNet{depth} ImageNet weights into matching layers by name.

    Needs the weights file (downloaded by Keras on first use). Returns the number
    of layers copied; raises if a shape differs (width multiplier ≠ 1).
    """
    factory = {50: keras.applications.ResNet50, 101: keras.applications.ResNet101}.get(depth)
    if factory is None:
        raise ValueError(f"keras.applications has no ImageNet ResNet-{depth}: set model.pretrained to torchvision's "
                         f"ImageNet file (resnet{depth}-*.pth), or none")
    with imagenet_weights_download(f"resnet{depth}"):
        source = factory(include_top=False, weights="imagenet")
    return copy_weights_by_name(source, model)


def copy_weights_by_name(source: keras.Model, target: keras.Model) -> int:
    """Copies the weights of every layer of ``source`` that ``target`` has under the same name.

    A source convolution ``X_conv`` with a bias, copied into a bias-free target
    convolution followed by the batch norm ``X_bn``, has its bias folded into
    that norm's moving mean (BN(Wx + b) with mean μ = BN(Wx) with mean μ − b).
    Returns the number of layers copied.
    """
    copied, folds = 0, []
    target_layers = {layer.name: layer for layer in target.layers}
    for layer in source.layers:
        weights = layer.get_weights()
        if not weights or layer.name not in target_layers:
            continue
        dest = target_layers[layer.name]
        shapes = [w.shape for w in dest.get_weights()]
        if len(weights) == 2 and len(shapes) == 1 and layer.name.endswith("_conv"):
            folds.append((layer.name[: -len("_conv")] + "_bn", weights[1]))
            weights = weights[:1]
        if shapes != [w.shape for w in weights]:
            raise ValueError(f"layer {layer.name}: pretrained shapes {[w.shape for w in weights]} "
                             f"do not match {shapes} (ImageNet weights need width 1.0)")
        dest.set_weights(weights)
        copied += 1
    for bn_name, bias in folds:
        gamma, beta, mean, variance = target_layers[bn_name].get_weights()
        target_layers[bn_name].set_weights([gamma, beta, mean - bias, variance])
    return copied


TORCHVISION_SCOPE = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


def torchvision_names(model: keras.Model) -> dict[str, str]:
    """{Keras layer name: torchvision module path} of the ResNet built by ``resnet``: ``conv1_conv`` → ``conv1``,
    ``conv3_block2_1_bn`` → ``layer2.1.bn1``, ``conv4_block1_0_conv`` → ``layer3.0.downsample.0``, so a
    torchvision ImageNet ResNet (``resnet18-f37072fd.pth``, ...) initialises it. Same tensors and shapes; two
    differences stay (the network is fine-tuned from them, not evaluated as torchvision's): stride-2 3×3
    convolutions pad as Keras' "same" (bottom/right) where torch pads both sides, and the bottleneck blocks of
    ResNet-50/101 stride in their first 1×1 convolution (keras.applications) where torchvision's stride in
    the 3×3 one."""
    import re

    names = {"conv1_conv": "conv1", "conv1_bn": "bn1"}
    pattern = re.compile(r"conv(\d)_block(\d+)_(\d)_(conv|bn)$")
    for layer in model.layers:
        found = pattern.match(layer.name)
        if not found:
            continue
        stage, block, index, kind = int(found[1]), int(found[2]), int(found[3]), found[4]
        prefix = f"layer{stage - 1}.{block - 1}"
        if index == 0:
            names[layer.name] = f"{prefix}.downsample.{0 if kind == 'conv' else 1}"
        else:
            names[layer.name] = f"{prefix}.{kind}{index}"
    return names


MOBILENETV2_ENDPOINTS = {"stride4": "block_2_add", "stride8": "block_5_add",
                         "stride16": "block_12_add", "stride32": "block_16_project_BN"}


def mobilenetv2(inputs, output_stride: int = 16, width: float = 1.0, pretrained: bool = False) -> dict:
    """keras.applications MobileNetV2 truncated at ``output_stride`` (16: after block 12)."""
    with imagenet_weights_download("mobilenetv2"):
        app = keras.applications.MobileNetV2(
            input_tensor=inputs, alpha=width, include_top=False,
            weights="imagenet" if pretrained else None)
    out = app.get_layer(MOBILENETV2_ENDPOINTS[f"stride{output_stride}"]).output
    return {"stride4": app.get_layer(MOBILENETV2_ENDPOINTS["stride4"]).output,
            "stride8": app.get_layer(MOBILENETV2_ENDPOINTS["stride8"]).output,
            "aux": out, "out": out}


# keras.applications' MobileNetV3 names its inverted-residual blocks expanded_conv_{i}. Per variant: the
# layers that end strides 4, 8 and 16, and the blocks of the last stage (stride 32, or dilation 2 at 16).
MOBILENETV3 = {
    "mobilenetv3_large": {"factory": "MobileNetV3Large", "stride4": "expanded_conv_2_add",
                          "stride8": "expanded_conv_5_add", "stride16": "expanded_conv_11_add",
                          "last_stage": (12, 13, 14)},
    "mobilenetv3_small": {"factory": "MobileNetV3Small", "stride4": "expanded_conv_project_bn",
                          "stride8": "expanded_conv_2_add", "stride16": "expanded_conv_7_add",
                          "last_stage": (8, 9, 10)},
}


def mobilenetv3(inputs, variant: str, width: float = 1.0, pretrained: bool = False) -> dict:
    """keras.applications MobileNetV3-Large or -Small (hard-swish, squeeze-excite) without its classifier.

    ``out`` is the last 1×1 convolution (960 / 576 channels at width 1), built at stride 32; a network that
    wants stride 16 (LR-ASPP and DeepLabV3 as in the MobileNetV3 paper) passes the finished model through
    ``dilate_last_stage``. ``stride8`` is LR-ASPP's skip (40 / 24 channels). keras.applications' own
    rescaling layer is left out: the input is the pipeline's normalised image.
    """
    plan = MOBILENETV3[variant]
    with imagenet_weights_download(variant):
        app = getattr(keras.applications, plan["factory"])(
            input_tensor=inputs, alpha=width, include_top=False, include_preprocessing=False,
            weights="imagenet" if pretrained else None)
    out = app.output
    return {"stride4": app.get_layer(plan["stride4"]).output, "stride8": app.get_layer(plan["stride8"]).output,
            "aux": app.get_layer(plan["stride16"]).output, "out": out}


def _halved(channels: int) -> int:
    """Half of ``channels`` rounded to a multiple of 8, never below 90 % of the half (keras.applications'
    and torchvision's rounding of MobileNet widths)."""
    half = channels / 2
    rounded = max(8, int(half + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * half else rounded


def reduce_last_stage(model: keras.Model, variant: str) -> keras.Model:
    """``model`` rebuilt with its MobileNetV3 last stage at half the channels, freshly initialised — the
    MobileNetV3 paper's "reduced tail" for segmentation (torchvision's ``reduced_tail=True``): the stage's
    first block projects to half the channels, the other blocks expand to and project to half, their
    squeeze-excite convolutions follow, and the final 1×1 convolution is halved. Weights are not carried
    over (their shapes change); call it on a network that has not been trained."""
    first, *rest = MOBILENETV3[variant]["last_stage"]
    halve = {f"expanded_conv_{first}_project", "conv_1"} | {
        f"expanded_conv_{b}_{part}" for b in rest
        for part in ("expand", "squeeze_excite_conv", "squeeze_excite_conv_1", "project")}
    config = model.get_config()
    entries = {entry["name"]: entry for entry in config["layers"]}
    if not halve <= set(entries):
        raise ValueError(f"{model.name} has no {variant} last stage to reduce")
    for name in halve:
        entries[name]["config"]["filters"] = _halved(entries[name]["config"]["filters"])
    for entry in config["layers"]:  # the layers after the edit see other shapes: built anew when called
        entry.pop("build_config", None)
    return keras.Model.from_config(config)


def dilate_last_stage(model: keras.Model, variant: str) -> keras.Model:
    """``model`` rebuilt with its MobileNetV3 last stage at dilation 2 and stride 1 (output stride 32 → 16),
    the same weights. keras.applications has no dilation option, so the layers' configs are edited: the first
    block's strided depthwise loses its explicit zero padding (the dilated convolution pads "same"), and every
    depthwise convolution of the stage gets dilation 2. Shapes of the weights do not change."""
    blocks = MOBILENETV3[variant]["last_stage"]
    depthwise = {f"expanded_conv_{b}_depthwise" for b in blocks}
    strided_pad = f"expanded_conv_{blocks[0]}_depthwise_pad"
    names = {layer.name for layer in model.layers}
    if strided_pad not in names or not depthwise <= names:
        raise ValueError(f"{model.name} has no {variant} last stage to dilate")

    def dilate(config):
        entries = {entry["name"]: entry for entry in config["layers"]}
        for name in depthwise:
            entries[name]["config"].update(strides=[1, 1], dilation_rate=[2, 2], padding="same")
        entries[f"expanded_conv_{blocks[0]}_depthwise"]["inbound_nodes"] = entries[strided_pad]["inbound_nodes"]
        config["layers"] = [entry for entry in config["layers"] if entry["name"] != strided_pad]

    return rebuilt(model, dilate)
