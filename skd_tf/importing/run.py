"""``import_checkpoint(config, checkpoint, out)``: read a PyTorch checkpoint, build the config's network,
assign every tensor strictly, save a ``.keras`` model of this project's kind (dict outputs, the network's
input convention inside it) and the run config beside it as ``config.json`` (as ``train`` writes it, so that
``evaluate``, ``export`` and ``predict`` find it). Nothing is written unless every tensor found its place.
"""

from __future__ import annotations

import os
from pathlib import Path

from skd_tf.atomic import write_text
from skd_tf.config import RunConfig
from skd_tf.models import build_model, input_conventions
from skd_tf.models.torch_checkpoint import CheckpointError, read_state_dict
from skd_tf.models.torch_weights import assign_state_dict, expected_tensors, mismatch_report
from skd_tf.training.checkpointing import save_atomic


def _network(cfg: RunConfig, num_classes: int):
    """The config's network as the checkpoint will fill it (no backbone initialisation of its own)."""
    return build_model(cfg.model.model_copy(update={"pretrained": "none"}), num_classes, tuple(cfg.data.crop_size),
                       name=cfg.name, pipeline=(cfg.data.mean, cfg.data.std))


def class_count_hint(cfg: RunConfig, tensors: dict, expected: dict) -> str:
    """`` (the checkpoint is for K classes ...)`` when the network built for K classes instead of the config's
    data.num_classes takes the checkpoint exactly, else ``""``."""
    k = cfg.data.num_classes
    candidates = {int(tensors[n].shape[0]) for n, shape in expected.items()
                  if n in tensors and shape[0] == k and tensors[n].ndim == len(shape) and tensors[n].shape[0] != k}
    for other in sorted(candidates)[:2]:
        if mismatch_report(tensors, expected_tensors(_network(cfg, other))) is None:
            return (f" (the checkpoint is for {other} classes and the config's data.num_classes is {k}: "
                    f"--set data.num_classes={other}, or the config for that data set)")
    return ""


def import_checkpoint(cfg: RunConfig, checkpoint: str, out: str | os.PathLike, allow_pickle: bool = False) -> dict:
    """Writes ``out`` (.keras) from ``checkpoint`` (.pth) for ``cfg.model``, and ``cfg`` as ``config.json`` beside
    it; returns what was done: ``{"checkpoint", "model", "config", "tensors", "parameters", "input_convention",
    "input_size"}``."""
    out = Path(out)
    if out.suffix != ".keras":
        raise ValueError(f"--out must name a .keras file (got {out})")
    tensors = read_state_dict(checkpoint, allow_pickle)
    network = _network(cfg, cfg.data.num_classes)
    try:
        used = assign_state_dict(network, tensors, source=checkpoint)
    except CheckpointError as err:
        hint = class_count_hint(cfg, tensors, expected_tensors(network))
        raise CheckpointError(f"{err}{hint}") from None
    save_atomic(network, out)
    write_text(out.parent / "config.json", cfg.model_dump_json(indent=2))
    conventions = input_conventions(network)
    return {"checkpoint": str(checkpoint), "model": str(out), "config": str(out.parent / "config.json"),
            "tensors": used, "parameters": int(network.count_params()),
            "input_convention": conventions[0].describe() if conventions else
            f"the pipeline's: RGB in 0..255, mean {list(cfg.data.mean)}, std {list(cfg.data.std)}",
            "input_size": list(cfg.data.crop_size)}
