"""Holistic distillation (SPEC §1.3): a conditional Wasserstein critic on segmentation maps."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from skd_tf.losses.base import DistillationLoss, as_float32, average_over_global_batch


@keras.saving.register_keras_serializable(package="skd_tf")
class SpectralConv2D(layers.Layer):
    """A conv whose kernel is W/σ(W), σ the largest singular value from one power iteration.

    As in the reference code (PyTorch's spectral_norm): σ is computed from the
    stored vector u (updated in training) with u, v gradient-stopped, and the
    gradient flows through W/σ. Written here rather than keras.layers
    .SpectralNormalization, which overwrites the kernel variable with W/σ in
    training (so the gradient ignores σ) and cannot update a mirrored kernel
    inside a replica.
    """

    def __init__(self, filters: int, kernel_size: int, strides: int = 1, padding: str = "same", **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.strides, self.padding = filters, kernel_size, strides, padding

    def build(self, input_shape):
        k = self.kernel_size
        self.kernel = self.add_weight(name="kernel", shape=(k, k, input_shape[-1], self.filters),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        # every replica computes the same u from the same weights; keep one copy
        self.u = self.add_weight(name="u", shape=(1, self.filters), trainable=False,
                                 initializer=keras.initializers.RandomNormal(seed=0),
                                 aggregation="only_first_replica")

    def normalized_kernel(self, training=False):
        w = tf.reshape(self.kernel, [-1, self.filters])
        u = tf.math.l2_normalize(tf.convert_to_tensor(self.u), axis=None)
        v = tf.stop_gradient(tf.math.l2_normalize(tf.matmul(u, w, transpose_b=True), axis=None))
        u_new = tf.stop_gradient(tf.math.l2_normalize(tf.matmul(v, w), axis=None))
        if training:
            self.u.assign(u_new)
        sigma = tf.squeeze(tf.matmul(tf.matmul(v, w), u_new, transpose_b=True))
        return self.kernel / sigma

    def call(self, x, training=False):
        y = tf.nn.conv2d(x, self.normalized_kernel(training), self.strides, self.padding.upper())
        return y + self.bias

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding}


@keras.saving.register_keras_serializable(package="skd_tf")
class SelfAttention(layers.Layer):
    """SAGAN self-attention: y = γ·(V·softmax(QᵀK)) + x, with γ initialised to 0.

    Q and K are 1×1 convolutions to C/8 channels, V to C channels, attention over
    all h·w positions.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.query = layers.Conv2D(max(channels // 8, 1), 1, name="query", dtype=self.dtype_policy)
        self.key = layers.Conv2D(max(channels // 8, 1), 1, name="key", dtype=self.dtype_policy)
        self.value = layers.Conv2D(channels, 1, name="value", dtype=self.dtype_policy)
        for conv, c in ((self.query, channels), (self.key, channels), (self.value, channels)):
            conv.build(input_shape[:-1] + (c,))
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros")

    def call(self, x):
        shape = tf.shape(x)
        n = shape[1] * shape[2]
        q = tf.reshape(self.query(x), [shape[0], n, -1])
        k = tf.reshape(self.key(x), [shape[0], n, -1])
        v = tf.reshape(self.value(x), [shape[0], n, x.shape[-1]])
        attention = tf.nn.softmax(tf.matmul(q, k, transpose_b=True), axis=-1)  # B×N×N
        out = tf.reshape(tf.matmul(attention, v), shape)
        return self.gamma * out + x


@keras.saving.register_keras_serializable(package="skd_tf")
class HolisticCritic(keras.Model):
    """The critic D of the reference code (networks/sagan_models.py), for maps of any size.

    Four spectral-normalised 4×4 stride-2 convolutions (64, 128, 256, 512
    channels × ``width``), each followed by LeakyReLU(0.1), self-attention after
    the 3rd and the 4th, then a plain 4×4 convolution to one channel whose mean
    over positions is the score of each image. Padding is "same" throughout
    (the reference's final convolution is "valid" on 65×65 inputs; "same" keeps
    small maps valid). ``call(map, image)``: ``image`` (resized to the map) is
    concatenated as the condition when given.
    """

    def __init__(self, width: float = 1.0, batch_norm_input: bool = False, **kwargs):
        kwargs.setdefault("dtype", "float32")  # the critic stays float32 under mixed precision
        super().__init__(**kwargs)
        self.width = width
        self.batch_norm_input = batch_norm_input
        dtype = self.dtype_policy
        # ε = 1e-5 as torch's BatchNorm2d in the reference (Keras' default is 1e-3)
        self.input_norm = (layers.BatchNormalization(epsilon=1e-5, name="input_bn", dtype=dtype)
                           if batch_norm_input else None)
        self.convs = [SpectralConv2D(max(int(c * width), 4), 4, strides=2, name=f"sn_conv{i + 1}", dtype=dtype)
                      for i, c in enumerate((64, 128, 256, 512))]
        self.attention3 = SelfAttention(name="attention3", dtype=dtype)
        self.attention4 = SelfAttention(name="attention4", dtype=dtype)
        self.last = layers.Conv2D(1, 4, padding="same", name="score", dtype=dtype)

    def call(self, seg_map, image=None, training=False):
        """D(Q | I) per image: the mean of ``score_map`` over its positions."""
        return tf.reduce_mean(self.score_map(seg_map, image, training), axis=[1, 2])

    def score_map(self, seg_map, image=None, training=False):
        """The last convolution's B×h×w map of scores (h×w = 1×1 only for the reference's 65×65 input)."""
        x = as_float32(seg_map)
        if self.input_norm is not None:
            x = self.input_norm(x, training=training)
        if image is not None:
            x = tf.concat([x, tf.image.resize(as_float32(image), tf.shape(x)[1:3], method="bilinear")], -1)
        for i, conv in enumerate(self.convs):
            x = tf.nn.leaky_relu(conv(x, training=training), alpha=0.1)
            if i == 2:
                x = self.attention3(x)
            if i == 3:
                x = self.attention4(x)
        return self.last(x)[..., 0]

    def get_config(self):
        return {**super().get_config(), "width": self.width, "batch_norm_input": self.batch_norm_input}


def gradient_penalty(critic_fn, real, fake, condition=None, epsilon=None):
    """Per-example (‖∇_x̂ D(x̂)‖₂ − 1)², x̂ = ε·real + (1−ε)·fake (WGAN-GP, Gulrajani et al. 2017).

    ``critic_fn(map, condition) -> (B,)``; ε ~ U[0, 1] per example unless given.
    The gradient is taken with respect to the map only, not the condition.
    """
    real, fake = as_float32(real), as_float32(fake)
    if epsilon is None:
        epsilon = tf.random.uniform(tf.shape(real)[:1])
    epsilon = tf.reshape(as_float32(epsilon), [-1, 1, 1, 1])
    mixed = epsilon * real + (1.0 - epsilon) * fake
    with tf.GradientTape() as tape:
        tape.watch(mixed)
        total = tf.reduce_sum(critic_fn(mixed, condition))
    grads = tape.gradient(total, mixed)
    norms = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]) + 1e-12)
    return tf.square(norms - 1.0)


class HolisticDistillation(DistillationLoss):
    """L_ho(S, D) = E[D(Q^S | I)] − E[D(Q^T | I)] with a WGAN-GP (or hinge) critic D.

    ``call(student, teacher, images=...)`` is the student's (generator's) term
    −E[D(Q^S | I)] (the distiller multiplies it by λ_ho); ``critic_loss`` is the
    critic's objective with the student map gradient-stopped:
    WGAN-GP: E[D(Q^S)] − E[D(Q^T)] + λ_gp·E[(‖∇D(x̂)‖ − 1)²];
    hinge: E[max(0, 1 − D(Q^T))] + E[max(0, 1 + D(Q^S))].
    ``critic_input``: "softmax_image" (the paper's and the cvpr_19 branch's form:
    softmax(Q) concatenated with the image resized to Q's size, the default) or
    "logits" (the master branch: raw logits through a BatchNorm).
    ``gp_reduction``: the penalty differentiates D(x̂) = the *mean* of the critic's
    score map ("mean", the default: the same function the Wasserstein terms
    use, so the penalty constrains that function's gradient), or its *sum* as
    the reference code does (``grad_outputs=ones`` on the map; "sum"). They
    coincide for a 1×1 map and differ by the map's size h·w otherwise.
    """

    reads = "logits"

    def __init__(self, critic_input: str = "softmax_image", loss_type: str = "wgan-gp", gp_weight: float = 10.0,
                 critic_width: float = 1.0, seed: int | None = None, gp_reduction: str = "mean", **kwargs):
        super().__init__(**kwargs)
        if critic_input not in ("softmax_image", "logits"):
            raise ValueError(f"critic_input must be 'softmax_image' or 'logits', got {critic_input!r}")
        if loss_type not in ("wgan-gp", "hinge"):
            raise ValueError(f"loss_type must be 'wgan-gp' or 'hinge', got {loss_type!r}")
        if gp_reduction not in ("mean", "sum"):
            raise ValueError(f"gp_reduction must be 'mean' or 'sum', got {gp_reduction!r}")
        self.critic_input = critic_input
        self.loss_type = loss_type
        self.gp_reduction = gp_reduction
        self.gp_weight = gp_weight
        self.critic_width = critic_width
        self.critic = HolisticCritic(critic_width, batch_norm_input=critic_input == "logits", name="critic",
                                     dtype="float32")
        self.seed = int(seed or 0)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def critic_map(self, logits):
        return tf.nn.softmax(logits, -1) if self.critic_input == "softmax_image" else logits

    def _condition(self, images):
        if self.critic_input != "softmax_image":
            return None
        if images is None:
            raise ValueError("the softmax_image critic needs the input images (images=...)")
        return images

    def score(self, logits, images=None, training=False):
        """D(Q | I) per image."""
        return self.critic(self.critic_map(as_float32(logits)), self._condition(images), training=training)

    def per_example(self, student, teacher, labels=None, images=None):
        return -self.score(student, images, training=False)

    def interpolation_weights(self, local_batch, step):
        """ε ~ U[0, 1] per example, a stateless function of (seed, step, global example index).

        Each replica takes its slice of one draw for the whole global batch, so a
        split batch gets the same ε as one device, and a resumed run the same as
        an uninterrupted one.
        """
        ctx = tf.distribute.get_replica_context()
        replica = ctx.replica_id_in_sync_group if ctx is not None else 0
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        total = self.global_batch_size or local_batch * replicas
        draws = tf.random.stateless_uniform([total], seed=tf.stack([tf.constant(self.seed, tf.int64),
                                                                     tf.cast(step, tf.int64)]))
        return draws[replica * local_batch:(replica + 1) * local_batch]

    def critic_loss(self, student, teacher, images=None, step=None):
        """The critic's objective on a (replica-)batch, averaged over the global batch.

        ``step`` (e.g. the critic optimizer's iteration count) makes the gradient
        penalty's interpolation weights reproducible; without it they are drawn
        from the layer's seed generator.
        """
        s = tf.stop_gradient(as_float32(self.select(student)))
        t = tf.stop_gradient(as_float32(self.select(teacher)))
        condition = self._condition(images)
        d_s = self.score(s, images, training=True)
        d_t = self.score(t, images, training=True)
        if self.loss_type == "hinge":
            per_example = tf.nn.relu(1.0 - d_t) + tf.nn.relu(1.0 + d_s)
        else:
            if step is None:
                eps = keras.random.uniform(tf.shape(s)[:1], seed=self.seed_generator)
            else:
                eps = self.interpolation_weights(tf.shape(s)[0], step)
            if self.gp_reduction == "mean":
                critic_fn = lambda m, c: self.critic(m, c, training=True)
            else:  # the reference differentiates the sum of the critic's score map
                critic_fn = lambda m, c: tf.reduce_sum(self.critic.score_map(m, c, training=True), axis=[1, 2])
            gp = gradient_penalty(critic_fn, self.critic_map(t), self.critic_map(s), condition, eps)
            per_example = d_s - d_t + self.gp_weight * gp
        return average_over_global_batch(per_example, self.global_batch_size)

    def wasserstein_estimate(self, student, teacher, images=None):
        """E[D(Q^T)] − E[D(Q^S)] on this batch (the critic's distance estimate, for logging)."""
        d_s = self.score(self.select(student), images)
        d_t = self.score(self.select(teacher), images)
        return average_over_global_batch(d_t - d_s, self.global_batch_size)

    def get_config(self):
        return {**super().get_config(), "critic_input": self.critic_input, "loss_type": self.loss_type,
                "gp_weight": self.gp_weight, "critic_width": self.critic_width, "seed": self.seed,
                "gp_reduction": self.gp_reduction}
