"""The ``skd-tf`` command line: ``train``, ``distill`` and ``evaluate``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML run config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.steps=200 (repeatable; value parsed as YAML)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skd-tf",
        description="Structured knowledge distillation of semantic-segmentation networks (TensorFlow/Keras).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a teacher or a baseline student from a config",
                       description="Train the config's model with SGD + poly LR on its dataset, checkpointing "
                                   "every train.steps_per_epoch steps into train.out_dir (an interrupted run "
                                   "resumes from there), then evaluate it on the validation split.")
    _add_config_args(p)
    p.add_argument("--fresh", action="store_true", help="delete train.out_dir first instead of resuming")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("distill", help="distil the config's student from a trained teacher",
                       description="Distil the config's student from distill.teacher (a .keras checkpoint) with "
                                   "the losses of distill.losses (and the adversarial distill.holistic term), "
                                   "checkpointing student, critic and optimizers every train.steps_per_epoch steps "
                                   "into train.out_dir (an interrupted run resumes there), then evaluate the student. "
                                   "Knowledge adaptation's auto-encoder is pre-trained first when 'ka' is configured.")
    _add_config_args(p)
    p.add_argument("--teacher", help="override distill.teacher (path of the teacher's .keras checkpoint)")
    p.add_argument("--fresh", action="store_true", help="delete train.out_dir first instead of resuming")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("evaluate", help="mIoU of a checkpoint on the config's validation split",
                       description="Evaluate a .keras segmentation checkpoint on data.val_split of the config; "
                                   "print per-class IoU, mIoU and pixel accuracy, and write them as JSON.")
    _add_config_args(p)
    p.add_argument("--checkpoint", required=True, help="a .keras model written by skd-tf train/distill")
    p.add_argument("--json", help="where to write the scores (default: <checkpoint dir>/eval.json)")
    p.add_argument("--limit", type=int, help="evaluate only the first N validation images")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _cmd_train(args) -> int:
    from skd_tf.config import load_config
    from skd_tf.data import class_names
    from skd_tf.evaluation import format_scores
    from skd_tf.training.run import train

    cfg = load_config(args.config, args.overrides)
    scores = train(cfg, fresh=args.fresh, verbose=0 if args.quiet else 1)
    print(format_scores(scores, class_names(cfg.data)))
    print(f"model: {Path(cfg.train.out_dir) / 'model.keras'}   scores: {Path(cfg.train.out_dir) / 'eval.json'}")
    return 0


def _cmd_distill(args) -> int:
    from skd_tf.config import load_config
    from skd_tf.data import class_names
    from skd_tf.distill.run import distill
    from skd_tf.evaluation import format_scores

    overrides = list(args.overrides) + ([f"distill.teacher={args.teacher}"] if args.teacher else [])
    cfg = load_config(args.config, overrides)
    scores = distill(cfg, fresh=args.fresh, verbose=0 if args.quiet else 1)
    print(format_scores(scores, class_names(cfg.data)))
    print(f"student: {Path(cfg.train.out_dir) / 'model.keras'}   scores: {Path(cfg.train.out_dir) / 'eval.json'}")
    return 0


def _cmd_evaluate(args) -> int:
    from skd_tf.config import load_config
    from skd_tf.data import class_names
    from skd_tf.evaluation import evaluate_network, format_scores
    from skd_tf.models import load_model
    from skd_tf.training.run import write_json

    cfg = load_config(args.config, args.overrides)
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be at least 1")
    network = load_model(args.checkpoint)
    classes = int(network.output["logits"].shape[-1])
    if classes != cfg.data.num_classes:
        raise ValueError(f"{args.checkpoint} predicts {classes} classes but the config has {cfg.data.num_classes}")
    scores = evaluate_network(network, cfg.data, cfg.eval.batch_size, args.limit, progress=not args.quiet)
    print(format_scores(scores, class_names(cfg.data)))
    out = Path(args.json) if args.json else Path(args.checkpoint).parent / "eval.json"
    write_json(out, scores)
    print(f"scores: {out}")
    return 0


COMMANDS = {"train": _cmd_train, "distill": _cmd_distill, "evaluate": _cmd_evaluate}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from skd_tf.config import ConfigError
    from skd_tf.data import DataError
    from skd_tf.training.checkpointing import TrainingDiverged

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DataError, TrainingDiverged, FileNotFoundError, ValueError) as err:
        print(f"skd-tf {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"skd-tf {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
