"""The SKD reference code's PSPNet (``networks/pspnet_combine.py`` of irfanICMLL/structure_knowledge_distillation,
branch master): the paper's ResNet-101 teacher (``CS_scenes_*.pth``) and ResNet-18 student, tensor for tensor.

Every layer that holds weights is named after the torch module it mirrors (``layer3.4.conv2``,
``pspmodule.stages.2.1``, ``dsn.3``), so the published checkpoints import strictly. What differs from this
project's own PSPNet (skd_tf.models.heads) and must be reproduced exactly:

* deep stem: three 3×3 convolutions 64-64-128 (the first with stride 2), BatchNorm + ReLU each, then a 3×3
  stride-2 max-pool with ``ceil_mode=True`` (a 256-pixel side pools to 129, so a 512 input gives 65×65 logits);
* torchvision-style blocks (stride on the 3×3 convolution of a bottleneck), 128 stem channels, so layer1
  opens with a projection even for ResNet-18; layer3 dilated by 2 and layer4 by 4 in every block;
* block BatchNorms are ``InPlaceABNSync(activation="none")`` (plain BN, ε 1e-5, ReLU separate); the pyramid,
  its bottleneck and the auxiliary head use ``InPlaceABNSync``: BatchNorm then leaky ReLU, slope 0.01;
* pyramid: adaptive average pooling to 1, 2, 3, 6 cells, 1×1 convolution, BN + leaky ReLU, bilinear upsampling
  with ``align_corners=True``, concatenated *before* the backbone map; 3×3 bottleneck, BN + leaky ReLU,
  Dropout2d 0.1 (its output is the ``features``); a 1×1 classifier with bias;
* auxiliary ``dsn`` head on layer3: 3×3 convolution *with* bias, BN + leaky ReLU, Dropout2d, 1×1 with bias.
"""

from __future__ import annotations

from keras import layers

from skd_tf.models.layers import AdaptiveAveragePooling2D
from skd_tf.models.torch_layers import CeilModeMaxPool2D, ResizeLikeAlignCorners

BN_EPS = 1e-5
LEAKY_SLOPE = 0.01
BLOCKS = {18: (2, 2, 2, 2), 101: (3, 4, 23, 3)}
# (planes, stride, dilation) of layer1..layer4
STAGES = ((64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4))
# the backbone's torch modules: what an ImageNet checkpoint of the same deep-stem ResNet initialises
BACKBONE_SCOPE = ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "layer1", "layer2", "layer3", "layer4")


def conv(x, filters, kernel, name, strides=1, dilation=1, bias=False):
    """torch ``Conv2d`` with padding dilation·(k−1)/2 on every side (explicit when strided: Keras' "same"
    pads asymmetrically there)."""
    pad = dilation * (kernel - 1) // 2
    if strides > 1 and pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        return layers.Conv2D(filters, kernel, strides=strides, dilation_rate=dilation, use_bias=bias, name=name)(x)
    return layers.Conv2D(filters, kernel, strides=strides, padding="same" if pad else "valid",
                         dilation_rate=dilation, use_bias=bias, name=name)(x)


def norm(x, name, leaky=False):
    x = layers.BatchNormalization(epsilon=BN_EPS, synchronized=True, name=name)(x)
    return layers.LeakyReLU(LEAKY_SLOPE, name=f"{name}_act")(x) if leaky else x


def block(x, planes, stride, dilations, name, bottleneck):
    """A torchvision-style BasicBlock or Bottleneck (stride on the 3×3 convolution), with its ``downsample``
    projection when the shape changes. ``dilations``: of the first and second 3×3 convolutions of a
    BasicBlock; a Bottleneck's single 3×3 uses the first."""
    expansion = 4 if bottleneck else 1
    shortcut = x
    if stride != 1 or x.shape[-1] != planes * expansion:
        shortcut = norm(conv(x, planes * expansion, 1, f"{name}.downsample.0", strides=stride), f"{name}.downsample.1")
    if bottleneck:
        y = layers.ReLU(name=f"{name}.relu1")(norm(conv(x, planes, 1, f"{name}.conv1"), f"{name}.bn1"))
        y = layers.ReLU(name=f"{name}.relu2")(norm(conv(y, planes, 3, f"{name}.conv2", stride, dilations[0]),
                                                   f"{name}.bn2"))
        y = norm(conv(y, planes * 4, 1, f"{name}.conv3"), f"{name}.bn3")
    else:
        y = layers.ReLU(name=f"{name}.relu1")(norm(conv(x, planes, 3, f"{name}.conv1", stride, dilations[0]),
                                                   f"{name}.bn1"))
        y = norm(conv(y, planes, 3, f"{name}.conv2", dilation=dilations[1]), f"{name}.bn2")
    return layers.ReLU(name=f"{name}.relu")(layers.Add(name=f"{name}.add")([y, shortcut]))


def deep_stem(image, prefix: str = ""):
    """Three 3×3 convolutions 64-64-128 (the first with stride 2), each with BatchNorm and ReLU
    (``conv1``/``bn1`` ... ``conv3``/``bn3`` under ``prefix``)."""
    x = image
    for i, (filters, stride) in enumerate(((64, 2), (64, 1), (128, 1)), start=1):
        x = layers.ReLU(name=f"{prefix}relu{i}")(norm(conv(x, filters, 3, f"{prefix}conv{i}", strides=stride),
                                                       f"{prefix}bn{i}"))
    return x


def deep_stem_resnet(image, depth: int) -> dict:
    """The reference code's dilated deep-stem ResNet; returns ``{"layer3": ..., "layer4": ...}``."""
    if depth not in BLOCKS:
        raise ValueError(f"the SKD reference PSPNet exists for ResNet-{' and ResNet-'.join(map(str, BLOCKS))}, "
                         f"not ResNet-{depth}")
    x = CeilModeMaxPool2D(3, 2, 1, name="maxpool")(deep_stem(image))
    ends = {}
    for index, ((planes, stride, dilation), count) in enumerate(zip(STAGES, BLOCKS[depth]), start=1):
        for b in range(count):
            x = block(x, planes, stride if b == 0 else 1, (dilation, dilation), f"layer{index}.{b}", depth >= 50)
        ends[f"layer{index}"] = x
    return ends


def skd_pspnet(image, num_classes: int, depth: int, channels: int, dropout: float = 0.1, aux: bool = True):
    """PSPNet of the SKD reference code; returns ``(features, logits, aux_logits or None)``.

    ``channels``: the pyramid's width (512 for the ResNet-101 teacher, 128 for the ResNet-18 student), also
    the auxiliary head's.
    """
    ends = deep_stem_resnet(image, depth)
    x4 = ends["layer4"]
    priors = []
    for i, bins in enumerate((1, 2, 3, 6)):
        y = AdaptiveAveragePooling2D(bins, name=f"pspmodule.stages.{i}.0")(x4)
        y = norm(conv(y, channels, 1, f"pspmodule.stages.{i}.1"), f"pspmodule.stages.{i}.2", leaky=True)
        priors.append(ResizeLikeAlignCorners(name=f"pspmodule.stages.{i}_up")([y, x4]))
    y = layers.Concatenate(name="pspmodule_concat")(priors + [x4])
    y = norm(conv(y, channels, 3, "pspmodule.bottleneck.0"), "pspmodule.bottleneck.1", leaky=True)
    features = layers.SpatialDropout2D(dropout, name="pspmodule.bottleneck.2")(y) if dropout else y
    logits = conv(features, num_classes, 1, "head", bias=True)
    if not aux:
        return features, logits, None
    a = norm(conv(ends["layer3"], channels, 3, "dsn.0", bias=True), "dsn.1", leaky=True)
    a = layers.SpatialDropout2D(dropout, name="dsn.2")(a) if dropout else a
    return features, logits, conv(a, num_classes, 1, "dsn.3", bias=True)
