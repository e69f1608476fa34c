"""Distillation diagnostics: per-term gradient norms, and students' distances to the teacher."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from skd_tf.config import DataConfig
from skd_tf.distill.diagnostics import gradient_norms, gradient_shares, read_gradient_shares, teacher_distances
from skd_tf.distill.distiller import Distiller
from skd_tf.losses import HolisticDistillation, PairwiseDistillation, PixelwiseDistillation
from skd_tf.training.trainer import supervised_losses
from small_networks import small_segmenter

DATA = DataConfig(synthetic={"num_train": 8, "num_val": 4, "image_size": 32}, crop_size=(32, 32), num_classes=6)


def models(seed=0):
    """tests/small_networks.py's teacher and student, 8 feature channels each: what is checked is the
    diagnostics' arithmetic, not a backbone."""
    keras.utils.set_random_seed(seed)
    return small_segmenter(6, 4, name="teacher"), small_segmenter(6, 4, name="student")


def batch():
    rng = np.random.default_rng(0)
    return (tf.constant(rng.normal(size=(2, 32, 32, 3)).astype("float32")),
            tf.constant(rng.integers(0, 6, size=(2, 32, 32)).astype("int32")))


def global_norm(grads):
    return np.sqrt(sum(float(np.sum(np.square(g))) for g in grads if g is not None))


def test_gradient_norms_are_the_weighted_terms_gradient_norms_and_leave_the_state_alone():
    teacher, student = models()
    pixel = PixelwiseDistillation()
    holistic = HolisticDistillation(critic_width=0.0625, seed=0)
    distiller = Distiller(teacher, student, {"pixel": (pixel, 3.0)}, 6, holistic=holistic, holistic_weight=0.5,
                          global_batch_size=2)
    images, labels = batch()
    holistic.score(tf.zeros((2, 4, 4, 6)), images)  # the critic's weights exist before the traced function
    critic = [v.numpy().copy() for v in holistic.critic.weights]
    before = [v.numpy().copy() for v in student.non_trainable_variables]
    norms = gradient_norms(distiller, images, labels)
    for v, b in zip(student.non_trainable_variables, before):
        np.testing.assert_array_equal(v.numpy(), b)  # BN statistics restored
    t_out = teacher(images, training=False)
    with tf.GradientTape(persistent=True) as tape:
        s_out = student(images, training=True)
        ce = supervised_losses(s_out, labels, 255, 0.4, 2)[1]
        term = 3.0 * pixel(s_out, t_out)
        critic_term = 0.5 * holistic(s_out, t_out, images=images)
    for v, b in zip(student.non_trainable_variables, before):
        v.assign(b)
    for v, b in zip(holistic.critic.weights, critic):
        np.testing.assert_array_equal(v.numpy(), b)  # the critic (its spectral norms' u too) untouched
    expected_ce = global_norm(tape.gradient(ce, student.trainable_variables))
    expected_pixel = global_norm(tape.gradient(term, student.trainable_variables))
    expected_holistic = global_norm(tape.gradient(critic_term, student.trainable_variables))
    np.testing.assert_allclose(norms["ce"], expected_ce, rtol=1e-4)
    np.testing.assert_allclose(norms["pixel"], expected_pixel, rtol=1e-4)
    np.testing.assert_allclose(norms["holistic"], expected_holistic, rtol=1e-4)
    assert expected_holistic > 0
    assert gradient_shares(norms) == pytest.approx({"pixel": expected_pixel / expected_ce,
                                                    "holistic": expected_holistic / expected_ce}, rel=1e-4)


def test_read_gradient_shares_keeps_the_last_sample_of_a_repeated_step(tmp_path):
    lines = [{"step": 10, "norms": {}, "shares": {"pixel": 1.0}}, {"step": 20, "norms": {}, "shares": {"pixel": 3.0}},
             {"step": 20, "norms": {}, "shares": {"pixel": 5.0}}]  # step 20 sampled again after a resume
    (tmp_path / "gradient_shares.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    summary = read_gradient_shares(tmp_path)
    assert summary == {"samples": 2, "steps": [10, 20], "mean": {"pixel": 3.0}, "last": {"pixel": 5.0}}
    assert read_gradient_shares(tmp_path / "none") == {}


def test_teacher_distances_are_zero_for_the_teacher_and_match_the_losses_on_the_validation_images():
    teacher, student = models()
    same = teacher_distances(teacher, teacher, DATA, batch_size=4)
    assert same["pixel_kl"] == pytest.approx(0.0, abs=1e-6) and same["pairwise"] == pytest.approx(0.0, abs=1e-6)
    from skd_tf.data import val_dataset

    (images, _), = list(val_dataset(DATA, 4)[0])
    s_out, t_out = student(images, training=False), teacher(images, training=False)
    distances = teacher_distances(student, teacher, DATA, batch_size=4)
    np.testing.assert_allclose(distances["pixel_kl"], float(PixelwiseDistillation()(s_out, t_out)), rtol=1e-5)
    np.testing.assert_allclose(distances["pairwise"], float(PairwiseDistillation()(s_out, t_out)), rtol=1e-5)
    assert distances["pixel_kl"] > 1e-3 and "critic" not in distances


def eager_conv_calls(monkeypatch) -> list[bool]:
    """From now on, whether each Conv2D call of any model runs eagerly (True) or in a compiled graph."""
    seen, call = [], keras.layers.Conv2D.call

    def recording(self, *args, **kwargs):
        seen.append(tf.executing_eagerly())
        return call(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.Conv2D, "call", recording)
    return seen


def test_the_teacher_runs_compiled_when_distances_are_measured_and_the_distiller_is_built(monkeypatch):
    """An eagerly called functional model keeps every layer's output until it returns: a ResNet-101 teacher
    took more than 24 GiB on one 1024×2048 image, 15 GiB on two 769×769 crops (benchmarks/real_size.py)."""
    teacher, student = models()
    seen = eager_conv_calls(monkeypatch)
    teacher_distances(student, teacher, DATA, batch_size=4)
    assert seen and not any(seen)
    seen.clear()
    distiller = Distiller(teacher, student, {"pixel": (PixelwiseDistillation(), 1.0)}, 6)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    distiller.build_state((32, 32, 3))
    assert seen and not any(seen)


def test_evaluate_with_teacher_and_critic_writes_the_distances(tmp_path, capsys, traced_once):
    from skd_tf.cli import main

    teacher, student = models(1)
    teacher.save(tmp_path / "teacher.keras")
    student.save(tmp_path / "student.keras")
    holistic = HolisticDistillation(critic_width=0.0625, seed=0)
    holistic.score(tf.zeros((1, 4, 4, 6)), tf.zeros((1, 32, 32, 3)))
    holistic.critic.save_weights(str(tmp_path / "critic.weights.h5"))
    sets = ["data.synthetic.num_train=8", "data.synthetic.num_val=4", "data.synthetic.image_size=32",
            "data.crop_size=[32,32]", "eval.batch_size=4", "distill.holistic.critic_width=0.0625"]
    config = str(Path(__file__).resolve().parents[1] / "configs" / "synthetic_skd_full.yaml")
    argv = ["evaluate", "--config", config, "--checkpoint", str(tmp_path / "student.keras"), "--quiet",
            "--teacher", str(tmp_path / "teacher.keras"), "--critic", str(tmp_path / "critic.weights.h5"),
            "--json", str(tmp_path / "eval.json")] + [a for s in sets for a in ("--set", s)]
    assert main(argv) == 0
    saved = json.loads((tmp_path / "eval.json").read_text())["teacher_distance"]
    assert "distance to the teacher: pixel KL" in capsys.readouterr().out
    data = DataConfig(synthetic={"num_train": 8, "num_val": 4, "image_size": 32}, crop_size=(32, 32), num_classes=6)
    expected = teacher_distances(student, teacher, data, 4, holistic=holistic)
    assert set(saved) == {"pixel_kl", "pairwise", "critic"}
    for name in saved:
        np.testing.assert_allclose(saved[name], expected[name], rtol=1e-4, atol=1e-7)
    assert main(argv[:-len(sets) * 2] + ["--critic", str(tmp_path / "missing.h5")]) == 2


def test_rampup_scales_the_students_gradient_and_leaves_helpers_at_full_weight():
    from skd_tf.losses import FitNetDistillation

    teacher, student = models()
    pixel, fitnet = PixelwiseDistillation(), FitNetDistillation(8)
    losses = {"pixel": (pixel, 3.0), "fitnet": (fitnet, 2.0)}
    distiller = Distiller(teacher, student, losses, 6, global_batch_size=2, rampup_steps=4)
    distiller.compile(optimizer=keras.optimizers.SGD(0.01))
    distiller.build_state((32, 32, 3))
    images, labels = batch()
    full = gradient_norms(Distiller(teacher, student, losses, 6, global_batch_size=2), images, labels)
    t_out = teacher(images, training=False)
    helper = fitnet.trainable_variables
    assert helper  # the regressor that maps student features to the teacher's

    def gradients():
        """d/dθ of CE + Σ λ·L as the training step sees it, for the student and for the regressor."""
        with tf.GradientTape(persistent=True) as tape:
            s_out = student(images, training=False)
            terms, total = distiller._terms(s_out, t_out, labels, images, training=True)
            ce = terms["ce"]
            distill = 3.0 * pixel(s_out, t_out) + 2.0 * fitnet(s_out, t_out)  # unscaled, straight from the student
        result = [tape.gradient(v, student.trainable_variables + helper) for v in (total, ce, distill)]
        del tape
        return terms, total, result

    for step in (0, 1, 3, 10):
        distiller.optimizer.iterations.assign(step)
        scale = min(1.0, (step + 1) / 4)
        assert float(distiller.distillation_scale()) == pytest.approx(scale)
        terms, total, (g_total, g_ce, g_distill) = gradients()
        assert float(total) == pytest.approx(float(terms["ce"]) + 3.0 * float(terms["pixel"])
                                             + 2.0 * float(terms["fitnet"]), rel=1e-5)  # logged at full weight
        n = len(student.trainable_variables)
        for g, c, d in zip(g_total[:n], g_ce[:n], g_distill[:n]):  # the student: CE + scale · distillation
            if c is not None and d is not None:
                np.testing.assert_allclose(g.numpy(), (c + scale * d).numpy(), rtol=1e-4, atol=1e-7)
        for g, d in zip(g_total[n:], g_distill[n:]):  # the regressor: its full-weight gradient from step 0
            np.testing.assert_allclose(g.numpy(), d.numpy(), rtol=1e-5, atol=1e-8)
        # the sampled gradient share is the share of the term as the step weighs it (on the student)
        assert gradient_norms(distiller, images, labels)["pixel"] == pytest.approx(scale * full["pixel"], rel=1e-4)
    distiller.optimizer.iterations.assign(0)
    distiller.fit(tf.data.Dataset.from_tensors((images, labels)), epochs=1, verbose=0)  # compiled, with the ramp
    assert int(distiller.optimizer.iterations) == 1
