"""The ``distill:`` section of a run config, validated like the rest.

Example::

    distill:
      teacher: runs/synthetic_teacher/model.keras
      strategy: default            # default | mirrored | multi_worker
      losses:                      # any combination; options are the loss class's arguments
        pixel: {weight: 10.0, temperature: 1.0}
        pairwise: {weight: 10.0, granularity: 1, pool: max}
      holistic: {weight: 0.1, n_critic: 1, loss_type: wgan-gp, learning_rate: 0.0004,
                 critic_loss_weight: null, gp_reduction: mean}   # null: scale by weight, as the reference
      knowledge_adaptation: {pretrain_steps: 200, code_channels: 32}

A loss's options are checked against its constructor (``skd_tf.losses.LOSSES``):
an unknown option or a wrong type is an error naming ``distill.losses.<name>.<option>``.
"""

from __future__ import annotations

import inspect
import typing
from functools import lru_cache
from typing import Literal, Optional

import pydantic
from pydantic import ConfigDict, Field

from skd_tf.config import ConfigError, ConfigOrigin, _Section, as_origin, did_you_mean, section_error
from skd_tf.losses import LOSSES, HolisticDistillation



class LossSpec(_Section):
    """One configured loss: its weight λ and its constructor options."""

    model_config = ConfigDict(extra="allow")
    weight: float = Field(ge=0)

    @property
    def options(self) -> dict:
        return dict(self.model_extra or {})


@lru_cache(maxsize=None)
def _options_model(name: str) -> type[pydantic.BaseModel]:
    """A pydantic model of the keyword arguments of the loss class registered as ``name``."""
    entry = LOSSES[name]
    hints = typing.get_type_hints(entry.cls.__init__)
    fields = {}
    for param in list(inspect.signature(entry.cls.__init__).parameters.values())[1:]:  # after self
        if param.name in entry.config_options or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        fields[param.name] = (hints.get(param.name, typing.Any), param.default)
    return pydantic.create_model(f"{entry.cls.__name__}Options", __config__=ConfigDict(extra="forbid"), **fields)


class HolisticSpec(_Section):
    """The adversarial term: weight λ_ho of −D(Q^S|I), the critic and its own optimizer."""

    weight: float = Field(0.1, ge=0)
    n_critic: int = Field(1, ge=1)
    loss_type: Literal["wgan-gp", "hinge"] = "wgan-gp"
    critic_input: Literal["softmax_image", "logits"] = "softmax_image"
    gp_weight: float = Field(10.0, ge=0)
    critic_width: float = Field(1.0, gt=0)
    # the critic's optimizer: the reference code's SGD (momentum, weight decay, poly decay) or Adam with
    # WGAN-GP's (Gulrajani et al. 2017) β1 = 0, β2 = 0.9 (`momentum` is β1 then), same poly decay
    optimizer: Literal["sgd", "adam"] = "sgd"
    learning_rate: float = Field(4e-4, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    # The critic minimises critic_loss_weight × its objective. None: the holistic weight λ_ho, as the
    # reference code does (d_loss = lambda_d · (adv + GP), lambda_d = 0.1); 1.0: the unscaled objective.
    critic_loss_weight: Optional[float] = Field(None, gt=0)
    gp_reduction: Literal["mean", "sum"] = "mean"

    def build(self, seed: int) -> HolisticDistillation:
        """The adversarial term (with an unbuilt critic) this section describes."""
        return HolisticDistillation(self.critic_input, self.loss_type, self.gp_weight, self.critic_width, seed=seed,
                                    gp_reduction=self.gp_reduction, name="holistic_loss")

    @property
    def critic_scale(self) -> float:
        """The factor on the critic's objective before its optimizer step."""
        return self.weight if self.critic_loss_weight is None else self.critic_loss_weight


class KnowledgeAdaptationSpec(_Section):
    """Stage 1 of knowledge adaptation: the teacher-feature auto-encoder."""

    code_channels: int = Field(64, ge=1)
    # the encoder's first stride; auto: teacher map size / student map size (the paper: 1/8 → 1/16 = 2),
    # so the code has the student's resolution
    code_stride: Literal["auto", 1, 2] = "auto"
    pretrain_steps: int = Field(200, ge=1)
    pretrain_learning_rate: float = Field(1e-3, gt=0)
    alpha: float = Field(1e-7, ge=0)


class DistillConfig(_Section):
    """What to distil from which teacher, and where to run it."""

    teacher: str
    strategy: Literal["default", "mirrored", "multi_worker"] = "default"
    losses: dict[str, LossSpec] = {}
    holistic: Optional[HolisticSpec] = None
    knowledge_adaptation: KnowledgeAdaptationSpec = KnowledgeAdaptationSpec()
    nan_check: bool = True
    # the student's gradient from every λ (λ_ho too) grows linearly from 0 to full over the first N steps
    # (0: full weight from step 1); the losses' own adapters learn at full weight throughout
    rampup_steps: int = Field(0, ge=0)
    # every N steps: each term's gradient norm relative to CE's (TensorBoard, gradient_shares.jsonl,
    # eval.json); 0 turns it off
    diagnostics_every: int = Field(100, ge=0)
    # after training: the student's distances to the teacher on the validation split into eval.json (a second
    # pass over it with both networks, minutes with a ResNet-101 teacher on a CPU); false skips it
    teacher_distances: bool = True


def resolved_distill(cfg: DistillConfig) -> dict:
    """The distill section with every default filled in, each loss's constructor options included (what
    ``skd-tf config`` prints)."""
    resolved = cfg.model_dump(mode="json")
    resolved["losses"] = {name: {"weight": spec.weight,
                                 **_options_model(name).model_validate(spec.options).model_dump(mode="json")}
                          for name, spec in cfg.losses.items()}
    return resolved


def parse_distill(raw: dict | None, source: "str | ConfigOrigin" = "config") -> DistillConfig:
    """Validates a run config's ``distill`` mapping, including every loss's options; errors name the
    file or ``--set`` override of ``source`` (a RunConfig's ``origin``)."""
    origin = as_origin(source)
    if not raw:
        raise ConfigError(f"{origin.path} has no distill: section (teacher, losses, ...)")
    try:
        cfg = DistillConfig.model_validate(raw)
    except pydantic.ValidationError as err:
        raise section_error(err, "distill", origin, DistillConfig) from None
    known = [n for n in LOSSES if n != "holistic"]
    for name, spec in cfg.losses.items():
        key = f"distill.losses.{name}"
        if name == "holistic":
            raise ConfigError(origin.error(key, "configure the adversarial term under distill.holistic"))
        if name not in LOSSES:
            raise ConfigError(origin.error(key, f"unknown loss{did_you_mean(name, known, 'distill.losses.')}; "
                                                f"choose from {', '.join(known)}"))
        options = _options_model(name)
        try:
            options.model_validate(spec.options)
        except pydantic.ValidationError as err:
            e = err.errors()[0]
            option = ".".join(str(p) for p in e["loc"])
            problem = (f"unknown option{did_you_mean(option, options.model_fields, key + '.')}"
                       if e["type"] == "extra_forbidden" else e["msg"])
            raise ConfigError(origin.error(f"{key}.{option}", problem)) from None
    if not cfg.losses and cfg.holistic is None:
        raise ConfigError(origin.error("distill.losses", "empty, and there is no distill.holistic"))
    return cfg
