"""A functional network rebuilt from an edited copy of its config, with the same weights."""

from __future__ import annotations

from typing import Callable

import keras


def rebuilt(model: keras.Model, edit: Callable[[dict], None]) -> keras.Model:
    """``model`` rebuilt after ``edit`` changed its config in place, carrying every weight over.

    The edit may change layer options and rewire or drop layers that have no weights; the weights are
    copied in order, so it must not add, drop or reorder weighted layers."""
    config = model.get_config()
    edit(config)
    new = keras.Model.from_config(config)
    new.set_weights(model.get_weights())
    return new
