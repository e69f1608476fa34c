"""The network as an integer export traces it: activations written so that XNNPACK runs them in int8.

LiteRT's XNNPACK delegate (2.3) takes HARD_SWISH and PRELU in float only. An int8 file with them leaves each
such activation to the reference kernels, and the graph falls apart into one delegate partition per
activation (LR-ASPP MobileNetV3-Large at 512×1024, 2 threads, trained weights: 125 ms int8 against 62 ms
float32). The same functions written in ops XNNPACK takes in int8:

- hard-swish (Keras' ``hard_silu`` activation, MobileNetV3): (x · ⅙) · ReLU6(x + 3), ADD/MUL/MUL — the
  converter fuses Keras' own order into HARD_SWISH (``skd_tf.models.layers.HardSwish``; 37 ms above); and
  where every path from it reaches convolutions through layers that commute with a factor (padding,
  pooling, one operand of the squeeze-excite's Multiply), x · ReLU6(x + 3), ADD/MUL, with the ⅙ moved into
  those convolutions' kernels (``skd_tf.models.layers.SixfoldHardSwish``, ``kernels_taking_the_sixth``): 19
  of MobileNetV3-Large's 20 hard-swishes (the stem's feeds a residual sum), all 18 of V3-Small's; the int8
  MUL by ⅙ was a pass over each activation (LR-ASPP V3-Large int8 logits, 512×1024, 1 thread: 32.8 → 25.5 ms);
- per-channel PReLU (ESPNet): with every slope α ≤ 1, y + ReLU((α − 1) · y), a 1×1 depthwise convolution
  with the ReLU fused into it and an ADD (``skd_tf.models.layers.PReLUAsDepthwiseReLU``); otherwise
  a · y + b · LeakyReLU_β(y) (``skd_tf.models.layers.PReLUAsLeakyReLU``), with β = min α − 0.1 (in
  [0.01, 0.9]): a_c = (α_c − β)/(1 − β) is then nonzero for every channel — with β equal to every α
  (PReLU's initial 0.25) the a · y constant would be all zeros and quantize to a scale XNNPACK's int8 MUL
  refuses.

And one function written so that int8 keeps its digits: a batch norm the converter cannot fold into a
preceding convolution (ESPNet's, after every concatenation and residual sum) becomes MUL and ADD by
constants quantized with one scale per tensor; as a 1×1 depthwise convolution
(``skd_tf.models.layers.BatchNormAsDepthwise``) its factors are quantized per channel (the published
Cityscapes ESPNet at 256×512: int8 labels 14 → 23 % of the float labels on the photos; see
docs/published-weights.md).

And torch's zero-padded average pooling (``AvgPool2d(3, 2, 1)``, ESPNet's input pyramid: ZeroPadding2D then
AveragePooling2D), whose PAD and int8 AVERAGE_POOL_2D must keep their input's scale and leave XNNPACK's
partition, as one depthwise convolution with "same" padding and a frozen kernel of ninths
(``skd_tf.models.layers.PaddedAveragePoolAsDepthwise``; the padding layer becomes an identity).

And a transposed convolution whose kernel is its stride (ESPNet's decoder, 2×2 / 2), which XNNPACK leaves
to the builtin kernel in int8, as the 1×1 convolution and DEPTH_TO_SPACE it is
(``skd_tf.models.layers.TransposedConvAsDepthToSpace``; 61 → 4.9 ms for ESPNet's last one at 512×1024).

Float exports keep the fused ops, which XNNPACK runs in float.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np

from skd_tf.models.layers import (BatchNormAsDepthwise, HardSwish, PaddedAveragePoolAsDepthwise, PReLUAsDepthwiseReLU,
                                  PReLUAsLeakyReLU, SixfoldHardSwish, TransposedConvAsDepthToSpace)
from skd_tf.models.rebuild import config_dicts, rebuilt

HARD_SWISH_ACTIVATIONS = ("hard_silu", "hard_swish")
# the layers the converter folds a following batch norm into
FOLDS_BATCH_NORM = ("Conv2D", "DepthwiseConv2D", "Dense")
# layers f with f(6 · x) = 6 · f(x) (a Multiply in one of its operands), which hard-swish's factor ⅙ can pass,
# and the layers whose kernel takes it in
COMMUTE_WITH_A_FACTOR = ("ZeroPadding2D", "GlobalAveragePooling2D", "AdaptiveAveragePooling2D",
                         "AveragePooling2D", "MaxPooling2D", "Dropout", "Multiply")
TAKE_A_FACTOR = ("Conv2D", "DepthwiseConv2D", "Dense")


def _producers(entry) -> list[str]:
    """The names of the layers whose outputs a config entry reads."""
    return [node["config"]["keras_history"][0] for node in config_dicts(entry.get("inbound_nodes", []))
            if node.get("class_name") == "__keras_tensor__" and node.get("config", {}).get("keras_history")]


def _graphs(config: dict):
    """For each functional graph of a (nested) model config: its layer entries by name, the entries reading
    each layer, and the names of its outputs."""
    for node in config_dicts(config):
        if not isinstance(node.get("layers"), list):
            continue
        layers = {entry.get("name"): entry for entry in node["layers"]
                  if isinstance(entry, dict) and isinstance(entry.get("config"), dict)}
        consumers: dict[str, list] = {}
        for entry in layers.values():
            for producer in _producers(entry):
                consumers.setdefault(producer, []).append(entry)
        yield layers, consumers, _output_names(node)


def _unfolded_batch_norms(config: dict) -> set:
    """The names of the batch norms in a (nested) model config that read anything but a linear layer the
    converter folds them into (``FOLDS_BATCH_NORM``; one with a fused activation keeps its batch norm
    apart), with scale and centre (four weights)."""
    found = set()
    for layers, _, _ in _graphs(config):
        folds = {name for name, entry in layers.items() if entry.get("class_name") in FOLDS_BATCH_NORM
                 and entry["config"].get("activation") in (None, "linear")}
        for entry in layers.values():
            options = entry["config"]
            if (entry.get("class_name") == "BatchNormalization" and options.get("scale") and options.get("center")
                    and options.get("axis") in (-1, 3, [-1], [3])
                    and not all(name in folds for name in _producers(entry) or [None])):
                found.add(options["name"])
    return found


def kernels_taking_the_sixth(config: dict) -> dict[str, set]:
    """For each hard-swish activation of a (nested) model config whose ⅙ can move into the kernels after it:
    the names of those kernels' layers. Every path from the activation must reach a ``TAKE_A_FACTOR`` layer
    through ``COMMUTE_WITH_A_FACTOR`` layers only (a Multiply with one operand on such a path), and no layer on
    the way may be an output; an activation feeding a sum, a concatenation, a batch norm or an output keeps
    its ⅙."""
    found = {}
    for layers, consumers, outputs in _graphs(config):
        for name, entry in layers.items():
            if not (entry.get("class_name") == "Activation"
                    and entry.get("config", {}).get("activation") in HARD_SWISH_ACTIVATIONS):
                continue
            passed, kernels, frontier, ok = {name}, set(), [name], name not in outputs
            while frontier and ok:
                for consumer in consumers.get(frontier.pop(), []):
                    kind, consumer_name = consumer.get("class_name"), consumer.get("name")
                    if consumer_name in passed | kernels:
                        ok = False  # reached twice: x · x, or two paths meeting
                    elif kind in TAKE_A_FACTOR:
                        kernels.add(consumer_name)
                    elif kind in COMMUTE_WITH_A_FACTOR and consumer_name not in outputs:
                        passed.add(consumer_name)
                        frontier.append(consumer_name)
                    else:
                        ok = False
            if ok and kernels:
                found[name] = (passed - {name}, kernels)
    # two hard-swishes meeting in one layer (a Multiply of both) would need 1/36 there: both keep their ⅙
    reached = [layer for passed, kernels in found.values() for layer in passed | kernels]
    return {name: kernels for name, (passed, kernels) in found.items()
            if all(reached.count(layer) == 1 for layer in passed | kernels)}


def _padded_average_pools(config: dict) -> tuple[set, set]:
    """(paddings, poolings): the names of the ZeroPadding2D layers of one pixel on every side read by nothing
    but an AveragePooling2D of 3×3, stride 2, valid padding, channels last — torch's ``AvgPool2d(3, 2, 1)`` —
    and of those poolings."""
    paddings, pools = set(), set()
    for layers, consumers, outputs in _graphs(config):
        for entry in layers.values():
            options = entry["config"]
            if (entry.get("class_name") != "ZeroPadding2D" or options.get("data_format") != "channels_last"
                    or np.asarray(options.get("padding")).tolist() != [[1, 1], [1, 1]]
                    or options["name"] in outputs):
                continue
            read = consumers.get(options["name"], [])
            if len(read) != 1 or read[0].get("class_name") != "AveragePooling2D":
                continue
            pool = read[0]["config"]
            if (list(pool["pool_size"]) == [3, 3] and list(pool["strides"] or [3, 3]) == [2, 2]
                    and pool["padding"] == "valid" and pool.get("data_format") == "channels_last"
                    and len(read[0].get("inbound_nodes", [])) == 1):
                paddings.add(options["name"])
                pools.add(pool["name"])
    return paddings, pools


def _output_names(node: dict) -> set:
    """The names of the layers a functional config outputs (``output_layers``: one [name, node, tensor]
    entry, a list or a dict of them)."""
    outputs = node.get("output_layers") or []
    entries = list(outputs.values()) if isinstance(outputs, dict) else outputs
    if entries and not isinstance(entries[0], list):
        entries = [entries]
    return {str(entry[0]) for entry in entries}


def _stride_sized_transposed_conv(config: dict) -> bool:
    """A ``Conv2DTranspose`` config whose square kernel equals its stride, with no activation, dilation or
    output padding, channels last (``TransposedConvAsDepthToSpace`` computes it; with kernel = stride,
    "same" and "valid" padding pad nothing)."""
    size = list(config["kernel_size"])
    return (size == list(config["strides"]) and size[0] == size[1] > 1
            and config["activation"] in (None, "linear") and list(config["dilation_rate"]) == [1, 1]
            and config["output_padding"] is None and config["data_format"] == "channels_last")


class _Plan(NamedTuple):
    """What ``for_integer_export`` replaces, by layer name."""

    slopes: dict        # PReLUs with a slope above 1 → the leaky form's β (the others: the depthwise form)
    batch_norms: set    # batch norms the converter cannot fold
    sixfold: dict       # hard-swishes whose ⅙ moves into the kernels after them
    paddings: set       # zero paddings read only by a torch-style 3×3/2 average pooling ...
    pools: set          # ... and those poolings


def _replacement(entry, plan: _Plan):
    """The layer that replaces a config entry, or None to keep it."""
    if not (isinstance(entry, dict) and isinstance(entry.get("config"), dict) and "inbound_nodes" in entry):
        return None
    config = entry["config"]
    if entry.get("class_name") == "ZeroPadding2D" and config["name"] in plan.paddings:
        return keras.layers.Identity(name=config["name"], dtype=config.get("dtype"))
    if entry.get("class_name") == "AveragePooling2D" and config["name"] in plan.pools:
        return PaddedAveragePoolAsDepthwise(name=config["name"], dtype=config.get("dtype"))
    if entry.get("class_name") == "BatchNormalization" and config["name"] in plan.batch_norms:
        return BatchNormAsDepthwise(config["epsilon"], name=config["name"], dtype=config.get("dtype"))
    if entry.get("class_name") == "Activation" and config.get("activation") in HARD_SWISH_ACTIVATIONS:
        kind = SixfoldHardSwish if config["name"] in plan.sixfold else HardSwish
        return kind(name=config["name"], dtype=config.get("dtype"))
    if entry.get("class_name") == "PReLU" and sorted(config.get("shared_axes") or []) == [1, 2]:
        if config["name"] not in plan.slopes:  # every α ≤ 1
            return PReLUAsDepthwiseReLU(name=config["name"], dtype=config.get("dtype"))
        return PReLUAsLeakyReLU(plan.slopes[config["name"]], name=config["name"], dtype=config.get("dtype"))
    if entry.get("class_name") == "Conv2DTranspose" and _stride_sized_transposed_conv(config):
        return TransposedConvAsDepthToSpace(config["filters"], config["strides"][0], config["use_bias"],
                                            name=config["name"], dtype=config.get("dtype"))
    return None


def _swap(node, plan: _Plan) -> None:
    """Replaces, in a (nested) model config, every entry that has a replacement."""
    if isinstance(node, dict):
        for value in node.values():
            _swap(value, plan)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            layer = _replacement(value, plan)
            if layer is None:
                _swap(value, plan)
            else:
                node[index] = {**keras.saving.serialize_keras_object(layer), "name": value["name"],
                               "inbound_nodes": value["inbound_nodes"]}


def _replaceable(layer) -> bool:
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return _stride_sized_transposed_conv(layer.get_config())
    if isinstance(layer, keras.layers.Activation):
        return keras.activations.serialize(layer.activation) in HARD_SWISH_ACTIVATIONS
    return isinstance(layer, keras.layers.PReLU) and sorted(layer.shared_axes or []) == [1, 2]


def _all_layers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _all_layers(layer)


def for_integer_export(network: keras.Model) -> keras.Model:
    """``network`` with its hard-swish activations, per-channel PReLUs, stride-sized transposed convolutions
    and zero-padded 3×3/2 average poolings replaced by the same functions in int8-delegable ops and its
    unfoldable batch norms by depthwise convolutions, with the same weights; a network without them, or a
    subclassed one (no config to rewrite), is returned as it is."""
    try:
        config = network.get_config()
    except NotImplementedError:  # a subclassed model
        return network
    batch_norms = _unfolded_batch_norms(config)
    paddings, pools = _padded_average_pools(config)
    replaced = [layer for layer in _all_layers(network) if _replaceable(layer)]
    if not replaced and not batch_norms and not pools:
        return network
    alphas = {layer.name: keras.ops.convert_to_numpy(layer.alpha) for layer in replaced
              if isinstance(layer, keras.layers.PReLU)}
    slopes = {name: float(np.clip(alpha.min() - 0.1, 0.01, 0.9)) for name, alpha in alphas.items() if alpha.max() > 1}
    plan = _Plan(slopes, batch_norms, kernels_taking_the_sixth(config), paddings, pools)
    swapped = rebuilt(network, lambda config: _swap(config, plan))
    kernels = {name for names in plan.sixfold.values() for name in names}
    for layer in _all_layers(swapped):
        if layer.name in kernels:
            layer.kernel.assign(layer.kernel / 6.0)
    return swapped
