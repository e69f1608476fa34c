"""``skd-tf import``: a published PyTorch checkpoint as an skd-tf ``.keras`` model."""

from skd_tf.importing.run import import_checkpoint

__all__ = ["import_checkpoint"]
