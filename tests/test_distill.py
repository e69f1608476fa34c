"""The Distiller end to end: configs, NaN stop, resume after SIGKILL, mirrored == single device."""

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from skd_tf.config import ConfigError, ModelConfig, load_config
from skd_tf.distill.config import parse_distill
from skd_tf.distill.run import distill
from skd_tf.models import build_model, load_model
from skd_tf.training.checkpointing import TrainingDiverged, read_epoch
from small_networks import small_segmenter

ROOT = Path(__file__).resolve().parents[1]
# Configs run one real distillation step (the fit path with a critic, and with knowledge adaptation's
# pre-training and loss components); every loss also runs distillation steps in the replica tests.
SYNTHETIC_DISTILL = ["synthetic_skd_full", "synthetic_ka"]
# The other synthetic configs: parsed and their losses built and evaluated once on tiny models.
SYNTHETIC_SINGLE = {"synthetic_skd_pi": ["pixel"], "synthetic_skd_pi_pa": ["pixel", "pairwise"], "synthetic_cwd": ["cwd"],
                    "synthetic_fitnet": ["fitnet"], "synthetic_at": ["at"], "synthetic_sp": ["sp"],
                    "synthetic_cc": ["cc"], "synthetic_irg": ["irg"], "synthetic_rkd": ["rkd"]}
TINY = ["data.crop_size=[32,32]", "data.synthetic.num_train=16", "data.synthetic.num_val=4",
        "data.synthetic.image_size=32", "model.width=0.125", "model.head_channels=8", "train.batch_size=4",
        "eval.batch_size=4", "distill.knowledge_adaptation.pretrain_steps=2", "distill.knowledge_adaptation.code_channels=4"]


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    """An untrained teacher checkpoint, tests/small_networks.py's (16 feature channels to the students' 8):
    the teacher is traced into every step, evaluation and distance of the runs below, and what they check
    is the distillation run, not the teacher's architecture (tests/test_import.py distils from real ones)."""
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "teacher.keras"
    small_segmenter(6, 8, name="teacher").save(path)
    return str(path)


def tiny(name, teacher, out, *extra, critic_steps=1):
    """The config at test size; one critic update per step unless ``critic_steps`` says otherwise (the
    synthetic full-SKD config's five would multiply every compiled graph's size)."""
    cfg = load_config(ROOT / "configs" / f"{name}.yaml",
                      TINY + [f"distill.teacher={teacher}", f"train.out_dir={out}", *extra])
    if cfg.distill.get("holistic"):
        cfg.distill["holistic"]["critic_width"] = 0.0625
        cfg.distill["holistic"]["n_critic"] = critic_steps
    return cfg


# The full objective also runs under mixed bfloat16 (its own run cost as much as this one).
BFLOAT16 = {"synthetic_skd_full"}


@pytest.mark.parametrize("name", SYNTHETIC_DISTILL)
def test_each_synthetic_distill_config_runs_one_step(name, tiny_teacher, tmp_path, traced_once):
    # gradient shares sampled in a run of a loss with components (the critic's share, and the values against
    # hand-computed gradients: test_diagnostics.py, on small networks)
    sampled = name == "synthetic_ka"
    precision = ["train.mixed_precision=mixed_bfloat16"] if name in BFLOAT16 else []
    cfg = tiny(name, tiny_teacher, tmp_path / name, "train.steps=1", "train.steps_per_epoch=1",
               f"distill.diagnostics_every={1 if sampled else 0}", *precision,
               critic_steps=2)  # a loop of critic updates (the config's five trace five copies of the update)
    try:
        scores = distill(cfg, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert 0 <= scores["miou"] <= 1 and (tmp_path / name / "model.keras").is_file()
    saved = json.loads((tmp_path / name / "eval.json").read_text())
    distances, shares = saved["teacher_distance"], saved["gradient_share"]
    assert distances["pixel_kl"] > 0 and distances["pairwise"] > 0 and ("critic" in distances) == ("full" in name)
    if sampled:
        assert shares["samples"] == 1 and set(shares["last"]) == set(cfg.distill["losses"])
        assert all(np.isfinite(v) and v > 0 for v in shares["last"].values())
    else:
        assert shares == {}
    assert read_epoch(tmp_path / name / "state") == 1
    if "full" in name:
        assert (tmp_path / name / "critic.weights.h5").is_file()
    student = load_model(tmp_path / name / "model.keras")
    assert student.output["logits"].dtype == ("bfloat16" if precision else "float32")  # computes in bfloat16


def _skd_distiller(jit_compile: bool):
    """The paper's full objective on tiny models, built from seed 0 (the same weights every call)."""
    from skd_tf.distill import Distiller
    from skd_tf.losses import HolisticDistillation, PairwiseDistillation, PixelwiseDistillation

    keras.utils.set_random_seed(0)
    # no dropout (XLA draws its masks with another random algorithm than the CPU kernels)
    student, teacher = small_segmenter(4, 8, name="student"), small_segmenter(4, 16, name="teacher")
    distiller = Distiller(teacher, student, {"pixel": (PixelwiseDistillation(), 10.0),
                                             "pairwise": (PairwiseDistillation(), 10.0)},
                          holistic=HolisticDistillation(seed=0), holistic_weight=0.1, global_batch_size=4)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      critic_optimizer=keras.optimizers.SGD(4e-4, momentum=0.9), jit_compile=jit_compile)
    return distiller


def test_full_distillation_under_xla_computes_what_it_computes_without(tmp_path):
    """train.jit_compile: every term of a step and the weights after two steps (critic and student updates,
    the gradient penalty's random interpolation included) equal the plain graph's. Tolerance: XLA fuses and
    reorders float32 sums (~1e-6 relative per op); a wrong term would differ by its own size."""
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(4, 32, 32, 3)), tf.float32)
    labels = tf.constant(rng.integers(0, 4, size=(4, 32, 32)), tf.int32)
    runs = {}
    for jit in (False, True):
        distiller = _skd_distiller(jit)
        logs = [distiller.train_on_batch(images, labels, return_dict=True) for _ in range(2)]
        runs[jit] = logs, [v.numpy() for v in distiller.student.weights + distiller.holistic.critic.weights]
    (plain_logs, plain_weights), (xla_logs, xla_weights) = runs[False], runs[True]
    for step, (a, b) in enumerate(zip(plain_logs, xla_logs)):
        assert set(a) == set(b) and {"pixel", "pairwise", "holistic", "critic", "wasserstein"} <= set(a)
        for key in a:
            np.testing.assert_allclose(float(b[key]), float(a[key]), rtol=2e-4, atol=1e-6, err_msg=f"{key}, step {step}")
    assert len(plain_weights) == len(xla_weights)
    for a, b in zip(plain_weights, xla_weights):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_a_distillation_with_zero_weight_ends_with_the_baseline_weights(tiny_teacher, tmp_path):
    """Same seed, same student: `distill` builds the student before it loads the teacher, so it starts from the
    weights and dropout seeds `train` gives the baseline and sees the same batches; the diagnostics sampled every
    step leave no trace. With λ = 0 the two runs end equal — a distilled row differs from the baseline only by
    its terms (the sweep and the ablation compare them)."""
    from skd_tf.training.run import train

    steps = ["train.steps=4", "train.steps_per_epoch=2"]
    baseline = load_config(ROOT / "configs" / "synthetic_student.yaml",
                           TINY + [f"train.out_dir={tmp_path / 'baseline'}", *steps])
    train(baseline, verbose=0)
    cfg = tiny("synthetic_skd_pi", tiny_teacher, tmp_path / "distilled", *steps, "distill.losses.pixel.weight=0",
               "distill.diagnostics_every=1", "distill.teacher_distances=false")
    assert "teacher_distance" not in distill(cfg, verbose=0)  # the pass after training is skipped
    trained = load_model(str(tmp_path / "baseline" / "model.keras")).get_weights()
    distilled = load_model(str(tmp_path / "distilled" / "model.keras")).get_weights()
    assert len(trained) == len(distilled)
    for a, b in zip(trained, distilled):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,losses", SYNTHETIC_SINGLE.items())
def test_synthetic_configs_build_and_evaluate_their_losses(name, losses):
    from skd_tf.distill.run import build_losses
    from skd_tf.losses import LOSSES

    d = parse_distill(load_config(ROOT / "configs" / f"{name}.yaml").distill)
    assert list(d.losses) == losses and d.holistic is None and all(d.losses[n].weight > 0 for n in losses)
    models = [build_model(ModelConfig(width=0.125, head_channels=c), 6, (32, 32)) for c in (12, 8)]
    built = build_losses(d, *models)
    images = tf.random.stateless_uniform((2, 32, 32, 3), (0, 1))
    labels = tf.zeros((2, 32, 32), tf.int32)
    for n in losses:
        assert isinstance(built[n][0], LOSSES[n].cls)
        value = built[n][0](models[1](images), models[0](images), labels=labels, images=images)
        assert np.isfinite(float(value)) and float(value) >= 0


@pytest.mark.parametrize("name", ["cityscapes_skd", "cityscapes_skd_reference_code"])
def test_cityscapes_distill_configs_parse(name):
    d = parse_distill(load_config(ROOT / "configs" / f"{name}.yaml").distill)
    assert d.losses["pixel"].weight == 10.0 and d.holistic.weight == 0.1


def test_distill_config_errors_name_the_key():
    base = {"teacher": "t.keras", "losses": {"pixel": {"weight": 1.0}}}
    with pytest.raises(ConfigError, match=r"distill\.losses\.pairwise\.granlarity: unknown option"):
        parse_distill({**base, "losses": {"pairwise": {"weight": 1.0, "granlarity": 2}}})
    with pytest.raises(ConfigError, match=r"distill\.losses\.pixle: unknown loss"):
        parse_distill({**base, "losses": {"pixle": {"weight": 1.0}}})
    with pytest.raises(ConfigError, match=r"distill\.holistic\.n_critic"):
        parse_distill({**base, "holistic": {"n_critic": 0}})
    with pytest.raises(ConfigError, match=r"distill\.losses\.pixel\.temperature"):
        parse_distill({**base, "losses": {"pixel": {"weight": 1.0, "temperature": "hot"}}})


def test_critic_loss_weight_scales_the_critic_step():
    """The reference minimises λ_ho·(critic objective): with plain SGD the first critic update is exactly
    critic_loss_weight × the unscaled one (same initial critic, same batch, same penalty draws)."""
    from skd_tf.distill.distiller import Distiller
    from skd_tf.losses import HolisticDistillation

    images = tf.constant(np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32"))
    labels = tf.zeros((2, 32, 32), tf.int32)
    deltas = {}
    for weight in (1.0, 0.1):
        keras.utils.set_random_seed(0)
        teacher, student = small_segmenter(3, 8, name="teacher"), small_segmenter(3, 4, name="student")
        holistic = HolisticDistillation(critic_width=0.0625, seed=1)
        distiller = Distiller(teacher, student, {}, 3, holistic=holistic, global_batch_size=2,
                              critic_loss_weight=weight)
        distiller.compile(optimizer=keras.optimizers.SGD(0.0), critic_optimizer=keras.optimizers.SGD(0.01))
        distiller.build_state((32, 32, 3))
        before = [v.numpy().copy() for v in holistic.critic.trainable_variables]
        distiller.train_step((images, labels))
        deltas[weight] = [v.numpy() - b for v, b in zip(holistic.critic.trainable_variables, before)]
    assert max(np.abs(d).max() for d in deltas[1.0]) > 1e-5
    for full, scaled in zip(deltas[1.0], deltas[0.1]):
        np.testing.assert_allclose(scaled, 0.1 * full, rtol=1e-3, atol=1e-7)


def test_evaluation_changes_no_variable():
    """Distiller.evaluate with knowledge adaptation (an adapter with a batch norm) and a holistic critic: every
    variable of the student, the losses, the critic and the optimizers is the same before and after, twice."""
    from skd_tf.distill.distiller import Distiller
    from skd_tf.losses import FeatureAutoEncoder, HolisticDistillation, KnowledgeAdaptation

    keras.utils.set_random_seed(0)
    teacher, student = small_segmenter(3, 4, name="teacher"), small_segmenter(3, 4, name="student")
    ka = KnowledgeAdaptation(FeatureAutoEncoder(8, code_channels=4), adapter_depth=1)
    distiller = Distiller(teacher, student, {"ka": (ka, 1.0)}, 3, holistic=HolisticDistillation(critic_width=0.0625),
                          global_batch_size=2)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01), critic_optimizer=keras.optimizers.SGD(0.01))
    distiller.build_state((32, 32, 3))
    rng = np.random.default_rng(0)
    images = (3.0 * rng.normal(size=(4, 32, 32, 3)) + 1.0).astype("float32")  # far from the BN's initial stats
    labels = rng.integers(0, 3, (4, 32, 32)).astype("int32")
    distiller.train_step((tf.constant(images[:2]), tf.constant(labels[:2])))
    watched = [v for v in distiller.variables if "tracker" not in v.path and "mean_io_u" not in v.path]
    before = [v.numpy().copy() for v in watched]
    assert any("adapter" in v.path and "moving_mean" in v.path for v in watched)
    for _ in range(2):
        distiller.evaluate(images, labels, batch_size=2, verbose=0)
    after = [v.numpy() for v in watched]
    assert len(after) == len(before)
    changed = [v.path for v, b, a in zip(watched, before, after) if not np.array_equal(b, a)]
    assert not changed, changed


def test_teacher_errors(tiny_teacher, tmp_path):
    cfg = tiny("synthetic_skd_pi", tmp_path / "missing.keras", tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        distill(cfg, verbose=0)
    cfg = tiny("synthetic_skd_pi", tiny_teacher, tmp_path / "run", "data.num_classes=5")
    with pytest.raises(ValueError, match="predicts 6 classes but the student config has 5"):
        distill(cfg, verbose=0)


def test_nan_stops_with_the_term_and_step_and_keeps_the_last_good_state(tiny_teacher, tmp_path, monkeypatch):
    import skd_tf.training.run as run

    original = run.train_dataset

    def poisoned(*args, **kwargs):  # the third batch (step 3) carries a NaN pixel
        def poison(k, batch):
            images, labels = batch
            bad = tf.tensor_scatter_nd_update(images, [[0, 0, 0, 0]], [float("nan")])
            return tf.cond(k == 2, lambda: bad, lambda: images), labels
        return original(*args, **kwargs).enumerate().map(poison)

    monkeypatch.setattr(run, "train_dataset", poisoned)
    cfg = tiny("synthetic_skd_pi_pa", tiny_teacher, tmp_path / "run", "train.steps=4", "train.steps_per_epoch=2")
    with pytest.raises(TrainingDiverged, match=r"'ce' became nan at step 3.*epoch 1"):
        distill(cfg, verbose=0)
    assert read_epoch(tmp_path / "run" / "state") == 1


def write_tiny_config(path, teacher, out, *extra):
    cfg = tiny("synthetic_skd_full", teacher, out, "train.steps=6", "train.steps_per_epoch=2",
               "distill.teacher_distances=false", *extra)  # what is compared is the training
    path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    return path


def run_cli(config, *extra, **kwargs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "skd_tf.cli", "distill", "--config", str(config), "--quiet",
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def test_resume_after_sigkill_matches_an_uninterrupted_run(tiny_teacher, tmp_path, capsys):
    """A `skd-tf distill` process killed after its first epoch, resumed, ends with the weights (the critic's too)
    of a run never interrupted. Only the killed run is a process of its own; the others run in this one, which
    saves a TensorFlow start-up each (the suite is CPU-bound)."""
    from skd_tf.cli import main

    whole = write_tiny_config(tmp_path / "whole.yaml", tiny_teacher, tmp_path / "whole")
    killed = write_tiny_config(tmp_path / "killed.yaml", tiny_teacher, tmp_path / "killed")
    proc = run_cli(killed)
    deadline = time.time() + 600
    while read_epoch(tmp_path / "killed" / "state") < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    output = proc.communicate()[0].decode()
    reached = read_epoch(tmp_path / "killed" / "state")
    assert 1 <= reached < 3, f"the run must be killed mid-way: {output}"
    assert main(["distill", "--config", str(whole), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["distill", "--config", str(killed), "--quiet"]) == 0
    assert f"resuming {tmp_path / 'killed'} from epoch {reached}/3" in capsys.readouterr().out

    a = load_model(tmp_path / "whole" / "model.keras").get_weights()
    b = load_model(tmp_path / "killed" / "model.keras").get_weights()
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # resumed from a state without the frozen teacher: its models are the student alone
    state = h5_arrays(tmp_path / "killed" / "state" / "state.weights.h5")
    assert sum(v.size for k, v in state.items() if k.startswith("layers/")) == sum(w.size for w in b)
    critic_a, critic_b = (h5_arrays(tmp_path / d / "critic.weights.h5") for d in ("whole", "killed"))
    assert list(critic_a) == list(critic_b) and len(critic_a) > 0
    for name in critic_a:
        np.testing.assert_allclose(critic_a[name], critic_b[name], rtol=1e-5, atol=1e-6, err_msg=name)


def h5_arrays(path) -> dict:
    """Every dataset of a Keras ``.weights.h5`` file, by its path in the file."""
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset)
                     else None)
    return arrays


from replica_gradients import ALL_LOSSES  # noqa: E402  (the same ten losses as the per-term check)


def all_losses_config(path, teacher, out, strategy, *extra, losses=ALL_LOSSES):
    cfg = tiny("synthetic_skd_full", teacher, out, "train.steps=2", "train.steps_per_epoch=1", "model.dropout=0",
               f"distill.strategy={strategy}", *extra)
    raw = json.loads(cfg.model_dump_json())
    raw["distill"]["losses"] = losses
    path.write_text(yaml.safe_dump(raw))
    return path


# Runs the CLI with two logical CPU devices, so that `mirrored` has two replicas.
TWO_CPUS = ("import sys, tensorflow as tf; cpu = tf.config.list_physical_devices('CPU')[0]; "
            "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2); "
            "from skd_tf.cli import main; sys.exit(main(sys.argv[1:]))")


def run_python(code, *args, env=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


# Under pytest-xdist (make test), the tests that share one replica_report stay in one worker process.
SAME_REPORT = pytest.mark.xdist_group("replica_report")


@functools.lru_cache(maxsize=None)
def replica_report() -> dict:
    """tests/replica_gradients.py's report, run once in a fresh process with oneDNN on (TensorFlow's default
    on x86, what users run).

    Not run a second time with oneDNN off: the distribution logic under test is the same code either way,
    and each term's tolerance comes from that run's own measured conditioning, so a second run checked the
    same logic under another rounding for 24 s more of the suite (it passed on every host it ran on)."""
    script = Path(__file__).with_name("replica_gradients.py")
    proc = run_python(f"import runpy, sys; sys.path.insert(0, {str(script.parent)!r}); "
                      f"runpy.run_path({str(script)!r}, run_name='__main__')",
                      env={"TF_ENABLE_ONEDNN_OPTS": "1"})
    output = proc.communicate(timeout=900)[0].decode()
    assert proc.returncode == 0, output
    return json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])


@SAME_REPORT
def test_the_replica_report_tests_share_one_worker(request):
    """`make test` runs pytest-xdist with --dist loadgroup so that the tests reading replica_report land in one
    worker and the report (a minute of CPU) is made once. pytest 9.2 silently broke that grouping
    (pytest-dev/pytest-xdist#1386; setup.py keeps pytest below 9.2): fail if the group is not applied."""
    if getattr(request.config.option, "loadgroup", False):  # set in each xdist worker under --dist loadgroup
        assert request.node.nodeid.endswith("@replica_report"), request.node.nodeid


@SAME_REPORT
def test_each_terms_gradient_on_two_replicas_matches_one_device():
    """Step 1, every loss: the summed gradients of two replicas on halves of a batch equal one device's.

    Tolerance per term, from float32 and that term's conditioning: splitting the batch only changes
    the order of float32 sums inside convolutions and reductions, i.e. perturbs intermediate values
    by a few ulps (~1e-7 relative, more for long sums). How far such a perturbation moves a term's
    gradient is its conditioning, measured here on the same host as `sensitivity`: the response to
    a 1e-6 relative perturbation of every weight. We allow 10× that response (the split perturbs
    every activation, the probe only weights, along one random direction), and never less than
    1e-5 (the rounding of summing two half-batch gradients). A real error in the distribution logic
    (a per-replica instead of a global-batch average, a missing all-gather, a per-replica batch norm)
    changes gradients by 10–100 % and fails by orders of magnitude. On AVX2 the split differences
    are 4e-7–2e-6 and the sensitivities 2e-6–2e-5 (tests/small_networks.py's teacher and student; with
    their batch norms made per-replica, the splits were 0.29–1.5 and the paper configuration's end 7.7e-3);
    the start is well-conditioned, which is asserted so that the tolerance cannot silently grow to
    meaninglessness.
    """
    report = dict(replica_report())
    report.pop("paper_configuration", None)
    assert set(report) == {"ce", "holistic", *ALL_LOSSES}
    for name, r in report.items():
        assert r["scale"] > 0, f"{name} has no gradient"
        assert r["sensitivity"] < 1e-3, f"{name}: ill-conditioned start ({r})"
        tolerance = max(10 * r["sensitivity"], 1e-5)
        assert r["split"] <= tolerance, f"{name}: 2 replicas differ by {r['split']:.2e} > {tolerance:.2e} ({r})"


@SAME_REPORT
def test_mirrored_paper_configuration_ends_with_the_single_device_weights():
    """Pixel + pair-wise + holistic (with its critic updates), 3 SGD steps of Distiller.fit, 1 vs 2 replicas,
    in the per-term test's process (oneDNN on, what users run).

    Tolerance: the per-term test above bounds the replica difference of each step's gradient by
    ~1e-5 relative, so 3 steps of lr·g (SGD, lr = 1e-4, momentum 0.9) differ by ~1e-7 — measured
    6e-8 on AVX2 (BN statistics included; 2.4e-7 with the PSPNet-ResNet-18 students used before
    tests/small_networks.py); we allow 1e-5. Why not a larger lr: a tiny student on batches of 4
    becomes ill-conditioned once it has moved — the PSPNet one, at lr = 1e-3, differed by 1.2e-7,
    3.5e-7, then 1.4e-5 after step 3, and on one device moving its weights by 2.5e-6 moved its
    pair-wise gradient by 1.5e-3 relative. That is the student's conditioning, not the distribution,
    so any rounding difference (replica split, another CPU) is amplified alike.
    """
    r = replica_report()["paper_configuration"]
    assert r["init"] == 0.0, "both runs must start from the same weights"
    assert r["moved"] > 1e-4, "the student trained"
    assert r["end"] <= 1e-5, f"2 replicas ended {r['end']:.2e} from one device"


def free_ports(count):
    import socket
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# The losses with variables of their own (FitNet's regressor, knowledge adaptation's adapter and its batch norm,
# CWD's channel aligner when channels differ), the pixel-wise term, and the critic of synthetic_skd_full: what
# two workers must keep in step. The stateless pair-wise and relational losses and AT add only graph to trace;
# their gradients under distribution are checked term by term by test_each_terms_gradient_on_two_replicas_....
WORKER_LOSSES = {name: ALL_LOSSES[name] for name in ("pixel", "cwd", "fitnet", "ka")}


def test_multi_worker_run_ends_with_identical_weights_on_both_workers(tiny_teacher, tmp_path):
    config = all_losses_config(tmp_path / "mw.yaml", tiny_teacher, tmp_path / "mw", "multi_worker",
                               "distill.teacher_distances=false", losses=WORKER_LOSSES)
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(run_python("import sys; from skd_tf.cli import main; sys.exit(main(sys.argv[1:]))",
                                "distill", "--config", str(config), "--quiet", env={"TF_CONFIG": tf_config}))
    for proc in procs:
        output = proc.communicate(timeout=900)[0].decode()
        assert proc.returncode == 0, output
    chief = load_model(tmp_path / "mw" / "model.keras").get_weights()
    other = load_model(tmp_path / "mw" / "worker1" / "model.keras").get_weights()
    assert len(chief) == len(other) > 0
    for a, b in zip(chief, other):
        np.testing.assert_array_equal(a, b)


def test_critic_optimizer_choice():
    from skd_tf.distill.run import _optimizers

    cfg = load_config(ROOT / "configs" / "synthetic_skd_full.yaml")
    dcfg = parse_distill(cfg.distill)
    _, critic = _optimizers(cfg, dcfg)
    assert isinstance(critic, keras.optimizers.Adam) and critic.beta_1 == 0.0 and critic.beta_2 == 0.9
    assert dcfg.holistic.n_critic == 5 and dcfg.holistic.critic_scale == 1.0
    reference = parse_distill(load_config(ROOT / "configs" / "cityscapes_skd_reference_code.yaml").distill)
    _, critic = _optimizers(cfg, reference)
    assert isinstance(critic, keras.optimizers.SGD) and critic.momentum == 0.9
