"""Segmentation cross-entropy and the distillation losses (see skd_tf.losses.base for the interface).

``LOSSES`` (skd_tf.losses.registry) maps each config name to its entry: class, the model output it reads,
default weight (from the paper or the reference implementation named), a one-line formula and the
arguments a run derives from the models; the losses table of docs/losses.md is generated from it.
"""

from skd_tf.losses.base import DistillationLoss
from skd_tf.losses.channelwise import ChannelwiseDistillation
from skd_tf.training.cross_entropy import segmentation_cross_entropy
from skd_tf.losses.feature_mimic import AttentionTransfer, FitNetDistillation
from skd_tf.losses.holistic import HolisticCritic, HolisticDistillation, gradient_penalty
from skd_tf.losses.keras_adapter import KerasDistillationLoss
from skd_tf.losses.knowledge_adaptation import (AutoEncoderTrainer, FeatureAutoEncoder, KnowledgeAdaptation,
                                                autoencoder_loss, autoencoder_quality, pretrain_autoencoder)
from skd_tf.losses.pairwise import PairwiseDistillation
from skd_tf.losses.pixelwise import PixelwiseDistillation
from skd_tf.losses.registry import LOSSES, LossEntry
from skd_tf.losses.relational import (CorrelationCongruence, InstanceRelationGraph, RelationalKD,
                                      SimilarityPreserving)

__all__ = [
    "LOSSES", "LossEntry", "AttentionTransfer", "AutoEncoderTrainer", "ChannelwiseDistillation",
    "CorrelationCongruence", "DistillationLoss", "FeatureAutoEncoder", "FitNetDistillation", "HolisticCritic",
    "HolisticDistillation", "InstanceRelationGraph", "KerasDistillationLoss", "KnowledgeAdaptation",
    "PairwiseDistillation", "PixelwiseDistillation", "RelationalKD", "SimilarityPreserving", "autoencoder_loss",
    "autoencoder_quality", "gradient_penalty", "pretrain_autoencoder", "segmentation_cross_entropy",
]


def markdown_table(calibrated: dict[str, float] | None = None, options: dict[str, str] | None = None) -> str:
    """The losses table of docs/losses.md: config name, formula, what it reads, default weight and its source, and
    (``calibrated``: {config name: λ}) the weight benchmarks/sweep.py chose for the synthetic configs, with
    (``options``: {config name: text}) the loss options it was chosen with."""
    calibrated, options = calibrated or {}, options or {}
    rows = ["| config name | loss | formula | reads | default weight (literature) | synthetic configs (calibrated) |",
            "|---|---|---|---|---|---|"]
    for name, entry in LOSSES.items():
        formula = entry.formula.replace("|", "\\|")  # a bar inside a cell must be escaped in markdown
        chosen = f"{calibrated[name]:g}" if name in calibrated else "not yet calibrated"
        if name in options:
            chosen += f" (with {options[name]})"
        rows.append(f"| `{name}` | {entry.cls.__name__} | {formula} | {entry.reads} | {entry.weight:g} "
                    f"({entry.source}) | {chosen} |")
    return "\n".join(rows)
