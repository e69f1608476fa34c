"""The MobileNetV3 phone students end to end at a tiny size: LR-ASPP MobileNetV3-Large distilled a step
(pixel-wise, synthetic_skd_pi with this student) and exported to float32 and int8 (post-training); -Small
built from its synthetic config and exported by QAT (two fine-tuning steps) with int8 I/O and logits
output — integer-only with hard-swish (as ADD/MUL, which XNNPACK runs in int8) and squeeze-excite — and
the files run."""

import json
from pathlib import Path

import numpy as np
import pytest

from skd_tf.benchmark import runtime
from skd_tf.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.synthetic.num_train=8", "data.synthetic.num_val=3", "data.synthetic.image_size=48",
        "data.crop_size=[48,48]", "model.width=0.75", "model.head_channels=16", "train.batch_size=2",
        "train.steps=1", "train.steps_per_epoch=1", "eval.batch_size=3"]
# (one int8 conversion: the default's second, at the 99.99th percentile, has the same ops; tested on its own)
EXPORTS = {"mobilenetv3_large": ["--quantization", "float32,int8", "--calibration-ranges", "extremes"],
           "mobilenetv3_small": ["--quantization", "qat", "--qat-steps", "2", "--output", "logits",
                                 "--int8-io", "int8"]}


@pytest.mark.parametrize("variant", sorted(EXPORTS))
def test_mobilenetv3_student_trains_exports_and_runs(tmp_path, variant, traced_once):
    config = str(ROOT / "configs" / f"synthetic_lraspp_{variant}.yaml")
    sets = [a for s in TINY + [f"train.out_dir={tmp_path / 'run'}"] for a in ("--set", s)]
    if variant == "mobilenetv3_large":  # distilled from a tiny untrained teacher (what is checked is the student)
        from small_networks import small_segmenter

        small_segmenter(6, 4, size=(48, 48), name="teacher").save(tmp_path / "teacher.keras")
        student = [a for s in ("model.arch=lraspp", f"model.backbone={variant}", "model.output_stride=16",
                               "model.bn_momentum=0.99") for a in ("--set", s)]
        assert main(["distill", "--config", str(ROOT / "configs" / "synthetic_skd_pi.yaml"), "--teacher",
                     str(tmp_path / "teacher.keras"), "--quiet", *sets, *student]) == 0
        assert json.loads((tmp_path / "run" / "eval.json").read_text())["teacher_distance"]["pixel_kl"] > 0
        from skd_tf.models import load_model

        last = load_model(tmp_path / "run" / "model.keras").get_layer("expanded_conv_14_depthwise")
        assert last.dilation_rate == (2, 2)  # the distilled student is the dilated MobileNetV3-Large
        assert json.loads((tmp_path / "run" / "timing.json").read_text())["steps"] == 1
    else:  # built, not trained: a training step of LR-ASPP is the distillation above, and QAT fine-tunes this one
        from skd_tf.config import load_config
        from skd_tf.models import build_model

        cfg = load_config(config, TINY)
        (tmp_path / "run").mkdir()
        build_model(cfg.model, cfg.data.num_classes, tuple(cfg.data.crop_size)).save(tmp_path / "run" / "model.keras")
    assert main(["export", "--config", config, "--checkpoint", str(tmp_path / "run" / "model.keras"),
                 *EXPORTS[variant], "--calibration-samples", "2", "--eval-limit", "3", "--no-savedmodel",
                 "--out", str(tmp_path / "export"), "--quiet", *sets]) == 0
    exports = json.loads((tmp_path / "export" / "export.json").read_text())["exports"]
    image = np.random.default_rng(0).integers(0, 256, (1, 48, 48, 3)).astype(np.uint8)
    for quantization, entry in exports.items():
        deploy = entry["deployability"]
        if quantization == "float32":  # the converter's fused op, which XNNPACK runs in float
            assert "HARD_SWISH" in deploy["ops"]
        else:  # hard-swish as ADD, MUL, MUL: XNNPACK has no int8 HARD_SWISH
            assert deploy["all_integer"] is True and "HARD_SWISH" not in deploy["ops"]
            assert {"DEPTHWISE_CONV_2D", "MEAN", "MUL", "ADD"} <= set(deploy["ops"])
        out = runtime.run(runtime.make_interpreter(entry["file"]), image)
        if "--output" in EXPORTS[variant]:  # logits at LR-ASPP's stride 8, int8 in and out
            assert deploy["input"]["dtype"] == "int8" and deploy["output"]["dtype"] == "int8"
            assert out.shape[-3:] == (6, 6, 6) and np.isfinite(out).all()
        else:
            assert out.shape[-2:] == (48, 48) and out.max() < 6
    if variant == "mobilenetv3_small":
        assert exports["qat"]["qat"]["teacher"] is None  # the synthetic student config has no teacher: CE only
