"""The real configs at their real sizes, on fabricated data: does every stage run, how fast, in how much memory.

    python -m benchmarks.real_size                       # every stage (about an hour on 2 cores)
    python -m benchmarks.real_size --stages pipeline     # only these stages (comma-separated)
    python -m benchmarks.real_size --tiny                # the same path at reduced size (what `make test` runs)

Stages, each its own process (its wall time and peak RSS measured by the parent):
  data        writes full-size Cityscapes zips (2048×1024 street scenes drawn from seeds, the official layout,
              real label ids; benchmarks/cityscapes_fabric.py) and prepares them with the real tfds builder
  pipeline    images/s through the Cityscapes training pipeline (decode, scale, crop, flip, normalise) pinned
              to 1 core and to 2 cores, and through the decoding alone
  teacher     `skd-tf train` cityscapes_teacher (PSPNet ResNet-101 OS8, 512×512 crops, batch 8), then its
              whole-image (1024×2048) evaluation
  student     `skd-tf train` cityscapes_student (PSPNet ResNet-18, full width)
  mobile_student   the same config with the phone-sized student: LR-ASPP on MobileNetV2 ×1.0 (output stride 16)
  skd         `skd-tf distill` cityscapes_skd from that teacher at 769×769 crops (an odd size: 769 → 97 at
              output stride 8)
  skd_reference_code   the same with cityscapes_skd_reference_code
  mock_tfds   one training step of ade20k_teacher/_student and pets_teacher/_student through tfds mock data
  export      the deployed students to float32, float16 and int8 TFLite at 1024×2048 and 512×1024: PSPNet
              ResNet-18 (the distilled one), LR-ASPP MobileNetV2 (also without the label head: logits out)
              and the synthetic student (trained 2 steps)
  benchmark   those files' latency (mean, p95; at least 5 runs and 3 s each) and peak RSS on this host, 1 and
              2 threads

Only step counts are reduced (``--steps``). A stage that the kernel kills for memory is retried at half the
batch, and the record says so. Each stage's record (seconds, seconds per training step, peak RSS, the
batch it ran, mIoU where it evaluates, the host CPU) goes to ``--results``/<stage>.json; a later run skips the
recorded stages (``--fresh`` reruns them), and ``--table`` prints the records as the tables of docs/real-size.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from benchmarks.ablation import ROOT, host_cpu, log_of  # noqa: E402

STAGES = ("data", "pipeline", "teacher", "student", "mobile_student", "skd", "skd_reference_code", "mock_tfds",
          "export", "benchmark")
# The sizes --tiny shrinks: crops (kept odd where the real one is), evaluation at a resized 64×128 instead
# of whole 1024×2048 images, export inputs, the networks' widths (same depth and layers: ResNet-101 stays
# 101 layers deep) and the batch.
TINY_SETS = ["data.crop_size=[65,65]", "data.val_mode=resize", "data.val_size=[64,128]", "train.batch_size=2",
             "model.width=0.125", "model.head_channels=32"]
TINY_DISTILL_CROP = 97
TINY_EXPORT_SIZES = ("64x128",)
EXPORT_SIZES = ("1024x2048", "512x1024")
QUANTIZATIONS = ("float32", "float16", "int8")
# cityscapes_student with the phone-sized network of pets_student
MOBILE_SETS = ["model.arch=lraspp", "model.backbone=mobilenetv2", "model.output_stride=16", "model.width=1.0",
               "model.head_channels=128", "model.aux_head=false"]
DISTILL_CROP = 769
# Images the fabricated dataset holds per split (the tfds builder needs train, val and test).
COUNTS = {"train": 16, "val": 4, "test": 1}
TINY_COUNTS = {"train": 2, "val": 1, "test": 1}
MOCK_CONFIGS = ("ade20k_teacher", "ade20k_student", "pets_teacher", "pets_student")


class StageFailed(RuntimeError):
    """A stage's command exited with an error (its log names why)."""


def measured(cmd: list[str], log: Path, cores: str | None = None) -> dict:
    """Runs ``cmd`` (pinned to ``cores`` with taskset when given), its output to ``log``; returns its wall
    seconds, peak RSS in MiB and exit code (negative: killed by that signal)."""
    if cores:
        cmd = ["taskset", "-c", cores] + cmd
    log.parent.mkdir(parents=True, exist_ok=True)
    began = time.time()
    with open(log, "w") as out:
        out.write("$ " + shlex.join(cmd) + "\n")
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            proc.wait()
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": round(time.time() - began, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "exit": proc.returncode}


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def checked(cmd: list[str], log: Path, cores: str | None = None) -> dict:
    """``measured``, raising StageFailed with the log's tail when the command fails."""
    result = measured(cmd, log, cores)
    if result["exit"]:
        raise StageFailed(f"{shlex.join(cmd)} exited with {result['exit']}; the end of {log}:\n{_tail(log)}")
    return result


def out_of_memory(result: dict) -> bool:
    return result["exit"] == -signal.SIGKILL


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "skd_tf.cli", *args]


def sets(*items: str) -> list[str]:
    return [a for item in items for a in ("--set", item)]


class Plan:
    """Paths and settings shared by the stages."""

    def __init__(self, args):
        self.tiny, self.steps = args.tiny, args.steps
        self.runs, self.results = Path(args.runs).resolve(), Path(args.results).resolve()
        self.manual, self.tfds = self.runs / "manual", self.runs / "tfds"

    def data_sets(self) -> list[str]:
        return [f"data.manual_dir={self.manual}", f"data.data_dir={self.tfds}"] + (TINY_SETS if self.tiny else [])

    def run_sets(self, out: Path, batch: int | None) -> list[str]:
        items = self.data_sets() + [f"train.steps={self.steps}", f"train.steps_per_epoch={self.steps}",
                                    "model.pretrained=none",  # no download here: ImageNet weights are the user's
                                    f"train.out_dir={out}"]
        return items + ([f"train.batch_size={batch}"] if batch else [])

    def config(self, name: str) -> str:
        return str(ROOT / "configs" / f"{name}.yaml")


def configured_batch(plan: Plan, name: str) -> int:
    from skd_tf.config import load_config

    return load_config(plan.config(name), plan.data_sets()).train.batch_size


def training_stage(plan: Plan, command: str, name: str, extra: list[str], out: Path) -> dict:
    """One `skd-tf train|distill` at the config's batch, halving it while the kernel kills it for memory."""
    batch, wanted = configured_batch(plan, name), configured_batch(plan, name)
    while True:
        args = [command, "--config", plan.config(name), "--fresh", "--quiet"] + extra + \
            sets(*plan.run_sets(out, batch if batch != wanted else None))
        result = measured(cli(*args), log_of(out))
        if not result["exit"]:
            break
        if out_of_memory(result) and batch > 1:
            print(f"    killed for memory at batch {batch}: retrying at {batch // 2}", flush=True)
            batch //= 2
            continue
        raise StageFailed(f"skd-tf {shlex.join(args)} exited with {result['exit']}; the end of {log_of(out)}:\n"
                          f"{_tail(log_of(out))}")
    timing = json.loads((out / "timing.json").read_text())
    scores = json.loads((out / "eval.json").read_text())
    return {"config": name, "batch_size": batch, "config_batch_size": wanted, "steps": timing["steps"],
            "first_step_s": timing["first_step_s"], "median_step_s": timing["median_step_s"],
            "images_per_second": timing["images_per_second"], "miou": scores.get("miou"),
            "eval_images": scores.get("num_images"), **result}


# ----------------------------------------------------------------------------------------------- stages

def stage_data(plan: Plan) -> dict:
    from benchmarks.cityscapes_fabric import write_cityscapes_zips

    began = time.time()
    sizes = write_cityscapes_zips(plan.manual, TINY_COUNTS if plan.tiny else COUNTS)
    drawn = time.time() - began
    code = ("import sys; from skd_tf.config import load_config; from skd_tf.data.sources import load_source; "
            f"cfg = load_config({plan.config('cityscapes_student')!r}, sys.argv[1:]).data; "
            "print({s: load_source(cfg, s).count for s in ('train', 'validation')})")
    prepared = checked([sys.executable, "-c", code] + plan.data_sets(), plan.runs / "prepare.log")
    counts = _tail(plan.runs / "prepare.log", 1)
    return {"images": TINY_COUNTS if plan.tiny else COUNTS, "zip_bytes": sizes, "draw_seconds": round(drawn, 1),
            "prepare": prepared, "prepared_counts": counts, "seconds": round(drawn + prepared["seconds"], 1)}


def pipeline_worker(argv: list[str]) -> int:
    """(in a pinned process) images/s through the training pipeline and through decoding alone."""
    from skd_tf.console import QUIET, start_tensorflow

    start_tensorflow(QUIET)
    from skd_tf.config import load_config
    from skd_tf.data import train_dataset
    from skd_tf.data.sources import load_source

    config, batches, *overrides = argv
    cfg = load_config(config, overrides)
    batches = int(batches)
    stream = iter(train_dataset(cfg.data, cfg.train.batch_size, cfg.seed))
    next(stream)  # the first batch fills the shuffle buffer: not timed
    began = time.perf_counter()
    for _ in range(batches):
        next(stream)
    pipeline = batches * cfg.train.batch_size / (time.perf_counter() - began)
    source = load_source(cfg.data, cfg.data.train_split)
    decoded = source.decoded().repeat()
    count = batches * cfg.train.batch_size
    began = time.perf_counter()
    for _ in decoded.take(count):
        pass
    decode = count / (time.perf_counter() - began)
    print(json.dumps({"pipeline_images_per_second": pipeline, "decode_images_per_second": decode,
                      "batch_size": cfg.train.batch_size, "batches": batches}))
    return 0


def stage_pipeline(plan: Plan) -> dict:
    out = {}
    batches = 2 if plan.tiny else 12
    for cores in ("0", "0,1"):
        log = plan.runs / f"pipeline_cores{len(cores.split(','))}.log"
        result = checked([sys.executable, __file__, "--pipeline-worker", plan.config("cityscapes_teacher"),
                          str(batches)] + plan.data_sets(), log, cores=cores)
        out[f"{len(cores.split(','))}_cores"] = {**json.loads(_tail(log, 1)), **result}
    return out


def stage_teacher(plan: Plan) -> dict:
    return training_stage(plan, "train", "cityscapes_teacher", [], plan.runs / "teacher")


def stage_student(plan: Plan) -> dict:
    return training_stage(plan, "train", "cityscapes_student", [], plan.runs / "student")


def stage_mobile_student(plan: Plan) -> dict:
    extra = sets(*MOBILE_SETS, *(["model.width=0.125", "model.head_channels=32"] if plan.tiny else []))
    return {"model": "lraspp_mobilenetv2", **training_stage(plan, "train", "cityscapes_student", extra,
                                                            plan.runs / "mobile_student")}


def _distill(plan: Plan, name: str) -> dict:
    crop = TINY_DISTILL_CROP if plan.tiny else DISTILL_CROP
    teacher = plan.runs / "teacher" / "model.keras"
    if not teacher.exists():
        raise StageFailed(f"{name} needs the teacher stage's {teacher}: run --stages teacher first")
    return {"crop": crop, **training_stage(plan, "distill", name, ["--teacher", str(teacher)] + sets(
        f"data.crop_size=[{crop},{crop}]"), plan.runs / name)}


def stage_skd(plan: Plan) -> dict:
    return _distill(plan, "cityscapes_skd")


def stage_skd_reference_code(plan: Plan) -> dict:
    return _distill(plan, "cityscapes_skd_reference_code")


# (image height, width) typical of each tfds dataset, the stored label values its records hold
MOCK_DATASETS = {"scene_parse150": ((512, 683), range(0, 151)), "oxford_iiit_pet": ((375, 500), range(1, 4))}


def mock_records(source: str, examples: int):
    """tfds ``_as_dataset`` stand-in: ``examples`` records of PNG image and label bytes at the dataset's usual
    size (tfds' own random mock draws the image and its mask at two unrelated sizes, which training refuses)."""
    import numpy as np
    import tensorflow as tf
    from benchmarks.cityscapes_fabric import png_bytes as png

    from skd_tf.data.sources import TFDS_SPECS

    _, image_key, label_key, _ = TFDS_SPECS[source]
    (height, width), values = MOCK_DATASETS[source]

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
        rows = {image_key: [], label_key: []}
        for i in range(examples):
            rng = np.random.default_rng(i)
            cells = rng.choice(np.asarray(values, np.uint8), (height // 64 + 1, width // 64 + 1))
            rows[label_key].append(png(np.kron(cells, np.ones((64, 64), np.uint8))[:height, :width]))
            rows[image_key].append(png(rng.integers(0, 256, (height, width, 3), np.uint8)))
        return tf.data.Dataset.from_tensor_slices(rows)

    return as_dataset


def mock_worker(argv: list[str]) -> int:
    """(in its own process) ``skd-tf <args>`` with tfds' reading mocked by ``mock_records``."""
    import tensorflow_datasets as tfds

    from skd_tf.cli import main
    from skd_tf.config import load_config

    examples, *args = argv
    config = args[args.index("--config") + 1]
    source = load_config(config, [args[i + 1] for i, a in enumerate(args) if a == "--set"]).data.source
    with tfds.testing.mock_data(as_dataset_fn=mock_records(source, int(examples))):
        return main(args)


def stage_mock_tfds(plan: Plan) -> dict:
    out = {}
    for name in MOCK_CONFIGS:
        run = plan.runs / "mock" / name
        examples = "4"
        overrides = [f"data.data_dir={plan.runs / 'mock_tfds'}", "train.steps=1", "train.steps_per_epoch=1",
                     "model.pretrained=none", f"train.out_dir={run}"] + (TINY_SETS if plan.tiny else [])
        result = checked([sys.executable, __file__, "--mock-worker", examples, "train", "--config",
                          plan.config(name), "--fresh", "--quiet"] + sets(*overrides), log_of(run))
        timing = json.loads((run / "timing.json").read_text())
        out[name] = {"first_step_s": timing["first_step_s"], **result}
    return out


def synthetic_student(plan: Plan) -> Path:
    """The synthetic config's student after 2 training steps (its weights do not change its latency)."""
    out = plan.runs / "synthetic_student"
    if not (out / "model.keras").exists():
        checked(cli("train", "--config", plan.config("synthetic_student"), "--fresh", "--quiet",
                    *sets("train.steps=2", "train.steps_per_epoch=2", f"train.out_dir={out}",
                          "data.synthetic.num_train=32", "data.synthetic.num_val=4")), log_of(out))
    return out / "model.keras"


def deployed_students(plan: Plan) -> dict[str, tuple[str, Path | None, list[str], list[str]]]:
    """name → (config, checkpoint, overrides, export flags) of each student the export stage converts.

    The files output the label map at input size (the default: logits upsampled, then argmax) — except
    ``lraspp_mobilenetv2_logits``, the same network without that head (model-resolution logits): the head
    shrinks less with int8 than the network does, and on a network as light as LR-ASPP it weighs."""
    mobile = ("cityscapes_student", plan.runs / "mobile_student" / "model.keras", plan.data_sets() + MOBILE_SETS)
    return {"pspnet_resnet18": ("cityscapes_skd", plan.runs / "cityscapes_skd" / "model.keras", plan.data_sets(), []),
            "lraspp_mobilenetv2": (*mobile, []),
            "lraspp_mobilenetv2_logits": (*mobile, ["--output", "logits"]),
            "synthetic_student": ("synthetic_student", None, ["data.synthetic.num_train=32",
                                                              "data.synthetic.num_val=4"], [])}


def stage_export(plan: Plan) -> dict:
    students = deployed_students(plan)
    for name, (_, checkpoint, _, _) in students.items():
        if checkpoint is not None and not checkpoint.exists():
            stage = checkpoint.parent.name.replace("cityscapes_", "")
            raise StageFailed(f"export needs {checkpoint} ({name}): run --stages {stage} first")
    out = {}
    for name, (config, checkpoint, overrides, flags) in students.items():
        checkpoint = checkpoint or synthetic_student(plan)
        for size in TINY_EXPORT_SIZES if plan.tiny else EXPORT_SIZES:
            folder = plan.runs / "export" / f"{name}_{size}"
            result = checked(cli("export", "--config", plan.config(config), "--checkpoint", str(checkpoint),
                                 "--quantization", ",".join(QUANTIZATIONS), "--input-size", size, "--out",
                                 str(folder), "--calibration-samples", "2" if plan.tiny else "8",
                                 "--eval-limit", "1", "--no-savedmodel", "--quiet", *flags,
                                 *sets(f"name={name}", *overrides)), folder.with_name(f"{folder.name}.log"))
            record = json.loads((folder / "export.json").read_text())
            out[f"{name}_{size}"] = {
                "student": name, "size": size, "record": record, **result,
                "files": {q: {"bytes": (folder / f"{name}_{q}.tflite").stat().st_size} for q in QUANTIZATIONS}}
    return out


def stage_benchmark(plan: Plan) -> dict:
    models = sorted(str(p) for p in plan.runs.glob("export/*/*.tflite"))
    if not models:
        raise StageFailed("benchmark needs the export stage's .tflite files: run --stages export first")
    target = plan.runs / "benchmark.json"
    timing = ["--runs", "2", "--warmup", "1"] if plan.tiny else ["--runs", "5", "--min-seconds", "3", "--warmup", "1"]
    result = checked([sys.executable, "-m", "skd_tf.benchmark", *models, "--threads", "1,2", *timing,
                      "--json", str(target), "--quiet"], plan.runs / "benchmark.log")
    rows = []
    for r in json.loads(target.read_text()):
        path = Path(r["model"])
        student, size = path.parent.name.rsplit("_", 1)  # export/<student>_<HxW>/<student>_<quantization>.tflite
        rows.append({"model": str(path.relative_to(plan.runs)), "student": student, "size": size,
                     "quantization": path.stem[len(student) + 1:], "threads": r["threads"],
                     "bytes": r["model_bytes"], "mean_ms": r["latency_ms"]["mean"], "p95_ms": r["latency_ms"]["p95"],
                     "peak_rss_mb": r["peak_rss_mb"], "device": r["device"]})
    return {"rows": rows, **result}


# ----------------------------------------------------------------------------------------------- report

def _f(value, digits=1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def deployment_table(rows: list[dict]) -> str:
    """One line per student, input size and thread count: each quantization's mean (p95) ms, peak RSS and
    file size, and int8's latency and size as fractions of float32's."""
    by = {(r["student"], r["size"], r["threads"], r["quantization"]): r for r in rows}
    keys = sorted({k[:3] for k in by}, key=lambda k: (k[0], -int(k[1].split("x")[0]), k[2]))
    quants = [q for q in QUANTIZATIONS if any(k[3] == q for k in by)]
    text = ("| student | input | threads | " + " | ".join(f"{q} ms mean (p95)" for q in quants) +
            " | int8/float32 latency | MiB " + "/".join(quants) + " | int8/float32 size | peak RSS MB "
            + "/".join(quants) + " |\n|" + "---|" * (len(quants) + 7) + "\n")
    for key in keys:
        cells = [by.get((*key, q)) for q in quants]
        fp32, int8 = by.get((*key, "float32")), by.get((*key, "int8"))
        ratio = (f"{int8['mean_ms'] / fp32['mean_ms']:.2f}", f"{int8['bytes'] / fp32['bytes']:.3f}") \
            if fp32 and int8 else ("–", "–")
        text += (f"| {key[0]} | {key[1].replace('x', '×')} | {key[2]} | " +
                 " | ".join(f"{c['mean_ms']:.1f} ({c['p95_ms']:.1f})" if c else "–" for c in cells) +
                 f" | {ratio[0]} | " + "/".join(f"{c['bytes'] / 2**20:.2f}" if c else "–" for c in cells) +
                 f" | {ratio[1]} | " + "/".join(f"{c['peak_rss_mb']:.0f}" if c else "–" for c in cells) + " |\n")
    return text


def markdown(results: Path) -> str:
    """The recorded stages as Markdown tables."""
    records = {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}
    if not records:
        return "no stage recorded yet\n"
    lines = ["| stage | config | batch (config's) | s/step (first) | images/s | mIoU | wall s | peak RSS GiB |",
             "|---|---|---|---|---|---|---|---|"]
    for stage in ("teacher", "student", "mobile_student", "skd", "skd_reference_code"):
        r = records.get(stage)
        if r:
            crop = f" at {r['crop']}²" if "crop" in r else ""
            model = f" ({r['model']})" if "model" in r else ""
            lines.append(f"| {stage} | {r['config']}{model}{crop} | {r['batch_size']} ({r['config_batch_size']}) | "
                         f"{_f(r['median_step_s'])} ({_f(r['first_step_s'])}) | {_f(r['images_per_second'], 2)} | "
                         f"{_f(None if r['miou'] is None else 100 * r['miou'], 2)} | {_f(r['seconds'])} | "
                         f"{r['peak_rss_mib'] / 1024:.1f} |")
    text = "\n".join(lines) + "\n"
    if "pipeline" in records:
        p = records["pipeline"]
        text += "\n| cores | pipeline images/s | decode only images/s |\n|---|---|---|\n" + "".join(
            f"| {k.split('_')[0]} | {v['pipeline_images_per_second']:.2f} | {v['decode_images_per_second']:.2f} |\n"
            for k, v in p.items() if k.endswith("_cores"))
    if "benchmark" in records:
        text += "\n" + deployment_table(records["benchmark"]["rows"])
    hosts = {json.dumps(r.get("host"), sort_keys=True) for r in records.values() if r.get("host")}
    for host in sorted(hosts):
        h = json.loads(host)
        text += f"\nHost: {h['model']}, {h['cores']} cores, {' '.join(h['features'])}.\n"
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--pipeline-worker"]:
        return pipeline_worker(argv[1:])
    if argv[:1] == ["--mock-worker"]:
        return mock_worker(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated, in order (default: all)")
    parser.add_argument("--steps", type=int, default=3,
                        help="training steps per run (default %(default)s: the first traces, the rest are timed)")
    parser.add_argument("--tiny", action="store_true", help="reduced crops, evaluation and export sizes")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "real_size"), help="work folder (default %(default)s)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "real_size"),
                        help="per-stage JSON records (default benchmarks/results/real_size)")
    parser.add_argument("--fresh", action="store_true", help="rerun the chosen stages even when recorded")
    parser.add_argument("--table", action="store_true", help="run nothing; print the recorded stages' tables")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    stages = args.stages.split(",")
    if unknown := [s for s in stages if s not in STAGES]:
        parser.error(f"--stages: unknown {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    plan = Plan(args)
    if args.table:
        print(markdown(plan.results), end="")
        return 0
    plan.runs.mkdir(parents=True, exist_ok=True)
    plan.results.mkdir(parents=True, exist_ok=True)
    began = time.time()
    for stage in [s for s in STAGES if s in stages]:
        target = plan.results / f"{stage}.json"
        if target.exists() and not args.fresh:
            print(f"{stage}: recorded in {target} (--fresh reruns it)", flush=True)
            continue
        print(f"{stage} ({(time.time() - began) / 60:.1f} min so far)", flush=True)
        stage_began = time.time()
        try:
            record = globals()[f"stage_{stage}"](plan)
        except StageFailed as err:
            print(f"real_size.py: {stage} failed: {err}", file=sys.stderr)
            return 1
        record.update({"stage": stage, "tiny": args.tiny, "steps": record.get("steps", args.steps),
                       "stage_seconds": round(time.time() - stage_began, 1), "host": host_cpu()})
        target.write_text(json.dumps(record, indent=1))
        print(f"    done in {record['stage_seconds']:.0f} s; recorded in {target}", flush=True)
    print("\n" + markdown(plan.results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
