"""Every real config's path, one step at reduced size: benchmarks/real_size.py --tiny's settings, in-process.

The Cityscapes configs read full-size (2048×1024) fabricated scenes through the real tfds builder; the
distillation configs run at an odd crop (97: ⌈97/8⌉ = 13 maps, as 769 gives 97); ADE20K and pets read
tfds-mocked records at those datasets' usual image sizes. Widths are reduced, depths are not. The ResNet-101
teacher is built from its config and distilled from, not trained: its training step is the code every
`train` test runs, and tracing it at depth 101 cost 30–50 s of the suite (`benchmarks/real_size.py
--tiny` trains it).
"""

import json
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

from skd_tf.cli import main
from skd_tf.config import load_config
from skd_tf.models import build_model

from benchmarks import real_size
from benchmarks.cityscapes_fabric import write_cityscapes_zips

ROOT = Path(__file__).resolve().parents[1]


def run(command, name, out, extra=(), data_sets=()):
    sets = list(real_size.TINY_SETS) + list(data_sets) + [
        "train.steps=1", "train.steps_per_epoch=1", "model.pretrained=none", f"train.out_dir={out}"]
    args = [command, "--config", str(ROOT / "configs" / f"{name}.yaml"), "--quiet", *extra]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    scores = json.loads((out / "eval.json").read_text())
    timing = json.loads((out / "timing.json").read_text())
    assert timing["steps"] == 1 and 0 <= scores["miou"] <= 1
    return load_config(ROOT / "configs" / f"{name}.yaml", sets)


def test_cityscapes_configs_train_and_distil_one_step_at_an_odd_crop(tmp_path, traced_once):
    write_cityscapes_zips(tmp_path / "manual", real_size.TINY_COUNTS)
    data = [f"data.manual_dir={tmp_path / 'manual'}", f"data.data_dir={tmp_path / 'tfds'}"]
    teacher = load_config(ROOT / "configs" / "cityscapes_teacher.yaml",
                          real_size.TINY_SETS + ["model.pretrained=none"])
    assert teacher.model.backbone == "resnet101" and teacher.model.output_stride == 8
    network = build_model(teacher.model, teacher.data.num_classes, teacher.data.crop_size)
    assert sum(layer.name.endswith("_3_conv") for layer in network.layers) == 3 + 4 + 23 + 3  # bottleneck blocks
    assert network.get_layer("conv5_block2_2_conv").dilation_rate == (4, 4)  # output stride 8
    (tmp_path / "teacher").mkdir()
    network.save(tmp_path / "teacher" / "model.keras")
    # cityscapes_student is the distillation configs' student: its build and data path run below
    assert load_config(ROOT / "configs" / "cityscapes_student.yaml").model.backbone == "resnet18"
    crop = real_size.TINY_DISTILL_CROP
    assert crop % 8  # the odd size is the point
    # the reference-code variant: its pooled pair-wise nodes, logits critic and aux head are the
    # size-sensitive parts (cityscapes_skd's full-graph pair-wise and image critic run in test_distill)
    for name in ("cityscapes_skd_reference_code",):
        cfg = run("distill", name, tmp_path / name, ["--teacher", str(tmp_path / "teacher" / "model.keras")],
                  data + [f"data.crop_size=[{crop},{crop}]"])
        assert cfg.distill["holistic"] and cfg.data.crop_size == (crop, crop)


@pytest.mark.parametrize("name", ["pets_student", "ade20k_student"])
def test_tfds_configs_train_one_step_on_records_at_their_usual_size(tmp_path, name):
    source = load_config(ROOT / "configs" / f"{name}.yaml").data.source
    with tfds.testing.mock_data(as_dataset_fn=real_size.mock_records(source, 2)):
        run("train", name, tmp_path / name, data_sets=[f"data.data_dir={tmp_path / 'tfds'}"])


def test_the_deployment_table_puts_each_quantization_beside_float32():
    def row(student, q, threads, ms, size):
        return {"student": student, "size": "512x1024", "quantization": q, "threads": threads, "mean_ms": ms,
                "p95_ms": ms + 1, "bytes": size * 2**20, "peak_rss_mb": 100}

    rows = [row("lraspp_mobilenetv2", "float32", 2, 40.0, 4.0), row("lraspp_mobilenetv2", "int8", 2, 10.0, 1.0),
            row("lraspp_mobilenetv2", "float16", 2, 41.0, 2.0), row("pspnet_resnet18", "float32", 1, 100.0, 50.0)]
    lines = real_size.deployment_table(rows).splitlines()
    assert len(lines) == 4 and all(line.count("|") == lines[0].count("|") for line in lines)
    assert lines[0].index("float32 ms") < lines[0].index("float16 ms") < lines[0].index("int8 ms")
    assert lines[2] == ("| lraspp_mobilenetv2 | 512×1024 | 2 | 40.0 (41.0) | 41.0 (42.0) | 10.0 (11.0) | 0.25 | "
                        "4.00/2.00/1.00 | 0.250 | 100/100/100 |")
    assert lines[3].startswith("| pspnet_resnet18 | 512×1024 | 1 | 100.0 (101.0) | – | – | – |")
