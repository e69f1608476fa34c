"""What the CLI prints: TensorFlow's start-up noise filtered, one device line, a log that reads well in a file."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from skd_tf.console import describe_devices, filter_startup_log

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "synthetic_student.yaml")

CPU_ONLY_STARTUP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1795513281.969219    7849 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1795511496.909120    2504 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1795513283.288112    7849 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
W0000 00:00:1795513283.288112    7849 some_op.cc:10] a real warning
"""


def test_startup_filter_drops_cpu_only_noise_and_keeps_real_messages():
    assert filter_startup_log(CPU_ONLY_STARTUP, gpu_hardware=False) == [CPU_ONLY_STARTUP.splitlines()[-1]]


def test_startup_filter_keeps_a_cuda_failure_when_an_nvidia_device_is_present():
    kept = filter_startup_log(CPU_ONLY_STARTUP, gpu_hardware=True)
    assert len(kept) == 2 and "failed call to cuInit" in kept[0]


def test_python_side_noise_is_dropped_and_other_warnings_kept():
    """The absl / tensorflow loggers' notes that ask nothing of the user (the converter's deprecation, one
    retrace per evaluation size, tfds' unprepared data set) are dropped by the filter `start_tensorflow` adds."""
    import logging

    from skd_tf.console import _DropKnownNoise

    def passes(message):
        return _DropKnownNoise().filter(logging.LogRecord("absl", logging.WARNING, __file__, 1, message, (), None))

    assert not passes("Variant folder /root/tensorflow_datasets/cityscapes/semantic_segmentation/1.0.0 has no "
                      "dataset_info.json")
    assert not passes("5 out of the last 5 calls to <function f> triggered tf.function retracing.")
    assert passes("Cityscapes needs a manual download") and passes("a real warning")


def test_device_line():
    assert describe_devices([], 2) == "devices: CPU only (no GPU visible), 2 cores"
    assert describe_devices(["GPU:0", "GPU:1"], 8) == "devices: 2 GPUs (GPU:0, GPU:1)"


def run_cli(*args, env=None):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"} | (env or {})
    return subprocess.run([sys.executable, "-m", "skd_tf.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.mark.skipif(os.path.exists("/proc/driver/nvidia"), reason="a GPU host's CUDA messages are real")
def test_cli_start_up_on_a_cpu_host_prints_no_tensorflow_noise(tmp_path):
    missing = tmp_path / "missing.keras"
    proc = run_cli("evaluate", "--config", CONFIG, "--checkpoint", str(missing))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"skd-tf evaluate: error: checkpoint not found: {missing}"]
    assert proc.stdout.strip() == "devices: CPU only (no GPU visible), " + \
        f"{os.cpu_count()} core{'s' if os.cpu_count() != 1 else ''}"
    for noise in ("E0000", "cuInit", "cudart_stub", "absl::InitializeLog"):
        assert noise not in proc.stderr + proc.stdout
    verbose = run_cli("evaluate", "--verbose", "--config", CONFIG, "--checkpoint",
                      str(missing))
    assert verbose.returncode == 2 and len(verbose.stderr.splitlines()) > 1  # TensorFlow's own lines


def test_a_piped_training_run_logs_one_line_per_epoch(tmp_path, capfd):
    """Keras' convention off a terminal: no redrawn bar, one line per epoch with the metrics. Run in this
    process, whose standard output and error are captured (not terminals), as a pipe or a file would be; the
    start-up's lines are test_cli_start_up_on_a_cpu_host_prints_no_tensorflow_noise's."""
    from skd_tf.cli import main

    sets = ["data.synthetic.num_train=16", "data.synthetic.num_val=4", "data.synthetic.image_size=32",
            "data.crop_size=[32,32]", "model.width=0.125", "model.head_channels=8", "train.batch_size=4",
            "eval.batch_size=4", "train.steps=4", "train.steps_per_epoch=2", f"train.out_dir={tmp_path}"]
    capfd.readouterr()
    code = main(["train", "--config", CONFIG, *[a for s in sets for a in ("--set", s)]])
    captured = capfd.readouterr()
    assert code == 0, captured.err
    log = captured.out + captured.err
    assert "\r" not in log and "\x1b[" not in log
    epoch_lines = [line for line in log.splitlines() if line.startswith("2/2 - ")]
    assert len(epoch_lines) == 2 and all("loss:" in line and "miou:" in line for line in epoch_lines)
    assert len(log.encode()) < 2 * 1024 + 1024  # two epochs and the score table: ~0.5 KB measured


def test_native_stderr_drops_tflite_notes_and_keeps_the_rest(capfd):
    from skd_tf.benchmark import native_log as console

    with console.native_stderr(console.without_tflite_notes):
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nfully_quantize: 0, inference_type: 6\n"
                    b"ERROR: a real problem\n")
    assert capfd.readouterr().err.splitlines() == ["ERROR: a real problem"]
    console.show_native_notes(True)
    try:
        with console.native_stderr(console.without_tflite_notes):
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    finally:
        console.show_native_notes(False)
    assert "XNNPACK" in capfd.readouterr().err
