"""A functional network rebuilt from an edited copy of its config, with the same weights."""

from __future__ import annotations

from typing import Callable

import keras


def config_dicts(node):
    """Every dict in a nested model config (a functional model's layers, a nested model's, a node's
    arguments), depth first; edit them in place and pass the config to ``rebuilt``'s ``edit``."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from config_dicts(value)
    elif isinstance(node, (list, tuple)):  # a node's args are a tuple
        for value in node:
            yield from config_dicts(value)


def rebuilt(model: keras.Model, edit: Callable[[dict], None]) -> keras.Model:
    """``model`` rebuilt after ``edit`` changed its config in place, carrying every weight over.

    The edit may change layer options and rewire or drop layers that have no weights; the weights are
    copied in order, so it must not add, drop or reorder weighted layers."""
    config = model.get_config()
    edit(config)
    new = keras.Model.from_config(config)
    new.set_weights(model.get_weights())
    return new
