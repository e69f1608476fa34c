"""Time per training step of distillation against its parts, on the CPU with the synthetic models.

    python -m benchmarks.step_overhead [--steps 30] [--batch 16]

Measures, in one process and on the same batch: a student-only training step,
a teacher forward pass, a distillation step with pixel + pair-wise losses, and
one with pixel + pair-wise + holistic (n_critic = 1). Prints each and the ratio
distill_step / (teacher_forward + student_step); targets ≤ 1.25 for pi+pa and
≤ 1.6 with the critic.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]


def timed(fn, steps: int) -> float:
    """Median seconds per call of ``fn`` over ``steps`` calls, after two warm-up calls."""
    import numpy as np

    fn()
    fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement (median reported)")
    parser.add_argument("--batch", type=int, default=16, help="batch size")
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    from skd_tf.config import load_config
    from skd_tf.distill.distiller import Distiller
    from skd_tf.losses import HolisticDistillation, PairwiseDistillation, PixelwiseDistillation
    from skd_tf.models import build_model
    from skd_tf.training.run import make_optimizer
    from skd_tf.training.trainer import SegmentationTrainer

    keras.utils.set_random_seed(0)
    teacher_cfg = load_config(ROOT / "configs" / "synthetic_teacher.yaml")
    student_cfg = load_config(ROOT / "configs" / "synthetic_student.yaml")
    size, k = tuple(student_cfg.data.crop_size), student_cfg.data.num_classes
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(args.batch, *size, 3)).astype("float32"))
    labels = tf.constant(rng.integers(0, k, (args.batch, *size)).astype("int32"))
    batch = (images, labels)
    teacher = build_model(teacher_cfg.model, k, size, name="teacher")
    teacher.trainable = False

    def student():
        return build_model(student_cfg.model, k, size, name="student")

    trainer = SegmentationTrainer(student(), k, global_batch_size=args.batch)
    trainer.compile(optimizer=make_optimizer(student_cfg.train))
    trainer(images)
    trainer.make_train_function()
    student_step = trainer.train_function
    teacher_forward = tf.function(lambda x: teacher(x, training=False))

    def distiller(holistic: bool):
        losses = {"pixel": (PixelwiseDistillation(), 10.0), "pairwise": (PairwiseDistillation(), 10.0)}
        critic = HolisticDistillation(critic_width=0.25, seed=0) if holistic else None
        d = Distiller(teacher, student(), losses, k, critic, 0.1, 1, global_batch_size=args.batch)
        d.compile(optimizer=make_optimizer(student_cfg.train),
                  critic_optimizer=keras.optimizers.SGD(4e-4, momentum=0.9) if holistic else None)
        d.build_state((*size, 3))
        d.make_train_function()
        return d.train_function

    pi_pa, full = distiller(False), distiller(True)
    data = tf.data.Dataset.from_tensors(batch).repeat()
    iterator = iter(data)
    results = {
        "student step": timed(lambda: student_step(iterator), args.steps),
        "teacher forward": timed(lambda: teacher_forward(images).get("logits").numpy(), args.steps),
        "distill pi+pa": timed(lambda: pi_pa(iterator), args.steps),
        "distill pi+pa+ho": timed(lambda: full(iterator), args.steps),
    }
    base = results["teacher forward"] + results["student step"]
    print(f"synthetic teacher {teacher_cfg.model.backbone} w{teacher_cfg.model.width} → student "
          f"{student_cfg.model.backbone} w{student_cfg.model.width}, batch {args.batch}, {size[0]}×{size[1]}, "
          f"CPU with {os.cpu_count()} cores, median of {args.steps} steps")
    for name, seconds in results.items():
        print(f"  {name:<18} {1000 * seconds:8.1f} ms")
    for name, target in (("distill pi+pa", 1.25), ("distill pi+pa+ho", 1.6)):
        ratio = results[name] / base
        print(f"  {name} / (teacher forward + student step) = {ratio:.2f}  (target ≤ {target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
