"""Every distillation loss against its NumPy reference, plus invariances and numerical safety."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import losses_reference as ref
from skd_tf.losses import (AttentionTransfer, ChannelwiseDistillation, CorrelationCongruence, FitNetDistillation,
                           InstanceRelationGraph, PairwiseDistillation, PixelwiseDistillation, RelationalKD,
                           SimilarityPreserving)
from skd_tf.losses.pairwise import explicit_pairwise_distance, gram_pairwise_distance

RTOL = 1e-5


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def close(a, b, rtol=RTOL):
    np.testing.assert_allclose(float(a), float(b), rtol=rtol, atol=1e-7)


# ---------------------------------------------------------------- pixel-wise

@pytest.mark.parametrize("tau", [1.0, 2.5])
def test_pixelwise_matches_reference(tau):
    s, t = rand(3, 4, 5, 6, seed=1), rand(3, 4, 5, 6, seed=2)
    close(PixelwiseDistillation(temperature=tau)(s, t), ref.pixelwise(s, t, tau))


def test_pixelwise_ignores_labelled_pixels():
    s, t = rand(2, 4, 4, 3, seed=1), rand(2, 4, 4, 3, seed=2)
    labels = np.random.default_rng(3).integers(0, 3, (2, 8, 8))
    labels[0, :4] = 255  # rows 0-1 of the 4x4 logits are ignored in image 0
    mask = labels[:, ::2, ::2] != 255
    loss = PixelwiseDistillation(ignore_label=255)(s, t, labels=labels)
    close(loss, ref.pixelwise(s, t, 1.0, mask))


# ---------------------------------------------------------------- pair-wise

FLOORS = pytest.mark.parametrize("floor", [0.0, 0.1], ids=["plain_cosine", "norm_floor"])


@FLOORS
@pytest.mark.parametrize("cs,ct", [(6, 6), (5, 9)])
def test_pairwise_exact_equals_explicit_full_graph(cs, ct, floor):
    s, t = rand(2, 6, 7, cs, seed=1), rand(2, 6, 7, ct, seed=2)
    expected = ref.pairwise(s, t, floor=floor)
    close(PairwiseDistillation(norm_floor=floor)(s, t), expected)
    close(PairwiseDistillation(exact=False, norm_floor=floor)(s, t), expected)


@FLOORS
@pytest.mark.parametrize("size,mode", [(2, "max"), (3, "max"), (3, "avg")])
def test_pairwise_pooled_nodes_match_reference(size, mode, floor):
    s, t = rand(2, 7, 8, 4, seed=3), rand(2, 7, 8, 5, seed=4)  # 7x8 with size 3: ceil-mode edge patches
    expected = ref.pairwise(s, t, size, mode, floor)
    close(PairwiseDistillation(granularity=size, pool=mode, norm_floor=floor)(s, t), expected)
    close(PairwiseDistillation(granularity=size, pool=mode, exact=False, norm_floor=floor)(s, t), expected)


def test_pairwise_gram_form_keeps_precision_when_the_loss_is_small_next_to_its_terms():
    """Four similar nodes per image (as a 16×16 map pooled 8×8), the student close to the teacher: the
    Gram identity subtracts sums ~10⁴× the result. Against float64 on the same float32 nodes the Gram form
    must be within 1e-5 relative (float32 accumulation left it 1.6e-3 off here), as close as the explicit
    float32 form can be."""
    base = rand(2, 1, 1, 32, seed=40) + 0.3 * rand(2, 4, 1, 32, seed=41)
    nodes_t = ref.normalize(base).reshape(2, 4, 32).astype("float32")
    nodes_s = ref.normalize(base + 0.05 * rand(2, 4, 1, 32, seed=42)).reshape(2, 4, 32).astype("float32")
    s64, t64 = nodes_s.astype("float64"), nodes_t.astype("float64")
    a_s, a_t = np.einsum("bic,bjc->bij", s64, s64), np.einsum("bic,bjc->bij", t64, t64)
    expected = ((a_s - a_t) ** 2).mean(axis=(1, 2))
    terms = (np.einsum("bnc,bnd->bcd", s64, s64) ** 2).sum(axis=(1, 2)) / 16
    assert (terms / expected).min() > 1e3  # the ill-conditioned case
    np.testing.assert_allclose(gram_pairwise_distance(nodes_s, nodes_t), expected, rtol=1e-5)
    # The explicit form works in float32: each similarity (a sum of 32 products near 1) carries ~√32·6e-8 of
    # rounding, and the squared difference of two (~6e-3 apart) carries twice that relative to 6e-3, ~1e-4;
    # the summation order (AVX2 vs AVX-512 kernels) moves it within that bound (1.5e-5 measured on AVX-512).
    np.testing.assert_allclose(explicit_pairwise_distance(nodes_s, nodes_t), expected, rtol=1e-4)


def test_pairwise_reference_code_scale_form():
    s, t = rand(1, 8, 8, 4, seed=5), rand(1, 8, 8, 6, seed=6)
    # scale 0.5 on an 8-wide map: kernel = stride = 4, so 2x2 = 4 nodes (as in the reference code)
    close(PairwiseDistillation(scale=0.5, norm_floor=0)(s, t), ref.pairwise(s, t, 4, "max"))


@pytest.mark.parametrize("h,w", [(12, 16), (13, 18), (16, 12)])
def test_pairwise_reference_code_scale_form_on_non_square_maps(h, w):
    """The reference pools with kernel = stride = (int(H'·scale), int(W'·scale)), ceil mode."""
    s, t = rand(2, h, w, 4, seed=40), rand(2, h, w, 6, seed=41)
    expected = ref.pairwise(s, t, (int(h * 0.5), int(w * 0.5)), "max")
    close(PairwiseDistillation(scale=0.5, norm_floor=0)(s, t), expected)
    close(PairwiseDistillation(scale=0.25, norm_floor=0)(s, t), ref.pairwise(s, t, (h // 4, w // 4), "max"))


@FLOORS
def test_pairwise_local_window_matches_reference(floor):
    s, t = rand(2, 5, 6, 3, seed=7), rand(2, 5, 6, 4, seed=8)
    close(PairwiseDistillation(window=3, norm_floor=floor)(s, t), ref.pairwise_window(s, t, 3, floor))


def test_pairwise_norm_floor_bounds_the_gradient_of_near_zero_features():
    """A feature vector 2.4e-5 long: the plain cosine's gradient grows as 1/‖f‖; the floor caps it."""
    s, t = rand(1, 4, 4, 3, seed=30), rand(1, 4, 4, 5, seed=31)
    s[0, 0, 0] = [1e-5, -2e-5, 1e-5]
    grads = {}
    for floor in (0.0, 0.1):
        x = tf.constant(s)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = PairwiseDistillation(norm_floor=floor)(x, t)
        grads[floor] = np.abs(tape.gradient(loss, x).numpy()[0, 0, 0]).max()
    assert grads[0.0] > 1e3 * grads[0.1]  # 168 vs 0.14 here; 10x shorter vector: 10x larger plain gradient


@pytest.mark.parametrize("size", [1, 2])
def test_pairwise_exact_gradient_equals_explicit_gradient(size):
    s, t = tf.constant(rand(2, 6, 6, 5, seed=9)), tf.constant(rand(2, 6, 6, 7, seed=10))
    grads = []
    for exact in (True, False):
        with tf.GradientTape() as tape:
            tape.watch(s)
            loss = PairwiseDistillation(granularity=size, exact=exact)(s, t)
        grads.append(tape.gradient(loss, s).numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-7)
    assert np.abs(grads[0]).max() > 0


def test_pairwise_invariances():
    s, t = rand(2, 5, 5, 4, seed=11), rand(2, 5, 5, 6, seed=12)
    loss = PairwiseDistillation()
    base = float(loss(s, t))
    close(loss(s * 7.5, t * 0.01), base)  # a feature map's scale does not matter
    scale = np.abs(rand(2, 5, 5, 1, seed=13)) + 0.1  # positive per-pixel scaling: only for the plain cosine
    plain = PairwiseDistillation(norm_floor=0)
    close(plain(s * scale, t), float(plain(s, t)))
    perm = np.random.default_rng(14).permutation(25)
    shuffle = lambda x: x.reshape(2, 25, -1)[:, perm].reshape(x.shape)  # same node relabelling on both
    close(loss(shuffle(s), shuffle(t)), base)
    assert float(loss(s, s)) == 0.0


# ---------------------------------------------------------------- CWD, FitNet, AT

def test_cwd_matches_reference():
    s, t = rand(2, 4, 5, 3, seed=15), rand(2, 4, 5, 3, seed=16)
    close(ChannelwiseDistillation()(s, t), ref.cwd(s, t))
    close(ChannelwiseDistillation(temperature=1.0)(s, t), ref.cwd(s, t, 1.0))


def test_cwd_channel_mismatch_needs_align():
    s, t = rand(1, 3, 3, 2), rand(1, 3, 3, 4)
    with pytest.raises(ValueError, match="align_channels=4"):
        ChannelwiseDistillation()(s, t)
    assert np.isfinite(float(ChannelwiseDistillation(align_channels=4)(s, t)))


def test_fitnet_matches_reference():
    s, t = rand(2, 4, 4, 3, seed=17), rand(2, 4, 4, 5, seed=18)
    loss = FitNetDistillation(teacher_channels=5)
    value = float(loss(s, t))
    kernel, bias = [w.numpy() for w in loss.adapter.weights]
    adapted = s @ kernel[0, 0] + bias
    close(value, np.mean((adapted - t) ** 2))


def test_attention_transfer_matches_reference():
    s, t = rand(2, 4, 6, 3, seed=19), rand(2, 4, 6, 8, seed=20)
    close(AttentionTransfer()(s, t), ref.attention(s, t))


@pytest.mark.parametrize("s_shape,t_shape", [((8, 12), (4, 6)), ((4, 5), (7, 9)), ((6, 6), (6, 6))])
def test_attention_transfer_pool_larger_matches_repdistiller(s_shape, t_shape):
    """RepDistiller pools the larger feature map down (non-divisible 7×9 → 4×5 uses torch's adaptive cells)."""
    s, t = rand(2, *s_shape, 3, seed=19), rand(2, *t_shape, 8, seed=20)
    close(AttentionTransfer(match="pool_larger")(s, t), ref.attention_pooled(s, t))


# ---------------------------------------------------------------- relational

def test_sp_matches_reference():
    s, t = rand(4, 3, 3, 2, seed=21), rand(4, 3, 3, 5, seed=22)
    close(SimilarityPreserving()(s, t), ref.sp(s.reshape(4, -1), t.reshape(4, -1)))


@pytest.mark.parametrize("kernel", ["gaussian", "bilinear"])
def test_cc_matches_reference(kernel):
    s, t = rand(5, 3, 3, 4, seed=23), rand(5, 3, 3, 6, seed=24)
    close(CorrelationCongruence(kernel=kernel)(s, t), ref.cc(s.mean((1, 2)), t.mean((1, 2)), kernel))


def test_irg_matches_reference_with_and_without_transform():
    s = {"logits": rand(4, 2, 2, 3, seed=25), "features": rand(4, 2, 2, 5, seed=26)}
    t = {"logits": rand(4, 2, 2, 3, seed=27), "features": rand(4, 2, 2, 7, seed=28)}
    es, et = s["features"].mean((1, 2)), t["features"].mean((1, 2))
    close(InstanceRelationGraph()(s, t), ref.irg(s["logits"], t["logits"], es, et))
    s["aux_logits"], t["aux_logits"] = rand(4, 2, 2, 3, seed=29), rand(4, 2, 2, 3, seed=30)
    pairs = [(m["logits"].mean((1, 2)), m["aux_logits"].mean((1, 2))) for m in (s, t)]
    close(InstanceRelationGraph()(s, t), ref.irg(s["logits"], t["logits"], es, et, *pairs))


def test_rkd_matches_reference():
    s, t = rand(5, 2, 2, 4, seed=31), rand(5, 2, 2, 3, seed=32)
    close(RelationalKD()(s, t), ref.rkd(s.mean((1, 2)), t.mean((1, 2))))


# ---------------------------------------------------------------- shared properties

def identical_pairs():
    logits, features = rand(2, 3, 4, 3, seed=33), rand(2, 3, 4, 6, seed=34)
    out = {"logits": logits, "features": features}
    return [(PixelwiseDistillation(), logits), (PixelwiseDistillation(temperature=3.0), logits),
            (PairwiseDistillation(), features), (PairwiseDistillation(granularity=2), features),
            (PairwiseDistillation(window=3), features), (ChannelwiseDistillation(), logits),
            (AttentionTransfer(), features), (SimilarityPreserving(), features),
            (CorrelationCongruence(), features), (RelationalKD(), features), (InstanceRelationGraph(), out)]


@pytest.mark.parametrize("loss,x", identical_pairs(), ids=lambda v: type(v).__name__ if hasattr(v, "reads") else "")
def test_identical_teacher_and_student_give_exactly_zero(loss, x):
    assert float(loss(x, x)) == 0.0


def all_losses(c_s=4, c_t=4, k=3):
    return [PixelwiseDistillation(), PairwiseDistillation(), PairwiseDistillation(granularity=2),
            PairwiseDistillation(window=3), ChannelwiseDistillation(), FitNetDistillation(c_t),
            AttentionTransfer(), SimilarityPreserving(), CorrelationCongruence(), RelationalKD(),
            InstanceRelationGraph()]


@pytest.mark.parametrize("case", ["zeros", "single_pixel", "batch_of_one"])
def test_no_nan_or_inf_on_degenerate_inputs(case):
    shape = {"zeros": (2, 3, 3), "single_pixel": (2, 1, 1), "batch_of_one": (1, 3, 3)}[case]
    features_s, features_t = rand(*shape, 4, seed=35), rand(*shape, 4, seed=36)
    if case == "zeros":
        features_s, features_t = np.zeros_like(features_s), np.zeros_like(features_t)
    s = {"logits": rand(*shape, 3, seed=37), "features": tf.constant(features_s)}
    t = {"logits": rand(*shape, 3, seed=38), "features": features_t}
    for loss in all_losses():
        with tf.GradientTape() as tape:
            tape.watch(s["features"])
            value = loss(s, t)
        grad = tape.gradient(value, s["features"])
        assert np.isfinite(float(value)), type(loss).__name__
        if grad is not None:
            assert np.all(np.isfinite(grad.numpy())), type(loss).__name__


def test_teacher_never_receives_gradients():
    s = {"logits": tf.constant(rand(2, 3, 3, 3, seed=39)), "features": tf.constant(rand(2, 3, 3, 4, seed=40))}
    t = {"logits": tf.constant(rand(2, 3, 3, 3, seed=41)), "features": tf.constant(rand(2, 3, 3, 4, seed=42))}
    for loss in all_losses():
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(list(t.values()) + list(s.values()))
            value = loss(s, t)
        assert all(tape.gradient(value, v) is None for v in t.values()), type(loss).__name__
        assert any(tape.gradient(value, v) is not None for v in s.values()), type(loss).__name__


def test_losses_compute_in_float32_under_mixed_bfloat16():
    s = {"logits": tf.constant(rand(2, 3, 3, 3, seed=43), tf.bfloat16),
         "features": tf.constant(rand(2, 3, 3, 4, seed=44), tf.bfloat16)}
    t = {k: tf.cast(v, tf.float32) for k, v in s.items()}
    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        for loss in all_losses():
            value = loss(s, {k: v + 0.5 for k, v in t.items()})
            assert value.dtype == tf.float32 and np.isfinite(float(value)), type(loss).__name__
    finally:
        keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize("make", [PixelwiseDistillation, PairwiseDistillation, ChannelwiseDistillation,
                                  AttentionTransfer, SimilarityPreserving, CorrelationCongruence, RelationalKD,
                                  InstanceRelationGraph], ids=lambda c: c.__name__)
def test_two_replicas_sum_to_the_single_device_loss(make, two_replicas):
    s = {"logits": rand(4, 3, 3, 3, seed=45), "features": rand(4, 3, 3, 4, seed=46)}
    t = {"logits": rand(4, 3, 3, 3, seed=47), "features": rand(4, 3, 3, 4, seed=48)}
    single = float(make()(s, t))
    strategy = two_replicas
    with strategy.scope():
        loss = make()

    def shard(ctx):
        i = ctx.replica_id_in_sync_group
        pick = lambda m: {k: v[2 * i:2 * i + 2] for k, v in m.items()}
        return pick(s), pick(t)

    values = strategy.experimental_distribute_values_from_function(shard)
    per_replica = tf.function(lambda v: strategy.run(lambda st: loss(st[0], st[1]), args=(v,)))(values)
    close(strategy.reduce("SUM", per_replica, axis=None), single)
