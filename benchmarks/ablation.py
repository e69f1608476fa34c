"""The paper's ablation table (Liu et al. 2019, Table 1) and the neighbouring methods, on the synthetic data.

    python -m benchmarks.ablation                   # 12 rows; 5 seeds for the SKD rows and KA, 3 for the others
    python -m benchmarks.ablation --seed-list 3,4   # only these seeds (e.g. the ones a new machine should add)
    python -m benchmarks.ablation --quick           # 1 seed, 200 steps per student: a plumbing check
    python -m benchmarks.ablation --table-only --any-config --results R   # the table of an archive of records
    python -m benchmarks.ablation --table-only --seed-list 0,1,2,3,4     # the table of these seeds' records

Rows: the baseline student, + pixel-wise, + pair-wise, + holistic (the paper's three), then knowledge
adaptation, SP, CC, IRG, RKD, CWD, FitNet and attention transfer. Each (row, seed) is its own
`skd-tf train/distill` run in runs/ablation/; its small result (mIoU, per-class IoU, distances to the
teacher, gradient shares, host CPU, minutes) is recorded as JSON under benchmarks/results/ablation/ —
commit those files: a later run, on this or another machine, skips every recorded (row, seed).

A seed is a *paired block*: every row of seed s starts from the same initialisation and data order, and
distils the same teacher. Results are filed under the teacher's fingerprint (a hash of its per-class
IoU), so blocks from another machine's teacher (CPU rounding makes teachers differ) are never mixed
within a block. The table reports mean ± std over seeds, and the *paired* difference to the baseline
and to the previous SKD row with its 95 % t-interval over the seeds that have both; also as a PNG.
Each student's distance to the teacher (pixel KL, pair-wise, the full-SKD critic's estimate) is
measured on the validation split, so the table shows what each term leaves to close.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from skd_tf.console import QUIET, start_tensorflow  # noqa: E402

start_tensorflow(QUIET)  # the loss registry's module imports TensorFlow: without its start-up lines
from skd_tf.losses import LOSSES  # noqa: E402

SKD_CHAIN = ("pixel", "pairwise", "holistic")  # the paper's rows add these one by one
# (key, label, config, command, seeds wanted by default): the paper's chain, then every other loss of the
# registry alone (its config synthetic_<name>), in the order the tables show them
ROWS = [
    ("baseline", "baseline student", "synthetic_student", "train", 5),
    ("pi", "+ pixel-wise", "synthetic_skd_pi", "distill", 5),
    ("pi_pa", "+ pixel-wise + pair-wise", "synthetic_skd_pi_pa", "distill", 5),
    ("full", "+ pixel-wise + pair-wise + holistic", "synthetic_skd_full", "distill", 5),
] + [(name, LOSSES[name].label, f"synthetic_{name}", "distill", 5 if name == "ka" else 3)
     for name in ("ka", "sp", "cc", "irg", "rkd", "cwd", "fitnet", "at")]
assert {r[0] for r in ROWS} | set(SKD_CHAIN) >= set(LOSSES), "a registered loss without an ablation row"
PREVIOUS = {"pi_pa": "pi", "full": "pi_pa"}  # the paper's chain: each SKD row against the one before
DOCS_PAGE = "results.md"  # the docs page whose <!-- ablation:start/end --> block holds the table
QUICK = ["train.steps=200", "train.steps_per_epoch=100", "distill.knowledge_adaptation.pretrain_steps=50",
         "distill.diagnostics_every=50"]


# ------------------------------------------------------------------------------------------ statistics

def t_quantile(p: float, dof: int) -> float:
    """Student's t quantile (scipy when installed, else the normal approximation with Cornish–Fisher terms)."""
    try:
        from scipy import stats

        return float(stats.t.ppf(p, dof))
    except ImportError:  # pragma: no cover - scipy ships with the dev extras
        z = statistics.NormalDist().inv_cdf(p)
        g1 = (z ** 3 + z) / 4
        g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
        return z + g1 / dof + g2 / dof ** 2


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """Mean of a[s] − b[s] over the seeds in both, with its 95 % t-interval (None below 2 pairs)."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None if not seeds else {"mean": a[seeds[0]] - b[seeds[0]], "low": None, "high": None, "n": 1}
    diffs = [a[s] - b[s] for s in seeds]
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    half = t_quantile(0.975, len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(diffs)}


# ------------------------------------------------------------------------------------------ records

def teacher_fingerprint(teacher: Path) -> tuple[str, float]:
    """(12 hex digits from the teacher's per-class IoU, its mIoU): same teacher, same fingerprint."""
    scores = json.loads((teacher.parent / "eval.json").read_text())
    digest = hashlib.sha256(json.dumps([round(v, 10) for v in scores["per_class_iou"]]).encode()).hexdigest()
    return digest[:12], scores["miou"]


def host_cpu() -> dict:
    """The CPU model and the instruction-set features that change rounding and speed (skd_tf.benchmark.device's
    list: the one the latency tables name)."""
    from skd_tf.benchmark.device import cpu_features

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    models = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
    return {"model": models[0] if models else "unknown", "cores": os.cpu_count(), "features": cpu_features(text)}


# Bumped when a code change alters what a recorded run measures, so records made before it are rerun.
# 2: `distill` builds the student before it loads the teacher, so a distilled student starts from the
#    baseline's weights under the same seed (before, the teacher's loading drew from the generator first).
PIPELINE = 2

# Config keys added after runs were recorded, with the default every earlier run had: left out of the digest at
# that default, so a new option does not make every record look stale.
ADDED_KEYS = {("model", "espnet_blocks"): [2, 8], ("model", "input_convention"): None,
              ("model", "bn_momentum"): None, ("model", "reduced_tail"): False,
              ("distill", "teacher_distances"): True, ("data", "train_masks_dir"): None,
              ("data", "val_masks_dir"): None}


def resolved_digest(resolved: dict) -> str:
    """12 hex digits of a resolved config (``RunConfig.model_dump()``, or a run's ``config.json``) and
    ``PIPELINE``, leaving out what names the run rather than what it trains: name, seed, out_dir and the
    teacher's path."""
    resolved = json.loads(json.dumps(resolved, default=str))
    resolved["pipeline"] = PIPELINE
    resolved.pop("name", None), resolved.pop("seed", None)
    resolved.get("train", {}).pop("out_dir", None)
    if resolved.get("distill"):
        resolved["distill"].pop("teacher", None)
    for (section, key), default in ADDED_KEYS.items():
        if key in (resolved.get(section) or {}) and resolved[section][key] == default:  # distill: None in train runs
            del resolved[section][key]
    return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:12]


def config_digest(config: str, extra: list[str]) -> str:
    """The ``resolved_digest`` of a row's config with ``extra`` overrides, so a record made before a config
    changed (e.g. a newly calibrated weight) is recognised as stale and rerun."""
    from skd_tf.config import load_config

    return resolved_digest(load_config(ROOT / "configs" / f"{config}.yaml", list(extra)).model_dump())


def stale_run(out: Path, digest: str) -> bool:
    """True when ``out`` holds a run (its config.json) made with another config than ``digest`` describes."""
    saved = out / "config.json"
    return saved.is_file() and resolved_digest(json.loads(saved.read_text())) != digest


def load_records(results: Path, current: dict[str, str] | None = None) -> list[dict]:
    """Every recorded run under ``results`` (any teacher); with ``current`` ({config: digest}) only the
    records made with the config as it is now (records without a digest predate it and count)."""
    records = [json.loads(p.read_text()) for p in sorted(results.glob("*/*/seed*.json"))]
    if current is None:
        return records
    return [r for r in records if r.get("config_digest", current.get(r["config"])) == current.get(r["config"])]


# ------------------------------------------------------------------------------------------ running

def log_of(out: Path) -> Path:
    """The log file beside a run directory (``w0.003`` -> ``w0.003.log``: not Path.with_suffix, which would
    make it ``w0.log`` and let ``w0.001`` write the same file)."""
    return out.parent / f"{out.name}.log"


def run_cli(args: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        proc = subprocess.run([sys.executable, "-m", "skd_tf.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"skd-tf {args[0]} failed (log {log}): {tail[0]}")


def row_overrides(command: str, extra: list[str]) -> list[str]:
    """The overrides a row's run takes: all of ``extra`` for ``distill``, without the ``distill.*`` ones for
    ``train`` (and ``evaluate`` of a trained model)."""
    return [e for e in extra if command == "distill" or not e.startswith("distill.")]


def run_row(key: str, config: str, command: str, seed: int, teacher: Path, runs: Path, extra: list[str],
            fresh: bool = False, digest: str | None = None) -> dict:
    """Trains one (row, seed) (resuming an interrupted run; ``fresh``, or a run left by another config: from
    scratch) and returns its record without the critic distance."""
    out = runs / config / f"seed{seed}"
    if out.exists() and (fresh or (digest and stale_run(out, digest))):
        shutil.rmtree(out)
    sets = [f"seed={seed}", f"train.out_dir={out}"] + row_overrides(command, extra)
    args = [command, "--config", str(ROOT / "configs" / f"{config}.yaml"), "--quiet"]
    if command == "distill":
        args += ["--teacher", str(teacher)]
    started = time.time()
    if not (out / "eval.json").exists():
        run_cli(args + [a for s in sets for a in ("--set", s)], log_of(out))
    scores = json.loads((out / "eval.json").read_text())
    if "teacher_distance" not in scores:  # a trained baseline: measure it like the distilled students
        scores["teacher_distance"] = trained_teacher_distance(config, out, teacher, sets[1:])
    return {"row": key, "config": config, "seed": seed, "miou": scores["miou"],
            "per_class_iou": scores["per_class_iou"], "teacher_distance": scores["teacher_distance"],
            "gradient_share": scores.get("gradient_share", {}).get("mean", {}),
            "minutes": round((time.time() - started) / 60, 2), "overrides": extra, "host": host_cpu()}


def trained_teacher_distance(config: str, out: Path, teacher: Path, sets: list[str]) -> dict:
    """The distances to ``teacher`` of the student trained (not distilled) in ``out``, measured once by
    ``skd-tf evaluate --teacher`` into ``out/teacher_distance.json``."""
    distances = out / "teacher_distance.json"
    if not distances.exists():
        run_cli(["evaluate", "--config", str(ROOT / "configs" / f"{config}.yaml"), "--quiet",
                 "--checkpoint", str(out / "model.keras"), "--teacher", str(teacher), "--json", str(distances)]
                + [a for s in sets for a in ("--set", s)], log_of(out))
    return json.loads(distances.read_text())["teacher_distance"]


def add_critic_distance(record: dict, critic: Path, teacher: Path, runs: Path, extra: list[str]) -> None:
    """The full-SKD critic's Wasserstein estimate for this row's student (the same critic for every row)."""
    out = runs / record["config"] / f"seed{record['seed']}"
    target = out / "critic_distance.json"
    if not target.exists():
        sets = [f"seed={record['seed']}"] + list(extra)  # distill.holistic.* options shape the critic
        run_cli(["evaluate", "--config", str(ROOT / "configs" / "synthetic_skd_full.yaml"), "--quiet",
                 "--checkpoint", str(out / "model.keras"), "--teacher", str(teacher), "--critic", str(critic),
                 "--json", str(target)] + [a for s in sets for a in ("--set", s)], log_of(out))
    record["teacher_distance"]["critic"] = json.loads(target.read_text())["teacher_distance"]["critic"]


def add_error_split(record: dict, runs: Path) -> None:
    """The row's wrong validation pixels split by kind (``skd-tf evaluate --errors``: whole objects misread,
    objects split between classes, edges lost to the background, background taken for objects)."""
    out = runs / record["config"] / f"seed{record['seed']}"
    command = dict((c, cmd) for _, _, c, cmd, _ in ROWS)[record["config"]]
    sets = [f"seed={record['seed']}"] + row_overrides(command, record["overrides"])
    record["errors"] = measured_errors(ROOT / "configs" / f"{record['config']}.yaml", out / "model.keras",
                                       out / "errors.json", sets)


def measured_errors(config: Path, checkpoint: Path, target: Path, sets: list[str]) -> dict:
    """``skd-tf evaluate --errors`` of ``checkpoint`` into ``target`` (once), returning its error split."""
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        run_cli(["evaluate", "--config", str(config), "--quiet", "--checkpoint", str(checkpoint), "--errors",
                 "--json", str(target)] + [a for s in sets for a in ("--set", s)], log_of(target.parent))
    return json.loads(target.read_text())["errors"]


# ------------------------------------------------------------------------------------------ table

def summarise(records: list[dict]) -> dict:
    """Per row: mIoU per block (teacher, seed), mean ± std, paired differences, mean distances and shares."""
    blocks_teacher = {(r["teacher"], r["seed"]): r["teacher_miou"] for r in records}
    by_row: dict[str, dict[tuple, dict]] = {}
    for r in records:
        by_row.setdefault(r["row"], {})[(r["teacher"], r["seed"])] = r
    miou = {key: {block: r["miou"] for block, r in runs.items()} for key, runs in by_row.items()}
    rows = []
    for key, label, *_ in ROWS:
        if key not in miou:
            continue
        values = list(miou[key].values())
        gap = [(miou[key][b] - miou["baseline"][b]) / (blocks_teacher[b] - miou["baseline"][b])
               for b in miou[key] if b in miou.get("baseline", {}) and blocks_teacher[b] > miou["baseline"][b]]
        distances = [r["teacher_distance"] for r in by_row[key].values()]
        shares = [r["gradient_share"] for r in by_row[key].values() if r["gradient_share"]]
        rows.append({
            "key": key, "row": label, "seeds": len(values), "mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "vs_baseline": paired_difference(miou[key], miou.get("baseline", {})) if key != "baseline" else None,
            "vs_previous": paired_difference(miou[key], miou.get(PREVIOUS[key], {})) if key in PREVIOUS else None,
            "gap_closed": statistics.mean(gap) if gap else None,
            "distance": {name: statistics.mean(d[name] for d in distances if name in d)
                         for name in ("pixel_kl", "pairwise", "critic") if any(name in d for d in distances)},
            "gradient_share": {name: statistics.mean(s[name] for s in shares if name in s)
                               for name in sorted({n for s in shares for n in s})},
            "errors": mean_errors([r["errors"] for r in by_row[key].values() if "errors" in r]),
        })
    teachers = sorted({(r["teacher"], r["teacher_miou"]) for r in records})
    hosts = sorted({f"{r['host']['model']} ({', '.join(r['host']['features']) or 'no AVX2'})" for r in records})
    return {"rows": rows, "teachers": [{"fingerprint": t, "miou": m} for t, m in teachers], "hosts": hosts}


ERROR_KINDS = ("whole_object", "split", "edge", "spill", "objects_misread")


def mean_errors(splits: list[dict]) -> dict | None:
    """The mean of each error kind over ``splits`` (None when there are none)."""
    return {k: statistics.mean(e[k] for e in splits) for k in ERROR_KINDS} if splits else None


def interval_cell(d: dict | None) -> str:
    """A paired difference as a table cell, in points: "+1.23 [+0.45, +2.01]" (empty for none)."""
    if d is None:
        return ""
    if d["low"] is None:
        return f"{100 * d['mean']:+.2f} (1 seed)"
    return f"{100 * d['mean']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]"


def markdown(summary: dict, note: str) -> str:
    lines = ["| method | mIoU (%) mean ± std | paired Δ vs baseline [95 % CI] | Δ vs previous SKD row | gap closed "
             "| pixel KL | pair-wise | critic | gradient share(s) vs CE | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    teacher_mious = [t["miou"] for t in summary["teachers"]]
    if teacher_mious:
        lines.append(f"| teacher (PSPNet, ResNet-18 ×0.25) | {100 * statistics.mean(teacher_mious):.2f} | | | | 0 | 0 "
                     f"| 0 | | {len(teacher_mious)} teacher(s) |")
    for r in summary["rows"]:
        d = r["distance"]
        shares = ", ".join(f"{k} {v:.2g}" for k, v in r["gradient_share"].items())
        gap = "" if r["gap_closed"] is None else f"{100 * r['gap_closed']:+.0f} %"
        critic = "" if "critic" not in d else f"{d['critic']:.3f}"
        lines.append(
            f"| {r['row']} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} | {interval_cell(r['vs_baseline'])} | "
            f"{interval_cell(r['vs_previous'])} | {gap} | {d.get('pixel_kl', float('nan')):.3f} | "
            f"{d.get('pairwise', float('nan')):.4f} | {critic} | {shares} | {r['seeds']} |")
    return "\n".join(lines) + "\n\n" + note + "\n" + error_markdown(summary)


def error_markdown(summary: dict) -> str:
    """The second table: where each row's wrong pixels are (empty when no record has its error split)."""
    rows = [("teacher", summary.get("teacher_errors"))] + [(r["row"], r.get("errors")) for r in summary["rows"]]
    rows = [(label, e) for label, e in rows if e]
    if not rows:
        return ""
    lines = ["", "| method | wrong pixels (%) | whole objects misread | objects split | edges lost | background "
             "taken | objects misread (%) |", "|---|---|---|---|---|---|---|"]
    for label, e in rows:
        wrong = sum(e[k] for k in ERROR_KINDS[:4])
        lines.append(f"| {label} | {100 * wrong:.2f} | " + " | ".join(f"{100 * e[k]:.2f}" for k in ERROR_KINDS[:4])
                     + f" | {100 * e['objects_misread']:.1f} |")
    return "\n".join(lines) + (
        "\n\nWrong validation pixels by kind (`skd-tf evaluate --errors`), % of all pixels, mean over the seeds: an "
        "object is a connected region of one class; *whole objects misread* = pixels predicted as the object's "
        "majority prediction when that is not its class (or is background: missed); *objects split* = pixels "
        "given a third class, neither the object's nor its majority's; *edges lost* = pixels of a found object "
        "predicted background; *background taken* = background predicted as an object. Pair-wise distillation "
        "copies which pixels' features are alike: within an object that is the split column; between two objects "
        "of different classes it would show as fewer whole objects misread.\n")


def plot(summary: dict, path: Path) -> None:
    """Paired difference to the baseline per row with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["rows"] if r["vs_baseline"] is not None]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    for i, r in enumerate(rows):
        d = r["vs_baseline"]
        low = d["low"] if d["low"] is not None else d["mean"]
        high = d["high"] if d["high"] is not None else d["mean"]
        colour = "tab:green" if low > 0 else "tab:red" if high < 0 else "tab:grey"
        ax.errorbar(100 * d["mean"], i, xerr=[[100 * (d["mean"] - low)], [100 * (high - d["mean"])]], fmt="o",
                    color=colour, capsize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [f"{r['row']} (n={r['vs_baseline']['n']})" for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("mIoU − baseline mIoU, same seed (points; 95 % interval)")
    ax.set_title("paired effect of each method on the student")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def publish(results: Path, out: Path, args, png: Path, digests: dict[str, str],
            seeds: set[int] | None = None) -> dict:
    """Builds the table (and PNG) from the records under ``results`` (of ``seeds`` only, when given)."""
    summary = summarise([r for r in load_records(results, digests) if seeds is None or r["seed"] in seeds])
    teacher_splits = [json.loads((results / t["fingerprint"] / "teacher_errors.json").read_text())
                      for t in summary["teachers"] if (results / t["fingerprint"] / "teacher_errors.json").exists()]
    summary["teacher_errors"] = mean_errors(teacher_splits)
    mode = "`python -m benchmarks.ablation --quick`" if args.quick else "`python -m benchmarks.ablation`"
    note = (f"From {mode} (records in `{results.relative_to(ROOT) if results.is_relative_to(ROOT) else results}`); "
            f"host(s): {'; '.join(summary['hosts'])}. Paired Δ: same seed = same initialisation, data order "
            f"and teacher; interval = 95 % t-interval over seeds. Gap closed = (row − baseline) / (teacher − "
            f"baseline) per seed, averaged. Distances to the teacher on the validation split: pixel KL, "
            f"pair-wise distance of the head features, and the full-SKD critic's Wasserstein estimate "
            f"(lower = closer). Gradient share = ‖∇(λ·L)‖ / ‖∇CE‖ averaged over the run.")
    if seeds is not None:
        note += f" Seeds {', '.join(map(str, sorted(seeds)))} only (`--seed-list`)."
    table = markdown(summary, note)
    print("\n" + table, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.md").write_text(table)
    (out / "ablation.json").write_text(json.dumps(summary, indent=2))
    if summary["rows"]:
        plot(summary, png)
        print(f"plot: {png}", flush=True)
    if args.docs:
        from benchmarks.docs_pages import write_block

        print(f"{write_block(DOCS_PAGE, 'ablation', table).relative_to(ROOT)} updated", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 seed, 200 steps per student (a plumbing check)")
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 for every row (default: 5 for the SKD rows "
                                                  "and KA, 3 for the others; 1 with --quick)")
    parser.add_argument("--seed-list", help="run only these seeds (comma-separated); with --table-only, a table "
                                            "of these seeds' records (e.g. the seeds every row has)")
    parser.add_argument("--rows", help=f"only these rows (comma-separated keys of {', '.join(k for k, *_ in ROWS)})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value in every run's config (recorded with the result)")
    parser.add_argument("--teacher", default="runs/synthetic_teacher/model.keras",
                        help="trained teacher (trained with configs/synthetic_teacher.yaml when missing)")
    parser.add_argument("--runs", help="where the runs go (default runs/ablation, runs/ablation_quick)")
    parser.add_argument("--results", help="where the per-run JSON records go (default benchmarks/results/ablation; "
                                          "with --quick, <runs>/results)")
    parser.add_argument("--plot", help="the PNG of paired differences (default benchmarks/ablation.png for the "
                                       "committed records, else <runs>/ablation.png)")
    parser.add_argument("--docs", "--readme", dest="docs", action="store_true",
                        help=f"write the table into docs/{DOCS_PAGE} (--readme: the old name)")
    parser.add_argument("--table-only", action="store_true", help="run nothing; rebuild the table from the records")
    parser.add_argument("--any-config", action="store_true",
                        help="with --table-only: every record under --results, whatever config made it (an archive "
                             "of an earlier config); without it only the records of the configs as they are now")
    args = parser.parse_args(argv)
    if args.any_config and not args.table_only:
        parser.error("--any-config only rebuilds a table (--table-only); runs always use the configs as they are now")
    runs = Path(args.runs or ("runs/ablation_quick" if args.quick else "runs/ablation")).resolve()
    results = Path(args.results or (runs / "results" if args.quick else ROOT / "benchmarks/results/ablation")).resolve()
    extra = (QUICK if args.quick else []) + list(args.overrides)
    seed_subset = args.table_only and args.seed_list
    if seed_subset and args.docs:
        parser.error("--docs publishes the table of every recorded seed: drop --seed-list")
    png = Path(args.plot or (ROOT / "benchmarks/ablation.png" if not (args.quick or args.results or seed_subset)
                             else runs / "ablation.png"))
    digests = {config: config_digest(config, row_overrides(command, extra)) for _, _, config, command, _ in ROWS}
    if args.table_only:
        seeds = {int(v) for v in args.seed_list.split(",")} if args.seed_list else None
        publish(results, runs, args, png, None if args.any_config else digests, seeds)
        return 0
    rows = [r for r in ROWS if not args.rows or r[0] in args.rows.split(",")]
    if args.rows and len(rows) != len(args.rows.split(",")):
        raise SystemExit(f"--rows: unknown key in {args.rows!r}; choose from {', '.join(k for k, *_ in ROWS)}")
    teacher = Path(args.teacher).resolve()
    if not teacher.exists():
        print(f"training the teacher ({teacher} is missing)", flush=True)
        teacher_sets = ["seed=0", f"train.out_dir={teacher.parent}"] + \
            (["train.steps=600", "train.steps_per_epoch=200"] if args.quick else []) + \
            [e for e in args.overrides if not e.startswith(("distill.", "train.steps"))]
        run_cli(["train", "--config", str(ROOT / "configs/synthetic_teacher.yaml"), "--quiet"]
                + [a for s in teacher_sets for a in ("--set", s)], log_of(teacher))
    fingerprint, teacher_miou = teacher_fingerprint(teacher)
    print(f"teacher {teacher} (mIoU {100 * teacher_miou:.2f}, fingerprint {fingerprint})", flush=True)
    if args.seed_list:
        plan = [(s, row) for s in (int(v) for v in args.seed_list.split(",")) for row in rows]
    else:
        most = args.seeds or (1 if args.quick else max(r[4] for r in rows))
        plan = [(s, row) for s in range(most) for row in rows if s < (args.seeds or (1 if args.quick else row[4]))]
    start = time.time()
    for i, (seed, (key, label, config, command, _)) in enumerate(plan, 1):
        target = results / fingerprint / config / f"seed{seed}.json"
        stale = target.exists() and json.loads(target.read_text()).get("config_digest", digests[config]) \
            != digests[config]
        if target.exists() and not stale:
            continue
        print(f"[{i}/{len(plan)}] {label}, seed {seed} ({(time.time() - start) / 60:.1f} min so far)"
              + (" (recorded with an older config: rerun)" if stale else ""), flush=True)
        record = run_row(key, config, command, seed, teacher, runs, extra, fresh=stale, digest=digests[config])
        record.update(teacher=fingerprint, teacher_miou=teacher_miou, config_digest=digests[config])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(record, indent=1))
        print(f"    mIoU {100 * record['miou']:.2f}, recorded in {target}", flush=True)
    # the full-SKD critic of each seed scores every row's student of that seed
    for path in sorted((results / fingerprint).glob("*/seed*.json")):
        record = json.loads(path.read_text())
        critic = runs / "synthetic_skd_full" / f"seed{record['seed']}" / "critic.weights.h5"
        if "critic" not in record["teacher_distance"] and critic.exists() and \
                (runs / record["config"] / f"seed{record['seed']}" / "model.keras").exists():
            add_critic_distance(record, critic, teacher, runs, record["overrides"])
            path.write_text(json.dumps(record, indent=1))
        if "errors" not in record and (runs / record["config"] / f"seed{record['seed']}" / "model.keras").exists():
            add_error_split(record, runs)
            path.write_text(json.dumps(record, indent=1))
    teacher_errors = results / fingerprint / "teacher_errors.json"
    if not teacher_errors.exists():
        teacher_errors.parent.mkdir(parents=True, exist_ok=True)
        teacher_errors.write_text(json.dumps(measured_errors(
            ROOT / "configs/synthetic_teacher.yaml", teacher, runs / "teacher_errors" / f"{fingerprint}.json",
            row_overrides("train", extra)), indent=1))
    publish(results, runs, args, png, digests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
