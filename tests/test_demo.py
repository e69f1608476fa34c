"""`skd-tf demo` end to end at toy sizes (and its reuse of finished stages); the FLOP count by hand."""

import json

import keras

from skd_tf.cli import main
from skd_tf.models.flops import count_flops

TINY = ["data.crop_size=[32,32]", "data.synthetic.num_train=16", "data.synthetic.num_val=4",
        "data.synthetic.image_size=32", "train.steps=2", "train.steps_per_epoch=1", "train.batch_size=4",
        "eval.batch_size=4", "export.calibration_samples=4", "model.head_channels=8",
        "distill.holistic.n_critic=1"]  # one critic update a step: the compiled graph stays small


def test_demo_runs_every_stage_then_reuses_them(tmp_path, capsys, traced_once):
    argv = ["demo", "--runs-dir", str(tmp_path)] + [a for item in TINY for a in ("--set", item)]
    demo = tmp_path / "demo"
    demo.mkdir()
    for name in ("report.md", "predictions.png", "per_class_iou.png", "latency_miou.png"):
        (demo / name).write_text("left by an earlier run")  # a stage runs: the report is made again
    assert main(argv + ["--quiet"]) == 0
    report = (demo / "report.md").read_text()
    for name in ("predictions.png", "per_class_iou.png", "latency_miou.png"):
        assert (demo / name).stat().st_size > 1000 and f"({name})" in report
    rows = [line for line in report.splitlines() if line.startswith("| ") and "| TFLite " in line]
    assert len(rows) == 4  # teacher, baseline, distilled float32, distilled int8
    assert "int8" in rows[-1] and "distilled" in rows[-1]
    scores = json.loads((demo / "scores.json").read_text())
    base, dist = 100 * scores["baseline"]["miou"], 100 * scores["distilled"]["miou"]
    assert (f"{dist:.2f} vs {base:.2f}" in report)
    assert ("NOT above the baseline" in report) == (dist <= base)  # said plainly either way
    bench = json.loads((demo / "benchmark.json").read_text())
    assert len(bench) == 4 and all(r["threads"] == 2 and r["latency_ms"]["mean"] > 0 for r in bench)
    assert f"report: {demo / 'report.md'}" in capsys.readouterr().out

    made = {path: path.stat().st_mtime_ns for path in [tmp_path / "synthetic_teacher" / "model.keras", *demo.iterdir()]}
    assert main(argv) == 0
    out = capsys.readouterr().out
    for stage in ("1/7 teacher: reusing", "2/7 baseline: reusing", "3/7 distilled student: reusing",
                  "4/7 evaluation: reusing", "5/7 export of the distilled: reusing", "6/7 latency: reusing",
                  "7/7 report: reusing"):
        assert stage in out
    assert {path: path.stat().st_mtime_ns for path in made} == made  # nothing written again


def test_flops_by_hand():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)              # 2·3·3·3·4 · 64
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 2·3·3·4·1 · 16
    x = keras.layers.Conv2D(6, 1, groups=2)(x)                         # 2·1·1·2·6 · 16
    x = keras.layers.Dense(5)(x)                                       # 2·6·5 · 16
    model = keras.Model(inputs, x)
    assert count_flops(model) == 2 * (3 * 3 * 3 * 4 * 64 + 3 * 3 * 4 * 16 + 2 * 6 * 16 + 6 * 5 * 16)


def test_demo_rejects_bad_thread_count(capsys):
    assert main(["demo", "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err


