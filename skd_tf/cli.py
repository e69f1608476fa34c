"""The ``skd-tf`` command line: ``train``, ``distill``, ``evaluate``, ``predict``, ``export``, ``benchmark``,
``import``, ``demo`` and ``config``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _add_output_args(parser: argparse.ArgumentParser) -> None:
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("--quiet", action="store_true", help="no progress output; results and errors only")
    noise.add_argument("--verbose", action="store_true",
                       help="also TensorFlow's own start-up and C++ log (filtered otherwise)")


def _add_config_args(parser: argparse.ArgumentParser, beside_checkpoint: bool = False) -> None:
    if beside_checkpoint:
        parser.add_argument("--config", help="YAML run config (see configs/; default: the config.json beside "
                                              "the checkpoint, which train, distill and import write into the "
                                              "run's folder)")
    else:
        parser.add_argument("--config", required=True, help="YAML run config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.steps=200 (repeatable; value parsed as YAML)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skd-tf",
        description="Structured knowledge distillation of semantic-segmentation networks (TensorFlow/Keras).")
    from skd_tf import __version__

    parser.add_argument("--version", action="version", version=f"skd-tf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a teacher or a baseline student from a config",
                       description="Train the config's model on its dataset with train.optimizer (SGD with "
                                   "momentum, the paper's, or AdamW) and a poly learning rate, checkpointing "
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
    _add_config_args(p, beside_checkpoint=True)
    p.add_argument("--checkpoint", required=True, help="a .keras model written by skd-tf train/distill")
    p.add_argument("--json", help="where to write the scores (default: <checkpoint dir>/eval.json)")
    p.add_argument("--limit", type=int, help="evaluate only the first N validation images")
    p.add_argument("--teacher", help="also measure the distance to this teacher (.keras): pixel-wise KL, pair-wise "
                                     "distance, and the critic's estimate with --critic")
    p.add_argument("--critic", help="critic.weights.h5 of a holistic distillation run (needs --teacher and the "
                                    "config's distill.holistic section)")
    p.add_argument("--errors", action="store_true",
                   help="also split the wrong pixels by kind: whole objects misread, objects split between classes, "
                        "object pixels lost to the background, background taken for an object")
    _add_output_args(p)

    p = sub.add_parser("export", help="convert a student checkpoint to checked TFLite files",
                       description="Convert a .keras student to TFLite with builtin ops only (float32, float16, "
                                   "dynamic-range, full-integer int8 PTQ, or distillation-aware QAT), write "
                                   "OUT/<name>_<quantization>.tflite, and record parity with Keras, the TFLite "
                                   "mIoU on the validation split, the op list, integer-only and GPU-delegate "
                                   "checks and the file size in OUT/export.json. Settings default to the "
                                   "config's export: section; flags override it.")
    _add_config_args(p, beside_checkpoint=True)
    p.add_argument("--checkpoint", required=True, help="the student's .keras checkpoint")
    p.add_argument("--quantization", help="one or more of float32,float16,dynamic,int8,qat "
                                          "(comma-separated; default: export.quantization, int8)")
    p.add_argument("--out", help="output directory (default: <train.out_dir>/export; with the config.json beside "
                                 "the checkpoint, <checkpoint folder>/export)")
    p.add_argument("--output", choices=["labels", "logits"],
                   help="labels: uint8 label map at input size (argmax head); logits: model-resolution logits "
                        "(default: export.output, labels)")
    p.add_argument("--label-head", choices=["bilinear", "two_class", "half", "quarter", "nearest"],
                   help="how the label map is made: bilinear (logits upsampled to the input, then argmax: what "
                        "evaluation scores), two_class (bilinear's labels, each pixel decided between its cell's two "
                        "best classes: a quarter to a half of the cost), half / quarter (bilinear to 1/2 / 1/4 of the "
                        "input, argmax, nearest the rest) or nearest (argmax at model resolution, then nearest) "
                        "(default: export.label_head, bilinear)")
    p.add_argument("--no-preprocess", dest="preprocess", action="store_const", const=False,
                   help="do not bake (x - mean) / std in; the app feeds normalised float images")
    p.add_argument("--input-size", help="HxW of the fixed model input (default: the config's eval size)")
    p.add_argument("--int8-io", choices=["uint8", "int8"],
                   help="integer input type of int8/qat models (default: export.int8_io, uint8)")
    p.add_argument("--calibration-samples", type=int, help="training images used to calibrate int8 (default 200)")
    p.add_argument("--calibration-percentile", type=float, metavar="P",
                   help="int8 activation ranges from the (100-P)-th to the P-th percentile of the calibration "
                        "values, e.g. 99.99 (default: export.calibration_percentile; unset, --calibration-ranges "
                        "decides)")
    p.add_argument("--calibration-ranges", choices=["auto", "extremes", "mean_extremes"],
                   help="int8 activation ranges: the extremes over the calibration images, the mean over them of "
                        "each image's extremes, or auto: int8 converted with the extremes and with the 99.99th "
                        "percentile, the file whose labels agree more with Keras' on the check images kept "
                        "(default: export.calibration_ranges, auto)")
    p.add_argument("--bias-correction-samples", type=int, metavar="N",
                   help="int8: correct each convolution's bias so that its output channels' means over N "
                        "calibration images are the float network's; 0: off (default: "
                        "export.bias_correction_samples, 0)")
    p.add_argument("--qat-steps", type=int, help="QAT fine-tuning steps (default 300)")
    p.add_argument("--teacher", help="teacher .keras for QAT's pixel-wise distillation (default: distill.teacher; "
                   "on --images, the float network itself)")
    p.add_argument("--eval-limit", type=int, help="check on the first N validation images only")
    p.add_argument("--images", nargs="+", metavar="IMAGE",
                   help="unlabelled images (files, folders, quoted glob patterns; e.g. frames of your app) to "
                        "calibrate int8 on, fine-tune QAT on (to reproduce the float network, or --teacher) and "
                        "check the files on, instead of the config's data set — for a published model whose data "
                        "set you do not have; no mIoU then, only agreement with Keras (default: export.images)")
    p.add_argument("--no-savedmodel", dest="savedmodel", action="store_const", const=False,
                   help="skip the SavedModel export for servers")
    _add_output_args(p)

    p = sub.add_parser("predict", help="label maps and coloured overlays for images, from .keras or .tflite",
                       description="Run a .keras checkpoint or an exported .tflite file on images (files, folders "
                                   "and quoted glob patterns) with evaluation's preprocessing, and write "
                                   "OUT/<name>_labels.png (class indices as a palette PNG at the image's size) and "
                                   "OUT/<name>_overlay.png (the classes' colours blended into the image).")
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files, folders of images, or glob patterns")
    p.add_argument("--model", required=True, help="a .keras checkpoint or a .tflite file")
    p.add_argument("--config", help="the model's YAML run config: for .keras (by default the config.json beside "
                                    "the checkpoint, which train, distill and import write into the run's folder), "
                                    "and for a .tflite file without its export.json beside it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable; value parsed as YAML)")
    p.add_argument("--out", help="output folder (default: <model folder>/predictions)")
    p.add_argument("--timing", metavar="JSON", help="also write each image's inference time (ms) to this file")
    p.add_argument("--threads", type=int, default=1, help=".tflite interpreter threads (default 1)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours (default 0.5)")
    _add_output_args(p)

    from skd_tf.benchmark.cli import add_arguments

    p = sub.add_parser("benchmark", help="latency of .tflite models on this host or an Android phone",
                       description="Time .tflite models with the LiteRT interpreter (tflite-runtime or TensorFlow's "
                                   "as fallbacks), each thread count in a fresh process: init, first inference, "
                                   "mean/median/p5/p95/min/max/std latency, peak RSS. --android runs TFLite's "
                                   "benchmark_model on a phone over adb. The same module runs without TensorFlow "
                                   "as `python -m skd_tf.benchmark`, or `python -m benchmark` in a copy of its folder.")
    add_arguments(p)

    p = sub.add_parser("import", help="a published PyTorch checkpoint (.pth) as an skd-tf .keras model",
                       description="Read a PyTorch checkpoint (either serialization; a bare state_dict or one nested "
                                   "under state_dict/model; with or without DataParallel's 'module.' prefix), build "
                                   "the config's network, set every weight from it strictly (every tensor used once, "
                                   "every weight set, BatchNorm statistics included; otherwise one error naming the "
                                   "unmatched tensors, and nothing written) and save a .keras model that evaluate, "
                                   "export, predict and distill take. The network's input convention "
                                   "(model.input_convention: channel order, mean, std, value range) is built in. "
                                   "Needs PyTorch: pip install 'skd-tf[torch]'.")
    _add_config_args(p)
    p.add_argument("--checkpoint", required=True, help="the PyTorch checkpoint (.pth)")
    p.add_argument("--out", help="the .keras file to write (default: <train.out_dir>/model.keras)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="also read checkpoints that pickle Python objects besides tensors (runs their code: "
                        "only for files you trust)")
    _add_output_args(p)

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

    p = sub.add_parser("config", help="print a config resolved: base: chain, --set overrides and every default",
                       description="Print the config as a run sees it, as YAML: its base: chain merged, the "
                                   "--set overrides applied, every key with its default filled in (the distill: "
                                   "and export: sections too, when present). Nothing runs.")
    _add_config_args(p)
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
    from skd_tf.evaluation import evaluate_network, format_errors, format_scores
    from skd_tf.models import load_model
    from skd_tf.training.run import write_json

    cfg = load_config(args.config, args.overrides)
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be at least 1")
    network = load_model(args.checkpoint, cfg.data)
    classes = int(network.output["logits"].shape[-1])
    if classes != cfg.data.num_classes:
        raise ValueError(f"{args.checkpoint} predicts {classes} classes but the config has {cfg.data.num_classes}")
    if args.critic and not args.teacher:
        raise ValueError("--critic needs --teacher")
    if args.teacher:  # loaded first: a bad file fails before the evaluation, not after it
        from skd_tf.distill.diagnostics import format_distances, load_critic, teacher_distances
        from skd_tf.distill.run import load_teacher

        teacher = load_teacher(args.teacher, cfg.data.num_classes, tuple(network.input.shape[1:3]), cfg.data)
        holistic = load_critic(cfg, args.critic) if args.critic else None
    scores = evaluate_network(network, cfg.data, cfg.eval.batch_size, args.limit, progress=not args.quiet,
                              errors=args.errors)
    print(format_scores(scores, class_names(cfg.data)))
    if args.errors:
        print(format_errors(scores["errors"]))
    if args.teacher:
        scores["teacher_distance"] = teacher_distances(network, teacher, cfg.data, cfg.eval.batch_size, args.limit,
                                                       holistic)
        print(format_distances(scores["teacher_distance"]))
    out = Path(args.json) if args.json else Path(args.checkpoint).parent / "eval.json"
    write_json(out, scores)
    print(f"scores: {out}")
    return 0


def _cmd_predict(args) -> int:
    from skd_tf.config import load_config
    from skd_tf.predict import predict

    if args.threads < 1:
        raise ValueError("--threads must be >= 1")
    if args.overrides and not args.config:
        raise ValueError("--set needs --config (or a .keras model with the config.json of its run beside it)")
    cfg = load_config(args.config, args.overrides) if args.config else None
    out = args.out or str(Path(args.model).parent / "predictions")
    records = predict(args.model, args.inputs, out, cfg, args.threads, args.alpha, args.timing,
                      progress=not args.quiet)
    if not args.quiet:
        print(f"{len(records)} image{'s' if len(records) != 1 else ''}: {out}"
              + (f"   timing: {args.timing}" if args.timing else ""))
    return 0


def _cmd_config(args) -> int:
    from skd_tf.config import load_config

    cfg = load_config(args.config, args.overrides)
    resolved = cfg.model_dump(mode="json")
    if cfg.distill is not None:
        from skd_tf.distill.config import parse_distill, resolved_distill

        resolved["distill"] = resolved_distill(parse_distill(cfg.distill, cfg.origin))
    if cfg.export is not None:
        from skd_tf.export.config import parse_export

        resolved["export"] = parse_export(cfg.export, source=cfg.origin).model_dump(mode="json")
    else:
        del resolved["export"]
    if cfg.distill is None:
        del resolved["distill"]
    print(f"# {args.config}" + "".join(f" --set {o}" for o in args.overrides))
    print(_config_yaml(resolved), end="")
    return 0


def _config_yaml(mapping: dict) -> str:
    """YAML with sections as blocks and lists (sizes, mean, std) on one line."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(list, lambda dumper, values: dumper.represent_sequence(
        "tag:yaml.org,2002:seq", values, flow_style=True))
    return yaml.dump(mapping, Dumper=Dumper, sort_keys=False)


def _parse_size(text: str | None):
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--input-size must look like 512x1024 (got {text!r})") from None
    return (h, w)


def _cmd_export(args) -> int:
    from skd_tf.data import DataError
    from skd_tf.export.config import QUANTIZATIONS, parse_export
    from skd_tf.export.run import export_student
    from skd_tf.export.summary import format_export
    from skd_tf.config import load_config

    cfg = load_config(args.config, args.overrides)
    raw = dict(cfg.export or {})
    if args.qat_steps is not None:
        raw["qat"] = {**raw.get("qat", {}), "steps": args.qat_steps}
    ecfg = parse_export(raw, {"output": args.output, "label_head": args.label_head, "preprocess": args.preprocess,
                              "input_size": _parse_size(args.input_size), "int8_io": args.int8_io,
                              "calibration_samples": args.calibration_samples,
                              "calibration_percentile": args.calibration_percentile,
                              "calibration_ranges": args.calibration_ranges,
                              "bias_correction_samples": args.bias_correction_samples, "teacher": args.teacher,
                              "eval_limit": args.eval_limit, "images": args.images, "savedmodel": args.savedmodel},
                        source=cfg.origin)
    quantizations = [q.strip() for q in (args.quantization or ecfg.quantization).split(",") if q.strip()]
    for q in quantizations:
        if q not in QUANTIZATIONS:
            raise ValueError(f"unknown quantization {q!r}; choose from {', '.join(QUANTIZATIONS)}")
    out = args.out or str((Path(args.checkpoint).parent if args.config_beside else Path(cfg.train.out_dir)) / "export")
    try:
        record = export_student(cfg, args.checkpoint, ecfg, quantizations, out, progress=not args.quiet)
    except DataError as err:
        if ecfg.images or "qat" in quantizations:
            raise
        raise DataError(f"{err}; without the data set, --images FRAMES... calibrates and checks the files on "
                        f"images of your own") from None
    print(format_export(record, quantizations))
    print(f"report: {Path(out) / 'export.json'}")
    return 0


def _cmd_benchmark(args) -> int:
    from skd_tf.benchmark.cli import run
    from skd_tf.benchmark.errors import BenchmarkError
    from skd_tf.benchmark.runtime import RuntimeUnavailable

    try:
        run(args)
    except (BenchmarkError, RuntimeUnavailable) as err:
        raise ValueError(str(err)) from None
    return 0


def _cmd_import(args) -> int:
    from skd_tf.config import load_config
    from skd_tf.importing import import_checkpoint

    cfg = load_config(args.config, args.overrides)
    out = args.out or str(Path(cfg.train.out_dir) / "model.keras")
    record = import_checkpoint(cfg, args.checkpoint, out, allow_pickle=args.allow_pickle)
    print(f"{record['tensors']} tensors of {args.checkpoint} -> {record['model']} ({cfg.model.arch}, "
          f"{cfg.data.num_classes} classes, {record['parameters']:,} parameters)")
    print(f"input convention: {record['input_convention']}")
    print(f"run config: {record['config']} (evaluate, export and predict read it beside the model)")
    return 0


def _cmd_demo(args) -> int:
    from skd_tf.demo.run import run_demo

    if args.threads < 1:
        raise ValueError("--threads must be >= 1")
    report = run_demo(args.runs_dir, args.overrides, fresh=args.fresh, quiet=args.quiet, threads=args.threads)
    print(f"\nreport: {report}")
    return 0


COMMANDS = {"train": _cmd_train, "distill": _cmd_distill, "evaluate": _cmd_evaluate, "predict": _cmd_predict,
            "export": _cmd_export, "benchmark": _cmd_benchmark, "import": _cmd_import, "demo": _cmd_demo,
            "config": _cmd_config}


def _explain(err: Exception, args) -> str | None:
    """One line for an error raised inside the input pipeline (a bad image or mask), else None."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(err, tf.errors.OpError) or not getattr(args, "config", None):
        return None
    from skd_tf.config import load_config
    from skd_tf.data.failures import explain_pipeline_error, from_pipeline

    if not from_pipeline(err):
        return None
    return str(explain_pipeline_error(err, load_config(args.config, args.overrides).data))


def _config_beside_checkpoint(args) -> None:
    """``evaluate`` / ``export`` / ``predict`` of a .keras checkpoint without ``--config``: the config.json that
    ``train``, ``distill`` and ``import`` write beside the model in its run's folder (named on stdout)."""
    checkpoint = getattr(args, "checkpoint", None) or getattr(args, "model", None)
    args.config_beside = False
    if not hasattr(args, "config") or args.config is not None or not str(checkpoint or "").endswith(".keras"):
        return
    beside = Path(checkpoint).parent / "config.json"
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    if not beside.is_file():
        raise ValueError(f"{checkpoint} has no config.json beside it (train, distill and import write one into the "
                         f"run's folder): pass --config, the YAML config it was made with")
    args.config, args.config_beside = str(beside), True
    if not args.quiet:
        print(f"config: {beside}")


def main(argv: list[str] | None = None) -> int:
    name = "skd-tf"
    try:  # a Ctrl-C while the parser's imports load is an interruption too, not a traceback
        args = build_parser().parse_args(argv)
        name = f"skd-tf {args.command}"
        from skd_tf.benchmark.native_log import show_native_notes
        from skd_tf.console import QUIET, start_tensorflow

        show_native_notes(_verbosity(args) >= 2)
        if args.command != "benchmark":  # the benchmark runs without TensorFlow
            start_tensorflow(QUIET if args.command == "config" else _verbosity(args))
        from skd_tf.config import ConfigError
        from skd_tf.data import DataError
        from skd_tf.training.checkpointing import TrainingDiverged

        errors = (ConfigError, DataError, TrainingDiverged, FileNotFoundError, ValueError)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    try:
        _config_beside_checkpoint(args)
        return COMMANDS[args.command](args)
    except errors as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resumable = args.command in ("train", "distill", "demo")
        print(f"{name}: interrupted" + ("; rerun the same command to resume" if resumable else ""), file=sys.stderr)
        return 130
    except Exception as err:
        explained = _explain(err, args)
        if explained is None:
            raise
        print(f"{name}: error: {explained}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
