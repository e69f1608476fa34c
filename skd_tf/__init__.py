"""skd-tf: structured knowledge distillation of semantic-segmentation networks in Keras 3."""

__version__ = "0.1.0"
