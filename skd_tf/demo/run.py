"""``skd-tf demo``: teacher → baseline student → distilled student → TFLite → latency → report.

Stages (each skipped when its output already exists; ``fresh`` starts over):

1. train the synthetic teacher and 2. the baseline student (``skd-tf train``),
3. distil the student with pixel + pair-wise + holistic distillation (``skd-tf distill``),
4. evaluate all three on the validation split,
5. export the distilled student as float32 and int8 TFLite (and the teacher and
   the baseline as float32, for the latency comparison), with export.json checks,
6. benchmark every .tflite file on the host (LiteRT, XNNPACK, 2 threads),
7. write ``<runs>/demo/report.md`` with its three figures (kept when every other stage was reused).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from skd_tf.atomic import write_text
from skd_tf.config import RunConfig, load_config

CONFIGS = {"teacher": "synthetic_teacher", "baseline": "synthetic_student", "distilled": "synthetic_skd_full"}
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def demo_configs(runs_dir: str | Path, overrides: list[str]) -> dict[str, RunConfig]:
    """The three run configs with their outputs under ``runs_dir`` (and the distiller's teacher there)."""
    runs_dir = Path(runs_dir)
    cfgs = {}
    for role, name in CONFIGS.items():
        extra = [f"train.out_dir={runs_dir / name}"]
        if role == "distilled":
            extra.append(f"distill.teacher={runs_dir / CONFIGS['teacher'] / 'model.keras'}")
        cfgs[role] = load_config(CONFIG_DIR / f"{name}.yaml", list(overrides) + extra)
    return cfgs


def _finished(cfg: RunConfig) -> bool:
    out = Path(cfg.train.out_dir)
    return (out / "model.keras").exists() and (out / "eval.json").exists()


def _say(message: str, quiet: bool) -> None:
    if not quiet:
        print(f"\n== {message}", flush=True)


def run_demo(runs_dir: str | Path = "runs", overrides: list[str] = (), fresh: bool = False, quiet: bool = False,
             threads: int = 2, timed_runs: int = 100) -> Path:
    """Runs every stage; returns the path of report.md."""
    from skd_tf.benchmark.measure import Settings, run_isolated
    from skd_tf.export.config import parse_export
    from skd_tf.export.run import export_student
    from skd_tf.distill.run import distill
    from skd_tf.demo.report import FIGURES, write_report
    from skd_tf.training.run import train

    start = time.time()
    cfgs = demo_configs(runs_dir, overrides)
    demo_dir = Path(runs_dir) / "demo"
    if fresh:
        for cfg in cfgs.values():
            shutil.rmtree(cfg.train.out_dir, ignore_errors=True)
        shutil.rmtree(demo_dir, ignore_errors=True)
    demo_dir.mkdir(parents=True, exist_ok=True)
    verbose = 0 if quiet else 1
    computed = False  # whether a stage ran in this invocation (the report is then made again)

    for step, role in enumerate(("teacher", "baseline"), start=1):
        if _finished(cfgs[role]):
            _say(f"{step}/7 {role}: reusing {cfgs[role].train.out_dir}", quiet)
        else:
            _say(f"{step}/7 training the {role} ({cfgs[role].name})", quiet)
            train(cfgs[role], verbose=verbose)
            computed = True
    if _finished(cfgs["distilled"]):
        _say(f"3/7 distilled student: reusing {cfgs['distilled'].train.out_dir}", quiet)
    else:
        _say("3/7 distilling the student (pixel-wise + pair-wise + holistic)", quiet)
        distill(cfgs["distilled"], verbose=verbose)
        computed = True

    scores_path = demo_dir / "scores.json"
    if scores_path.exists():
        _say("4/7 evaluation: reusing scores.json", quiet)
        scores = json.loads(scores_path.read_text())
    else:
        _say("4/7 evaluating the three models", quiet)
        scores = _evaluate(cfgs, quiet)
        write_text(scores_path, json.dumps(scores, indent=2))
        computed = True

    exports = {"teacher": ["float32"], "baseline": ["float32"], "distilled": ["float32", "int8"]}
    records = {}
    for role, quantizations in exports.items():
        out = demo_dir / "export" / role
        record_path = out / "export.json"
        record = json.loads(record_path.read_text()) if record_path.exists() else {}
        if all(q in record.get("exports", {}) and Path(record["exports"][q]["file"]).exists() for q in quantizations):
            _say(f"5/7 export of the {role}: reusing {record_path}", quiet)
        else:
            _say(f"5/7 exporting the {role} to TFLite ({', '.join(quantizations)})", quiet)
            ecfg = parse_export(cfgs[role].export, {"savedmodel": False}, cfgs[role].origin)
            record = export_student(cfgs[role], str(Path(cfgs[role].train.out_dir) / "model.keras"), ecfg,
                                    quantizations, out, progress=not quiet)
            computed = True
        records[role] = record

    bench_path = demo_dir / "benchmark.json"
    files = [entry["file"] for record in records.values() for entry in record["exports"].values()]
    bench = json.loads(bench_path.read_text()) if bench_path.exists() else []
    if sorted(r["model"] for r in bench) == sorted(files):
        _say("6/7 latency: reusing benchmark.json", quiet)
    else:
        _say(f"6/7 benchmarking {len(files)} TFLite files on this host ({threads} threads, XNNPACK)", quiet)
        settings = Settings(warmup=10, runs=timed_runs)
        bench = []
        for i, f in enumerate(files, start=1):
            if not quiet:
                print(f"  [{i}/{len(files)}] {Path(f).name}", flush=True)
            bench.append(run_isolated(f, threads, True, settings))
        write_text(bench_path, json.dumps(bench, indent=2))
        computed = True

    report = demo_dir / "report.md"
    if not computed and all((demo_dir / name).exists() for name in (report.name,) + FIGURES):
        _say(f"7/7 report: reusing {report}", quiet)
        return report
    _say("7/7 writing the report", quiet)
    report.unlink(missing_ok=True)  # written last: while it exists, its figures are the ones it describes
    return write_report(demo_dir, cfgs, scores, records, bench, time.time() - start)


def _evaluate(cfgs: dict[str, RunConfig], quiet: bool) -> dict:
    from skd_tf.evaluation import evaluate_network
    from skd_tf.models import load_model

    scores = {}
    for role, cfg in cfgs.items():
        network = load_model(str(Path(cfg.train.out_dir) / "model.keras"))
        scores[role] = evaluate_network(network, cfg.data, cfg.eval.batch_size, progress=not quiet)
    return scores
