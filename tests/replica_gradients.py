"""Per-term gradients of one distillation step on one device and on two replicas, and their conditioning.

The teacher and student are tests/small_networks.py's (what is checked is how the Distiller combines
replicas, not a backbone). Run as a script (``python tests/replica_gradients.py``; the test imports only
``ALL_LOSSES``) in a fresh process, so that its two logical CPU devices and ``TF_ENABLE_ONEDNN_OPTS`` are
set before TensorFlow starts. Prints one JSON object: for each term (the cross-entropy, every distillation
loss, the holistic generator term)

* ``scale``: max |g| of the single-device gradient over the student's (and the losses') variables;
* ``split``: max |g_single − g_2replicas| / scale, the 2-replica gradient being the sum of the
  replicas' gradients on their halves of the same global batch (what MirroredStrategy applies);
* ``sensitivity``: max |g(w) − g(w')| / scale with w' = w·(1 + 10⁻⁶·n), n ~ N(0, 1) per weight —
  how far float32-sized perturbations move this term's gradient at this point (its conditioning);

and, under ``paper_configuration``, the student's weights after 3 steps of ``Distiller.fit`` on the
paper's configuration on one device and on two replicas (``paper_configuration_end_weights``).
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from skd_tf.config import load_config
from skd_tf.data import train_dataset
from skd_tf.distill.config import parse_distill
from skd_tf.distill.run import build_losses
from skd_tf.losses import HolisticDistillation
from skd_tf.training.trainer import supervised_losses
from small_networks import small_segmenter

ROOT = Path(__file__).resolve().parents[1]
ALL_LOSSES = {
    "pixel": {"weight": 1.0}, "pairwise": {"weight": 1.0}, "cwd": {"weight": 1.0}, "fitnet": {"weight": 1.0},
    "at": {"weight": 10.0}, "sp": {"weight": 10.0}, "cc": {"weight": 1.0}, "irg": {"weight": 0.1},
    "rkd": {"weight": 0.1}, "ka": {"weight": 0.1},
}
BATCH = 4
PERTURBATION = 1e-6
PAPER_LOSSES = {"pixel": {"weight": 10.0}, "pairwise": {"weight": 10.0}}  # + the holistic term
PAPER_LR = 1e-4


def main() -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    keras.utils.set_random_seed(0)
    cfg = load_config(ROOT / "configs" / "synthetic_student.yaml",
                      ["data.crop_size=[32,32]", "data.synthetic.num_train=16", "data.synthetic.image_size=32"])
    images, labels = next(iter(train_dataset(cfg.data, BATCH, 0)))
    with strategy.scope():
        teacher, student = small_segmenter(6, 16, name="teacher"), small_segmenter(6, 8, name="student")
        losses = build_losses(parse_distill({"teacher": "unused", "losses": ALL_LOSSES}), teacher, student)
        holistic = HolisticDistillation(critic_width=0.0625, seed=0, name="holistic_loss")
        for loss in [l for l, _ in losses.values()] + [holistic]:
            loss.global_batch_size = BATCH
        s_out, t_out = student(images), teacher(images)  # creates the losses' lazily built variables
        for loss, _ in losses.values():
            loss(s_out, t_out, labels=labels, images=images)
        holistic(s_out, t_out, images=images)
    variables = list(student.trainable_variables) + [v for l, _ in losses.values() for v in l.trainable_variables]

    def per_term(images, labels):
        t_out = tf.nest.map_structure(tf.stop_gradient, teacher(images, training=False))
        values = {}
        with tf.GradientTape(persistent=True) as tape:  # one forward pass, one backward pass per term
            s_out = student(images, training=True)
            values["ce"] = supervised_losses(s_out, labels, 255, 0.4, BATCH)[1]
            for name, (loss, _) in losses.items():
                values[name] = loss(s_out, t_out, labels=labels, images=images)
            values["holistic"] = holistic(s_out, t_out, images=images)
        grads = {name: [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                        for g, v in zip(tape.gradient(value, variables), variables)]
                 for name, value in values.items()}
        del tape
        return grads

    def flat(grads):
        return np.concatenate([np.ravel(g.numpy()) for g in grads])

    single = {k: flat(v) for k, v in per_term(images, labels).items()}
    half = BATCH // 2
    shards = strategy.experimental_distribute_values_from_function(
        lambda ctx: (images[ctx.replica_id_in_sync_group * half:(ctx.replica_id_in_sync_group + 1) * half],
                     labels[ctx.replica_id_in_sync_group * half:(ctx.replica_id_in_sync_group + 1) * half]))
    summed = tf.nest.map_structure(lambda g: strategy.reduce("SUM", g, axis=None),
                                   strategy.run(per_term, args=shards))
    split = {k: flat(v) for k, v in summed.items()}
    rng = np.random.default_rng(0)
    for v in variables:
        v.assign(v * (1.0 + PERTURBATION * rng.standard_normal(v.shape).astype("float32")))
    perturbed = {k: flat(v) for k, v in per_term(images, labels).items()}
    report = {}
    for name, g in single.items():
        scale = float(np.abs(g).max())
        report[name] = {"scale": scale, "split": float(np.abs(g - split[name]).max()) / scale,
                        "sensitivity": float(np.abs(g - perturbed[name]).max()) / scale}
    report["paper_configuration"] = paper_configuration_end_weights(strategy, cfg)
    print("RESULT " + json.dumps(report))


def paper_configuration_end_weights(strategy, cfg, steps: int = 3) -> dict:
    """Pixel 10 + pair-wise 10 + holistic (critic updates, λ_ho-scaled), ``steps`` SGD steps of
    ``Distiller.fit`` on one device and under ``strategy`` (2 replicas) from the same initial weights
    and batches. Returns the max |w_1 − w_2| over the student's weights (batch-norm statistics
    included) after training (``end``) and before (``init``), and how far training moved its
    trainable weights (``moved``)."""
    from skd_tf.distill.distiller import Distiller

    batches = list(train_dataset(cfg.data, BATCH, 1).take(steps))
    weights = {}
    for name, scope in (("single", tf.distribute.get_strategy()), ("mirrored", strategy)):
        with scope.scope():
            keras.utils.set_random_seed(0)
            teacher, student = small_segmenter(6, 16, name="teacher"), small_segmenter(6, 8, name="student")
            losses = build_losses(parse_distill({"teacher": "unused", "losses": PAPER_LOSSES}), teacher, student)
            holistic = HolisticDistillation(critic_width=0.0625, seed=0, name="holistic_loss")
            distiller = Distiller(teacher, student, losses, 6, holistic, 0.1, 1, global_batch_size=BATCH,
                                  critic_loss_weight=0.1)
            distiller.compile(optimizer=keras.optimizers.SGD(PAPER_LR, momentum=0.9),
                              critic_optimizer=keras.optimizers.SGD(4e-4, momentum=0.9))
            distiller.build_state((32, 32, 3))
        initial = [w.copy() for w in student.get_weights()]
        trainable_before = [v.numpy().copy() for v in student.trainable_variables]
        data = tf.data.Dataset.from_tensor_slices(
            (tf.stack([b[0] for b in batches]), tf.stack([b[1] for b in batches])))
        distiller.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)
        moved = max(float(np.abs(v.numpy() - b).max()) for v, b in zip(student.trainable_variables, trainable_before))
        weights[name] = (initial, student.get_weights(), moved)
    (init_1, end_1, moved), (init_2, end_2, _) = weights["single"], weights["mirrored"]
    return {"end": max(float(np.abs(a - b).max()) for a, b in zip(end_1, end_2)),
            "init": max(float(np.abs(a - b).max()) for a, b in zip(init_1, init_2)), "moved": moved}


if __name__ == "__main__":
    main()
