"""Knowledge adaptation (He et al., CVPR 2019; SPEC §2), in the paper's form.

Two stages: ``FeatureAutoEncoder`` is first trained alone on the frozen
teacher's features (``AutoEncoderTrainer`` + ``model.fit``, or
``pretrain_autoencoder``), then frozen; ``KnowledgeAdaptation`` trains the
student's ``adapter`` so that its features match the encoder's code.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from skd_tf.console import fit_verbose
from skd_tf.losses.base import DistillationLoss, as_float32, average_over_global_batch, resize_to, safe_norm
from skd_tf.losses.pairwise import gram_pairwise_distance, normalize_features, normalized_nodes
from skd_tf.training.custom_fit import Prebuilt, record_step


def _conv_bn_relu(filters, strides, transpose, name):
    conv_cls = layers.Conv2DTranspose if transpose else layers.Conv2D
    return keras.Sequential([
        conv_cls(filters, 3, strides=strides, padding="same", use_bias=False, dtype="float32"),
        layers.BatchNormalization(synchronized=True, dtype="float32"),
        layers.ReLU(dtype="float32"),
    ], name=name)


@keras.saving.register_keras_serializable(package="skd_tf")
class FeatureAutoEncoder(keras.Model):
    """E: three 3×3 conv+BN+ReLU (the first with stride ``stride``); D: three 3×3 deconv+BN+ReLU (the first
    with stride ``stride``).

    ``encode(F_T)`` is the compact code E(F_T) with ``code_channels`` channels at 1/``stride`` of the
    teacher map's resolution; ``call`` reconstructs F_T. The paper's stride 2 takes its teacher's 1/8 map
    to its student's 1/16: the code has the student's resolution. With teacher and student at the same
    resolution, stride 1 keeps that property.
    """

    def __init__(self, feature_channels: int, code_channels: int, stride: int = 2, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.feature_channels = feature_channels
        self.code_channels = code_channels
        self.stride = stride
        self.encoder = keras.Sequential([
            _conv_bn_relu(code_channels, stride, False, "enc1"),
            _conv_bn_relu(code_channels, 1, False, "enc2"),
            _conv_bn_relu(code_channels, 1, False, "enc3"),
        ], name="encoder")
        self.decoder = keras.Sequential([
            _conv_bn_relu(code_channels, stride, True, "dec1"),
            _conv_bn_relu(code_channels, 1, True, "dec2"),
            _conv_bn_relu(feature_channels, 1, True, "dec3"),
        ], name="decoder")

    def encode(self, features, training=False):
        return self.encoder(as_float32(features), training=training)

    def call(self, features, training=False):
        code = self.encode(features, training=training)
        return resize_to(self.decoder(code, training=training), features), code

    def get_config(self):
        return {**super().get_config(), "feature_channels": self.feature_channels,
                "code_channels": self.code_channels, "stride": self.stride}


def autoencoder_loss(features, reconstruction, code, alpha: float = 1e-7):
    """Per image: (‖D(E(F)) − F‖² + α‖E(F)‖₁) / (h·w·C), the paper's L_ae over the feature's size.

    Dividing both terms by the same count keeps the paper's ratio α between them
    while making the value independent of the map size.
    """
    size = tf.cast(tf.reduce_prod(tf.shape(features)[1:]), tf.float32)
    squared = tf.reduce_sum(tf.square(reconstruction - features), axis=[1, 2, 3])
    sparsity = tf.reduce_sum(tf.abs(code), axis=[1, 2, 3])
    return (squared + alpha * sparsity) / size


class AutoEncoderTrainer(Prebuilt, keras.Model):
    """Trains a FeatureAutoEncoder on a frozen teacher's ``features`` with ``fit(images)``."""

    def __init__(self, teacher: keras.Model, autoencoder: FeatureAutoEncoder, alpha: float = 1e-7, **kwargs):
        super().__init__(**kwargs)
        self.teacher = teacher
        self.teacher.trainable = False
        self.autoencoder = autoencoder
        self.alpha = alpha
        self.trackers = {"ae_loss": keras.metrics.Mean(name="ae_loss")}
        # build eagerly: variables may not be created inside the compiled train step
        autoencoder(tf.zeros((1,) + tuple(teacher.output["features"].shape[1:])))
        self.built = True

    @property
    def metrics(self):
        return list(self.trackers.values())

    @property
    def trained_variables(self) -> list:
        return self.autoencoder.trainable_variables

    def call(self, images, training=False):
        return self.autoencoder(self.teacher(images, training=False)["features"], training=training)

    def train_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        features = tf.stop_gradient(as_float32(self.teacher(images, training=False)["features"]))
        variables = self.trained_variables
        with tf.GradientTape() as tape:
            reconstruction, code = self.autoencoder(features, training=True)
            loss = average_over_global_batch(autoencoder_loss(features, reconstruction, code, self.alpha))
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return record_step(self.trackers, {"ae_loss": loss})


class _QualityProbe(keras.callbacks.Callback):
    """Measures ``autoencoder_quality`` on fixed batches after the given (1-based) training steps."""

    def __init__(self, teacher, autoencoder, batches, at_steps):
        super().__init__()
        self.teacher, self.autoencoder, self.batches = teacher, autoencoder, batches
        self.at_steps, self.curve = set(at_steps), []

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 in self.at_steps:
            self.curve.append({"step": batch + 1, **autoencoder_quality(self.teacher, self.autoencoder, self.batches)})


def pretrain_autoencoder(teacher, autoencoder, dataset, steps: int, learning_rate: float = 1e-3,
                         verbose: int = 1, alpha: float = 1e-7, probe_batches=None, probes: int = 4) -> dict:
    """Stage 1: fits ``autoencoder`` to the teacher's features for ``steps`` batches, then freezes it.

    Returns ``{"loss": the last logged auto-encoder loss, "curve": [...]}``; with ``probe_batches`` (a list
    of image batches) the curve holds ``autoencoder_quality`` after every ``steps/probes`` steps, so a
    reader sees whether the auto-encoder converged.
    """
    trainer = AutoEncoderTrainer(teacher, autoencoder, alpha=alpha)
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate))
    callbacks = []
    if probe_batches:
        at = sorted({max(1, round(steps * (i + 1) / probes)) for i in range(probes)})
        callbacks.append(_QualityProbe(teacher, autoencoder, probe_batches, at))
    history = trainer.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=fit_verbose(verbose), callbacks=callbacks,
                          shuffle=False)
    autoencoder.trainable = False
    return {"loss": float(np.ravel(history.history["ae_loss"][-1])[0]),
            "curve": callbacks[0].curve if callbacks else []}


def autoencoder_quality(teacher, autoencoder: FeatureAutoEncoder, batches) -> dict:
    """How well a trained auto-encoder keeps the teacher's features, over ``batches`` of images.

    ``relative_reconstruction_error`` = Σ‖D(E(F)) − F‖² / Σ‖F − mean F‖² (0: perfect, 1: no better than the
    per-channel mean); ``dead_code_channels``: the fraction of code channels that are zero at every position
    of every image; ``small_code_vectors``: the fraction of code vectors with ‖E(F)_j‖ < 0.1 × their image's
    RMS norm (the cosine of such a vector is mostly noise).
    """
    error = spread = 0.0
    active, small, vectors = None, 0.0, 0

    @tf.function  # compiled: called eagerly, the teacher would hold every layer's output until it returns
    def encode(images):
        features = as_float32(teacher(images, training=False)["features"])
        return (features, *autoencoder(features, training=False))

    for images in batches:
        features, reconstruction, code = encode(images)
        error += float(tf.reduce_sum(tf.square(reconstruction - features)))
        spread += float(tf.reduce_sum(tf.square(features - tf.reduce_mean(features, axis=[0, 1, 2]))))
        seen = tf.reduce_any(code > 0, axis=[0, 1, 2])
        active = seen if active is None else tf.logical_or(active, seen)
        squared = tf.reduce_sum(tf.square(code), -1)
        rms = tf.reduce_mean(squared, axis=[1, 2], keepdims=True)
        small += float(tf.reduce_sum(tf.cast(squared < 0.01 * rms, tf.float32)))
        vectors += int(tf.size(squared))
    return {"relative_reconstruction_error": error / max(spread, 1e-12),
            "dead_code_channels": 1.0 - float(tf.reduce_mean(tf.cast(active, tf.float32))),
            "small_code_vectors": small / max(vectors, 1)}


class KnowledgeAdaptation(DistillationLoss):
    """β·L_adapt + γ·L_aff (paper: β = 50, γ = 1) against a frozen auto-encoder's code.

    L_adapt = (1/|I|) Σ_j ‖ E(F_T)_j/‖E(F_T)_j‖₂ − C_f(F_S)_j/‖C_f(F_S)_j‖₂ ‖_p (p = 2),
    over all positions j of the code map (the adapted student map is resized to it).
    L_aff = Σ_ij (A^S_ij − A^T_ij)², A_ij = (1/N)·f̂_i·f̂_j on E(F_T) and on C_f(F_S),
    computed exactly with the Gram identity of the pair-wise loss.
    ``adapter`` C_f is ``adapter_depth`` 3×3 conv+BN+ReLU layers to the code's channels (the paper: 3).
    Every normalisation x/‖x‖ is guarded by ``norm_floor`` as in the pair-wise loss
    (x/√(‖x‖² + ε²), ε = norm_floor × the image's RMS norm): the code and the adapter's output come out
    of a ReLU, so some of their vectors are nearly zero, and without the floor their cosine's gradient
    (∝ 1/‖x‖) is rounding noise amplified without bound. ``norm_floor=0`` is the paper's plain cosine.
    ``components(student, teacher)`` returns both terms unweighted.
    """

    reads = "features"

    def __init__(self, autoencoder: FeatureAutoEncoder, beta: float = 50.0, gamma: float = 1.0, p: int = 2,
                 adapter_depth: int = 3, norm_floor: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.autoencoder = autoencoder
        self.autoencoder.trainable = False
        self.beta, self.gamma, self.p = beta, gamma, p
        self.adapter_depth, self.norm_floor = adapter_depth, norm_floor
        self.adapter = keras.Sequential(
            [_conv_bn_relu(autoencoder.code_channels, 1, False, f"adapter{i + 1}") for i in range(adapter_depth)],
            name="adapter")

    def components(self, student, teacher, training=False):
        student = as_float32(self.select(student))
        teacher = tf.stop_gradient(as_float32(self.select(teacher)))
        code = tf.stop_gradient(self.autoencoder.encode(teacher, training=False))
        adapted = resize_to(self.adapter(student, training=training), code)
        diff = normalize_features(code, norm_floor=self.norm_floor) - normalize_features(adapted,
                                                                                          norm_floor=self.norm_floor)
        if self.p == 2:
            distance = safe_norm(diff)
        else:
            distance = safe_norm(tf.abs(diff) ** (self.p / 2.0)) ** (2.0 / self.p)
        adapt = tf.reduce_mean(distance, axis=[1, 2])
        # (1/N²)‖F̂F̂ᵀ − ...‖² is exactly Σ_ij (A_S − A_T)² with the paper's A = (1/N) F̂F̂ᵀ.
        affinity = gram_pairwise_distance(normalized_nodes(adapted, norm_floor=self.norm_floor),
                                          normalized_nodes(code, norm_floor=self.norm_floor))
        return {"ka_adapt": average_over_global_batch(adapt, self.global_batch_size),
                "ka_affinity": average_over_global_batch(affinity, self.global_batch_size)}

    def component_names(self) -> tuple[str, str]:
        return ("ka_adapt", "ka_affinity")

    def combine(self, terms: dict):
        """β·L_adapt + γ·L_aff from the dict ``components`` returns."""
        return self.beta * terms["ka_adapt"] + self.gamma * terms["ka_affinity"]

    def call(self, student, teacher, labels=None, images=None, training=False):
        return self.combine(self.components(student, teacher, training=training))

    def get_config(self):
        return {**super().get_config(), "beta": self.beta, "gamma": self.gamma, "p": self.p,
                "adapter_depth": self.adapter_depth, "norm_floor": self.norm_floor}
