"""The phone-student and ARM64 scripts' own logic: tables from records, output comparison, HWCAP decoding,
and the runtime-only output worker on a real file (the training, timing and emulation themselves are
benchmarks, not tests)."""

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import (arm64_check, calibration_percentile, int8_kernels, label_head, phone_students,
                        two_class_switch)
from benchmarks.tflite_outputs import aarch64_features

ROOT = Path(__file__).resolve().parents[1]


def test_accuracy_table_pairs_each_mobilenetv3_with_mobilenetv2_over_shared_seeds():
    found = {"mobilenetv2": {0: 0.60, 1: 0.62, 2: 0.64}, "mobilenetv3_large": {0: 0.61, 1: 0.64, 2: 0.64},
             "mobilenetv3_small": {0: 0.55}}
    table = phone_students.accuracy_table(found)
    # differences +1, +2, 0 points: mean +1, sd 1, t(0.975, 2) = 4.303 -> ±2.48
    assert "| 0,1,2 | 61.00, 64.00, 64.00 | 63.00 | +1.00 [-1.48, +3.48] |" in table
    assert "| 0 | 55.00 | 55.00 | -5.00 (1 seed) |" in table
    assert "| LR-ASPP mobilenetv2 (`synthetic_lraspp_mobilenetv2`) | 0,1,2 | 60.00, 62.00, 64.00 | 62.00 |  |" in table


def test_latency_table_gives_int8_over_float32_and_each_heads_share():
    rows = [{"quantization": q, "output": o, "threads": t, "mean_ms": ms * (1 if o == "labels" else 0.8) / t,
             "p95_ms": 0.0, "bytes": 2 ** 20 * (4 if q == "float32" else 1)}
            for q, ms in (("float32", 100.0), ("float16", 90.0), ("int8", 40.0)) for o in ("labels", "logits")
            for t in (1, 2)]
    rows.append({"quantization": "int8", "output": phone_students.TWO_CLASS, "threads": 1, "mean_ms": 35.0,
                 "p95_ms": 0.0, "bytes": 2 ** 20})
    record = {"student": "lraspp_mobilenetv3_large", "size": [512, 1024], "parameters": 3_210_000, "rows": rows,
              "host": {"model": "Some CPU", "features": ["avx2"]}, "bn_statistics": "set"}
    lines = phone_students.latency_table([record]).splitlines()
    # two_class: 1 - 32 / 35 = 8.6 % of its int8 file; the 2-thread row has no two_class timing
    assert lines[2] == ("| lraspp_mobilenetv3_large | 3.21 M | 512×1024 | 1 | 100.0 / 80.0 | 90.0 / 72.0 | "
                        "40.0 / 32.0 | 35.0 | 0.40 | 20 % / 9 % | 1.00 |")
    assert lines[3] == ("| lraspp_mobilenetv3_large | 3.21 M | 512×1024 | 2 | 50.0 / 40.0 | 45.0 / 36.0 | "
                        "20.0 / 16.0 | – | 0.40 | 20 % / – | 1.00 |")
    assert lines[-1] == "CPU: Some CPU (avx2)"
    record["not_applicable"] = [["int8", phone_students.TWO_CLASS]]  # logits at the input size: argmax alone
    lines = phone_students.latency_table([record]).splitlines()
    assert "| 40.0 / 32.0 | = argmax | 0.40 | 20 % / – |" in lines[2] and lines[-1].startswith("= argmax:")
    # timed in interleaved rounds: medians per cell, int8 / float32 and the share paired by round
    for row in rows:
        row["rounds_ms"] = [row["mean_ms"]] * 3
    by = {(r["quantization"], r["output"], r["threads"]): r for r in rows}
    by["int8", "labels", 1]["rounds_ms"] = [40.0, 50.0, 30.0]  # median 40, per-round ratios 0.4 0.5 0.3
    by["int8", "logits", 1]["rounds_ms"] = [32.0, 30.0, 27.0]  # per-round shares 20 %, 40 %, 10 %
    record["settings"] = {"rounds": 3}
    lines = phone_students.latency_table([record]).splitlines()
    assert "| 40.0 / 32.0 | = argmax | 0.40 | 20 % / – |" in lines[2]
    by["int8", "logits", 1]["rounds_ms"] = [36.0, 30.0, 27.0]  # shares 10 %, 40 %, 10 %: median 10 %
    lines = phone_students.latency_table([record]).splitlines()
    assert "| = argmax | 0.40 | 10 % / – |" in lines[2]
    assert "CPU: Some CPU (avx2); each cell the median of 3 interleaved rounds" in lines
    del record["bn_statistics"], record["not_applicable"]  # a record of an untrained network's files is marked
    lines = phone_students.latency_table([record]).splitlines()
    assert lines[2].startswith("| lraspp_mobilenetv3_large † |") and lines[-1].startswith("† made before")


def test_a_latency_record_missing_a_file_is_made_again_whole(tmp_path, monkeypatch):
    """time_student remakes an old record that lacks the two_class int8 file — every file, so that shares and
    ratios compare timings of one run — and leaves a complete record alone; a network whose logits are at
    the input size records that head as not applicable instead of timing its argmax twice."""
    monkeypatch.setattr(phone_students, "RESULTS", tmp_path)
    exported, timed = [], []
    monkeypatch.setattr(phone_students, "export_file",
                        lambda net, size, q, output, cal, path, head="bilinear", **kw: (
                            exported.append((q, output, head)), Path(path).write_bytes(b"x")))
    import skd_tf.benchmark.measure as measure

    monkeypatch.setattr(measure, "run_isolated", lambda path, threads, xnnpack, settings: (
        timed.append(threads), {"latency_ms": {"mean": 5.0, "p95": 6.0}})[1])
    host = phone_students.host_cpu()
    settings = measure.Settings(warmup=0, runs=1, min_seconds=0.0)
    old_rows = [{"quantization": q, "output": o, "threads": t, "mean_ms": 9.0, "p95_ms": 9.0, "bytes": 1}
                for q, o in phone_students.FILES if o != phone_students.TWO_CLASS for t in phone_students.THREADS]
    target = phone_students.latency_record_path("lraspp_mobilenetv2", (32, 64), host)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"student": "lraspp_mobilenetv2", "size": [32, 64], "rows": old_rows,
                                  "host": host}))
    record = phone_students.time_student("lraspp_mobilenetv2", (32, 64), False, settings)
    assert exported == [(q, "logits" if o == "logits" else "labels", "two_class" if o == phone_students.TWO_CLASS
                         else "bilinear") for q, o in phone_students.FILES]
    assert timed == [1, 2] * len(phone_students.FILES) and record["not_applicable"] == []
    assert [(r["quantization"], r["output"], r["mean_ms"]) for r in record["rows"]] == [
        (q, o, 5.0) for q, o in phone_students.FILES for _ in phone_students.THREADS]
    assert json.loads(target.read_text()) == record
    assert phone_students.time_student("lraspp_mobilenetv2", (32, 64), False, settings) is None
    exported.clear()
    record = phone_students.time_student("espnet", (32, 64), False, settings)
    assert (record["not_applicable"] == [["int8", phone_students.TWO_CLASS]]
            and ("int8", "labels", "two_class") not in exported and len(exported) == len(phone_students.FILES) - 1)
    assert phone_students.time_student("espnet", (32, 64), False, settings) is None
    timed.clear()
    record = phone_students.time_student("espnet", (32, 64), True, settings, rounds=2)
    jobs = len(phone_students.FILES) - 1
    assert timed == [1, 2] * jobs + [2] + [1, 2] * (jobs - 1) + [1]  # the second round rotated by one file
    assert record["settings"]["rounds"] == 2 and all(r["rounds_ms"] == [5.0, 5.0] for r in record["rows"])


def test_each_hosts_latency_records_keep_their_own_folder_and_table():
    rows = [{"quantization": q, "output": o, "threads": t, "mean_ms": 10.0, "p95_ms": 0.0, "bytes": 2 ** 20}
            for q in ("float32", "float16", "int8") for o in ("labels", "logits") for t in (1, 2)]
    vnni = {"model": "CPU A", "features": ["avx2", "fma", "avx512f", "avx512_vnni"]}
    avx2 = {"model": "CPU B", "features": ["avx2", "fma"]}
    assert phone_students.latency_record_path("espnet", (512, 1024), avx2) == (
        phone_students.RESULTS / "latency" / "avx2-fma" / "espnet_512x1024.json")
    records = [{"student": "espnet", "size": [512, 1024], "parameters": 1, "rows": rows, "host": host,
                "bn_statistics": "set"} for host in (avx2, vnni)]
    lines = phone_students.latency_tables(records).splitlines()
    assert [line for line in lines if line.startswith("CPU:")] == [
        "CPU: CPU A (avx2, fma, avx512f, avx512_vnni)", "CPU: CPU B (avx2, fma)"]  # two tables, most features first
    assert sum(line.startswith("| espnet |") for line in lines) == 4


def test_the_race_table_pairs_each_student_with_mobilenetv2_by_round():
    v2, large, tail = phone_students.RACE_STUDENTS[:3]
    record = {"host": {"model": "CPU A", "features": ["avx2"]},
              "mean_ms_per_round": {v2: [10.0, 12.0, 11.0], large: [13.0, 14.0, 14.0], tail: [9.0, 11.0, 10.0]}}
    lines = phone_students.race_table([record]).splitlines()
    assert lines[2] == f"| CPU A (avx2) | {v2} | 3 | 11.0 |  |"
    # differences 3, 2, 3: mean 8/3, sd 1/√3, half-width t(0.975, 2)·sd/√3 = 4.303 / 3 = 1.434
    assert lines[3] == f"| CPU A (avx2) | {large} | 3 | 13.7 | +2.7 [+1.2, +4.1] |"
    assert lines[4] == f"| CPU A (avx2) | {tail} | 3 | 10.0 | -1.0 [-1.0, -1.0] |"  # a constant difference


def test_the_relu_control_swaps_only_the_hard_swish_activations():
    import keras

    from skd_tf.config import ModelConfig
    from skd_tf.models import build_model

    net = build_model(ModelConfig(arch="lraspp", backbone="mobilenetv3_small", output_stride=16, head_channels=8),
                      3, (32, 32))
    control = phone_students.with_relu_for_hard_swish(net)

    def activations(model):
        return [keras.activations.serialize(layer.activation) for layer in model._flatten_layers()
                if isinstance(layer, keras.layers.Activation)]

    assert "hard_silu" in activations(net) and "hard_silu" not in activations(control)
    assert len(activations(control)) == len(activations(net))
    assert len(net.get_weights()) == len(control.get_weights()) > 0
    assert all(np.array_equal(a, b) for a, b in zip(net.get_weights(), control.get_weights()))


def test_the_int8_kernel_table_sums_convolutions_by_kind_and_leaves_the_rest_to_other_ops():
    layers = [{"kind": "depthwise 3×3", "float32_ms": 1.0, "int8_ms": 2.0},
              {"kind": "1×1 conv", "float32_ms": 4.0, "int8_ms": 1.0},
              {"kind": "depthwise 3×3", "float32_ms": 2.0, "int8_ms": 3.5},
              {"kind": "3×3 conv /2", "float32_ms": 0.5, "int8_ms": 1.5}]
    assert int8_kernels.summed_by_kind(layers) == [("depthwise 3×3", 2, 3.0, 5.5), ("3×3 conv /2", 1, 0.5, 1.5),
                                                  ("1×1 conv", 1, 4.0, 1.0)]  # most int8 time first
    record = {"host": {"model": "CPU A", "features": ["avx2", "fma"]}, "threads": 1,
              "settings": {"runs": 10, "min_seconds": 0.5},
              "students": {"espnet_c": {"layers": layers, "network": {"float32_ms": 10.0, "int8_ms": 9.0}}}}
    lines = int8_kernels.table([record]).splitlines()
    assert "| espnet_c | depthwise 3×3 | 2 | 3.0 | 5.5 | 1.83 |" in lines
    assert "| espnet_c | **all convolutions, timed alone** | 4 | 7.5 | 8.0 | 1.07 |" in lines
    assert "| espnet_c | **whole network (logits file)** | – | 10.0 | 9.0 | **0.90** |" in lines
    assert "| espnet_c | whole − convolutions (other ops, fusion) | – | 2.5 | 1.0 | – |" in lines
    assert lines[-1].endswith("1 thread(s), mean of ≥ 10 runs and 0.5 s; host: CPU A [avx2 fma].")


def test_a_convolution_timed_alone_is_the_networks_layer_with_its_weights():
    import keras
    from ai_edge_litert.interpreter import Interpreter

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    stem = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    depthwise = keras.layers.DepthwiseConv2D(5, padding="same", dilation_rate=2)(stem)
    net = keras.Model(inputs, keras.layers.Conv2D(4, 1)(depthwise))
    image = np.random.default_rng(0).normal(size=(1, 16, 16, 3)).astype(np.float32)
    middle = keras.Model(inputs, [stem, depthwise])(image)
    conv, dw, pointwise = net.layers[1:]
    assert [int8_kernels.layer_kind(layer.get_config(), isinstance(layer, keras.layers.DepthwiseConv2D))
            for layer in (conv, dw, pointwise)] == ["3×3 conv /2", "depthwise 5×5", "1×1 conv"]
    alone = int8_kernels.lone_layer(dw, (8, 8, 8))
    assert alone.layers[1] is not dw
    np.testing.assert_allclose(alone(middle[0]), middle[1], rtol=1e-6, atol=1e-6)  # same dilation and weights
    blob = int8_kernels.converted(alone, quantize=True)
    interpreter = Interpreter(model_content=blob)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8  # no QUANTIZE op in the timing
    assert [op["op_name"] for op in interpreter._get_ops_details()] == ["DEPTHWISE_CONV_2D"]


def test_outputs_are_compared_by_labels_and_by_logits():
    host = np.zeros((2, 4, 4), np.uint8)
    arm = host.copy()
    arm[0, 0, 0] = 1
    assert arm64_check.compare(host, arm, "labels") == {"equal": 1 - 1 / 32}
    logits = np.zeros((1, 2, 2, 3), np.float32)
    logits[..., 0] = 4.0
    other = logits.copy()
    other[0, 0, 0, 1] = 5.0  # one pixel's argmax moves; the largest change is 5 of a largest logit of 4
    got = arm64_check.compare(logits, other, "logits")
    assert got == {"equal": 0.75, "max_abs_diff_rel": 1.25, "values_equal": 11 / 12}


def test_hwcap_bits_name_the_arm_features():
    def auxv(pairs):
        return b"".join(struct.pack("<QQ", k, v) for k, v in pairs) + struct.pack("<QQ", 0, 0)

    # cortex-a76-like: NEON, fp16 arithmetic (bits 9, 10), dot product (20); HWCAP2: i8mm (13) absent
    assert aarch64_features(auxv([(16, 1 << 1 | 1 << 9 | 1 << 10 | 1 << 20), (26, 0)])) == [
        "asimd", "fphp", "asimdhp", "asimddp"]
    assert aarch64_features(auxv([(16, 1 << 1), (26, 1 << 13 | 1 << 14)])) == ["asimd", "i8mm", "bf16"]


def test_the_output_worker_runs_files_with_the_runtime_alone(tmp_path):
    """tflite_outputs.py on a real file: its outputs equal the runtime's, and it imports no TensorFlow."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 4, 6, 3], tf.float32)])
    def double(x):
        return 2.0 * x + 1.0

    model = tmp_path / "double.tflite"
    model.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([double.get_concrete_function()],
                                                                      double).convert())
    images = np.random.default_rng(0).uniform(0, 255, (3, 4, 6, 3)).astype(np.float32)
    np.savez(tmp_path / "in.npz", images=images)
    worker = str(ROOT / "benchmarks" / "tflite_outputs.py")
    code = (f"import runpy, sys; sys.argv = [{worker!r}] + sys.argv[1:]; "
            f"runpy.run_path({worker!r}, run_name='__main__'); assert 'tensorflow' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "in.npz"), str(tmp_path / "out.npz"),
                           str(model)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(out["0"], 2 * images[:, None] + 1, rtol=1e-6)
    info = json.loads(str(out["info"]))
    assert info["runtime"] == "ai_edge_litert" and info["models"] == [str(model)]


@pytest.mark.parametrize("argv,message", [(["--students", "resnet"], "unknown resnet"),
                                          (["--images", "0"], "--images must be >= 1"),
                                          (["--outputs", "labels,probabilities"], "unknown probabilities"),
                                          (["--cpus", "cortex-x4"], "unknown cortex-x4"),
                                          (["--quantizations", "int4"], "--quantizations: unknown int4"),
                                          (["--quantizations", ","], "--quantizations: name at least one"),
                                          (["--students", ""], "nothing to check"),
                                          (["--published", "/nonexistent/skd"], "is not a folder"),
                                          (["--published-size", "250,512"], "multiples of 8"),
                                          (["--published-size", "256"], "expected H,W")])
def test_arm64_check_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        arm64_check.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_arm64_check_says_which_published_file_is_missing_or_unreadable(tmp_path):
    folder = tmp_path / "skd-cvpr19"
    with pytest.raises(arm64_check.SetupFailed, match="ESPNet_Ours_64.pth is missing: --published takes"):
        arm64_check.published_exports("espnet", "labels", folder, (64, 128), tmp_path / "work")
    (folder / "cityscapes").mkdir(parents=True)
    (folder / "cityscapes" / "ESPNet_Ours_64.pth").write_text("not a checkpoint")
    with pytest.raises(arm64_check.SetupFailed, match="importing .*ESPNet_Ours_64.pth: cannot read"):
        arm64_check.published_exports("espnet", "labels", folder, (64, 128), tmp_path / "work")
    assert not list((tmp_path / "work" / "exports").glob("*.keras"))


def test_the_arm64_table_names_each_network_head_and_size():
    def row(student, output, quantization, equal, size=None):
        arm = {cpu: {"equal": equal, "features": ["asimd"], **({"max_abs_diff_rel": 0.0} if output == "logits" else {})}
               for cpu in ("cortex-a53", "max")}
        return {"student": student, "output": output, "quantization": quantization, "arm": arm,
                **({"size": size} if size else {})}

    record = {"images": 16, "runtime": "ai_edge_litert 2.3.0", "emulator": "qemu-aarch64 10",
              "host": {"model": "AMD EPYC", "features": ["avx2"]},
              "rows": [row("espnet_c", "two_class", "int8", 0.9995, [256, 512]),
                       row("mobilenetv2", "two_class", "float32", 1.0), row("mobilenetv2", "labels", "qat", 0.99998),
                       row("espnet_c", "logits", "float16", 1.0, [256, 512]),
                       row("mobilenetv2", "labels", "dynamic", 0.9999)]}  # a later run's row: in its column
    lines = arm64_check.table(record).splitlines()
    assert lines[0] == "| network | output | float32 | float16 | dynamic | int8 | qat |"
    # one pixel in 50,000 differs: not rounded away to 100.00
    assert lines[2] == "| LR-ASPP MobileNetV2 | labels (bilinear head) | – | – | 99.99 / 99.99 | – | 99.998 / 99.998 |"
    assert lines[3] == "| LR-ASPP MobileNetV2 | labels (two_class head) | 100.00 / 100.00 | – | – | – | – |"
    assert lines[4] == ("| ESPNet-C (published, Cityscapes), 256×512 | labels (two_class head) | – | – | – | "
                        "99.95 / 99.95 | – |")
    assert lines[5].startswith("| ESPNet-C (published, Cityscapes), 256×512 | logits | – | 100.00 / 100.00 (Δ ≤ 0.0e+00)")
    assert "4 fabricated street scenes" in lines[7] and "cortex-a53 / max" in lines[7]


def test_settled_batch_norm_makes_inference_reproduce_the_training_pass():
    """After settle_batch_norm every BN holds the statistics of its input on the images: inference on them
    equals the training-mode pass (batch statistics), unit-scale activations come out of a random network,
    and the momenta are back."""
    import keras

    from skd_tf.config import ModelConfig
    from skd_tf.models import build_model

    keras.utils.set_random_seed(0)
    net = build_model(ModelConfig(arch="lraspp", backbone="mobilenetv3_small", output_stride=16, width=0.75,
                                  head_channels=8, bn_momentum=0.9), 3, (48, 64))
    images = phone_students.normalised(np.random.default_rng(0).integers(0, 256, (3, 48, 64, 3)))
    batch_statistics = np.asarray(net(images, training=True)["features"])  # momentum 0.9: moved a little
    assert phone_students.settle_batch_norm(net, images) == sum(
        isinstance(layer, keras.layers.BatchNormalization) for layer in net._flatten_layers())
    settled = np.asarray(net(images, training=False)["features"])
    np.testing.assert_allclose(settled, batch_statistics, atol=2e-3 * np.abs(batch_statistics).max())
    assert 0.1 < settled.std() < 10
    assert all(layer.momentum == 0.9 for layer in net._flatten_layers()
               if isinstance(layer, keras.layers.BatchNormalization))


@pytest.mark.parametrize("quantization", ["float32", "int8"])
def test_exported_files_take_raw_pixels_as_skd_tf_export_writes_them(tmp_path, quantization):
    """export_file (the latency and import benchmarks' files): every quantization takes raw uint8 RGB and
    normalises it inside, so its logits are the network's on the normalised image (float32: to float
    rounding; int8: correlated above 0.95)."""
    import keras

    from skd_tf.benchmark import runtime
    from skd_tf.config import ModelConfig
    from skd_tf.models import build_model

    keras.utils.set_random_seed(0)
    net = build_model(ModelConfig(width=0.125, head_channels=8), 3, (32, 48))
    raw = np.random.default_rng(0).integers(0, 256, (4, 32, 48, 3)).astype(np.uint8)
    phone_students.settle_batch_norm(net, phone_students.normalised(raw))
    path = tmp_path / f"net_{quantization}.tflite"
    phone_students.export_file(net, (32, 48), quantization, "logits", raw, path)
    interpreter = runtime.make_interpreter(str(path))
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    out = runtime.run(interpreter, raw[:1].astype(np.float32))
    expected = np.asarray(net(phone_students.normalised(raw[:1]), training=False)["logits"])
    if quantization == "float32":
        np.testing.assert_allclose(out, expected, atol=1e-4 * np.abs(expected).max())
    else:  # int8 on a random network: a few steps off, but the same function (raw pixels fed as such: ~0)
        assert np.corrcoef(out.ravel(), expected.ravel())[0, 1] > 0.95


def test_the_label_head_benchmark_measures_every_head_and_again_rows_missing_one():
    """benchmarks/label_head.py times and scores every export head; a recorded row without a head added since
    is measured again, and its table shows what is missing as a dash."""
    from skd_tf.export.label_heads import LABEL_HEADS

    assert label_head.HEADS == LABEL_HEADS
    full = {h: {"ms": 10.0 + i, "all_integer": True} for i, h in enumerate(("logits", *LABEL_HEADS))}
    old = {h: row for h, row in full.items() if h != "two_class"}
    assert label_head._complete(full) and not label_head._complete(old) and not label_head._complete(None)
    record = {"latency": {"x 512x1024 1t": {**old, "device": "host", "logits_shape": [64, 128]}}, "accuracy": {}}
    assert "| x | 512x1024 | 64×128 | 10.0 | 11.0 (9 %) | – | 13.0 (23 %) |" in label_head.tables(record)


def test_the_two_class_switch_table_gives_each_heads_time_and_share_per_host(capsys):
    """benchmarks/two_class_switch.py: a head's time is t(head file) − t(logits file) (the median of the rounds'
    paired differences where recorded), its share head / (t(logits) + head), one table per host; bad arguments
    are refused in one line."""
    record = {"host: A": {"x 512x1024 2t": {"ms": {"logits": 30.0, "select": 40.0, "switch": 33.0}, "rounds": 10,
                                            "labels_equal": 0.975}}}
    text = two_class_switch.table(record)
    assert "| x | 512×1024 | 2 | 30.0 | 10.00 (25.0 %) | 3.00 (9.1 %) | 97.50 % |" in text
    # since 2026-12-08 the median of the rounds' paired differences, where recorded
    record["host: A"]["x 512x1024 2t"]["head_ms"] = {"select": 9.0, "switch": 2.0}
    assert "| x | 512×1024 | 2 | 30.0 | 9.00 (23.1 %) | 2.00 (6.2 %) | 97.50 % |" in two_class_switch.table(record)
    assert "medians of 10 interleaved rounds in one process; host: A." in text
    for argv, message in ((["--students", "nope"], "unknown student(s) nope"), (["--rounds", "0"], "at least 1")):
        with pytest.raises(SystemExit):
            two_class_switch.main(argv)
        assert message in capsys.readouterr().err


def test_arm64_outputs_are_reused_only_for_the_same_files(tmp_path, monkeypatch):
    runs = []

    def fake_run(cmd, what, **kwargs):  # what tflite_outputs.py writes: info and one output per file
        runs.append(what)
        target = Path(cmd[cmd.index(str(inputs)) + 1])
        np.savez(target, info=json.dumps({"runtime": "fake"}), **{"0": np.full(2, len(runs))})

    monkeypatch.setattr(arm64_check, "_run", fake_run)
    inputs, model, target = tmp_path / "in.npz", tmp_path / "m.tflite", tmp_path / "x86.npz"
    np.savez(inputs, images=np.zeros((1, 2, 2, 3), np.uint8))
    model.write_bytes(b"model one")
    first = arm64_check.outputs(inputs, [model], target, None, tmp_path)
    again = arm64_check.outputs(inputs, [model], target, None, tmp_path)
    assert runs == ["the host run"] and np.array_equal(first["outputs"][0], again["outputs"][0])
    model.write_bytes(b"model two")  # another file at the same path: run again
    changed = arm64_check.outputs(inputs, [model], target, None, tmp_path)
    assert len(runs) == 2 and changed["outputs"][0][0] == 2


def test_arm64_table_names_the_host_of_each_row():
    def row(student, host):
        return {"student": student, "output": "labels", "quantization": "int8", "host": host,
                "arm": {"cortex-a53": {"equal": 1.0, "features": ["asimd"]}}}

    # two hosts of one model name with other instruction sets are two hosts
    machines = [{"model": "EPYC", "features": ["avx2"]}, {"model": "EPYC", "features": ["avx2", "avx512f"]},
                {"model": "Xeon", "features": ["amx_int8"]}]
    hosts = {arm64_check.host_name(m): m for m in machines}
    assert list(hosts) == ["EPYC (avx2)", "EPYC (avx2, avx512f)", "Xeon (amx_int8)"]
    record = {"images": 1, "host": machines[2], "hosts": hosts, "runtime": "r", "emulator": "q",
              "rows": [row("mobilenetv2", "EPYC (avx2)"), row("espnet", "Xeon (amx_int8)"),
                       row("espnet_c", "EPYC (avx2, avx512f)")]}
    text = arm64_check.table(record)
    assert ("Hosts: EPYC (avx2) ran LR-ASPP MobileNetV2; EPYC (avx2, avx512f) ran ESPNet-C (published, Cityscapes); "
            "Xeon (amx_int8) ran ESPNet (published, Cityscapes)") in text
    del record["hosts"]
    assert "Host: Xeon (amx_int8)" in arm64_check.table(record)


def test_arm64_exports_are_made_again_when_the_code_changed(tmp_path, monkeypatch):
    folder = tmp_path / "exports" / "espnet_64x128_labels"
    folder.mkdir(parents=True)
    (folder / "export.json").write_text(json.dumps({"files": {}, "label_head": "bilinear"}))
    assert not arm64_check._exported_by_this_code(folder)  # no digest: made by unknown code
    (folder / "code.digest").write_text(arm64_check.code_digest())
    assert arm64_check._exported_by_this_code(folder)
    monkeypatch.setattr(arm64_check, "code_digest", lambda: "another")
    assert not arm64_check._exported_by_this_code(folder)


def test_calibration_percentile_table_has_a_cell_per_file_and_percentile(tmp_path, monkeypatch):
    monkeypatch.setattr(calibration_percentile, "RESULTS", tmp_path)
    for name, photos, scenes in (("extremes", 0.2677, 0.6356), ("p99.9", 0.5937, 0.7168),
                                 ("mean_extremes", 0.3077, 0.7436)):
        (tmp_path / f"cityscapes_ESPNet_Ours_64_{name}.json").write_text(json.dumps(
            {"input_size": [256, 512], "photos_kept": photos, "scenes_kept": scenes}))
    choices = [calibration_percentile.ranges_choice(item) for item in ("extremes", "99.9", "p99.8", "mean_extremes")]
    assert choices == ["extremes", 99.9, 99.8, "mean_extremes"]
    for bad, message in (("bogus", "is not extremes or mean_extremes, nor a percentile"), ("100", "not in (50, 100)")):
        with pytest.raises(ValueError, match=re.escape(message)):
            calibration_percentile.ranges_choice(bad)
    lines = calibration_percentile.table(choices).splitlines()
    assert lines[0] == ("| file | input | int8, extremes: photos / scenes | int8, ranges at 99.9 %: photos / scenes "
                        "| int8, ranges at 99.8 %: photos / scenes | int8, mean of each image's extremes: photos / "
                        "scenes |")
    assert lines[2] == "| cityscapes/ESPNet_Ours_64.pth | 256×512 | 26.8 / 63.6 % | 59.4 / 71.7 % | – | 30.8 / 74.4 % |"
    assert lines[3] == "| cityscapes/ESPNet_C_Ours_60.pth | – | – | – | – | – |"
    assert len(lines) == 2 + 6  # a row per published file
