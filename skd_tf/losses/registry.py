"""The one list of distillation losses: each loss's config name, class, what it reads, literature weight and
formula, and the constructor arguments a run derives from the models. The configs (``distill.losses``),
the distillation run, the losses table of docs/losses.md, the sweep and the ablation all read it: adding a
loss is one entry here (and a config that uses it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import keras

from skd_tf.losses.channelwise import ChannelwiseDistillation
from skd_tf.losses.feature_mimic import AttentionTransfer, FitNetDistillation
from skd_tf.losses.holistic import HolisticDistillation
from skd_tf.losses.knowledge_adaptation import FeatureAutoEncoder, KnowledgeAdaptation
from skd_tf.losses.pairwise import PairwiseDistillation
from skd_tf.losses.pixelwise import PixelwiseDistillation
from skd_tf.losses.relational import CorrelationCongruence, InstanceRelationGraph, RelationalKD, SimilarityPreserving

# constructor arguments no config sets: the Distiller gives every loss the global batch; the critic's seed
# is the run's
SET_BY_EVERY_RUN = ("global_batch_size", "seed")


@dataclass(frozen=True)
class LossEntry:
    """A loss as the configs know it: ``distill.losses.<name>: {weight: λ, <cls's options>}``.

    ``reads``: the model outputs it compares ("logits", "features" or "logits+features"); ``weight`` the
    literature's λ with its ``source``; ``formula`` one line for the docs; ``label`` its name in tables.
    ``model_arguments(options, teacher, student, settings)`` returns the constructor arguments that depend on
    the models (channel counts, an auto-encoder), ``derived`` names them (they are not config options)."""

    name: str
    cls: type
    reads: str
    weight: float
    source: str
    formula: str
    label: str
    derived: tuple[str, ...] = ()
    model_arguments: Optional[Callable[[dict, keras.Model, keras.Model, object], dict]] = None

    def build(self, options: dict, teacher: keras.Model, student: keras.Model, settings=None):
        """The loss layer, named ``<name>_loss``, from its config options and the two models (``settings``:
        the run's knowledge-adaptation section, for the auto-encoder)."""
        options = dict(options)
        if self.model_arguments is not None:
            options.update(self.model_arguments(options, teacher, student, settings))
        return self.cls(name=f"{self.name}_loss", **options)

    @property
    def config_options(self) -> frozenset[str]:
        """Constructor arguments a config must not set."""
        return frozenset(SET_BY_EVERY_RUN) | frozenset(self.derived)


def _channels(model: keras.Model) -> int:
    return int(model.output["features"].shape[-1])


def _fitnet_arguments(options, teacher, student, settings) -> dict:
    return {"teacher_channels": _channels(teacher)}


def _cwd_arguments(options, teacher, student, settings) -> dict:
    # read on features of different widths, the student's are mapped to the teacher's first
    if options.get("reads", "logits") == "features" and _channels(student) != _channels(teacher):
        return {"align_channels": _channels(teacher)}
    return {}


def _ka_arguments(options, teacher, student, settings) -> dict:
    stride = settings.code_stride
    if stride == "auto":  # the code at the student's resolution: teacher 1/8 → code 1/16 = student (the paper)
        ratio = teacher.output["features"].shape[1] / student.output["features"].shape[1]
        stride = 2 if ratio >= 2 else 1
    return {"autoencoder": FeatureAutoEncoder(_channels(teacher), settings.code_channels, stride,
                                              name="ka_autoencoder")}


REGISTRY = (
    LossEntry("pixel", PixelwiseDistillation, "logits", 10.0, "paper λ1",
              "τ²·(1/N) Σ_i KL(softmax(z_i^T/τ) ‖ softmax(z_i^S/τ))", "pixel-wise"),
    LossEntry("pairwise", PairwiseDistillation, "features", 10.0, "paper λ1; reference script 0.5",
              "(1/N²) Σ_ij (f̂_i^S·f̂_j^S − f̂_i^T·f̂_j^T)², f̂ = f / √(‖f‖² + ε²), ε = 0.1·RMS‖f‖ "
              "(`norm_floor`; 0 = plain cosine), exact via Gram matrices", "pair-wise"),
    LossEntry("holistic", HolisticDistillation, "logits", 0.1, "paper λ2",
              "student: −E[D(Q^S|I)]; critic minimises λ_ho·(E[D(Q^S|I)] − E[D(Q^T|I)] + 10·GP)", "holistic"),
    LossEntry("ka", KnowledgeAdaptation, "features", 1.0, "β = 50, γ = 1 inside, paper",
              "β·mean_j ‖ê_j(F_T) − ĉ_j(F_S)‖₂ + γ·Σ_ij (A^S_ij − A^T_ij)²", "knowledge adaptation",
              ("autoencoder",), _ka_arguments),
    LossEntry("cwd", ChannelwiseDistillation, "logits", 3.0, "CIRKD",
              "τ²/C · Σ_c KL(softmax_hw(T_c/τ) ‖ softmax_hw(S_c/τ)), τ = 4", "channel-wise (CWD)",
              ("align_channels",), _cwd_arguments),
    LossEntry("sp", SimilarityPreserving, "features", 3000.0, "RepDistiller",
              "‖rownorm(Q_T Q_Tᵀ) − rownorm(Q_S Q_Sᵀ)‖²_F / b²", "similarity-preserving (SP)"),
    LossEntry("cc", CorrelationCongruence, "features", 100.0, "KD-Zoo",
              "mean_ij (k(s_i,s_j) − k(t_i,t_j))², Gaussian kernel by Taylor order 2", "correlation congruence (CC)"),
    LossEntry("irg", InstanceRelationGraph, "logits+features", 1.0, "0.1, 5, 5 inside, IRG",
              "0.1·MSE(vertices) + 5·MSE(max-normed distance graphs) + 5·MSE(transforms)",
              "instance relation graph (IRG)"),
    LossEntry("rkd", RelationalKD, "features", 1.0, "25, 50 inside, RepDistiller",
              "25·Huber(d_S/μ_S, d_T/μ_T) + 50·Huber(angles_S, angles_T)", "relational KD (RKD)"),
    LossEntry("fitnet", FitNetDistillation, "features", 1.0, "FitNets", "mean (W·F_S − F_T)², W a 1×1 conv",
              "FitNet", ("teacher_channels",), _fitnet_arguments),
    LossEntry("at", AttentionTransfer, "features", 1000.0, "RepDistiller",
              "mean_j (Q_S,j − Q_T,j)², Q = normalise(mean_c F_c²); `match: pool_larger` pools the larger map "
              "down as RepDistiller", "attention transfer"),
)

LOSSES = {entry.name: entry for entry in REGISTRY}
