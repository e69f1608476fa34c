"""``skd-tf predict``: label maps and coloured overlays for images, from a .keras or a .tflite model."""

from skd_tf.predict.images import find_images
from skd_tf.predict.run import predict

__all__ = ["find_images", "predict"]
