"""Any Keras segmentation model seen with this project's dict outputs, so the Distiller, the evaluation and the
export take models built elsewhere (keras-hub, a user's own) as they take ours."""

from __future__ import annotations

from typing import Callable, Union

import keras

SEGMENTATION_OUTPUTS = ("logits", "features")

# where a plain-logits model's feature map is read: a layer's name, or a function of the model that returns a
# tensor of its graph (e.g. ``lambda m: m.get_layer("decoder").output``)
FeatureSource = Union[str, Callable[[keras.Model], "keras.KerasTensor"], None]


def is_segmentation_model(model) -> bool:
    """True for a model whose outputs are this project's dict with logits and features."""
    outputs = getattr(model, "output", None)
    return isinstance(outputs, dict) and all(k in outputs for k in SEGMENTATION_OUTPUTS)


def segmentation_outputs(model: keras.Model, features: FeatureSource = None, role: str = "model") -> keras.Model:
    """``model`` with dict outputs ``{"logits", ["features"]}``, sharing its layers and weights.

    A model that already has dict outputs with ``"logits"`` is returned as it is (``features`` must then be
    None). A model whose single output is a B×h×w×K logits tensor (any h×w: the losses and the metric resize
    the logits to the labels) is wrapped: ``"logits"`` is that output and ``"features"`` the output of the
    layer named ``features``, or ``features(model)``; without ``features`` there is no ``"features"`` output,
    and the losses that read features cannot be used with this model. The model must be a functional (or
    Sequential) Keras model, whose layers' outputs are tensors of one graph; ``role`` names it in errors.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"the {role} must be a keras.Model, got {type(model).__name__}")
    outputs = getattr(model, "output", None) if _has_graph(model) else None
    if isinstance(outputs, dict):
        if "logits" not in outputs:
            raise ValueError(f"the {role}'s outputs are a dict without 'logits' (keys: {sorted(outputs)})")
        if features is not None:
            raise ValueError(f"the {role} already has dict outputs; drop {role}_features (its 'features' output "
                             f"is read)" if "features" in outputs else
                             f"the {role} has dict outputs: add a 'features' output to it instead of {role}_features")
        return model
    if outputs is None:
        raise ValueError(f"the {role} ({type(model).__name__}) is not a functional Keras model: build it with "
                         f"keras.Model(inputs, outputs) or keras.Sequential so its layers' outputs can be read")
    if isinstance(outputs, (list, tuple)):
        if len(outputs) != 1:
            raise ValueError(f"the {role} has {len(outputs)} outputs; give it one logits output (B×h×w×classes) "
                             f"or a dict with 'logits'")
        outputs = outputs[0]
    if len(outputs.shape) != 4:
        raise ValueError(f"the {role}'s output has shape {tuple(outputs.shape)}; segmentation logits are "
                         f"B×h×w×classes")
    wrapped = {"logits": outputs}
    if features is not None:
        wrapped["features"] = _feature_tensor(model, features, role)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, wrapped, name=model.name)


def _has_graph(model: keras.Model) -> bool:
    try:
        model.output
    except (AttributeError, ValueError):
        return False
    return True


def _feature_tensor(model: keras.Model, features: FeatureSource, role: str):
    if isinstance(features, str):
        try:
            tensor = model.get_layer(features).output
        except ValueError:
            names = [layer.name for layer in model.layers]
            raise ValueError(f"{role}_features: the {role} has no layer named {features!r} (its last layers: "
                             f"{', '.join(names[-6:])})") from None
    elif callable(features):
        tensor = features(model)
    else:
        raise TypeError(f"{role}_features must be a layer name or a function of the model, "
                        f"got {type(features).__name__}")
    if len(getattr(tensor, "shape", ())) != 4:
        raise ValueError(f"{role}_features must be a B×h×w×C feature map, got shape "
                         f"{tuple(getattr(tensor, 'shape', ()))}")
    return tensor
