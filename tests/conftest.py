"""Shared test settings: quiet TensorFlow, two logical CPU devices, tiny configs."""

import os

import pytest

from skd_tf.benchmark.device import host_device
from skd_tf.console import QUIET, start_tensorflow

# TensorFlow started as the commands start it: its start-up lines on a CPU-only host (cuInit, cudart_stub,
# CPU-feature notices) filtered out, so nothing of it lands in (or after) pytest's report
start_tensorflow(QUIET)
import tensorflow as tf  # noqa: E402

# Two logical CPUs let tf.distribute tests run a 2-replica MirroredStrategy.
_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # already initialised by an earlier import
    pass


# The longest tests first (the longest-processing-time rule): `make test`'s pytest-xdist (--dist loadgroup)
# hands tests to whichever worker is free in collection order, so a minute-long test collected late keeps one
# worker busy while the other has finished. Seconds from `--durations` on 2 cores with 2 workers; a test not
# listed keeps its place after these (tests/test_layout.py checks that every name is still collected).
LONGEST_FIRST = (  # seconds: AVX2-only EPYC, 2026-12-06 (make test at 902001d; alone at 8642f0f)
    "tests/test_distill.py::test_multi_worker_run_ends_with_identical_weights_on_both_workers",  # 81–86
    "tests/test_distill.py::test_resume_after_sigkill_matches_an_uninterrupted_run",  # 68–80
    "tests/test_demo.py::test_demo_runs_every_stage_then_reuses_them",  # 60–61
    "tests/test_python_api.py::test_readme_python_example_runs_as_written",  # 43–55
    "tests/test_real_configs.py::test_cityscapes_configs_train_and_distil_one_step_at_an_odd_crop",  # 38–55
    "tests/test_mobile_students.py::test_mobilenetv3_student_trains_exports_and_runs[mobilenetv3_large]",  # 39–46
    "tests/test_mobile_students.py::test_mobilenetv3_student_trains_exports_and_runs[mobilenetv3_small]",  # 33–47
    "tests/test_import.py::test_paper_pipeline_imports_the_teacher_and_distils_a_pretrained_student",  # 35–39
    "tests/test_export.py::test_all_quantizations_of_the_synthetic_student_architecture",  # 32–35
    # the replica report's group (its tests go to one worker together, scheduled where the first is collected)
    "tests/test_distill.py::test_each_terms_gradient_on_two_replicas_matches_one_device",  # 28 alone, 44 in make test
    "tests/test_distill.py::test_a_distillation_with_zero_weight_ends_with_the_baseline_weights",  # 26–35
    "tests/test_integer_graph.py::test_int8_and_qat_espnet_carry_leaky_relu_and_depth_to_space_where_float32_"
    "carries_prelu_and_transpose_conv",  # 25 alone
    "tests/test_distill.py::test_each_synthetic_distill_config_runs_one_step[synthetic_skd_full]",  # 22 alone
    "tests/test_distill.py::test_full_distillation_under_xla_computes_what_it_computes_without",  # 18–27
    "tests/test_export.py::test_tf_keras_mirror_computes_the_same_logits[lraspp-mobilenetv3_large]",  # 18–33
    "tests/test_distill.py::test_each_synthetic_distill_config_runs_one_step[synthetic_ka]",  # 20–23 alone
    "tests/test_training.py::test_train_writes_model_scores_and_resumes_exactly",  # 21
)


def pytest_report_header(config):
    return host_device()


def pytest_terminal_summary(terminalreporter):
    # Above the "N passed in S s" line: the suite's time depends on the instruction set (the ten-minute
    # budget is for 2 AVX2 cores), so a CI record names the host it was measured on.
    terminalreporter.write_line(f"{host_device()}; ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')}")


def collected_name(item) -> str:
    """The test's node id without the "@group" that pytest-xdist's --dist loadgroup appends in its workers."""
    return item.nodeid.split("@")[0]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(collected_name(item), len(rank)))  # stable: the others keep their order


def tiny_config_dict(tmp_path, **model) -> dict:
    """A run config small enough to train a few steps in seconds."""
    return {
        "name": "tiny",
        "seed": 3,
        "data": {"source": "synthetic", "num_classes": 4, "crop_size": [32, 32],
                 "synthetic": {"num_train": 24, "num_val": 6, "image_size": 32}},
        "model": {"arch": "pspnet", "backbone": "resnet18", "width": 0.125, "head_channels": 16, **model},
        "train": {"batch_size": 4, "steps": 4, "steps_per_epoch": 2, "learning_rate": 0.01,
                  "out_dir": str(tmp_path / "run")},
        "eval": {"batch_size": 3},
    }


@pytest.fixture
def tiny_config(tmp_path):
    return tiny_config_dict(tmp_path)


@pytest.fixture(scope="session")
def two_replicas():
    """One MirroredStrategy over the two logical CPUs for the whole session (several strategies in
    one process make their eager collectives collide)."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    return strategy


@pytest.fixture
def traced_once(monkeypatch):
    """Fails the test when a tf.function it called was traced more than once: a function that creates variables
    in its first trace (an optimizer's slots, say) is traced twice, seconds per trace on a real network, and
    that slipped in unseen twice (the QAT fine-tuning, ``SegmentationTrainer.fit`` from Python). TensorFlow's
    private Function class is patched because no public hook lists the functions a run called; its
    ``experimental_get_tracing_count`` is public."""
    from tensorflow.python.eager.polymorphic_function import polymorphic_function

    called = {}
    original = polymorphic_function.Function.__call__

    def recording(self, *args, **kwargs):
        called[id(self)] = self
        return original(self, *args, **kwargs)

    monkeypatch.setattr(polymorphic_function.Function, "__call__", recording)
    yield
    twice = sorted(f"{getattr(f._python_function, '__qualname__', f)} ({f.experimental_get_tracing_count()} traces)"
                   for f in called.values() if f.experimental_get_tracing_count() > 1)
    assert called, "no tf.function was called: the recording hook no longer sees TensorFlow's functions"
    assert not twice, f"traced more than once: {', '.join(twice)}"
