"""A segmentation network of six layers for the tests of the distillation machinery itself.

The replica, XLA and critic-step tests check how the Distiller combines terms, replicas and updates, which
does not depend on the backbone; what they pay for is tracing, whose cost grows with the number of layers.
A PSPNet-ResNet-18 at test width has ~100 layers, this network six, with what those tests need of a real
student: synchronized batch norms (a per-replica batch norm is an error they must catch) and this project's
dict outputs, logits and features at 1/8 of the input as ``skd_tf.models.build_model`` gives them.
"""

import keras


def small_segmenter(num_classes: int, width: int, size=(32, 32), name: str = "small") -> keras.Model:
    """Three stride-2 3×3 convolutions (``width``, 2·``width``, 2·``width`` channels), each with a synchronized
    batch norm and a ReLU: ``"features"`` at 1/8, and a 1×1 classifier on them: ``"logits"``. Weights from
    Keras' seeded initialisers (``keras.utils.set_random_seed``)."""
    inputs = keras.Input((*size, 3))
    x = inputs
    for i, channels in enumerate((width, 2 * width, 2 * width)):
        x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = keras.layers.BatchNormalization(synchronized=True, name=f"{name}_bn{i}")(x)
        x = keras.layers.ReLU(name=f"{name}_relu{i}")(x)
    logits = keras.layers.Conv2D(num_classes, 1, name=f"{name}_classifier")(x)
    return keras.Model(inputs, {"logits": logits, "features": x}, name=name)
