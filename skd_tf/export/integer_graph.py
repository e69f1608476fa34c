"""The network as an integer export traces it: activations written so that XNNPACK runs them in int8.

LiteRT's XNNPACK delegate (2.3) takes HARD_SWISH and PRELU in float only. An int8 file with them leaves each
such activation to the reference kernels, and the graph falls apart into one delegate partition per
activation (LR-ASPP MobileNetV3-Large at 512×1024, 2 threads, trained weights: 125 ms int8 against 62 ms
float32). The same functions written in ops XNNPACK takes in int8:

- hard-swish (Keras' ``hard_silu`` activation, MobileNetV3): (x · ⅙) · ReLU6(x + 3), ADD/MUL/MUL — the
  converter fuses Keras' own order into HARD_SWISH (``skd_tf.models.layers.HardSwish``; 37 ms above);
- per-channel PReLU (ESPNet): a · y + b · LeakyReLU_β(y) (``skd_tf.models.layers.PReLUAsLeakyReLU``), with
  β = min α − 0.1 (in [0.01, 0.9]): a_c = (α_c − β)/(1 − β) is then nonzero for every channel — with β equal
  to every α (PReLU's initial 0.25) the a · y constant would be all zeros and quantize to a scale XNNPACK's
  int8 MUL refuses.

Float exports keep the fused ops, which XNNPACK runs in float.
"""

from __future__ import annotations

import keras
import numpy as np

from skd_tf.models.layers import HardSwish, PReLUAsLeakyReLU
from skd_tf.models.rebuild import rebuilt

HARD_SWISH_ACTIVATIONS = ("hard_silu", "hard_swish")


def _replacement(entry, slopes: dict):
    """The layer that replaces a config entry, or None to keep it."""
    if not (isinstance(entry, dict) and isinstance(entry.get("config"), dict) and "inbound_nodes" in entry):
        return None
    config = entry["config"]
    if entry.get("class_name") == "Activation" and config.get("activation") in HARD_SWISH_ACTIVATIONS:
        return HardSwish(name=config["name"], dtype=config.get("dtype"))
    if entry.get("class_name") == "PReLU" and sorted(config.get("shared_axes") or []) == [1, 2]:
        return PReLUAsLeakyReLU(slopes[config["name"]], name=config["name"], dtype=config.get("dtype"))
    return None


def _swap(node, slopes: dict) -> None:
    """Replaces, in a (nested) model config, every entry that has a replacement."""
    if isinstance(node, dict):
        for value in node.values():
            _swap(value, slopes)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            layer = _replacement(value, slopes)
            if layer is None:
                _swap(value, slopes)
            else:
                node[index] = {**keras.saving.serialize_keras_object(layer), "name": value["name"],
                               "inbound_nodes": value["inbound_nodes"]}


def _replaceable(layer) -> bool:
    if isinstance(layer, keras.layers.Activation):
        return keras.activations.serialize(layer.activation) in HARD_SWISH_ACTIVATIONS
    return isinstance(layer, keras.layers.PReLU) and sorted(layer.shared_axes or []) == [1, 2]


def _all_layers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _all_layers(layer)


def for_integer_export(network: keras.Model) -> keras.Model:
    """``network`` with its hard-swish activations and per-channel PReLUs replaced by the same functions in
    int8-delegable ops, with the same weights; a network without them, or a subclassed one (no config to
    rewrite), is returned as it is."""
    replaced = [layer for layer in _all_layers(network) if _replaceable(layer)]
    if not replaced:
        return network
    slopes = {layer.name: float(np.clip(keras.ops.convert_to_numpy(layer.alpha).min() - 0.1, 0.01, 0.9))
              for layer in replaced if isinstance(layer, keras.layers.PReLU)}
    try:
        return rebuilt(network, lambda config: _swap(config, slopes))
    except NotImplementedError:  # get_config of a subclassed model
        return network
