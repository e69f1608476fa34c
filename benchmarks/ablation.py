"""The paper's ablation table (Liu et al. 2019, Table 1) on the built-in synthetic dataset.

    python benchmarks/ablation.py            # 8 rows x 3 seeds at the configs' full length (hours on a CPU)
    python benchmarks/ablation.py --quick    # 1 seed, 200 steps per student: a ~10-minute check

Rows: the baseline student, + pixel-wise, + pair-wise, + holistic (the paper's
three), then knowledge adaptation, CWD, FitNet and attention transfer. Every
(row, seed) is its own `skd-tf train/distill` run in runs/ablation[_quick]/;
finished runs are reused, so an interrupted ablation resumes. Prints mean ± std
mIoU over the seeds and the fraction of the teacher–student gap each row
closes, writes the markdown table to <out>/ablation.md and, for the full run
(or with --readme), into README.md between the ablation markers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = [  # (label, config, command)
    ("baseline student", "synthetic_student", "train"),
    ("+ pixel-wise", "synthetic_skd_pi", "distill"),
    ("+ pixel-wise + pair-wise", "synthetic_skd_pi_pa", "distill"),
    ("+ pixel-wise + pair-wise + holistic", "synthetic_skd_full", "distill"),
    ("knowledge adaptation", "synthetic_ka", "distill"),
    ("channel-wise (CWD)", "synthetic_cwd", "distill"),
    ("FitNet", "synthetic_fitnet", "distill"),
    ("attention transfer", "synthetic_at", "distill"),
]
README_START, README_END = "<!-- ablation:start -->", "<!-- ablation:end -->"


def run_one(command: str, config: str, out: Path, seed: int, teacher: str | None, extra: list[str]) -> dict:
    """One training run through the CLI (its own process); returns its eval.json (reused when present)."""
    scores = out / "eval.json"
    if scores.exists():
        return json.loads(scores.read_text())
    args = [sys.executable, "-m", "skd_tf.cli", command, "--config", str(ROOT / "configs" / f"{config}.yaml"),
            "--set", f"seed={seed}", "--set", f"train.out_dir={out}", "--quiet"]
    if teacher and command == "distill":
        args += ["--teacher", teacher]
    for item in extra:
        args += ["--set", item]
    log = out.with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        proc = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0 or not scores.exists():
        tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"{command} {config} seed {seed} failed (log {log}): {tail[0]}")
    return json.loads(scores.read_text())


def summarise(results: dict[str, list[float]], teacher_miou: float) -> list[dict]:
    """Mean, std (sample, over seeds), and the fraction of the teacher-baseline gap closed, per row."""
    base = statistics.mean(results[ROWS[0][0]])
    gap = teacher_miou - base
    rows = []
    for label, _, _ in ROWS:
        values = results.get(label)
        if not values:
            continue
        mean = statistics.mean(values)
        rows.append({"row": label, "seeds": len(values), "mean": mean,
                     "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                     "delta": mean - base, "gap_closed": (mean - base) / gap if gap > 0 else float("nan"),
                     "values": values})
    return rows


def markdown(rows: list[dict], teacher_miou: float, note: str) -> str:
    lines = ["| method | mIoU (%) mean ± std | Δ vs baseline | gap closed | seeds |",
             "|---|---|---|---|---|",
             f"| teacher (PSPNet, ResNet-18 ×0.25) | {100 * teacher_miou:.2f} | | | 1 |"]
    for r in rows:
        lines.append(f"| {r['row']} | {100 * r['mean']:.2f} ± {100 * r['std']:.2f} | {100 * r['delta']:+.2f} | "
                     f"{100 * r['gap_closed']:+.0f} % | {r['seeds']} |")
    return "\n".join(lines) + "\n\n" + note + "\n"


def write_readme(table: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"README.md has no {README_START} ... {README_END} block")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{table}{README_END}{tail}")


def publish(results, teacher_miou, teacher, out: Path, seeds_done: int, seeds: int, args, seconds: float) -> None:
    """Prints the table and writes ablation.md / ablation.json (and README.md for the full run)."""
    rows = summarise(results, teacher_miou)
    mode = "`python benchmarks/ablation.py --quick` (200 steps per student)" if args.quick else \
        "`python benchmarks/ablation.py` (the configs' full schedules)"
    partial = "" if seeds_done == seeds else f" **Partial: {seeds_done} of {seeds} seeds so far.**"
    note = (f"Measured by {mode} on {os.cpu_count()} CPU cores, {seconds / 60:.0f} min for {seeds_done} seed(s); "
            f"teacher {teacher}. Gap closed = (row − baseline) / (teacher − baseline); seeds change "
            f"initialisation, data order and augmentation (the dataset is fixed).{partial}")
    table = markdown(rows, teacher_miou, note)
    print()
    print(table, flush=True)
    (out / "ablation.md").write_text(table)
    (out / "ablation.json").write_text(json.dumps({"teacher_miou": teacher_miou, "rows": rows}, indent=2))
    if args.readme or not args.quick:
        write_readme(table)
        print("README.md updated", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 200 steps per student (about 10 minutes)")
    parser.add_argument("--seeds", type=int, help="number of seeds (default 3, or 1 with --quick)")
    parser.add_argument("--seed-list", help="run only these seeds (comma-separated), e.g. to spread seeds over "
                                            "machines; a later run without it reuses them and writes the table")
    parser.add_argument("--teacher", default="runs/synthetic_teacher/model.keras",
                        help="trained teacher (trained with configs/synthetic_teacher.yaml when missing)")
    parser.add_argument("--out", help="run directory (default runs/ablation or runs/ablation_quick)")
    parser.add_argument("--readme", action="store_true", help="also write the table into README.md (default for "
                                                              "the full run)")
    args = parser.parse_args()
    seeds = args.seeds or (1 if args.quick else 3)
    out = Path(args.out or ("runs/ablation_quick" if args.quick else "runs/ablation"))
    extra = ["train.steps=200", "train.steps_per_epoch=100",
             "distill.knowledge_adaptation.pretrain_steps=50"] if args.quick else []
    teacher = Path(args.teacher)
    if not teacher.exists():
        print(f"training the teacher ({teacher} is missing)", flush=True)
        teacher_out = teacher.parent
        run_one("train", "synthetic_teacher", teacher_out, 0, None,
                ["train.steps=600", "train.steps_per_epoch=200"] if args.quick else [])
    teacher_miou = json.loads((teacher.parent / "eval.json").read_text())["miou"]
    results: dict[str, list[float]] = {}
    start = time.time()
    seed_list = [int(v) for v in args.seed_list.split(",")] if args.seed_list else list(range(seeds))
    total = len(ROWS) * len(seed_list)
    done = 0
    for seed in seed_list:
        for label, config, command in ROWS:
            done += 1
            print(f"[{done}/{total}] {label}, seed {seed} ({(time.time() - start) / 60:.1f} min so far)", flush=True)
            kind_extra = [e for e in extra if command == "distill" or not e.startswith("distill.")]
            scores = run_one(command, config, out / config / f"seed{seed}", seed, str(teacher), kind_extra)
            results.setdefault(label, []).append(scores["miou"])
            print(f"    mIoU {100 * scores['miou']:.2f}", flush=True)
        # after every seed, so an ablation stopped part-way still reports the seeds it finished
        if not args.seed_list:
            publish(results, teacher_miou, teacher, out, seed + 1, seeds, args, time.time() - start)
    if args.seed_list and args.readme:  # e.g. the seeds spread over machines, gathered afterwards
        publish(results, teacher_miou, teacher, out, len(seed_list), seeds, args, time.time() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
