"""Keras 3.15's cache of the attribute skip-sets that saving and loading walk past, made to work.

Every ``save``, ``save_weights``, ``load_model`` and ``load_weights`` walks each layer, optimizer and metric
of a model and asks ``keras.src.saving.saving_lib.get_attr_skipset`` which attributes to skip. That
function is meant to compute each set once, but it stores it under ``saving_attr_skipset_<kind>`` and
looks it up under ``saving_attr_skiplist_<kind>``, so it builds a reference ``Layer()`` (or ``Optimizer``,
``Metric`` …) and lists its ``dir()`` again for every object walked: ~0.5 ms each, about a third of the
time of saving or loading a small network. ``cache_attribute_skipsets`` memoises the function in its
module (Keras' own cache lives in thread-local state that ``keras.backend.clear_session`` empties; a set
depends only on the kind and on Keras' classes). If the private function goes, this does nothing
(tests/test_models.py fails loudly then, so that the next Keras is checked).
"""

from __future__ import annotations

import functools


def cache_attribute_skipsets() -> None:
    """Memoises ``get_attr_skipset`` where the saving code calls it (once; nothing if Keras has no such function)."""
    try:
        from keras.src.saving import saving_lib
    except ImportError:
        return
    original = getattr(saving_lib, "get_attr_skipset", None)
    if original is not None and not hasattr(original, "cache_info"):
        saving_lib.get_attr_skipset = functools.cache(original)
