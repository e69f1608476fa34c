"""Segmentation heads. Each returns ``(features, logits)``.

``features`` is the head's last feature map before the classifier (the map the
pair-wise and feature losses read: the PSP module output in the paper), and
``logits`` the K-channel 1×1 classifier applied to it (plus, for LR-ASPP, the
low-level classifier).
"""

from __future__ import annotations

from keras import layers

from skd_tf.models.layers import AdaptiveAveragePooling2D, ResizeLike

BN_EPS = 1e-5


def conv_bn_relu(x, filters, kernel, name, dilation=1):
    x = layers.Conv2D(filters, kernel, padding="same", dilation_rate=dilation, use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BN_EPS, synchronized=True, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def pspnet_head(x, num_classes: int, channels: int, bins=(1, 2, 3, 6), dropout: float = 0.1):
    """Pyramid pooling (Zhao et al. 2017): pooled context at ``bins`` scales, concat, 3×3 conv."""
    branches = [x]
    for b in bins:
        y = AdaptiveAveragePooling2D(b, name=f"psp_pool{b}")(x)
        y = conv_bn_relu(y, max(channels // 4, 4), 1, f"psp_bin{b}")
        branches.append(ResizeLike(name=f"psp_up{b}")([y, x]))
    y = layers.Concatenate(name="psp_concat")(branches)
    features = conv_bn_relu(y, channels, 3, "head")
    y = layers.Dropout(dropout, name="head_dropout")(features) if dropout else features
    return features, layers.Conv2D(num_classes, 1, name="classifier")(y)


def deeplabv3_head(x, num_classes: int, channels: int, output_stride: int, dropout: float = 0.1):
    """ASPP (Chen et al. 2017): 1×1, three atrous 3×3 and image pooling, then a 3×3 conv."""
    rates = (12, 24, 36) if output_stride == 8 else (6, 12, 18)
    branches = [conv_bn_relu(x, channels, 1, "aspp_1x1")]
    for r in rates:
        branches.append(conv_bn_relu(x, channels, 3, f"aspp_rate{r}", dilation=r))
    pooled = AdaptiveAveragePooling2D(1, name="aspp_pool")(x)
    pooled = conv_bn_relu(pooled, channels, 1, "aspp_pool_proj")
    branches.append(ResizeLike(name="aspp_pool_up")([pooled, x]))
    y = layers.Concatenate(name="aspp_concat")(branches)
    y = conv_bn_relu(y, channels, 1, "aspp_proj")
    y = layers.Dropout(dropout, name="aspp_dropout")(y) if dropout else y
    features = conv_bn_relu(y, channels, 3, "head")
    return features, layers.Conv2D(num_classes, 1, name="classifier")(features)


def lraspp_head(high, low, num_classes: int, channels: int):
    """Lite R-ASPP (Howard et al. 2019): 1×1 conv gated by a pooled sigmoid branch, + low-level classifier."""
    y = conv_bn_relu(high, channels, 1, "lraspp_main")
    gate = AdaptiveAveragePooling2D(1, name="lraspp_pool")(high)
    gate = layers.Conv2D(channels, 1, activation="sigmoid", name="lraspp_gate")(gate)
    y = layers.Multiply(name="lraspp_gated")([y, gate])
    features = ResizeLike(name="head_up")([y, low])
    logits = layers.Add(name="classifier_sum")([
        layers.Conv2D(num_classes, 1, name="classifier")(features),
        layers.Conv2D(num_classes, 1, name="classifier_low")(low),
    ])
    return features, logits


def aux_head(x, num_classes: int, channels: int, dropout: float = 0.1):
    """The auxiliary FCN head of PSPNet, trained with weight ``train.aux_weight``."""
    y = conv_bn_relu(x, channels, 3, "aux")
    y = layers.Dropout(dropout, name="aux_dropout")(y) if dropout else y
    return layers.Conv2D(num_classes, 1, name="aux_classifier")(y)
