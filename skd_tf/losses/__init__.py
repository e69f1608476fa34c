"""Segmentation cross-entropy and the distillation losses (see skd_tf.losses.base for the interface).

``LOSSES`` maps each config name to its class, the model output it reads, its
default weight (from the paper or the reference implementation named) and a
one-line formula; the README's losses table is generated from it.
"""

from skd_tf.losses.base import DistillationLoss
from skd_tf.losses.channelwise import ChannelwiseDistillation
from skd_tf.losses.cross_entropy import segmentation_cross_entropy
from skd_tf.losses.feature_mimic import AttentionTransfer, FitNetDistillation
from skd_tf.losses.holistic import HolisticCritic, HolisticDistillation, gradient_penalty
from skd_tf.losses.keras_adapter import KerasDistillationLoss
from skd_tf.losses.knowledge_adaptation import (AutoEncoderTrainer, FeatureAutoEncoder, KnowledgeAdaptation,
                                                autoencoder_loss, autoencoder_quality, pretrain_autoencoder)
from skd_tf.losses.pairwise import PairwiseDistillation
from skd_tf.losses.pixelwise import PixelwiseDistillation
from skd_tf.losses.relational import (CorrelationCongruence, InstanceRelationGraph, RelationalKD,
                                      SimilarityPreserving)

# name: (class, reads, default weight, source of the weight, formula)
LOSSES = {
    "pixel": (PixelwiseDistillation, "logits", 10.0, "paper λ1",
              "τ²·(1/N) Σ_i KL(softmax(z_i^T/τ) ‖ softmax(z_i^S/τ))"),
    "pairwise": (PairwiseDistillation, "features", 10.0, "paper λ1; reference script 0.5",
                 "(1/N²) Σ_ij (f̂_i^S·f̂_j^S − f̂_i^T·f̂_j^T)², f̂ = f / √(‖f‖² + ε²), ε = 0.1·RMS‖f‖ "
                 "(`norm_floor`; 0 = plain cosine), exact via Gram matrices"),
    "holistic": (HolisticDistillation, "logits", 0.1, "paper λ2",
                 "student: −E[D(Q^S|I)]; critic minimises λ_ho·(E[D(Q^S|I)] − E[D(Q^T|I)] + 10·GP)"),
    "ka": (KnowledgeAdaptation, "features", 1.0, "β = 50, γ = 1 inside, paper",
           "β·mean_j ‖ê_j(F_T) − ĉ_j(F_S)‖₂ + γ·Σ_ij (A^S_ij − A^T_ij)²"),
    "cwd": (ChannelwiseDistillation, "logits", 3.0, "CIRKD",
            "τ²/C · Σ_c KL(softmax_hw(T_c/τ) ‖ softmax_hw(S_c/τ)), τ = 4"),
    "sp": (SimilarityPreserving, "features", 3000.0, "RepDistiller",
           "‖rownorm(Q_T Q_Tᵀ) − rownorm(Q_S Q_Sᵀ)‖²_F / b²"),
    "cc": (CorrelationCongruence, "features", 100.0, "KD-Zoo",
           "mean_ij (k(s_i,s_j) − k(t_i,t_j))², Gaussian kernel by Taylor order 2"),
    "irg": (InstanceRelationGraph, "logits+features", 1.0, "0.1, 5, 5 inside, IRG",
            "0.1·MSE(vertices) + 5·MSE(max-normed distance graphs) + 5·MSE(transforms)"),
    "rkd": (RelationalKD, "features", 1.0, "25, 50 inside, RepDistiller",
            "25·Huber(d_S/μ_S, d_T/μ_T) + 50·Huber(angles_S, angles_T)"),
    "fitnet": (FitNetDistillation, "features", 1.0, "FitNets",
               "mean (W·F_S − F_T)², W a 1×1 conv"),
    "at": (AttentionTransfer, "features", 1000.0, "RepDistiller",
           "mean_j (Q_S,j − Q_T,j)², Q = normalise(mean_c F_c²); `match: pool_larger` pools the larger map "
           "down as RepDistiller"),
}

__all__ = [
    "LOSSES", "AttentionTransfer", "AutoEncoderTrainer", "ChannelwiseDistillation", "CorrelationCongruence",
    "DistillationLoss", "FeatureAutoEncoder", "FitNetDistillation", "HolisticCritic", "HolisticDistillation",
    "InstanceRelationGraph", "KerasDistillationLoss", "KnowledgeAdaptation", "PairwiseDistillation",
    "PixelwiseDistillation", "RelationalKD", "SimilarityPreserving", "autoencoder_loss", "autoencoder_quality", "gradient_penalty",
    "pretrain_autoencoder", "segmentation_cross_entropy",
]


def markdown_table(calibrated: dict[str, float] | None = None, options: dict[str, str] | None = None) -> str:
    """The README's losses table: config name, formula, what it reads, default weight and its source, and
    (``calibrated``: {config name: λ}) the weight benchmarks/sweep.py chose for the synthetic configs, with
    (``options``: {config name: text}) the loss options it was chosen with."""
    calibrated, options = calibrated or {}, options or {}
    rows = ["| config name | loss | formula | reads | default weight (literature) | synthetic configs (calibrated) |",
            "|---|---|---|---|---|---|"]
    for name, (cls, reads, weight, source, formula) in LOSSES.items():
        formula = formula.replace("|", "\\|")  # a bar inside a cell must be escaped in markdown
        chosen = f"{calibrated[name]:g}" if name in calibrated else "not yet calibrated"
        if name in options:
            chosen += f" (with {options[name]})"
        rows.append(f"| `{name}` | {cls.__name__} | {formula} | {reads} | {weight:g} ({source}) | {chosen} |")
    return "\n".join(rows)
