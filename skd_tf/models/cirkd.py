"""CIRKD's segmentation networks (winycg/CIRKD, ``models/deeplabv3.py``, ``models/pspnet.py`` on
``models/base_models/resnetv1b.py``), tensor for tensor: the DeepLabV3-ResNet-101 teacher (78.07 val mIoU)
and the ResNet-18 DeepLabV3 / PSPNet students its benchmark distils, with its auxiliary FCN head.

Layers holding weights carry the torch module paths (``pretrained.layer3.0.conv1``, ``head.aspp.b1.block.0``,
``auxlayer.block.4``). What must be reproduced exactly:

* the backbone is ``resnet*_v1s`` under the ``pretrained.`` prefix: deep stem (3×3 convolutions 64-64-128),
  a plain 3×3 stride-2 max-pool (no ceil mode), 128 stem channels; layer3/4 dilated, but the first block of
  layer3 uses dilation 1 in its first 3×3 (and 2 in the second, for a BasicBlock), the first block of layer4
  dilation 2 (then 4) — its ``previous_dilation`` rule; BatchNorm + ReLU everywhere;
* DeepLabV3: ASPP with a 1×1 branch, three 3×3 branches at rates 12, 24, 36, image pooling (upsampled with
  ``align_corners``), 512 channels each, 1×1 projection + Dropout 0.5, then a 3×3 convolution, BN, ReLU,
  Dropout 0.1 (its output is the ``features``) and a 1×1 classifier with bias;
* PSPNet: the backbone map *first*, then its four pooled branches (1, 2, 3, 6 cells, C/4 channels each,
  ``align_corners``), a 3×3 convolution to 128 (ResNet-18) or 256 channels, BN, ReLU, Dropout 0.1;
* auxiliary FCN head on layer3: 3×3 convolution to C/4 channels, BN, ReLU, Dropout 0.1, 1×1 with bias.

The ImageNet backbone files (``resnet18-imagenet.pth``, ``resnet101-imagenet.pth``) hold the same
backbone without the prefix; they are the SKD student's layout too (``skd_pspnet``).
"""

from __future__ import annotations

from keras import layers

from skd_tf.models.layers import AdaptiveAveragePooling2D
from skd_tf.models.skd_pspnet import block, conv, deep_stem, norm
from skd_tf.models.torch_layers import ResizeLikeAlignCorners

BLOCKS = {18: (2, 2, 2, 2), 101: (3, 4, 23, 3)}
PREFIX = "pretrained"
BACKBONE_SCOPE = (PREFIX,)
ASPP_RATES = (12, 24, 36)


def _conv_bn_relu(x, filters, kernel, name, dilation=1, conv_index=0):
    """torch ``Sequential(Conv2d, BatchNorm2d, ReLU)`` named ``name.<i>``, ``name.<i+1>``."""
    x = conv(x, filters, kernel, f"{name}.{conv_index}", dilation=dilation)
    return layers.ReLU(name=f"{name}.{conv_index + 2}")(norm(x, f"{name}.{conv_index + 1}"))


def resnet_v1s(image, depth: int) -> dict:
    """CIRKD's dilated ``resnet{depth}_v1s``; returns ``{"layer3": ..., "layer4": ...}``."""
    if depth not in BLOCKS:
        raise ValueError(f"CIRKD's networks exist here on ResNet-{' and ResNet-'.join(map(str, BLOCKS))}, "
                         f"not ResNet-{depth}")
    # a plain 3×3/2 max-pool; zero padding stands in for −∞ after the stem's ReLU
    x = layers.ZeroPadding2D(1, name=f"{PREFIX}.maxpool_pad")(deep_stem(image, f"{PREFIX}."))
    x = layers.MaxPooling2D(3, strides=2, name=f"{PREFIX}.maxpool")(x)
    bottleneck, ends = depth >= 50, {}
    for index, ((planes, stride, dilation), count) in enumerate(
            zip(((64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4)), BLOCKS[depth]), start=1):
        for b in range(count):
            if b == 0:  # resnetv1b's first block: dilation 1 (layer3) or 2 (layer4), then previous_dilation
                dilations = ({1: 1, 2: 1, 4: 2}[dilation], dilation)
            else:
                dilations = (dilation, dilation)
            x = block(x, planes, stride if b == 0 else 1, dilations, f"{PREFIX}.layer{index}.{b}", bottleneck)
        ends[f"layer{index}"] = x
    return ends


def _fcn_head(x, num_classes, dropout):
    channels = x.shape[-1] // 4
    y = _conv_bn_relu(x, channels, 3, "auxlayer.block")
    y = layers.Dropout(dropout, name="auxlayer.block.3")(y) if dropout else y
    return conv(y, num_classes, 1, "auxlayer.block.4", bias=True)


def cirkd_deeplabv3(image, num_classes: int, depth: int, dropout: float = 0.1, aux: bool = True):
    """CIRKD's DeepLabV3; returns ``(features, logits, aux_logits or None)``."""
    ends = resnet_v1s(image, depth)
    x = ends["layer4"]
    branches = [_conv_bn_relu(x, 512, 1, "head.aspp.b0")]
    for i, rate in enumerate(ASPP_RATES, start=1):
        branches.append(_conv_bn_relu(x, 512, 3, f"head.aspp.b{i}.block", dilation=rate))
    pooled = AdaptiveAveragePooling2D(1, name="head.aspp.b4.gap.0")(x)
    pooled = _conv_bn_relu(pooled, 512, 1, "head.aspp.b4.gap", conv_index=1)
    branches.append(ResizeLikeAlignCorners(name="head.aspp.b4_up")([pooled, x]))
    y = layers.Concatenate(name="head.aspp_concat")(branches)
    y = _conv_bn_relu(y, 512, 1, "head.aspp.project")
    y = layers.Dropout(0.5, name="head.aspp.project.3")(y) if dropout else y
    features = _conv_bn_relu(y, 512, 3, "head.block")
    features = layers.Dropout(dropout, name="head.block.3")(features) if dropout else features
    logits = conv(features, num_classes, 1, "head.block.4", bias=True)
    return features, logits, _fcn_head(ends["layer3"], num_classes, dropout) if aux else None


def cirkd_pspnet(image, num_classes: int, depth: int, dropout: float = 0.1, aux: bool = True):
    """CIRKD's PSPNet; returns ``(features, logits, aux_logits or None)``."""
    ends = resnet_v1s(image, depth)
    x = ends["layer4"]
    channels = x.shape[-1] // 4
    branches = [x]
    for i, bins in enumerate((1, 2, 3, 6), start=1):
        y = AdaptiveAveragePooling2D(bins, name=f"head.psp.avgpool{i}")(x)
        y = _conv_bn_relu(y, channels, 1, f"head.psp.conv{i}")
        branches.append(ResizeLikeAlignCorners(name=f"head.psp.conv{i}_up")([y, x]))
    y = layers.Concatenate(name="head.psp_concat")(branches)
    features = _conv_bn_relu(y, 128 if depth < 50 else 256, 3, "head.block")
    features = layers.Dropout(dropout, name="head.block.3")(features) if dropout else features
    logits = conv(features, num_classes, 1, "head.classifier", bias=True)
    return features, logits, _fcn_head(ends["layer3"], num_classes, dropout) if aux else None
