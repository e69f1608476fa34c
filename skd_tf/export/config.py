"""The ``export:`` section of a run config (every key optional; the CLI flags override it).

Example::

    export:
      quantization: int8          # float32 | float16 | dynamic | int8 | qat
      output: labels              # labels (uint8 label map at input size) | logits (at model resolution)
      preprocess: true            # bake (x - mean) / std in: the app feeds raw uint8 RGB
      int8_io: uint8              # integer input type of int8/qat models: uint8 or int8
      calibration_samples: 200    # representative training images for int8 calibration
      calibration_percentile: null  # int8 activation ranges: null = extremes; p in (50, 100) = percentiles
      calibration_ranges: auto    # extremes | mean_extremes (the mean over the images of each image's
                                  # extremes) | auto: the extremes and the 99.99th percentile, keeping the
                                  # file the check prefers
      bias_correction_samples: 0  # int8: biases corrected on this many calibration images (0: off)
      eval_limit: null            # validation images for the TFLite mIoU (null: the whole split)
      qat: {steps: 300, batch_size: 8, learning_rate: 0.00001, schedule: constant, ce_weight: 1.0,
            pixel_weight: 10.0, temperature: 1.0, calibration_batches: 16, freeze_batch_norm: false,
            scale_range: null}
"""

from __future__ import annotations

from typing import Literal, Optional

import pydantic
from pydantic import Field

from skd_tf.config import _Section, section_error

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8", "qat")
# The percentile calibration_ranges auto tries beside the extremes. Measured (docs/export.md): on real images it
# keeps the most of the published ESPNets' labels of every range tried (CamVid 95.4-95.9 % against 79-88 % with the
# extremes, 91-95 % with the mean of each image's extremes; 99.9 and 99.5 clip more and keep less), on the
# synthetic students about what the extremes keep.
AUTO_PERCENTILE = 99.99
OUTPUTS = ("labels", "logits")


class QATConfig(_Section):
    """Quantization-aware fine-tuning: ce_weight · CE + pixel_weight · pixel-wise KL to the frozen teacher. On
    unlabelled images (``export.images``) there is no CE: the KL alone, to the teacher or else to the float
    network being exported."""

    steps: int = Field(300, ge=1)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(1e-5, gt=0)
    # constant, or cosine: from learning_rate down to 0 at the last step
    schedule: Literal["constant", "cosine"] = "constant"
    ce_weight: float = Field(1.0, ge=0)
    pixel_weight: float = Field(10.0, ge=0)
    temperature: float = Field(1.0, gt=0)
    calibration_batches: int = Field(16, ge=1)
    freeze_batch_norm: bool = False
    # the training split's random scaling during QAT (null: data.scale_range). QAT teaches the int8 twin the
    # images the file will see: [1, 1] when they are evaluated at their own size (CamVid at 360×480)
    scale_range: Optional[tuple[float, float]] = None
    seed: int = 0

    @pydantic.model_validator(mode="after")
    def _check_scale_range(self):
        if self.scale_range is not None and not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError("export.qat.scale_range must be 0 < low <= high")
        return self


class ExportConfig(_Section):
    """How a student checkpoint becomes a .tflite file, and how the export is checked."""

    quantization: Literal["float32", "float16", "dynamic", "int8", "qat"] = "int8"
    output: Literal["labels", "logits"] = "labels"
    # how the label map is made from the logits (skd_tf.export.label_heads): bilinear at full size then argmax
    # (what evaluation scores), the same labels decided between each cell's two best classes (two_class: a quarter
    # to a half of the cost, docs/real-size.md), bilinear to a half / a quarter then argmax and nearest, or nearest only
    label_head: Literal["bilinear", "two_class", "half", "quarter", "nearest"] = "bilinear"
    preprocess: bool = True
    input_size: Optional[tuple[int, int]] = None
    int8_io: Literal["uint8", "int8"] = "uint8"
    calibration_samples: int = Field(200, ge=1)
    # int8 activation ranges from the (100 − p)-th to the p-th percentile of the calibration values instead of
    # their extremes (skd_tf.export.calibration.percentile_ranges); docs/export.md says when it pays
    calibration_percentile: Optional[float] = Field(None, gt=50, lt=100)
    # int8 activation ranges: the extremes over the calibration images (TFLite's own), the mean over them of each
    # image's extremes (skd_tf.export.calibration.mean_extreme_ranges), or auto: int8 converted with the extremes
    # and with AUTO_PERCENTILE, the file whose labels agree more with the network's on the export's check images
    # kept; docs/export.md
    calibration_ranges: Literal["auto", "extremes", "mean_extremes"] = "auto"
    # int8 only: each convolution's bias corrected so that its output channels' means over this many calibration
    # images are the float network's (skd_tf.export.bias_correction); 0: off. docs/export.md says what it gains
    bias_correction_samples: int = Field(0, ge=0)
    eval_limit: Optional[int] = Field(None, ge=1)
    # unlabelled images (files, folders, glob patterns) to calibrate int8 on and check the files on instead of the
    # data set's training and validation splits: for a published model whose data set is not at hand
    images: Optional[list[str]] = None
    parity_images: int = Field(8, ge=1)
    savedmodel: bool = True
    teacher: Optional[str] = None
    qat: QATConfig = QATConfig()

    @pydantic.model_validator(mode="after")
    def _one_kind_of_ranges(self):
        if self.calibration_percentile is not None and self.calibration_ranges != "auto":
            raise ValueError("export.calibration_percentile and export.calibration_ranges "
                             f"{self.calibration_ranges} both set the int8 ranges: give one")
        return self

    def int8_calibrations(self) -> tuple[str, ...]:
        """The activation ranges int8 is converted with, each to a file of its own: ``extremes``,
        ``mean_extremes`` or ``pP`` (the P-th percentile) — under ``auto`` the extremes and ``AUTO_PERCENTILE``
        (the export keeps the file its check prefers), else the one asked for."""
        if self.calibration_percentile is not None:
            return (f"p{self.calibration_percentile!r}",)
        if self.calibration_ranges == "auto":
            return ("extremes", f"p{AUTO_PERCENTILE!r}")
        return (self.calibration_ranges,)


def parse_export(raw: dict | None, overrides: dict | None = None, source="config") -> ExportConfig:
    """The run config's ``export`` mapping with ``overrides`` (CLI flags, None = unset) on top."""
    merged = dict(raw or {})
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return ExportConfig.model_validate(merged)
    except pydantic.ValidationError as err:
        raise section_error(err, "export", source, ExportConfig) from None
