"""Typed, validated run configuration loaded from YAML.

A config file has the sections ``data``, ``model``, ``train`` and ``eval`` plus a
``name`` and a ``seed``. Every section is a pydantic model with ``extra="forbid"``,
so a misspelt key or a value of the wrong type is rejected with an error that
names the dotted key (for example ``train.lerning_rate: unknown key``).
"""

from __future__ import annotations

import difflib
import math
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class ConfigError(ValueError):
    """A config file is missing, unparsable, or has an unknown key or bad value."""


@dataclass(frozen=True)
class ConfigOrigin:
    """Where a config's values came from: its file and the ``--set`` overrides applied on top.

    ``of(key)`` names the override that set ``key`` (or a key inside it, or a section holding it),
    else the file, so an error is blamed on what the user actually typed.
    """

    path: str = "<dict>"
    overrides: tuple[str, ...] = ()

    def of(self, key: str) -> str:
        for item in reversed(self.overrides):
            set_key = item.split("=", 1)[0].strip()
            if key == set_key or key.startswith(set_key + ".") or set_key.startswith(key + "."):
                return f"--set {item}"
        return self.path

    def error(self, key: str, problem: str) -> str:
        """One line: ``invalid config <file or --set ...>: <key>: <problem>``."""
        return f"invalid config {self.of(key)}: {key}: {problem}"


def as_origin(source: "str | ConfigOrigin") -> ConfigOrigin:
    return source if isinstance(source, ConfigOrigin) else ConfigOrigin(str(source))


def did_you_mean(word: str, choices, prefix: str = "") -> str:
    """`` (did you mean <prefix>x?)`` when ``word`` is close to one of ``choices``, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticConfig(_Section):
    """Options of the built-in procedural dataset (see skd_tf.data.synthetic)."""

    num_train: int = Field(2000, ge=1)
    num_val: int = Field(200, ge=1)
    image_size: int = Field(64, ge=16)
    min_objects: int = Field(1, ge=0)
    max_objects: int = Field(3, ge=1)
    max_rotation: float = Field(15.0, ge=0, le=180)
    seed: int = 0


class DataConfig(_Section):
    """Where images come from and how they are augmented."""

    source: Literal["synthetic", "cityscapes", "scene_parse150", "oxford_iiit_pet", "folder"] = "synthetic"
    num_classes: int = Field(6, ge=2)
    ignore_label: int = Field(255, ge=0, le=255)
    train_split: str = "train"
    val_split: str = "validation"
    # the last `holdout` examples of train_split are withheld from training and form the split
    # "train_holdout" (choose weights there, never on the validation split a table reports)
    holdout: int = Field(0, ge=0)
    # tensorflow-datasets options
    data_dir: Optional[str] = None
    manual_dir: Optional[str] = None
    # folder dataset: <dir>/images/*.jpg|png and <dir>/masks/<stem>.png; or, with <split>_masks_dir set, the
    # images directly in <dir> and their masks in that folder (SegNet's CamVid: train/ and trainannot/)
    train_dir: Optional[str] = None
    val_dir: Optional[str] = None
    train_masks_dir: Optional[str] = None
    val_masks_dir: Optional[str] = None
    synthetic: SyntheticConfig = SyntheticConfig()
    # training augmentation
    crop_size: tuple[int, int] = (64, 64)
    scale_range: tuple[float, float] = (0.75, 1.5)
    hflip: bool = True
    # validation: "whole" keeps every image as it is, "resize" resizes to val_size
    val_mode: Literal["whole", "resize"] = "resize"
    val_size: Optional[tuple[int, int]] = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    shuffle_buffer: int = Field(1000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "DataConfig":
        if self.scale_range[0] <= 0 or self.scale_range[0] > self.scale_range[1]:
            raise ValueError("data.scale_range must be 0 < low <= high")
        if min(self.crop_size) < 1:
            raise ValueError("data.crop_size must be positive")
        if self.source == "folder" and not self.train_dir:
            raise ValueError("data.train_dir is required when data.source is 'folder'")
        for key in ("train_masks_dir", "val_masks_dir"):
            if getattr(self, key) and self.source != "folder":
                raise ValueError(f"data.{key} applies to the folder dataset (data.source: folder), "
                                 f"not to {self.source!r}")
        if self.val_masks_dir and not self.val_dir:
            raise ValueError("data.val_masks_dir needs data.val_dir, the folder of the images")
        return self

    @property
    def eval_size(self) -> tuple[int, int]:
        """The fixed validation size (val_size, or the crop size when unset)."""
        return tuple(self.val_size or self.crop_size)

    def folder_dirs(self, training: bool) -> tuple[Optional[str], Optional[str]]:
        """The folder dataset's (images folder, masks folder or None) of the training split or of the others."""
        return (self.train_dir, self.train_masks_dir) if training else (self.val_dir, self.val_masks_dir)


class InputConventionConfig(_Section):
    """What a network trained elsewhere expects: its input is (value_scale·pixel − mean)/std per channel,
    channels in ``channel_order`` (mean and std listed in that order). See skd_tf.models.input_convention."""

    channel_order: Literal["rgb", "bgr"] = "rgb"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    value_scale: float = Field(1.0, gt=0)  # 1 for pixels in 0..255, 1/255 for 0..1


ESPNET_ARCHS = ("espnet", "espnet_c")
# keras.applications' phone backbones and the heads built on them
MOBILE_ARCHS = {"mobilenetv2": ("lraspp",), "mobilenetv3_large": ("lraspp", "deeplabv3"),
                "mobilenetv3_small": ("lraspp", "deeplabv3")}
MOBILE_BACKBONES = tuple(MOBILE_ARCHS)
# published networks on a deep-stem ResNet-18/101 whose checkpoints import tensor for tensor
DEEP_STEM_ARCHS = ("skd_pspnet", "cirkd_deeplabv3", "cirkd_pspnet")


class ModelConfig(_Section):
    """A segmentation network: backbone + head (see skd_tf.models)."""

    # skd_pspnet: the SKD reference code's PSPNet (deep stem, leaky-ReLU pyramid, "dsn" auxiliary head), whose
    # published teacher and student checkpoints import exactly (skd_tf.models.skd_pspnet)
    # cirkd_deeplabv3 / cirkd_pspnet: CIRKD's networks on its deep-stem ResNet (skd_tf.models.cirkd)
    arch: Literal["pspnet", "deeplabv3", "lraspp", "espnet", "espnet_c", "skd_pspnet", "cirkd_deeplabv3",
                  "cirkd_pspnet"] = "pspnet"
    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101", "mobilenetv2", "mobilenetv3_large",
                      "mobilenetv3_small", "espnet"] = "resnet18"
    output_stride: Literal[8, 16, 32] = 8
    width: float = Field(1.0, gt=0, le=4)
    head_channels: int = Field(512, ge=4)
    aux_head: bool = False
    dropout: float = Field(0.1, ge=0, lt=1)
    # "none", "imagenet" (keras.applications' weights), or a PyTorch checkpoint (.pth) whose tensors
    # initialise the backbone strictly (skd_tf.models.torch_weights)
    pretrained: str = "none"
    # ESPNet's depth multipliers p and q: ESP blocks at 1/4 and at 1/8 (the SKD code's (2, 8))
    espnet_blocks: tuple[int, int] = (2, 8)
    # the input a network trained elsewhere expects; None: the pipeline's own (data.mean, data.std)
    input_convention: Optional[InputConventionConfig] = None
    # every batch norm's moving-average momentum; None keeps each layer's own (keras.applications' 0.999
    # needs thousands of steps to follow the weights: a short fine-tune of a MobileNet wants e.g. 0.9)
    bn_momentum: Optional[float] = Field(None, ge=0, lt=1)
    # MobileNetV3 only: the last stage's channels halved, as the MobileNetV3 paper's segmentation networks do
    # ("reduced tail"; torchvision's reduced_tail=True); that stage then has no ImageNet weights
    reduced_tail: bool = False

    @model_validator(mode="before")
    @classmethod
    def _espnet_backbone(cls, raw):
        if isinstance(raw, dict) and raw.get("arch") in ESPNET_ARCHS and "backbone" not in raw:
            raw = {**raw, "backbone": "espnet"}
        return raw

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if (self.arch in ESPNET_ARCHS) != (self.backbone == "espnet"):
            raise ValueError("model.arch 'espnet' / 'espnet_c' and model.backbone 'espnet' go together")
        if self.reduced_tail and not self.backbone.startswith("mobilenetv3"):
            raise ValueError(f"model.reduced_tail is a MobileNetV3 option, not one of {self.backbone!r}")
        if self.arch in ESPNET_ARCHS:
            if self.pretrained == "imagenet":
                raise ValueError("model.pretrained 'imagenet' has no ESPNet weights; name an ESPNet-C .pth")
            if min(self.espnet_blocks) < 0:
                raise ValueError("model.espnet_blocks must be two counts >= 0")
            return self
        if self.arch in DEEP_STEM_ARCHS:
            if self.backbone not in ("resnet18", "resnet101") or self.output_stride != 8 or self.width != 1.0:
                raise ValueError(f"model.arch {self.arch!r} is a published network: backbone resnet18 or "
                                 f"resnet101, output_stride 8, width 1.0")
            if self.pretrained == "imagenet":
                raise ValueError(f"model.arch {self.arch!r} has a deep stem keras.applications' ImageNet weights "
                                 f"do not fit; name the deep-stem ImageNet checkpoint (resnet18-imagenet.pth)")
            return self
        mobile = self.backbone in MOBILE_BACKBONES
        if self.reduced_tail and self.pretrained == "imagenet":
            raise ValueError("model.reduced_tail halves the last stage, whose ImageNet weights then do not fit: "
                             "set model.pretrained none, or model.reduced_tail false")
        if self.arch == "lraspp" and not mobile:
            raise ValueError(f"model.arch 'lraspp' needs a mobile backbone ({', '.join(MOBILE_BACKBONES)})")
        if mobile and self.arch not in MOBILE_ARCHS[self.backbone]:
            raise ValueError(f"model.backbone {self.backbone!r} is used with model.arch "
                             f"{' or '.join(map(repr, MOBILE_ARCHS[self.backbone]))}")
        if mobile and self.output_stride == 8:
            raise ValueError(f"model.output_stride 8 is not available for {self.backbone} (use 16 or 32)")
        return self

    @property
    def pretrained_file(self) -> Optional[str]:
        """The checkpoint path of ``pretrained`` (None for "none" and "imagenet")."""
        return None if self.pretrained in ("none", "imagenet") else os.path.expanduser(self.pretrained)


class TrainConfig(_Section):
    """Optimisation schedule: SGD + momentum (the paper's) or AdamW, weight decay, poly learning rate."""

    optimizer: Literal["sgd", "adamw"] = "sgd"
    batch_size: int = Field(8, ge=1)
    steps: int = Field(1000, ge=1)
    steps_per_epoch: int = Field(100, ge=1)
    learning_rate: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    poly_power: float = Field(0.9, ge=0)
    aux_weight: float = Field(0.4, ge=0)
    out_dir: str = "runs/default"
    jit_compile: bool = False
    mixed_precision: Optional[Literal["mixed_float16", "mixed_bfloat16"]] = None

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.steps % self.steps_per_epoch:
            raise ValueError(f"train.steps ({self.steps}) must be a multiple of train.steps_per_epoch "
                             f"({self.steps_per_epoch}); set train.steps_per_epoch too, e.g. "
                             f"--set train.steps_per_epoch={math.gcd(self.steps, self.steps_per_epoch)}")
        return self

    @property
    def epochs(self) -> int:
        return self.steps // self.steps_per_epoch


class EvalConfig(_Section):
    batch_size: int = Field(8, ge=1)


class RunConfig(_Section):
    """A whole run: what to train on, what to train, and how."""

    name: str = "run"
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    # Sections owned by later stages (distillation, export) are accepted as raw
    # mappings here and validated by the stage that reads them.
    distill: Optional[dict] = None
    export: Optional[dict] = None
    _origin: ConfigOrigin = PrivateAttr(default_factory=ConfigOrigin)

    @property
    def origin(self) -> ConfigOrigin:
        """The file and ``--set`` overrides this config was read from (names them in later errors)."""
        return self._origin


def _section_class(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``loc`` below ``model`` (None past a plain dict)."""
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model


def _problem(e: dict, model: type[BaseModel], section: str) -> str:
    """What is wrong with one pydantic error, in words (without dumping a whole section)."""
    if e["type"] == "extra_forbidden":
        parent = _section_class(model, tuple(e["loc"][:-1]))
        prefix = "".join(f"{p}." for p in (section, *e["loc"][:-1]) if p)
        return "unknown key" + (did_you_mean(str(e["loc"][-1]), parent.model_fields, prefix) if parent else "")
    message = e["msg"].removeprefix("Value error, ")
    value = e.get("input")
    if isinstance(value, (dict, list)) or e["type"] == "value_error":
        return message
    return f"{message} (got {value!r})"


def section_error(err: pydantic.ValidationError, section: str, source: "str | ConfigOrigin",
                  model: type[BaseModel] | None = None) -> ConfigError:
    """A ConfigError with one line ``invalid config <where>: section.key: problem`` per invalid key of a
    raw config section; ``model`` (the section's pydantic class) lets an unknown key suggest a known one."""
    origin = as_origin(source)
    lines = []
    for e in err.errors():
        key = ".".join([section] * bool(section) + [str(p) for p in e["loc"]]) or "<top level>"
        problem = _problem(e, model or _Section, section)
        whole_section = e["type"] == "value_error" and _section_class(model or _Section, tuple(e["loc"])) is not None
        # a section's own check (e.g. steps vs steps_per_epoch) names its keys itself
        lines.append(f"invalid config {origin.of(key)}: {problem}" if whole_section else origin.error(key, problem))
    return ConfigError("\n".join(lines))


def config_from_dict(raw: dict, source: "str | ConfigOrigin" = "<dict>") -> RunConfig:
    """Validates a plain mapping into a RunConfig, raising ConfigError naming the bad key (and where it was
    set: the file or a ``--set`` override)."""
    origin = as_origin(source)
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid config {origin.path}: the top level must be a mapping")
    try:
        cfg = RunConfig.model_validate(raw)
    except pydantic.ValidationError as err:
        raise section_error(err, "", origin, RunConfig) from None
    cfg._origin = origin
    return cfg


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def read_yaml(path: Path, seen: tuple = ()) -> dict:
    """A config file as a mapping; ``base: other.yaml`` (relative to the file) is read first and
    deep-merged under the file's own keys."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"config file {path} includes itself through base:")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping")
    base = raw.pop("base", None)
    if base is None:
        return raw
    return _merge(read_yaml(path.parent / base, seen + (path.resolve(),)), raw)


def load_config(path: str | os.PathLike, overrides: Optional[list[str]] = None) -> RunConfig:
    """Reads a YAML config (with its ``base:`` chain) and applies ``key.sub=value`` overrides."""
    path = Path(path)
    raw = read_yaml(path)
    for item in overrides or []:
        apply_override(raw, item)
    return config_from_dict(raw, ConfigOrigin(str(path), tuple(overrides or ())))


def apply_override(raw: dict, item: str) -> None:
    """Sets ``a.b.c=value`` in a nested mapping; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"invalid --set {item}: {p} is not a section")
    node[parts[-1]] = yaml.safe_load(value)
