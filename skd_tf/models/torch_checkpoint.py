"""Reads a PyTorch checkpoint (``.pth``) into ``{tensor name: numpy array}``.

Both of torch's serializations are read (the legacy pickle of torch < 1.6 and the zip archive of
later releases), as a bare state_dict or nested under ``state_dict`` / ``model`` / ``model_state_dict``
(what training scripts save with their epoch and optimizer), with or without the ``module.`` prefix
that ``nn.DataParallel`` puts on every name. torch is imported only here, and only when a checkpoint is
read: it is an optional extra (``pip install 'skd-tf[torch]'``).
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

NESTED_KEYS = ("state_dict", "model", "model_state_dict", "net", "network")
DATA_PARALLEL_PREFIX = "module."


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not fit the network it is loaded into."""


def _import_torch():
    try:
        import torch
    except ImportError:
        raise CheckpointError("reading a PyTorch checkpoint needs PyTorch, which is not installed: "
                              "pip install 'skd-tf[torch]' (the CPU build is enough)") from None
    return torch


# torch's legacy format: a pickle (protocol 2) whose first object is this magic number
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def _load(path: str, allow_pickle: bool):
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_MAGIC))
    is_zip = head.startswith(b"PK")  # torch's zip format (a cut one still has its header)
    if not is_zip and head != LEGACY_MAGIC:
        raise CheckpointError(f"cannot read {path}: not a PyTorch checkpoint (neither torch's zip archive nor its "
                              f"legacy pickle)")
    torch = _import_torch()
    try:
        # weights_only refuses pickled code: a checkpoint is data, and a hostile one would run on load
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a bad file
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if not allow_pickle and "weights_only" in str(err) and "Unsupported" in str(err):
            raise CheckpointError(f"{path} holds Python objects besides tensors ({text[:160]}); if you trust the "
                                  f"file, rerun with --allow-pickle") from None
        if is_zip or isinstance(err, EOFError) or "EOF" in text or "truncated" in text.lower():
            raise CheckpointError(f"cannot read {path}: the checkpoint is truncated or damaged ({text[:160]})") \
                from None
        raise CheckpointError(f"cannot read {path}: not a PyTorch checkpoint ({text[:160]})") from None


def _state_dict(obj, path: str) -> dict:
    from torch import is_tensor as _is_tensor  # torch is there: _load imported it

    if isinstance(obj, dict) and obj and all(_is_tensor(v) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                return _state_dict(obj[key], path)
        tensors = {k: v for k, v in obj.items() if _is_tensor(v)}
        if tensors:  # a state_dict with a few non-tensor entries (e.g. a saved epoch)
            return tensors
        keys = ", ".join(sorted(map(str, obj))[:8])
        raise CheckpointError(f"{path} holds no tensors: a dict with keys {keys}, none of them a state_dict "
                              f"({', '.join(NESTED_KEYS)})")
    if hasattr(obj, "state_dict") and callable(obj.state_dict):  # a whole pickled nn.Module
        return obj.state_dict()
    raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict")


def strip_data_parallel(names) -> dict[str, str]:
    """``{checkpoint name: name without DataParallel's "module." prefix}`` (unchanged when absent)."""
    return {n: n[len(DATA_PARALLEL_PREFIX):] if n.startswith(DATA_PARALLEL_PREFIX) else n for n in names}


def read_state_dict(path: str | os.PathLike, allow_pickle: bool = False) -> "OrderedDict[str, np.ndarray]":
    """The checkpoint's tensors as float32/int64 NumPy arrays under their module paths, in file order."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    state = _state_dict(_load(path, allow_pickle), path)
    renamed = strip_data_parallel(state)
    if len(set(renamed.values())) != len(renamed):
        raise CheckpointError(f"{path} has tensors both with and without the 'module.' prefix")
    arrays = OrderedDict()
    for name, tensor in state.items():
        value = tensor.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        arrays[renamed[name]] = value.numpy()
    return arrays
