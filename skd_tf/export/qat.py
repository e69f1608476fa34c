"""Distillation-aware quantization-aware training (QAT) of a student, ready for int8 conversion.

The Keras 3 student is mirrored into tf_keras (``tf_keras_mirror``), its layers
annotated for 8-bit quantization by tensorflow-model-optimization (our custom
layers, Multiply, PReLU and LeakyReLU get output fake-quant only), and fine-tuned
with fake quantization in the loop on

    L = CE(z^S, y) + λ_pi · L_pi(z^S, z^T)

where L_pi is the pixel-wise distillation loss (SPEC §1.1) against the frozen
Keras 3 teacher's logits (CE only when no teacher is given; CE weighted by
``export.qat.ce_weight``). On unlabelled images (``photo_batches``) only the
pixel-wise term remains: the int8 twin learns to reproduce its teacher, by
default the float network itself. tfmot is imported only inside this module's
functions: importing it sets TF_USE_LEGACY_KERAS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from skd_tf.data.augment import normalize
from skd_tf.export.checks import raw_photo
from skd_tf.export.config import QATConfig
from skd_tf.config import DataConfig
from skd_tf.console import show_progress
from skd_tf.training.cross_entropy import segmentation_cross_entropy
from skd_tf.losses.pixelwise import PixelwiseDistillation
from skd_tf.models import at_input_size
from skd_tf.models.logits import logits_align_corners


@dataclass
class QATResult:
    model: object            # the fine-tuned tf_keras QAT model at the export input size
    steps: int
    first_loss: float
    last_loss: float
    used_teacher: bool


def _output_quantize_config():
    import tensorflow_model_optimization as tfmot

    class OutputQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        """Quantizes a layer's output only (layers without weights tfmot does not know)."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
                num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

        def get_config(self):
            return {}

    return OutputQuantizeConfig


def _refuse_repeated_inputs(model) -> None:
    """ValueError naming the first layer of the tf_keras ``model`` that reads one tensor twice: tfmot's model
    transformer keeps one copy of it and the quantized model no longer fits the weights."""
    for layer in model.layers:
        inbound = layer.inbound_nodes[0].input_tensors if layer.inbound_nodes else []
        names = [t.name for t in (inbound if isinstance(inbound, list) else [inbound])]
        if len(set(names)) < len(names):
            raise ValueError(f"QAT cannot quantize this network: layer {layer.name!r} reads the same tensor twice, "
                             "which tensorflow-model-optimization cannot rebuild (e.g. ESPNet with "
                             "model.espnet_blocks [0, q]: use at least one block per level)")


def quantization_aware(network):
    """The Keras 3 ``network`` as a tf_keras model with fake-quant nodes, same weights, logits output."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from skd_tf.export.tf_keras_mirror import CUSTOM_LAYERS, UNQUANTIZED, mirror

    base = mirror(network)
    _refuse_repeated_inputs(base)
    output_only = _output_quantize_config()
    # tfmot has no 8-bit scheme for these: fake-quantize their outputs (PReLU's α is quantized at conversion)
    special = tuple(CUSTOM_LAYERS.values()) + (tf_keras.layers.Multiply, tf_keras.layers.PReLU,
                                               tf_keras.layers.LeakyReLU)
    annotate = tfmot.quantization.keras.quantize_annotate_layer

    # tfmot quantizes a BatchNormalization only folded into the convolution before it
    standalone = {layer.name for layer in base.layers if isinstance(layer, tf_keras.layers.BatchNormalization)
                  and not isinstance(layer.inbound_nodes[0].inbound_layers,
                                     (tf_keras.layers.Conv2D, tf_keras.layers.DepthwiseConv2D))}

    def annotated(layer):
        if isinstance(layer, UNQUANTIZED):
            return layer
        if isinstance(layer, special) or layer.name in standalone:
            return annotate(layer, quantize_config=output_only())
        return annotate(layer)

    # autograph off while tf_keras calls the layers to build the graph: it would convert tfmot's wrappers
    # call by call (the same graph; ESPNet's QAT model at 32×32 took 8.6 s to build, 7 s without)
    @tf.autograph.experimental.do_not_convert
    def build():
        annotated_model = tf_keras.models.clone_model(base, clone_function=annotated)
        with tfmot.quantization.keras.quantize_scope({**CUSTOM_LAYERS, "OutputQuantizeConfig": output_only}):
            return tfmot.quantization.keras.quantize_apply(annotated_model)

    try:
        return build()
    except RuntimeError as err:  # tfmot's word for a layer it has no 8-bit scheme for
        raise ValueError(f"QAT cannot quantize this network: {str(err).splitlines()[0]}") from None


def freeze_batch_norm(qat_model) -> int:
    """Puts every batch norm in inference mode with frozen γ/β (tf_keras runs a non-trainable BN in
    inference mode); returns how many. Small fine-tuning batches otherwise move the running statistics."""
    import tf_keras

    frozen = 0
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, tf_keras.layers.BatchNormalization):
            layer.trainable = False
            frozen += 1
    return frozen


def _is_range_variable(variable) -> bool:
    return variable.name.split("/")[-1].split(":")[0].endswith(("_min", "_max"))


def calibrate_ranges(qat_model, batches, decay: float = 0.8) -> None:
    """Sets the activation quantizers' ranges from data before fine-tuning.

    tfmot starts every range at [−6, 6] and moves it by an EMA with decay 0.999,
    so a trained network's first thousand QAT steps run on clipped activations
    (we measured logits off by 6.7 on the synthetic student) and the weights get
    damaged by that. Here the EMA runs with ``decay`` (the first batch sets the
    range outright) over ``batches``; every other variable (batch-norm
    statistics included) is restored afterwards.
    """
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    snapshot = [(v, v.numpy()) for v in qat_model.variables if not _is_range_variable(v)]
    original = quant_ops.MovingAvgQuantize
    # a variable, so that one traced graph serves the first batch (decay 0) and the others
    current = tf.Variable(0.0, trainable=False, name="calibration_decay")

    def quick(*args, **kwargs):
        kwargs["ema_decay"] = current
        return original(*args, **kwargs)

    forward = tf.function(lambda images: qat_model(images, training=True), reduce_retracing=True, autograph=False)
    quant_ops.MovingAvgQuantize = quick  # read while tracing, i.e. during the first call below
    try:
        for images in batches:
            forward(images)
            current.assign(decay)
    finally:
        quant_ops.MovingAvgQuantize = original
    for variable, value in snapshot:
        variable.assign(value)


def _output_range(layer):
    """The (min, max) variables of the fake-quant on a QAT layer's output, or None when it has none."""
    found = {v.name.split("/")[-1].split(":")[0]: v for v in layer.non_trainable_weights}
    for low, high in (("output_min", "output_max"), ("post_activation_min", "post_activation_max")):
        if low in found and high in found:
            return found[low], found[high]
    return None


def tie_concatenation_ranges(qat_model) -> int:
    """Gives every concatenation of a QAT model and each fake-quantized input it reads one range, the union of
    theirs (inputs shared by two concatenations join both groups); returns the number of groups.

    TFLite's int8 CONCATENATION reads its inputs at its output's scale, and the converter refuses a QAT graph
    whose concatenation and inputs carry different ranges ("'tfl.concatenation' op quantization parameters
    violate the same scale constraint"). Moving averages part them as soon as two inputs take turns at an
    extreme: ESPNet's first concatenation after 40–300 CamVid steps, int8 steps of 0.022764 against 0.022818."""
    import tf_keras

    groups: list[dict] = []
    for layer in qat_model.layers:
        if not isinstance(getattr(layer, "layer", layer), tf_keras.layers.Concatenate):
            continue
        inbound = layer.inbound_nodes[0].inbound_layers
        ranges = [_output_range(x) for x in [layer] + (inbound if isinstance(inbound, list) else [inbound])]
        group = {id(r[0]): r for r in ranges if r is not None}
        for other in [g for g in groups if g.keys() & group.keys()]:
            group.update(other)
            groups.remove(other)
        groups.append(group)
    for group in groups:
        low = min(float(r[0].numpy()) for r in group.values())
        high = max(float(r[1].numpy()) for r in group.values())
        for minimum, maximum in group.values():
            minimum.assign(low)
            maximum.assign(high)
    return len(groups)


def photo_batches(photos: list[Path], frame_size: tuple[int, int], crop_size: tuple[int, int], batch_size: int,
                  seed: int, data: DataConfig):
    """Endless (images, None) batches of unlabelled image files for fine-tuning without labels: each file as
    an app feeds the exported file (``checks.raw_photo``: as a viewer shows it, resized bilinear to
    ``frame_size``), a ``crop_size`` window of it at a random place (the whole frame when the sizes agree: the
    network sees its objects at the scale the file will), flipped left-right at random when ``data.hflip``,
    normalised (x − mean) / std as the training pipeline normalises; every pass over the files in a new order,
    all drawn from ``seed``."""
    if len(photos) < batch_size:
        raise ValueError(f"QAT on images: {len(photos)} image(s) for batches of {batch_size}; give at least "
                         f"{batch_size} or lower export.qat.batch_size")
    if any(c > f for c, f in zip(crop_size, frame_size)):
        raise ValueError(f"QAT on images: crops of {crop_size} do not fit in frames of {frame_size}")
    (height, width), (crop_h, crop_w) = frame_size, crop_size
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(photos))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            crops = []
            for i in order[start:start + batch_size]:
                top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
                crops.append(raw_photo(photos[i], frame_size)[:, top:top + crop_h, left:left + crop_w])
            batch = np.concatenate(crops)
            if data.hflip:
                flip = rng.random(batch_size) < 0.5
                batch[flip] = batch[flip, :, ::-1]
            yield normalize(tf.constant(batch, tf.float32), data.mean, data.std), None


def finetune(network, teacher, data: DataConfig, cfg: QATConfig, input_size: tuple[int, int],
             progress: bool = True, photos: Optional[list[Path]] = None,
             after_step: Optional[Callable[[int, object], None]] = None) -> QATResult:
    """Fine-tunes the QAT twin of ``network`` for ``cfg.steps`` steps; returns it at ``input_size``. Seeded by
    ``cfg.seed`` (data order, and the random generators of Python, NumPy and TensorFlow): a run repeats.
    ``photos``: unlabelled image files to fine-tune on (``photo_batches``: each resized to ``input_size`` as
    the app feeds the file, in crops of ``data.crop_size`` where smaller) instead of the training split; the
    loss is then the pixel-wise term alone, so a teacher is needed (``export_one`` passes the float network).
    ``after_step(n, qat_model)``: called once the ranges are calibrated (n = 0) and after every step n, with the
    QAT model at the training size (to follow the fine-tuning; it must not change the model)."""
    import tf_keras

    from skd_tf.data.pipeline import train_dataset

    if teacher is None and (photos is not None or not cfg.ce_weight):
        raise ValueError("QAT without labels (images, or export.qat.ce_weight 0) needs a teacher to reproduce")
    train_size = tuple(data.crop_size)
    if cfg.scale_range is not None:
        data = data.model_copy(update={"scale_range": tuple(cfg.scale_range)})
    if photos is not None:
        train_size = tuple(min(c, s) for c, s in zip(train_size, input_size))
    # the fine-tuning's dropout masks (tf_keras draws them from its own generator): the same file every run
    tf_keras.utils.set_random_seed(cfg.seed)
    qat_model = quantization_aware(at_input_size(network, train_size))
    if teacher is not None:
        teacher = at_input_size(teacher, train_size)
        teacher.trainable = False
    if cfg.freeze_batch_norm:
        freeze_batch_norm(qat_model)
    if photos is not None:
        batches = photo_batches(photos, tuple(input_size), train_size, cfg.batch_size, cfg.seed + 1, data)
        calibrate_ranges(qat_model, (next(batches)[0] for _ in range(cfg.calibration_batches)))
    else:
        calibration = train_dataset(data, cfg.batch_size, seed=cfg.seed + 1).take(cfg.calibration_batches)
        calibrate_ranges(qat_model, (images for images, _ in calibration))
    pixel = PixelwiseDistillation(temperature=cfg.temperature)
    aligned = logits_align_corners(network)
    rate = cfg.learning_rate
    if cfg.schedule == "cosine":
        rate = tf_keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=cfg.steps)
    optimizer = tf_keras.optimizers.Adam(rate)
    # its slots made here, not inside `step`: a tf.function that creates variables traces twice (5 s per trace
    # for MobileNetV3-Small's QAT model at 48×48)
    optimizer.build(qat_model.trainable_variables)

    # autograph off: autograph skips tf_keras but not tfmot, whose wrappers it would convert call by call
    # (the traced graph is the same; tracing took 3× longer)
    @tf.function(autograph=False)
    def step(images, labels):
        teacher_logits = teacher(images, training=False)["logits"] if teacher is not None else None
        with tf.GradientTape() as tape:
            logits = qat_model(images, training=True)
            loss = tf.constant(0.0)
            if labels is not None and cfg.ce_weight:  # labels: None on unlabelled images
                loss = cfg.ce_weight * segmentation_cross_entropy(logits, labels, data.ignore_label,
                                                                  align_corners=aligned)
            if teacher_logits is not None and cfg.pixel_weight:
                loss += cfg.pixel_weight * pixel({"logits": logits}, {"logits": teacher_logits})
        grads = tape.gradient(loss, qat_model.trainable_variables)
        optimizer.apply_gradients(zip(grads, qat_model.trainable_variables))
        return loss

    losses = []
    if photos is not None:
        batches = photo_batches(photos, tuple(input_size), train_size, cfg.batch_size, cfg.seed, data)
        stream = (next(batches) for _ in range(cfg.steps))
    else:
        stream = train_dataset(data, cfg.batch_size, seed=cfg.seed).take(cfg.steps)
    bar_shown = show_progress(progress)
    lines = progress and not bar_shown  # off a terminal (a log file): a line every tenth of the run instead
    if after_step is not None:
        after_step(0, qat_model)
    started = time.time()
    with tqdm(total=cfg.steps, desc="QAT fine-tune", unit="step", disable=not bar_shown, leave=False) as bar:
        for images, labels in stream:
            losses.append(float(step(images, labels)))
            if not np.isfinite(losses[-1]):
                raise FloatingPointError(f"QAT fine-tuning diverged at step {len(losses)} (loss {losses[-1]}); "
                                         "lower export.qat.learning_rate")
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            bar.update()
            if after_step is not None:
                after_step(len(losses), qat_model)
            if lines and (len(losses) % max(1, cfg.steps // 10) == 0 or len(losses) == cfg.steps):
                print(f"QAT fine-tune: step {len(losses)}/{cfg.steps}, loss {np.mean(losses[-10:]):.4f} (mean of "
                      f"the last {min(10, len(losses))}), {(time.time() - started) / len(losses):.2f} s/step",
                      flush=True)
    tie_concatenation_ranges(qat_model)
    export_model = qat_model
    if tuple(input_size) != train_size:
        export_model = quantization_aware(at_input_size(network, tuple(input_size)))
        export_model.set_weights(qat_model.get_weights())
    return QATResult(export_model, len(losses), losses[0], float(np.mean(losses[-10:])), teacher is not None)


def qat_logits_fn(qat_model):
    """The logits of a tf_keras QAT model in inference mode."""
    return lambda x: qat_model(x, training=False)


__all__ = ["QATResult", "finetune", "qat_logits_fn", "quantization_aware", "tie_concatenation_ranges"]
