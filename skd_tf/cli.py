"""The ``skd-tf`` command line: ``train``, ``distill``, ``evaluate``, ``export``, ``benchmark`` and ``demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _add_output_args(parser: argparse.ArgumentParser) -> None:
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("--quiet", action="store_true", help="no progress output; results and errors only")
    noise.add_argument("--verbose", action="store_true",
                       help="also TensorFlow's own start-up and C++ log (filtered otherwise)")


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
    _add_output_args(p)

    p = sub.add_parser("distill", help="distil the config's student from a trained teacher",
                       description="Distil the config's student from distill.teacher (a .keras checkpoint) with "
                                   "the losses of distill.losses (and the adversarial distill.holistic term), "
                                   "checkpointing student, critic and optimizers every train.steps_per_epoch steps "
                                   "into train.out_dir (an interrupted run resumes there), then evaluate the student. "
                                   "Knowledge adaptation's auto-encoder is pre-trained first when 'ka' is configured.")
    _add_config_args(p)
    p.add_argument("--teacher", help="override distill.teacher (path of the teacher's .keras checkpoint)")
    p.add_argument("--fresh", action="store_true", help="delete train.out_dir first instead of resuming")
    _add_output_args(p)

    p = sub.add_parser("evaluate", help="mIoU of a checkpoint on the config's validation split",
                       description="Evaluate a .keras segmentation checkpoint on data.val_split of the config; "
                                   "print per-class IoU, mIoU and pixel accuracy, and write them as JSON.")
    _add_config_args(p)
    p.add_argument("--checkpoint", required=True, help="a .keras model written by skd-tf train/distill")
    p.add_argument("--json", help="where to write the scores (default: <checkpoint dir>/eval.json)")
    p.add_argument("--limit", type=int, help="evaluate only the first N validation images")
    p.add_argument("--teacher", help="also measure the distance to this teacher (.keras): pixel-wise KL, pair-wise "
                                     "distance, and the critic's estimate with --critic")
    p.add_argument("--critic", help="critic.weights.h5 of a holistic distillation run (needs --teacher and the "
                                    "config's distill.holistic section)")
    _add_output_args(p)

    p = sub.add_parser("export", help="convert a student checkpoint to checked TFLite files",
                       description="Convert a .keras student to TFLite with builtin ops only (float32, float16, "
                                   "dynamic-range, full-integer int8 PTQ, or distillation-aware QAT), write "
                                   "OUT/<name>_<quantization>.tflite, and record parity with Keras, the TFLite "
                                   "mIoU on the validation split, the op list, integer-only and GPU-delegate "
                                   "checks and the file size in OUT/export.json. Settings default to the "
                                   "config's export: section; flags override it.")
    _add_config_args(p)
    p.add_argument("--checkpoint", required=True, help="the student's .keras checkpoint")
    p.add_argument("--quantization", help="one or more of float32,float16,dynamic,int8,qat "
                                          "(comma-separated; default: export.quantization, int8)")
    p.add_argument("--out", help="output directory (default: <train.out_dir>/export)")
    p.add_argument("--output", choices=["labels", "logits"],
                   help="labels: uint8 label map at input size (argmax head); logits: model-resolution logits")
    p.add_argument("--no-preprocess", dest="preprocess", action="store_const", const=False,
                   help="do not bake (x - mean) / std in; the app feeds normalised float images")
    p.add_argument("--input-size", help="HxW of the fixed model input (default: the config's eval size)")
    p.add_argument("--int8-io", choices=["uint8", "int8"], help="integer input type of int8/qat models")
    p.add_argument("--calibration-samples", type=int, help="training images used to calibrate int8 (default 200)")
    p.add_argument("--qat-steps", type=int, help="QAT fine-tuning steps (default 300)")
    p.add_argument("--teacher", help="teacher .keras for QAT's pixel-wise distillation (default: distill.teacher)")
    p.add_argument("--eval-limit", type=int, help="check on the first N validation images only")
    p.add_argument("--no-savedmodel", dest="savedmodel", action="store_const", const=False,
                   help="skip the SavedModel export for servers")
    _add_output_args(p)

    from export.benchmark import add_arguments

    p = sub.add_parser("benchmark", help="latency of .tflite models on this host or an Android phone",
                       description="Time .tflite models with the LiteRT interpreter (tflite-runtime or TensorFlow's "
                                   "as fallbacks), each thread count in a fresh process: init, first inference, "
                                   "mean/median/p5/p95/min/max/std latency, peak RSS. --android runs TFLite's "
                                   "benchmark_model on a phone over adb. The same module runs without TensorFlow "
                                   "as `python -m export.benchmark`.")
    add_arguments(p)

    p = sub.add_parser("demo", help="the whole pipeline on the synthetic dataset, with a report",
                       description="Train the synthetic teacher and baseline student, distil the student (pixel + "
                                   "pair-wise + holistic), evaluate all three, export the distilled student to "
                                   "float32 and int8 TFLite, benchmark the files on this host and write "
                                   "<runs>/demo/report.md with figures. Finished stages are reused.")
    p.add_argument("--runs-dir", default="runs", help="where the runs and the report go (default runs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value in all three configs, e.g. --set train.steps=200 (repeatable)")
    p.add_argument("--threads", type=int, default=2, help="threads for the latency benchmark (default 2)")
    p.add_argument("--fresh", action="store_true", help="delete the demo's runs and start over")
    _add_output_args(p)
    return parser


def _verbosity(args) -> int:
    """0 with --quiet, 2 with --verbose, else 1 (skd_tf.console's levels)."""
    return 0 if getattr(args, "quiet", False) else 2 if getattr(args, "verbose", False) else 1


def _cmd_train(args) -> int:
    from skd_tf.config import load_config
    from skd_tf.data import class_names
    from skd_tf.evaluation import format_scores
    from skd_tf.training.run import train

    cfg = load_config(args.config, args.overrides)
    scores = train(cfg, fresh=args.fresh, verbose=_verbosity(args))
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
    scores = distill(cfg, fresh=args.fresh, verbose=_verbosity(args))
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
    if args.critic and not args.teacher:
        raise ValueError("--critic needs --teacher")
    if args.teacher:  # loaded first: a bad file fails before the evaluation, not after it
        from skd_tf.distill.diagnostics import format_distances, load_critic, teacher_distances
        from skd_tf.distill.run import load_teacher

        teacher = load_teacher(args.teacher, cfg.data.num_classes, tuple(network.input.shape[1:3]))
        holistic = load_critic(cfg, args.critic) if args.critic else None
    scores = evaluate_network(network, cfg.data, cfg.eval.batch_size, args.limit, progress=not args.quiet)
    print(format_scores(scores, class_names(cfg.data)))
    if args.teacher:
        scores["teacher_distance"] = teacher_distances(network, teacher, cfg.data, cfg.eval.batch_size, args.limit,
                                                       holistic)
        print(format_distances(scores["teacher_distance"]))
    out = Path(args.json) if args.json else Path(args.checkpoint).parent / "eval.json"
    write_json(out, scores)
    print(f"scores: {out}")
    return 0


def _parse_size(text: str | None):
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--input-size must look like 512x1024 (got {text!r})") from None
    return (h, w)


def _cmd_export(args) -> int:
    from export.config import QUANTIZATIONS, parse_export
    from export.run import export_student
    from export.summary import format_export
    from skd_tf.config import load_config

    cfg = load_config(args.config, args.overrides)
    raw = dict(cfg.export or {})
    if args.qat_steps is not None:
        raw["qat"] = {**raw.get("qat", {}), "steps": args.qat_steps}
    ecfg = parse_export(raw, {"output": args.output, "preprocess": args.preprocess,
                              "input_size": _parse_size(args.input_size), "int8_io": args.int8_io,
                              "calibration_samples": args.calibration_samples, "teacher": args.teacher,
                              "eval_limit": args.eval_limit, "savedmodel": args.savedmodel},
                        source=args.config)
    quantizations = [q.strip() for q in (args.quantization or ecfg.quantization).split(",") if q.strip()]
    for q in quantizations:
        if q not in QUANTIZATIONS:
            raise ValueError(f"unknown quantization {q!r}; choose from {', '.join(QUANTIZATIONS)}")
    out = args.out or str(Path(cfg.train.out_dir) / "export")
    record = export_student(cfg, args.checkpoint, ecfg, quantizations, out, progress=not args.quiet)
    print(format_export(record, quantizations))
    print(f"report: {Path(out) / 'export.json'}")
    return 0


def _cmd_benchmark(args) -> int:
    from export.benchmark import BenchmarkError, run
    from export.runtime import RuntimeUnavailable

    try:
        run(args)
    except (BenchmarkError, RuntimeUnavailable) as err:
        raise ValueError(str(err)) from None
    return 0


def _cmd_demo(args) -> int:
    from skd_tf.demo.run import run_demo

    if args.threads < 1:
        raise ValueError("--threads must be >= 1")
    report = run_demo(args.runs_dir, args.overrides, fresh=args.fresh, quiet=args.quiet, threads=args.threads)
    print(f"\nreport: {report}")
    return 0


COMMANDS = {"train": _cmd_train, "distill": _cmd_distill, "evaluate": _cmd_evaluate, "export": _cmd_export,
            "benchmark": _cmd_benchmark, "demo": _cmd_demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from export.native_log import show_native_notes
        from skd_tf.console import start_tensorflow

        show_native_notes(_verbosity(args) >= 2)
        if args.command != "benchmark":  # the benchmark runs without TensorFlow
            start_tensorflow(_verbosity(args))
        from skd_tf.config import ConfigError
        from skd_tf.data import DataError
        from skd_tf.training.checkpointing import TrainingDiverged

        errors = (ConfigError, DataError, TrainingDiverged, FileNotFoundError, ValueError)
    except KeyboardInterrupt:
        print(f"skd-tf {args.command}: interrupted", file=sys.stderr)
        return 130
    try:
        return COMMANDS[args.command](args)
    except errors as err:
        print(f"skd-tf {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"skd-tf {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
