"""Holistic critic (WGAN-GP / hinge), knowledge adaptation, and use with keras.distillation.Distiller."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import losses_reference as ref
from skd_tf.config import ModelConfig
from skd_tf.losses import (AutoEncoderTrainer, FeatureAutoEncoder, HolisticCritic, HolisticDistillation, KerasDistillationLoss,
                           KnowledgeAdaptation, PairwiseDistillation, PixelwiseDistillation, autoencoder_loss,
                           autoencoder_quality, gradient_penalty, pretrain_autoencoder)
from skd_tf.models import build_model
from small_networks import small_segmenter


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


# ---------------------------------------------------------------- holistic

def unit_linear_critic(shape, seed=0):
    w = rand(*shape, seed=seed)
    w /= np.linalg.norm(w)
    return lambda m, c: tf.reduce_sum(m * w, axis=[1, 2, 3]), w


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic():
    critic, _ = unit_linear_critic((4, 4, 3))
    gp = gradient_penalty(critic, rand(5, 4, 4, 3, seed=1), rand(5, 4, 4, 3, seed=2))
    np.testing.assert_allclose(gp, np.zeros(5), atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradient_penalty_of_a_map_scoring_critic_follows_the_reduction(reduction):
    """A 1×1-conv critic scores each of the h·w positions with w·x_p. The reference differentiates the
    sum of the map (∇ = w at every position, ‖∇‖ = √(hw)·‖w‖); the mean gives ‖w‖/√(hw)."""
    h, w_, c = 3, 5, 4
    weights = rand(c, seed=20)
    score_map = lambda m: tf.einsum("bhwc,c->bhw", m, weights)
    reduce = tf.reduce_mean if reduction == "mean" else tf.reduce_sum
    gp = gradient_penalty(lambda m, _: reduce(score_map(m), axis=[1, 2]), rand(2, h, w_, c, seed=21),
                          rand(2, h, w_, c, seed=22), None, np.array([0.2, 0.7], "float32"))
    norm = np.linalg.norm(weights) * (np.sqrt(h * w_) if reduction == "sum" else 1 / np.sqrt(h * w_))
    np.testing.assert_allclose(gp, [(norm - 1) ** 2] * 2, rtol=1e-5)


class MapScoringCritic(keras.layers.Layer):
    """A 1×1 linear critic: score map w·m_p at every position p, score = mean of the map."""

    def __init__(self, w):
        super().__init__()
        self.w = w

    def score_map(self, m, condition=None, training=False):
        return tf.einsum("bhwc,c->bhw", m, self.w)

    def call(self, m, condition=None, training=False):
        return tf.reduce_mean(self.score_map(m), axis=[1, 2])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_holistic_gp_reduction_follows_the_critics_score_map(reduction):
    """HolisticDistillation's critic objective with a map-scoring critic: D(m) = mean_p w·softmax(m)_p,
    ‖∇‖ = ‖w‖/√(hw) for "mean" and √(hw)·‖w‖ for "sum" (the reference's penalty)."""
    h, w_, c = 4, 6, 3
    weights = rand(c, seed=26)
    s, t = rand(2, h, w_, c, seed=23), rand(2, h, w_, c, seed=24)
    loss = HolisticDistillation(critic_input="logits", gp_weight=10.0, gp_reduction=reduction, seed=1)
    loss.critic = MapScoringCritic(weights)
    loss.global_batch_size = 2
    d_s, d_t = (s @ weights).mean(axis=(1, 2)), (t @ weights).mean(axis=(1, 2))
    norm = np.linalg.norm(weights) * (np.sqrt(h * w_) if reduction == "sum" else 1 / np.sqrt(h * w_))
    expected = np.mean(d_s - d_t + 10.0 * (norm - 1) ** 2)
    np.testing.assert_allclose(loss.critic_loss(s, t, step=0), expected, rtol=1e-5)


def test_holistic_critic_scores_the_mean_of_its_map():
    """The critic's score is the mean of its last convolution's map, which is h×w > 1×1 on 32×32 maps."""
    keras.utils.set_random_seed(0)
    critic = HolisticCritic(width=0.0625)
    m, img = rand(2, 32, 32, 3, seed=27), rand(2, 64, 64, 3, seed=28)
    score_map = critic.score_map(m, img).numpy()
    assert score_map.shape == (2, 2, 2)
    np.testing.assert_allclose(critic(m, img), score_map.mean(axis=(1, 2)), rtol=1e-5, atol=1e-7)


def test_gradient_penalty_matches_a_quadratic_critic_by_hand():
    real, fake = rand(3, 2, 2, 2, seed=3), rand(3, 2, 2, 2, seed=4)
    eps = np.array([0.0, 0.3, 1.0], "float32")
    critic = lambda m, c: 0.5 * tf.reduce_sum(m * m, axis=[1, 2, 3])  # gradient = the input itself
    mixed = eps[:, None, None, None] * real + (1 - eps[:, None, None, None]) * fake
    expected = (np.sqrt((mixed ** 2).sum(axis=(1, 2, 3))) - 1) ** 2
    np.testing.assert_allclose(gradient_penalty(critic, real, fake, None, eps), expected, rtol=1e-5)


class LinearCritic(keras.layers.Layer):
    """D(m) = Σ m·w with ‖w‖ = 1, standing in for the critic network."""

    def __init__(self, w):
        super().__init__()
        self.w = w

    def call(self, m, condition=None, training=False):
        return tf.reduce_sum(m * self.w, axis=[1, 2, 3])


def test_critic_and_generator_objectives():
    s, t = rand(4, 4, 4, 3, seed=5), rand(4, 4, 4, 3, seed=6)
    images = rand(4, 32, 32, 3, seed=7)
    _, w = unit_linear_critic((4, 4, 3), seed=8)
    for loss_type in ("wgan-gp", "hinge"):
        loss = HolisticDistillation(loss_type=loss_type, seed=1)
        loss.critic = LinearCritic(w)
        softmax = lambda x: ref.softmax(x)
        d_s = (softmax(s) * w).sum(axis=(1, 2, 3))
        d_t = (softmax(t) * w).sum(axis=(1, 2, 3))
        if loss_type == "wgan-gp":  # a unit-norm linear critic has no gradient penalty
            expected = np.mean(d_s - d_t)
        else:
            expected = np.mean(np.maximum(0, 1 - d_t) + np.maximum(0, 1 + d_s))
        np.testing.assert_allclose(float(loss.critic_loss(s, t, images)), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float(loss(s, t, images=images)), -np.mean(d_s), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float(loss.wasserstein_estimate(s, t, images)), np.mean(d_t - d_s),
                                   rtol=1e-5, atol=1e-6)


def test_critic_architecture_and_zero_gamma():
    critic = HolisticCritic(width=0.125)
    maps, image = rand(2, 16, 16, 5, seed=9), rand(2, 64, 64, 3, seed=10)
    scores = critic(maps, image)
    assert scores.shape == (2,)
    assert float(critic.attention3.gamma) == 0.0 and float(critic.attention4.gamma) == 0.0
    x = rand(2, 4, 4, 32, seed=11)  # attention3 follows the 3rd conv: 256 × 0.125 channels
    np.testing.assert_array_equal(critic.attention3(x), x)  # γ = 0: attention starts as identity
    assert [c.filters for c in critic.convs] == [8, 16, 32, 64]
    assert all(c.kernel_size == 4 and c.strides == 2 for c in critic.convs)


def test_spectral_conv_has_unit_spectral_norm():
    from skd_tf.losses.holistic import SpectralConv2D

    keras.utils.set_random_seed(4)  # the kernel's initial draw must not depend on which tests ran before
    conv = SpectralConv2D(6, 3)
    conv(rand(1, 8, 8, 5))
    for _ in range(300):  # power iterations converge while training (slowly when σ1 ≈ σ2)
        kernel = conv.normalized_kernel(training=True)
    top = np.linalg.svd(kernel.numpy().reshape(-1, 6), compute_uv=False)[0]
    assert abs(top - 1.0) < 1e-3
    raw = np.linalg.svd(conv.kernel.numpy().reshape(-1, 6), compute_uv=False)[0]
    assert abs(raw - 1.0) > 1e-2  # the variable itself is not overwritten


def test_holistic_inputs_and_critic_training_step_are_finite():
    for mode in ("softmax_image", "logits"):
        loss = HolisticDistillation(critic_input=mode, critic_width=0.125, seed=0)
        s, t, images = rand(2, 8, 8, 4, seed=12), rand(2, 8, 8, 4, seed=13), rand(2, 64, 64, 3, seed=14)
        with tf.GradientTape() as tape:
            value = loss.critic_loss(s, t, images)
        grads = tape.gradient(value, loss.critic.trainable_variables)
        assert np.isfinite(float(value)) and all(g is not None for g in grads)
    with pytest.raises(ValueError, match="needs the input images"):
        HolisticDistillation()(s, t)


# ---------------------------------------------------------------- knowledge adaptation

def test_autoencoder_loss_matches_reference():
    f, r, code = rand(2, 4, 4, 6, seed=15), rand(2, 4, 4, 6, seed=16), rand(2, 2, 2, 3, seed=17)
    expected = [((r[i] - f[i]) ** 2).sum() / f[i].size + 1e-3 * np.abs(code[i]).sum() / f[i].size for i in range(2)]
    np.testing.assert_allclose(autoencoder_loss(f, r, code, alpha=1e-3), expected, rtol=1e-5)


def test_autoencoder_quality_by_hand():
    class Identity(keras.Model):  # a "teacher" whose features are the images
        def call(self, images, training=False):
            return {"features": images}

    ae = FeatureAutoEncoder(feature_channels=2, code_channels=3)
    images = rand(2, 4, 4, 2, seed=21)
    reconstruction, code = ae(images)
    quality = autoencoder_quality(Identity(), ae, [images])
    centred = images - images.mean(axis=(0, 1, 2))
    expected = ((reconstruction.numpy() - images) ** 2).sum() / (centred ** 2).sum()
    assert quality["relative_reconstruction_error"] == pytest.approx(expected, rel=1e-5)
    code = code.numpy()
    assert quality["dead_code_channels"] == pytest.approx(np.mean(~(code > 0).any(axis=(0, 1, 2))))
    squared = (code ** 2).sum(-1)
    small = squared < 0.01 * squared.mean(axis=(1, 2), keepdims=True)
    assert quality["small_code_vectors"] == pytest.approx(small.mean())


def test_autoencoder_shapes():
    ae = FeatureAutoEncoder(feature_channels=12, code_channels=5)
    reconstruction, code = ae(rand(2, 8, 6, 12, seed=18))
    assert reconstruction.shape == (2, 8, 6, 12) and code.shape == (2, 4, 3, 5)
    reconstruction, code = FeatureAutoEncoder(feature_channels=12, code_channels=5, stride=1)(rand(2, 8, 6, 12))
    assert reconstruction.shape == (2, 8, 6, 12) and code.shape == (2, 8, 6, 5)


@pytest.mark.parametrize("student_stride, code_stride", [(8, 1), (16, 2)])
def test_knowledge_adaptation_code_has_the_students_resolution(student_stride, code_stride):
    from skd_tf.distill.config import parse_distill
    from skd_tf.distill.run import build_losses

    teacher = build_model(ModelConfig(width=0.125, head_channels=8), 3, (32, 32))
    student = build_model(ModelConfig(width=0.125, head_channels=8, output_stride=student_stride), 3, (32, 32))
    dcfg = parse_distill({"teacher": "t.keras", "losses": {"ka": {"weight": 1.0}}})
    ka = build_losses(dcfg, teacher, student)["ka"][0]
    assert ka.autoencoder.stride == code_stride
    code = ka.autoencoder.encode(teacher(tf.zeros((1, 32, 32, 3)))["features"])
    assert code.shape[1:3] == student(tf.zeros((1, 32, 32, 3)))["features"].shape[1:3]


@pytest.mark.parametrize("floor", [0.0, 0.1])
def test_knowledge_adaptation_matches_reference(floor):
    ae = FeatureAutoEncoder(feature_channels=6, code_channels=4)
    ka = KnowledgeAdaptation(ae, beta=50.0, gamma=1.0, norm_floor=floor)
    s, t = rand(2, 8, 8, 3, seed=19), rand(2, 8, 8, 6, seed=20)
    terms = {k: float(v) for k, v in ka.components(s, t).items()}
    assert len(ka.adapter.layers) == 3  # the paper's three conv+BN+ReLU layers
    code = ae.encode(t).numpy()
    adapted = ka.adapter(s).numpy()
    adapted = tf.image.resize(adapted, code.shape[1:3], method="bilinear").numpy()
    cn = np.stack([ref.floored_normalize(c, floor) for c in code])
    an = np.stack([ref.floored_normalize(a, floor) for a in adapted])
    adapt = np.mean([np.mean(np.linalg.norm(cn[i] - an[i], axis=-1)) for i in range(2)])
    affinity = []
    for i in range(2):
        fc, fa = cn[i].reshape(-1, 4), an[i].reshape(-1, 4)
        n = fc.shape[0]
        affinity.append((((fa @ fa.T) / n - (fc @ fc.T) / n) ** 2).sum())  # A = (1/N) f̂_i·f̂_j
    np.testing.assert_allclose(terms["ka_adapt"], adapt, rtol=1e-5)
    np.testing.assert_allclose(terms["ka_affinity"], np.mean(affinity), rtol=1e-4)
    np.testing.assert_allclose(float(ka(s, t)), 50 * adapt + np.mean(affinity), rtol=1e-5)
    assert not ka.autoencoder.trainable and ka.adapter.trainable_variables


def test_autoencoder_pretraining_reduces_its_loss():
    keras.utils.set_random_seed(0)
    teacher = small_segmenter(3, 4, name="teacher")  # 8 feature channels
    images = tf.data.Dataset.from_tensors(rand(4, 32, 32, 3, seed=21)).repeat()
    trainer = AutoEncoderTrainer(teacher, FeatureAutoEncoder(feature_channels=8, code_channels=4))
    trainer.compile(optimizer=keras.optimizers.Adam(1e-2))
    losses = trainer.fit(images, steps_per_epoch=10, epochs=3, verbose=0).history["ae_loss"]
    assert losses[-1] < 0.5 * losses[0]
    assert not teacher.trainable
    ae = FeatureAutoEncoder(feature_channels=8, code_channels=4)
    result = pretrain_autoencoder(teacher, ae, images, steps=4, verbose=0, probe_batches=[rand(2, 32, 32, 3)],
                                  probes=2)
    assert np.isfinite(result["loss"]) and not ae.trainable
    assert [c["step"] for c in result["curve"]] == [2, 4]
    assert result["curve"][-1]["relative_reconstruction_error"] < result["curve"][0]["relative_reconstruction_error"]


# ---------------------------------------------------------------- keras.distillation

def test_losses_plug_into_keras_distiller():
    keras.utils.set_random_seed(1)
    teacher_net, student_net = small_segmenter(3, 8, name="teacher"), small_segmenter(3, 4, name="student")
    # Keras's Distiller compares final outputs: give it logits-only views; the pair-wise loss reads
    # the feature maps through their layers' names.
    teacher = keras.Model(teacher_net.input, teacher_net.output["logits"])
    student = keras.Model(student_net.input, student_net.output["logits"])
    pixel, pairwise = PixelwiseDistillation(), PairwiseDistillation(granularity=2)
    distiller = keras.distillation.Distiller(
        teacher, student,
        [KerasDistillationLoss(pixel), KerasDistillationLoss(pairwise, "teacher_relu2", "student_relu2")],
        distillation_loss_weights=[1.0, 0.5], student_loss_weight=0.3)
    distiller.compile(optimizer="sgd", loss=keras.losses.MeanSquaredError())
    x, y = rand(2, 32, 32, 3, seed=22), rand(2, 4, 4, 3, seed=23)
    initial = student_net.get_weights()
    value = float(distiller.compute_loss(x, y, training=False))
    student_net.set_weights(initial)  # feature extraction in training mode moved the BN statistics
    t_out, s_out = teacher_net(x), student_net(x)
    s_features = student_net(x, training=True)  # Keras extracts student features in training mode
    expected = (0.3 * np.mean((s_out["logits"].numpy() - y) ** 2)
                + 0.7 * (float(pixel(s_out, t_out)) + 0.5 * float(pairwise(s_features, t_out))))
    np.testing.assert_allclose(value, expected, rtol=1e-4)
    history = distiller.fit(x, y, epochs=2, batch_size=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_every_trainable_variable_of_a_loss_gets_a_gradient():
    """Adapters must train: building a loss by symbolic tracing once left them without gradients."""
    from skd_tf.losses import ChannelwiseDistillation, FitNetDistillation

    ae = FeatureAutoEncoder(feature_channels=6, code_channels=4)
    s = {"logits": rand(2, 8, 8, 3, seed=30), "features": rand(2, 8, 8, 5, seed=31)}
    t = {"logits": rand(2, 8, 8, 3, seed=32), "features": rand(2, 8, 8, 6, seed=33)}
    losses = [FitNetDistillation(teacher_channels=6), ChannelwiseDistillation(reads="features", align_channels=6),
              KnowledgeAdaptation(ae)]
    for loss in losses:
        loss(s, t)  # first call builds the adapters
        with tf.GradientTape() as tape:
            value = loss(s, t, images=rand(2, 32, 32, 3))
        grads = tape.gradient(value, loss.trainable_variables)
        assert loss.trainable_variables, type(loss).__name__
        assert all(g is not None for g in grads), type(loss).__name__
    ae.trainable = True  # unfrozen for stage 1 after being built frozen inside the loss
    with tf.GradientTape() as tape:
        reconstruction, code = ae(t["features"], training=True)
        value = tf.reduce_mean(autoencoder_loss(t["features"], reconstruction, code))
    assert all(g is not None for g in tape.gradient(value, ae.trainable_variables))
