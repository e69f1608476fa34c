"""ESPNet and ESPNet-C (Mehta et al., ECCV 2018), the SKD paper's own mobile students.

Built to match the SKD reference code (``network/ESPnet.py`` of irfanICMLL/structure_knowledge_distillation,
branch cvpr_19; ``ESPNet(classes, p=2, q=8)`` / ``ESPNet_Encoder(classes, p=2, q=8)``) tensor for tensor, so
its published checkpoints import strictly: every layer that holds weights is named after the torch module
it mirrors (``level2_0.c1.conv``, ``level3.7.bn.act``, ...).

* ESP block: 1×1 reduce (3×3 stride 2 when it downsamples) to n = C/5 channels, five parallel 3×3
  convolutions with dilation 1, 2, 4, 8, 16, hierarchical sums d2, d2+d4, d2+d4+d8, ... (de-gridding),
  concatenation, the identity added when in = out, then BatchNorm (ε 1e-3) and PReLU.
* Input reinforcement: the image average-pooled (3×3, stride 2, zero padding counted in the mean, as
  torch's ``AvgPool2d(3, 2, 1)``) is concatenated at 1/2 and 1/4.
* ESPNet-C ends with a 1×1 classifier at 1/8. ESPNet adds the light decoder: BatchNorm, 2×2 stride-2
  transposed convolutions (no bias) and a C-channel ESP block, to logits at the input resolution.

Convolutions with stride 2 pad explicitly (1 pixel on every side, as torch) because Keras' "same"
pads asymmetrically. For an input whose sides are not multiples of 8 torch's ESPNet decoder fails
(its upsampled maps are larger than the ones they are concatenated with); here they are cropped at
the bottom and right, which leaves every multiple of 8 exactly as torch computes it.
"""

from __future__ import annotations

import keras
from keras import layers

from skd_tf.models.torch_layers import CropLike

BN_EPS = 1e-3
# the encoder's torch modules: what an ESPNet-C checkpoint initialises in an ESPNet (model.pretrained)
ENCODER_SCOPE = ("level1", "b1", "level2_0", "level2", "b2", "level3_0", "level3", "b3")


def _conv(x, filters, kernel, name, strides=1, dilation=1):
    if strides > 1:
        x = layers.ZeroPadding2D((kernel - 1) // 2, name=f"{name}_pad")(x)
        return layers.Conv2D(filters, kernel, strides=strides, use_bias=False, name=name)(x)
    return layers.Conv2D(filters, kernel, padding="same", dilation_rate=dilation, use_bias=False, name=name)(x)


def _bn_prelu(x, name):
    """torch ``BR``: BatchNorm (ε 1e-3) then a per-channel PReLU."""
    x = layers.BatchNormalization(epsilon=BN_EPS, synchronized=True, name=f"{name}.bn")(x)
    return layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2],
                        name=f"{name}.act")(x)


def _average_pool(x, name):
    """torch ``AvgPool2d(3, stride=2, padding=1)``: zeros padded in and counted in every mean."""
    x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return layers.AveragePooling2D(3, strides=2, name=name)(x)


def esp_block(x, filters, name, downsample=False, add=True):
    """The ESP module (``DilatedParllelResidualBlockB``; ``DownSamplerB`` with ``downsample``)."""
    n = filters // 5
    n1 = filters - 4 * n
    reduced = _conv(x, n, 3 if downsample else 1, f"{name}.c1.conv", strides=2 if downsample else 1)
    branches = {d: _conv(reduced, n1 if d == 1 else n, 3, f"{name}.d{d}.conv", dilation=d) for d in (1, 2, 4, 8, 16)}
    sums = [branches[2]]
    for d in (4, 8, 16):
        sums.append(layers.Add(name=f"{name}_sum{d}")([sums[-1], branches[d]]))
    y = layers.Concatenate(name=f"{name}_concat")([branches[1], *sums])
    if downsample:
        return _bn_prelu(y, name)
    if add:
        y = layers.Add(name=f"{name}_residual")([x, y])
    return _bn_prelu(y, f"{name}.bn")


def espnet(image, num_classes: int, blocks: tuple[int, int] = (2, 8), decoder: bool = True):
    """ESPNet (``decoder``) or ESPNet-C on ``image``; returns ``(features, logits)``.

    ``features`` is the encoder's last map (256 channels at 1/8, ``output2_cat`` in the reference code);
    ``logits`` are at the input resolution for ESPNet, at 1/8 for ESPNet-C.
    """
    if decoder and num_classes < 5:
        raise ValueError(f"ESPNet's decoder splits the classes into five dilated branches: it needs at least 5 "
                         f"classes (got {num_classes}; ESPNet-C has no such limit)")
    p, q = blocks
    output0 = _conv(image, 16, 3, "level1.conv", strides=2)
    output0 = _bn_prelu(output0, "level1")
    inp1 = _average_pool(image, "sample1.pool.0")
    inp2 = _average_pool(_average_pool(image, "sample2.pool.0"), "sample2.pool.1")

    output0_cat = _bn_prelu(layers.Concatenate(name="b1_concat")([output0, inp1]), "b1")
    output1_0 = esp_block(output0_cat, 64, "level2_0", downsample=True)
    output1 = output1_0
    for i in range(p):
        output1 = esp_block(output1, 64, f"level2.{i}")
    output1_cat = _bn_prelu(layers.Concatenate(name="b2_concat")([output1, output1_0, inp2]), "b2")

    output2_0 = esp_block(output1_cat, 128, "level3_0", downsample=True)
    output2 = output2_0
    for i in range(q):
        output2 = esp_block(output2, 128, f"level3.{i}")
    features = _bn_prelu(layers.Concatenate(name="b3_concat")([output2_0, output2]), "b3")
    if not decoder:
        return features, _conv(features, num_classes, 1, "classifier.conv")

    out = _conv(features, num_classes, 1, "classifier_1.conv")
    out = layers.BatchNormalization(epsilon=BN_EPS, synchronized=True, name="br")(out)
    output2_c = layers.Conv2DTranspose(num_classes, 2, strides=2, use_bias=False, name="up_l3.0")(out)
    output1_c = _conv(output1_cat, num_classes, 1, "level3_C.conv")
    output2_c = CropLike(name="up_l3_crop")([output2_c, output1_c])
    merged = _bn_prelu(layers.Concatenate(name="combine_l2_l3_concat")([output1_c, output2_c]), "combine_l2_l3.0")
    merged = esp_block(merged, num_classes, "combine_l2_l3.1", add=False)
    up = layers.Conv2DTranspose(num_classes, 2, strides=2, use_bias=False, name="up_l2.0")(merged)
    up = _bn_prelu(CropLike(name="up_l2_crop")([up, output0_cat]), "up_l2.1")
    concat = layers.Concatenate(name="conv_concat")([up, output0_cat])
    concat = _bn_prelu(_conv(concat, num_classes, 3, "conv.conv"), "conv")
    logits = layers.Conv2DTranspose(num_classes, 2, strides=2, use_bias=False, name="classifier")(concat)
    return features, CropLike(name="classifier_crop")([logits, image])
