"""Strict assignment of a PyTorch state_dict to a Keras network whose layers carry torch's module paths.

A network built to be imported names every layer that holds weights after the torch module it mirrors
(``level2_0.c1.conv``, ``layer3.4.bn2``, ...). Each layer type has a fixed layout on torch's side:

======================  ============================================  =============================
Keras layer             torch tensors                                 layout change
======================  ============================================  =============================
Conv2D                  ``weight`` (O, I, kh, kw), ``bias``           → (kh, kw, I, O)
DepthwiseConv2D         ``weight`` (C·m, 1, kh, kw), ``bias``         → (kh, kw, C, m)
Conv2DTranspose         ``weight`` (I, O, kh, kw), ``bias``           → (kh, kw, O, I)
BatchNormalization      ``weight``, ``bias``, ``running_mean``,       γ, β, moving mean, variance
                        ``running_var`` (``num_batches_tracked``)     (the counter is not needed)
PReLU                   ``weight`` (C,) or (1,)                       → α (1, 1, C)
Dense                   ``weight`` (O, I), ``bias``                   → (I, O)
======================  ============================================  =============================

Strict means: every checkpoint tensor is used exactly once and every Keras weight is set, otherwise one
error lists the first unmatched tensors with their shapes and nothing is changed. (The SKD reference
code's users loaded an ImageNet ResNet-18 into its deep-stem student with ``strict=False`` and silently
trained from a half-random stem.) With ``scope`` only the layers under those prefixes must be covered
and only the checkpoint tensors under them are used: a backbone's initialisation, where the checkpoint's
own classifier and the model's new head stay out.
"""

from __future__ import annotations

from collections import OrderedDict

import keras
import numpy as np

from skd_tf.models.torch_checkpoint import CheckpointError

SHOWN = 6  # unmatched tensors named in an error


def _torch_layout(layer) -> list[tuple[str, tuple, callable]]:
    """``[(tensor suffix, torch shape, to_keras)]`` for each of ``layer.get_weights()``, in that order."""
    shapes = [tuple(w.shape) for w in layer.weights]
    if isinstance(layer, keras.layers.BatchNormalization):
        names = (["weight"] if layer.scale else []) + (["bias"] if layer.center else []) \
            + ["running_mean", "running_var"]
        return [(n, s, np.asarray) for n, s in zip(names, shapes)]
    if isinstance(layer, keras.layers.PReLU):
        (shape,) = shapes
        return [("weight", (int(np.prod(shape)),), lambda w, s=shape: np.broadcast_to(w.reshape(-1), (int(np.prod(s)),))
                 .reshape(s))]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw, c, m = shapes[0]
        kernel = ("weight", (c * m, 1, kh, kw), lambda w: w.reshape(c, m, kh, kw).transpose(2, 3, 0, 1))
    elif isinstance(layer, keras.layers.Conv2DTranspose):
        kh, kw, o, i = shapes[0]
        kernel = ("weight", (i, o, kh, kw), lambda w: w.transpose(2, 3, 1, 0))
    elif isinstance(layer, keras.layers.Conv2D):
        kh, kw, i, o = shapes[0]
        kernel = ("weight", (o, i, kh, kw), lambda w: w.transpose(2, 3, 1, 0))
    elif isinstance(layer, keras.layers.Dense):
        i, o = shapes[0]
        kernel = ("weight", (o, i), lambda w: w.T)
    else:
        raise CheckpointError(f"layer {layer.name} ({type(layer).__name__}) has no PyTorch counterpart here")
    return [kernel] + [("bias", s, np.asarray) for s in shapes[1:]]


def expected_tensors(model: keras.Model, scope: tuple[str, ...] | None = None,
                     names: dict[str, str] | None = None) -> "OrderedDict[str, tuple]":
    """``{torch name: torch shape}`` of every weight of ``model`` (under ``scope`` when given)."""
    expected = OrderedDict()
    for layer, prefix in _weighted_layers(model, scope, names):
        for suffix, shape, _ in _torch_layout(layer):
            expected[f"{prefix}.{suffix}"] = shape
    return expected


def _in_scope(name: str, scope) -> bool:
    return scope is None or any(name == p or name.startswith(p + ".") for p in scope)


def _weighted_layers(model: keras.Model, scope, names=None):
    """``(layer, torch module path)`` of every layer holding weights (under ``scope``). Without ``names`` a
    layer's name is its torch path; with ``names`` ({Keras name: torch path}) only the layers it names count."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):  # a nested model's layers keep their own names
            yield from _weighted_layers(layer, scope, names)
            continue
        prefix = layer.name if names is None else names.get(layer.name)
        if layer.weights and prefix is not None and _in_scope(prefix, scope):
            yield layer, prefix


def _listing(items, more: int) -> str:
    return ", ".join(items) + (f" and {more} more" if more > 0 else "")


def mismatch_report(tensors: dict, expected: dict, scope=None) -> str | None:
    """None when ``tensors`` cover ``expected`` exactly (by name and shape), else what differs, in words."""
    counters = {n for n in tensors if n.endswith(".num_batches_tracked")
                and n[: -len("num_batches_tracked")] + "running_mean" in expected}
    used = {n for n in tensors if _in_scope(n, scope)} - counters
    unused = [n for n in used if n not in expected]
    missing = [n for n in expected if n not in tensors]
    wrong = [n for n in expected if n in tensors and tuple(tensors[n].shape) != tuple(expected[n])]
    if not (unused or missing or wrong):
        return None
    parts = []
    if wrong:
        parts.append("shapes differ: " + _listing(
            [f"{n} {tuple(tensors[n].shape)} in the checkpoint, {tuple(expected[n])} in the model"
             for n in wrong[:SHOWN]], len(wrong) - SHOWN))
    if unused:
        parts.append("checkpoint tensors the model has no place for: " + _listing(
            [f"{n} {tuple(tensors[n].shape)}" for n in unused[:SHOWN]], len(unused) - SHOWN))
    if missing:
        parts.append("model weights the checkpoint lacks: " + _listing(
            [f"{n} {tuple(expected[n])}" for n in missing[:SHOWN]], len(missing) - SHOWN))
    return "; ".join(parts)


def assign_state_dict(model: keras.Model, tensors: dict, scope: tuple[str, ...] | None = None,
                      source: str = "the checkpoint", names: dict[str, str] | None = None) -> int:
    """Sets every weight of ``model`` (under ``scope``) from ``tensors``, strictly; returns how many
    checkpoint tensors were used. Raises CheckpointError, changing nothing, when they do not match.
    ``names`` maps Keras layer names to torch module paths where they differ (then only those layers count)."""
    layers = list(_weighted_layers(model, scope, names))
    if not layers:
        raise CheckpointError(f"{model.name} has no layers under {', '.join(scope or ())} to load {source} into")
    expected = expected_tensors(model, scope, names)
    problem = mismatch_report(tensors, expected, scope)
    if problem:
        raise CheckpointError(f"{source} does not fit {model.name}: {problem}")
    for layer, prefix in layers:
        layer.set_weights([to_keras(np.asarray(tensors[f"{prefix}.{suffix}"], np.float32))
                           for suffix, _, to_keras in _torch_layout(layer)])
    return len(expected)
