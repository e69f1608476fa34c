"""Shared test settings: quiet TensorFlow, two logical CPU devices, tiny configs."""

import pytest

from skd_tf.console import QUIET, start_tensorflow

# TensorFlow started as the commands start it: its start-up lines on a CPU-only host (cuInit, cudart_stub,
# CPU-feature notices) filtered out, so nothing of it lands in (or after) pytest's report
start_tensorflow(QUIET)
import tensorflow as tf  # noqa: E402

# Two logical CPUs let tf.distribute tests run a 2-replica MirroredStrategy.
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # already initialised by an earlier import
    pass


def tiny_config_dict(tmp_path, **model) -> dict:
    """A run config small enough to train a few steps in seconds."""
    return {
        "name": "tiny",
        "seed": 3,
        "data": {"source": "synthetic", "num_classes": 4, "crop_size": [32, 32],
                 "synthetic": {"num_train": 24, "num_val": 6, "image_size": 32}},
        "model": {"arch": "pspnet", "backbone": "resnet18", "width": 0.125, "head_channels": 16, **model},
        "train": {"batch_size": 4, "steps": 4, "steps_per_epoch": 2, "learning_rate": 0.01,
                  "out_dir": str(tmp_path / "run")},
        "eval": {"batch_size": 3},
    }


@pytest.fixture
def tiny_config(tmp_path):
    return tiny_config_dict(tmp_path)


@pytest.fixture(scope="session")
def two_replicas():
    """One MirroredStrategy over the two logical CPUs for the whole session (several strategies in
    one process make their eager collectives collide)."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    return strategy
