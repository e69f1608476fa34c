"""Latency benchmark: host mode end to end, the device-only module in bare environments (LiteRT only;
tflite-runtime only), the Android path through a stand-in adb, and benchmark_model's output formats."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from skd_tf.benchmark import android, cli, device, measure, report
from skd_tf.benchmark.errors import BenchmarkError
from skd_tf.export.convert import ServingSpec, convert, keras_logits_fn, serving_function
from tests import benchmark_outputs as outputs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory):
    """A float32 label-map model (uint8 RGB in, uint8 labels out) of a tiny conv net, 32×32."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    logits = keras.layers.Identity(name="logits")(keras.layers.Conv2D(3, 1)(x))
    net = keras.Model(inputs, {"logits": logits, "features": keras.layers.Identity(name="features")(x)})
    spec = ServingSpec((32, 32), 3, "labels", True, (120.0, 120.0, 120.0), (60.0, 60.0, 60.0))
    path = tmp_path_factory.mktemp("models") / "tiny.tflite"
    path.write_bytes(convert(serving_function(keras_logits_fn(net), spec), "float32"))
    return str(path)


# ------------------------------------------------------------------------------------------ host

def test_host_benchmark_json_plot_and_real_image(tiny_tflite, tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "street.png"
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (48, 40, 3)).astype(np.uint8)).save(image)
    out = tmp_path / "bench.json"
    code = cli.main([tiny_tflite, "--threads", "1,2", "--xnnpack", "both", "--runs", "5", "--warmup", "1",
                           "--json", str(out), "--plot", str(tmp_path / "lat.png"), "--input", str(image)])
    assert code == 0
    results = json.loads(out.read_text())
    assert [(r["threads"], r["delegate"]) for r in results] == [(1, "xnnpack"), (1, "none"), (2, "xnnpack"),
                                                                (2, "none")]
    for r in results:
        assert set(r) >= {"runtime", "model", "model_bytes", "threads", "delegate", "device", "latency_ms", "runs",
                          "peak_rss_mb"}
        lat = r["latency_ms"]
        assert set(lat) == set(measure.LATENCY_KEYS)
        assert lat["min"] <= lat["p5"] <= lat["median"] <= lat["p95"] <= lat["max"]
        assert lat["min"] <= lat["mean"] <= lat["max"] and lat["init"] > 0 and lat["first"] > 0
        assert r["runs"] == 5 and r["model_bytes"] == os.path.getsize(tiny_tflite)
        assert r["runtime"].startswith("ai_edge_litert") and 10 < r["peak_rss_mb"] < 400
    assert (tmp_path / "lat.png").stat().st_size > 1000
    labels = Image.open(tmp_path / "street.tiny.labels.png")
    assert labels.size == (40, 48)  # back at the image's own size
    captured = capsys.readouterr()
    assert "resized to the model input" in captured.err and "median" in captured.out


def test_latency_statistics_by_hand():
    stats = measure.latency_stats([4.0, 1.0, 3.0, 2.0, 10.0])
    assert stats["mean"] == 4.0 and stats["median"] == 3.0 and stats["min"] == 1.0 and stats["max"] == 10.0
    assert stats["p5"] == pytest.approx(1.2) and stats["p95"] == pytest.approx(8.8)
    assert stats["std"] == pytest.approx(np.sqrt((0 + 9 + 1 + 4 + 36) / 5))


def test_pareto_points_pick_each_files_fastest_configuration(tmp_path):
    record = {"exports": {"int8": {"file": str(tmp_path / "a.tflite"), "parity": {"miou_tflite": 0.5}},
                          "float32": {"file": str(tmp_path / "b.tflite"), "parity": {"miou_tflite": 0.52}}}}
    results = [{"model": str(tmp_path / "a.tflite"), "latency_ms": {"mean": 3.0}},
               {"model": str(tmp_path / "a.tflite"), "latency_ms": {"mean": 2.0}},
               {"model": str(tmp_path / "b.tflite"), "latency_ms": {"mean": 5.0}},
               {"model": str(tmp_path / "c.tflite"), "latency_ms": {"mean": 1.0}}]
    assert sorted(report.pareto_points(results, [record])) == [(2.0, 50.0, "a.tflite"), (5.0, 52.0, "b.tflite")]


def test_host_bad_inputs(tiny_tflite, tmp_path, capsys):
    not_model = tmp_path / "notes.tflite"
    not_model.write_text("hello")
    flex = tmp_path / "flex.tflite"
    fn = tf.function(lambda x: tf.math.erf(x), input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    flex.write_bytes(converter.convert())
    cases = [([str(not_model)], "not a TFLite model"),
             ([str(tmp_path / "none.tflite")], "model file not found"),
             ([tiny_tflite, "--threads", "0"], "thread counts must be >= 1"),
             ([tiny_tflite, "--threads", "two"], "comma-separated integers"),
             ([tiny_tflite, "--input", str(tmp_path / "missing.png")], "input image not found"),
             ([str(flex), "--runs", "1"], "needs Flex (Select TF) ops that ai_edge_litert cannot run: FlexErf")]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[-1].startswith("benchmark: error:") and message in lines[-1], (message, lines)
        assert not any("Traceback" in line for line in lines)


# ------------------------------------------------------------------------------- device-only runs

def _bare_env(tmp_path, packages):
    """A fresh virtual environment holding only ``packages`` (and what they require)."""
    env_dir = tmp_path / "venv"
    # without pip of its own (its bootstrap costs 4 s of CPU): this environment's pip installs into it
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    # --no-compile: the board's Python compiles the few modules it imports (numpy's, the runtime's) itself
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--disable-pip-version-check", "--no-compile", *packages],
                   check=True, capture_output=True)
    return python


def _board_copy(tmp_path):
    """What is copied to a board: the benchmark package's folder alone, without the rest of the project."""
    board = tmp_path / "board"
    shutil.copytree(REPO / "skd_tf" / "benchmark", board / "benchmark", ignore=shutil.ignore_patterns("__pycache__"))
    return board


@pytest.mark.parametrize("packages, runtime_name", [
    (["numpy", "ai-edge-litert"], "ai_edge_litert"),
    (["numpy<2", "tflite-runtime"], "tflite_runtime"),
])
def test_device_only_benchmark_without_tensorflow(tiny_tflite, tmp_path, packages, runtime_name):
    python = _bare_env(tmp_path, packages)
    probe = subprocess.run([str(python), "-c", "import tensorflow"], capture_output=True)
    assert probe.returncode != 0  # the environment really has no TensorFlow
    board = _board_copy(tmp_path)
    out = tmp_path / "result.json"
    proc = subprocess.run([str(python), "-m", "benchmark", tiny_tflite, "--threads", "1,2", "--runs", "5",
                           "--json", str(out)], cwd=board, capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert [r["threads"] for r in results] == [1, 2]
    assert all(r["runtime"].startswith(runtime_name) and r["latency_ms"]["mean"] > 0 for r in results)


# ---------------------------------------------------------------------------------------- Android

FAKE_ADB = r'''#!{python}
"""Stand-in adb: records each call, answers like a phone would (behaviour set by FAKE_ADB_* variables)."""
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as f:
    f.write(json.dumps(args) + "\n")
if args and args[0] == "-s":
    args = args[2:]
if args[0] == "devices":
    print("List of devices attached")
    for line in os.environ.get("FAKE_ADB_DEVICES", "").split(";"):
        if line:
            print(line.replace(":", "\t"))
    print()
elif args[0] == "push":
    if os.environ.get("FAKE_ADB_PUSH_FAIL"):
        print("adb: error: failed to copy '%s' to '%s': remote No space left on device" % (args[1], args[2]),
              file=sys.stderr)
        sys.exit(1)
    print("%s: 1 file pushed, 0 skipped. 35.2 MB/s (245016 bytes in 0.007s)" % args[1])
elif args[0] == "shell" and args[1:3] == ["getprop", "ro.product.model"]:
    print("Pixel 7")
elif args[0] == "shell" and args[1:3] == ["cat", "/proc/cpuinfo"]:
    print("processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp asimddp i8mm bf16")
elif args[0] == "shell" and "benchmark_model" in " ".join(args[1:]) and "chmod" not in args[1:]:
    sys.stdout.write(open(os.environ["FAKE_ADB_OUTPUT"]).read())
    sys.exit(int(os.environ.get("FAKE_ADB_EXIT", "0")))
'''


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(FAKE_ADB.replace("{python}", sys.executable))
    adb.chmod(0o755)
    log = tmp_path / "adb_calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R5CT123:device")
    binary = tmp_path / "android_aarch64_benchmark_model"
    binary.write_bytes(b"\x7fELF fake")

    def use_output(text: str, exit_code: int = 0):
        path = tmp_path / "captured.txt"
        path.write_text(text)
        monkeypatch.setenv("FAKE_ADB_OUTPUT", str(path))
        monkeypatch.setenv("FAKE_ADB_EXIT", str(exit_code))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    use_output(outputs.CURRENT)
    return type("FakeAdb", (), {"binary": str(binary), "use_output": staticmethod(use_output),
                                "calls": staticmethod(calls)})


def test_android_run_pushes_runs_and_parses(fake_adb, tiny_tflite, tmp_path):
    fake_adb.use_output(outputs.OP_PROFILING)
    out = tmp_path / "android.json"
    code = cli.main([tiny_tflite, "--android", "--benchmark-binary", fake_adb.binary, "--threads", "1,4",
                           "--delegate", "xnnpack,gpu", "--taskset", "f0", "--op-profiling", "--runs", "50",
                           "--json", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert [(r["threads"], r["delegate"]) for r in results] == [(1, "xnnpack"), (1, "gpu"), (4, "xnnpack"),
                                                                (4, "gpu")]
    r = results[0]
    assert r["device"] == "android: Pixel 7 (R5CT123) [dotprod i8mm fp16 bf16]" and r["runtime"] == "benchmark_model"
    assert r["latency_ms"]["mean"] == pytest.approx(4.03162) and r["latency_ms"]["init"] == pytest.approx(31.825)
    assert r["peak_rss_mb"] == pytest.approx(12.5586) and r["runs"] == 248
    assert [row["node_type"] for row in r["op_profile"]] == ["TfLiteXNNPackDelegate", "ARG_MAX", "CAST"]
    calls = fake_adb.calls()
    assert calls[0] == ["devices"]
    assert ["-s", "R5CT123", "push", fake_adb.binary, "/data/local/tmp/benchmark_model"] in calls
    assert ["-s", "R5CT123", "push", tiny_tflite, "/data/local/tmp/tiny.tflite"] in calls
    runs = [c[3] for c in calls if len(c) == 4 and c[2] == "shell" and "benchmark_model " in c[3]]
    assert len(runs) == 4
    assert runs[0].startswith("taskset f0 /data/local/tmp/benchmark_model --graph=/data/local/tmp/tiny.tflite")
    assert "--num_threads=1" in runs[0] and "--use_xnnpack=true" in runs[0] and "--num_runs=50" in runs[0]
    assert "--use_gpu=true" in runs[1] and "--num_threads=4" in runs[3]
    assert all("--enable_op_profiling=true" in run for run in runs)


@pytest.mark.parametrize("devices, extra, message", [
    ("", [], "no Android device connected"),
    ("R5CT123:unauthorized", [], "unauthorized: accept the USB debugging prompt"),
    ("R5CT123:offline", [], "offline: reconnect it"),
    ("A:device;B:device", [], "several devices connected (A, B): choose one with --serial"),
    ("A:device", ["--serial", "Z"], "device Z is not connected"),
])
def test_android_device_errors(fake_adb, tiny_tflite, monkeypatch, capsys, devices, extra, message):
    monkeypatch.setenv("FAKE_ADB_DEVICES", devices)
    assert cli.main([tiny_tflite, "--android", "--benchmark-binary", fake_adb.binary, *extra]) == 2
    assert message in capsys.readouterr().err


def test_android_push_failure_crash_and_missing_binary(fake_adb, tiny_tflite, monkeypatch, capsys):
    assert cli.main([tiny_tflite, "--android"]) == 2
    assert android.BINARY_URL in capsys.readouterr().err
    assert cli.main([tiny_tflite, "--android", "--benchmark-binary", "/nonexistent/benchmark_model"]) == 2
    assert "benchmark binary not found" in capsys.readouterr().err
    monkeypatch.setenv("FAKE_ADB_PUSH_FAIL", "1")
    assert cli.main([tiny_tflite, "--android", "--benchmark-binary", fake_adb.binary]) == 2
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.delenv("FAKE_ADB_PUSH_FAIL")
    fake_adb.use_output(outputs.CRASH, exit_code=1)
    assert cli.main([tiny_tflite, "--android", "--benchmark-binary", fake_adb.binary]) == 2
    err = capsys.readouterr().err
    assert "no inference timings" in err and "Didn't find op for builtin opcode" in err


def test_parse_current_output():
    r = android.parse_output(outputs.CURRENT)
    lat = r["latency_ms"]
    assert (lat["init"], lat["first"], lat["mean"]) == (31.825, 6.872, 4.03162)
    assert (lat["min"], lat["max"], lat["std"]) == (3.902, 4.598, 0.101)
    assert (lat["p5"], lat["median"], lat["p95"]) == (3.921, 4.004, 4.219)
    assert r["runs"] == 248 and r["peak_rss_mb"] == 12.5586 and r["op_profile"] == []


def test_parse_output_without_percentiles():
    r = android.parse_output(outputs.NO_PERCENTILES)
    lat = r["latency_ms"]
    assert (lat["init"], lat["first"], lat["mean"]) == (17.851, 2.104, 1.03966)
    assert (lat["min"], lat["max"], lat["std"]) == (1.012, 1.19, 0.022)
    assert lat["p5"] is None and lat["median"] is None and lat["p95"] is None
    assert r["runs"] == 1000 and r["peak_rss_mb"] == 9.23828


def test_parse_old_output():
    r = android.parse_output(outputs.OLD)
    lat = r["latency_ms"]
    assert (lat["init"], lat["mean"]) == (6.066, 100.85)
    assert lat["first"] == 112.37  # the single warm-up run
    assert (lat["min"], lat["max"], lat["std"]) == (99.73, 103.404, 0.71)
    assert r["runs"] == 50 and r["peak_rss_mb"] == 31.3438


def test_parse_op_profile():
    r = android.parse_output(outputs.OP_PROFILING)
    assert r["latency_ms"]["mean"] == 4.03162 and r["runs"] == 248  # the Timings line is not the run statistics
    assert r["op_profile"][0] == {"node_type": "TfLiteXNNPackDelegate", "count": 1, "avg_ms": 3.611,
                                  "avg_pct": 89.604, "cdf_pct": 89.604, "mem_kb": 0.0, "times_called": 1}
    assert [row["avg_ms"] for row in r["op_profile"]] == [3.611, 0.399, 0.02]


def test_parse_crash():
    with pytest.raises(BenchmarkError, match="Didn't find op for builtin opcode 'FULLY_CONNECTED'"):
        android.parse_output(outputs.CRASH)


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")  # TF says so; the fallback is the point
def test_tensorflow_interpreter_fallback(tiny_tflite):
    """When neither LiteRT nor tflite-runtime is wanted/installed, TensorFlow's own interpreter runs the model."""
    result = measure.measure(tiny_tflite, 1, False, warmup=0, runs=3, min_seconds=0.0, runtime_name="tensorflow")
    assert result["runtime"].startswith("tensorflow") and result["delegate"] == "none" and result["runs"] == 3


X86_CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16 avx_vnni
processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16 avx_vnni
"""


def test_the_runtime_version_is_that_of_whichever_distribution_installed_the_package(tmp_path, monkeypatch):
    """LiteRT's module ``ai_edge_litert`` comes from ``ai-edge-litert`` or from its nightly,
    ``ai-edge-litert-nightly``: the benchmark names the version of whichever is installed (it said "unknown" for
    the nightly). Two fake distributions on sys.path stand for them."""
    from skd_tf.benchmark.runtime import _dist_version

    for dist, version, package in (("fake_litert_nightly", "2.4.0.dev20261026", "fake_litert"),
                                   ("plain_dist", "1.0", "plain_dist")):
        info = tmp_path / f"{dist}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: {version}\n")
        (info / "top_level.txt").write_text(package + "\n")
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _dist_version("fake_litert") == "2.4.0.dev20261026"
    assert _dist_version("plain_dist") == "1.0"
    assert _dist_version("no_such_package_here") == "unknown"


def test_device_names_the_cpu_and_the_features_int8_kernels_use():
    assert device.describe_cpu(X86_CPUINFO, "x86_64") == \
        "AMD EPYC 9R14 x2 [avx2 fma avx512f avx512_vnni avx_vnni avx512_bf16]"
    avx2_only = X86_CPUINFO.replace(" avx512f avx512_vnni avx512_bf16 avx_vnni", "")
    assert device.describe_cpu(avx2_only, "x86_64") == "AMD EPYC 9R14 x2 [avx2 fma]"
    assert device.cpu_features("Features\t: fp asimd asimddp\n") == ["dotprod"]
    assert device.host_device().startswith("host: ") and "[" in device.host_device()


def test_table_names_files_that_share_a_name_by_their_shortest_distinct_path():
    paths = ["runs/r18/export/student_float32.tflite", "runs/lraspp/export/student_float32.tflite",
             "runs/lraspp/export/student_int8.tflite"]
    assert report.distinct_names(paths) == {paths[0]: "r18/export/student_float32.tflite",
                                               paths[1]: "lraspp/export/student_float32.tflite",
                                               paths[2]: "student_int8.tflite"}
    result = {"model_bytes": 1024, "threads": 1, "delegate": "xnnpack", "runs": 5, "peak_rss_mb": 10.0,
              "latency_ms": {k: 1.0 for k in ("init", "first", "mean", "median", "p5", "p95", "std")},
              "runtime": "ai-edge-litert", "device": "host"}
    table = report.format_table([{**result, "model": p} for p in paths])
    assert "r18/export/student_float32.tflite" in table and "lraspp/export/student_float32.tflite" in table
