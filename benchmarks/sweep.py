"""Chooses each distillation method's weight on a held-out part of the *training* split.

    python -m benchmarks.sweep                      # every method, the default grid, both choice variants
    python -m benchmarks.sweep --methods pi,pa,ho   # only these methods (in the paper's chain order)
    python -m benchmarks.sweep --table-only         # run nothing; print the choice from the records

The last ``--holdout`` images of the synthetic training split are withheld (``data.holdout``) from the
teacher, the baseline and every student, and each run is scored on them (``data.val_split:
train_holdout``); the validation split that benchmarks/ablation.py reports is never looked at. A method's
weight λ is chosen from a small grid of non-zero multiples of its literature value, one seed per point (seed
0: every point of a variant starts from the baseline's initial weights and sees its batches), on *several*
data variants (data seed and class count), by the worst variant's paired gain mIoU(λ) − mIoU(baseline)
(ties: the larger mean gain). When the grid's smallest weight is the best and still
costs mIoU on a variant, the sweep continues down ×0.01, ×0.003, ×0.001 until a point costs nothing (its
gradient share then says whether the method still acts at all). The paper's terms are chained as in its table: pair-wise is swept with the
pixel-wise weight already chosen, holistic with both.

Each point is its own ``skd-tf distill`` run in runs/sweep/; its small result is recorded as JSON under
benchmarks/results/sweep/<variant>/<teacher fingerprint>/ — commit those files: a later run, on this or
another machine, skips every recorded point (a new machine retrains the variant's teacher and baseline,
cheap, and pairs its new points with them). The choice is written to benchmarks/results/sweep/chosen.json;
the synthetic configs ship it (tests/test_sweep.py checks they agree).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from benchmarks.ablation import (LOSSES, ROOT, config_digest, host_cpu, log_of, run_cli, stale_run, teacher_fingerprint,  # noqa: E402
                      trained_teacher_distance)

# (key, label, config, the weight's config key, literature weight, the chained methods whose choice it uses);
# the literature weight is the loss registry's (skd_tf.losses.registry)
METHODS = [
    ("pi", "pixel-wise", "synthetic_skd_pi", "distill.losses.pixel.weight", LOSSES["pixel"].weight, ()),
    ("pa", "pair-wise (with pixel-wise)", "synthetic_skd_pi_pa", "distill.losses.pairwise.weight",
     LOSSES["pairwise"].weight, ("pi",)),
    ("ho", "holistic (with pixel- and pair-wise)", "synthetic_skd_full", "distill.holistic.weight",
     LOSSES["holistic"].weight, ("pi", "pa")),
] + [(name, LOSSES[name].label, f"synthetic_{name}", f"distill.losses.{name}.weight", LOSSES[name].weight, ())
     for name in ("ka", "sp", "cc", "irg", "rkd", "cwd", "fitnet", "at")]
METHOD_BY_KEY = {m[0]: m for m in METHODS}

# data variants the weights are chosen on: (data seed, number of classes)
VARIANTS = {"s0c6": (0, 6), "s1c8": (1, 8)}
GRID = (0.03, 0.1, 0.3, 1.0)  # multiples of the literature weight
# A feature- or relation-level term whose literature weight puts its gradient on the student far above
# cross-entropy's is swept where that share is ~0.02-0.3 instead: the paired sweeps of pair-wise and KA cost
# mIoU from a mean share of ~0.5 up, and the relational losses were designed for other feature scales. The
# share at the literature weight (mean over 300 steps, no ramp-up, s0c6, diagnostics every 30 steps):
#   skd-tf distill --config configs/synthetic_<m>.yaml --teacher runs/sweep/s0c6/teacher/model.keras
#     --set data.holdout=500 --set data.val_split=train_holdout --set train.steps=300
#     --set train.steps_per_epoch=300 --set distill.rampup_steps=0 --set distill.diagnostics_every=30
# gave SP 25.7 (the sweep's own record at λ=3000), CC 2.7, IRG 3.4, RKD 17, AT 13, FitNet 0.16, CWD 3.4.
# Each grid is three half-decade multiples whose shares reach up to ~0.3. Pixel-wise and CWD match logits
# (their gradient points the way CE's does: pixel-wise gains most at a share of 7) and keep GRID.
METHOD_GRID = {"sp": (0.001, 0.003, 0.01), "cc": (0.01, 0.03, 0.1), "irg": (0.003, 0.01, 0.03),
               "rkd": (0.001, 0.003, 0.01), "at": (0.001, 0.003, 0.01), "fitnet": (0.1, 0.3, 1.0)}
# When a method's best point is the grid's smallest and still costs mIoU on some variant, the sweep goes on
# down these multiples until a point costs nothing or they run out: at the weight where a method stops
# hurting, its gradient share says how much it still acts (a harmless weight can also be an inert one).
# the rungs a grid and its extension are made of (half-decade multiples of the literature weight)
LADDER = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def method_multiples(method: str, grids: dict[str, tuple[float, ...]] | None = None) -> tuple[float, ...]:
    """The multiples of ``method``'s literature weight that its sweep runs: ``grids[method]`` (``--grid``,
    for the methods it was given with) when there, else its entry in METHOD_GRID, else GRID."""
    return (grids or {}).get(method) or METHOD_GRID.get(method, GRID)
SEED = 0
DEFAULT_HOLDOUT = 500  # training images held out; records made before "holdout" was recorded all used it


def variant_sets(variant: str, holdout: int) -> list[str]:
    data_seed, classes = VARIANTS[variant]
    return [f"seed={SEED}", f"data.synthetic.seed={data_seed}", f"data.num_classes={classes}",
            f"data.holdout={holdout}", "data.val_split=train_holdout"]


def _cli(command: str, config: str, out: Path, sets: list[str], teacher: Path | None = None) -> dict:
    """Runs (or resumes) ``skd-tf <command>`` into ``out`` unless it finished; returns its eval.json."""
    if not (out / "eval.json").exists():
        args = [command, "--config", str(ROOT / "configs" / f"{config}.yaml"), "--quiet"]
        if teacher is not None:
            args += ["--teacher", str(teacher)]
        run_cli(args + [a for s in sets + [f"train.out_dir={out}"] for a in ("--set", s)], log_of(out))
    return json.loads((out / "eval.json").read_text())


def point_sets(key: str, variant: str, weight: float, fixed: list[str], holdout: int, overrides: list[str]) -> list[str]:
    """Every ``--set`` of one sweep point (the weight last but the user's overrides)."""
    return variant_sets(variant, holdout) + fixed + [f"{METHOD_BY_KEY[key][3]}={weight:g}"] + overrides


def current_digest(key: str, sets: list[str]) -> str:
    return config_digest(METHOD_BY_KEY[key][2], sets)


def weight_label(weight: float) -> str:
    return f"w{weight:g}"


def point_records(results: Path, variant: str, method: str) -> dict[float, list[dict]]:
    """Every recorded point of a method on a variant, any teacher: {weight: [records]}."""
    found: dict[float, list[dict]] = {}
    for path in sorted(results.glob(f"{variant}/*/{method}/w*.json")):
        record = json.loads(path.read_text())
        found.setdefault(record["weight"], []).append(record)
    return found


def baseline_reference(results: Path, variant: str, teacher: str) -> float | None:
    """The baseline mIoU a point is paired with: the seed-0 baseline of its variant and teacher. Same seed =
    same initial weights, dropout seeds and batches (``tests/test_distill.py`` checks that a zero-weight
    distillation ends with the baseline's weights), so the difference is the method's."""
    base = results / variant / teacher / "baseline.json"
    return json.loads(base.read_text())["miou"] if base.exists() else None


def made_with_current_config(record: dict) -> bool:
    """True when ``record`` was made with its method's config file as it is now: its own ``--set``s (variant,
    held-out count, chained weights, weight, overrides) on today's config give its recorded digest. Records
    without a digest predate digests and count."""
    if "config_digest" not in record:
        return True
    sets = point_sets(record["method"], record["variant"], record["weight"], record["fixed"],
                      record.get("holdout", DEFAULT_HOLDOUT), record["overrides"])
    return current_digest(record["method"], sets) == record["config_digest"]


def gains(results: Path, method: str, variants: list[str]) -> dict[float, dict[str, float]]:
    """{weight: {variant: mean over that variant's teachers of mIoU(point) − its paired baseline's}}, over the
    points made with the current config (a point of an earlier config is left out until it is rerun)."""
    out: dict[float, dict[str, float]] = {}
    for variant in variants:
        for weight, records in point_records(results, variant, method).items():
            deltas = []
            for r in filter(made_with_current_config, records):
                base = baseline_reference(results, variant, r["teacher"])
                if base is not None:
                    deltas.append(r["miou"] - base)
            if deltas:
                out.setdefault(weight, {})[variant] = statistics.mean(deltas)
    return out


def _swept(table: dict, method: str, variants: list[str], grid: list[float]) -> list[float]:
    literature = METHOD_BY_KEY[method][4]
    lowest = min(grid)
    extra = [w for w in grid_of(literature, LADDER) if w < lowest and set(table.get(w, {})) == set(variants)]
    return sorted(set(grid) | set(extra))


def _best(table: dict, variants: list[str], grid: list[float]) -> float | None:
    if any(set(table.get(w, {})) != set(variants) for w in grid):
        return None
    return max(grid, key=lambda w: (min(table[w].values()), statistics.mean(table[w].values()), -w))


def swept_grid(results: Path, method: str, variants: list[str], grid: list[float]) -> list[float]:
    """``grid`` plus the lower points (below the grid, swept by the extension) recorded for ``method`` on
    every variant."""
    return _swept(gains(results, method, variants), method, variants, grid)


def needs_lower_weight(results: Path, method: str, variants: list[str], grid: list[float]) -> float | None:
    """The next LADDER weight below to sweep for ``method``, or None: only while the chosen point is the smallest
    swept weight and its worst variant's gain is negative."""
    table = gains(results, method, variants)
    weights = _swept(table, method, variants, grid)
    pick = _best(table, variants, weights)
    if pick is None or pick != min(weights) or min(table[pick].values()) >= 0:
        return None
    lower = [w for w in grid_of(METHOD_BY_KEY[method][4], LADDER) if w < pick]
    return max(lower) if lower else None


def choose(results: Path, method: str, variants: list[str], grid: list[float]) -> float | None:
    """The grid weight whose *worst* gain over the variants is largest (then the larger mean, then the smaller
    weight), once every (weight, variant) is recorded. Worst case rather than mean: the target is a method
    that never costs the user accuracy on data it was not tuned on."""
    return _best(gains(results, method, variants), variants, grid)


def grid_of(literature: float, multiples: tuple[float, ...]) -> list[float]:
    return [float(f"{literature * m:.4g}") for m in multiples]


def summary_markdown(results: Path, variants: list[str],
                     grids: dict[str, tuple[float, ...]] | None = None) -> tuple[str, dict]:
    """The sweep table (a column per ladder multiple any method swept) and the chosen weights."""
    tables = {key: gains(results, key, variants) for key, *_ in METHODS}  # each method's records, read once
    columns = [m for m in LADDER if any(
        m in method_multiples(k, grids) or set(tables[k].get(grid_of(lit, (m,))[0], {})) == set(variants)
        for k, *_, lit, _ in METHODS)]
    chosen, lines = {}, ["| method | literature λ | " + " | ".join(
        f"×{m:g}" for m in columns) + " | chosen λ |", "|---|---|" + "---|" * len(columns) + "---|"]
    for key, label, _, _, literature, _ in METHODS:
        grid = grid_of(literature, method_multiples(key, grids))
        table = tables[key]
        pick = _best(table, variants, _swept(table, key, variants, grid))
        if pick is not None:
            chosen[key] = pick
        cells = []
        for w in grid_of(literature, tuple(columns)):
            per = table.get(w, {})
            cells.append("" if not per else f"{100 * statistics.mean(per.values()):+.2f} ("
                         + " / ".join(f"{100 * per[v]:+.1f}" if v in per else "–" for v in variants) + ")")
        lines.append(f"| {label} | {literature:g} | " + " | ".join(cells) + f" | {'' if pick is None else f'{pick:g}'} |")
    note = (f"Mean over the variants (and each: {' / '.join(variants)}; data seed and class count "
            f"{', '.join(f'{v} = {VARIANTS[v][0]}, {VARIANTS[v][1]}' for v in variants)}) of mIoU(λ) − "
            f"mIoU(baseline), paired (seed {SEED}: the same initial weights and batches), in points, scored on the "
            f"training split's held-out images.")
    noise = baseline_noise(results, variants)
    if noise:
        note += (" Baseline seed-to-seed spread on the same images (`--noise-seeds`): " + "; ".join(
            f"{v}: {100 * m:.2f} ± {100 * sd:.2f} over {n} seeds" for v, (m, sd, n) in noise.items())
            + " — a single-seed difference within about twice that spread is not evidence.")
    return "\n".join(lines) + "\n\n" + note + "\n", chosen


def baseline_noise(results: Path, variants: list[str]) -> dict[str, tuple[float, float, int]]:
    """{variant: (mean, std, seeds)} of the baseline's held-out mIoU over seeds (seed 0 and --noise-seeds)."""
    out = {}
    for variant in variants:
        for teacher_dir in sorted((results / variant).glob("*")):
            runs = [json.loads(p.read_text())["miou"] for p in sorted(teacher_dir.glob("baseline*.json"))]
            if len(runs) > 1:
                out[variant] = (statistics.mean(runs), statistics.stdev(runs), len(runs))
    return out


def calibrated_losses(results: Path = ROOT / "benchmarks/results/sweep") -> dict[str, float]:
    """{loss config name: chosen λ} from ``chosen.json`` (pixel, pairwise, holistic, ka, ...)."""
    chosen = results / "chosen.json"
    if not chosen.exists():
        return {}
    record = json.loads(chosen.read_text())
    return {record["keys"][k].split(".")[-2]: w for k, w in record["weights"].items()}


def calibration_options(results: Path = ROOT / "benchmarks/results/sweep") -> dict[str, str]:
    """{loss config name: the loss options other than its weight that the chosen points were swept with},
    e.g. {"ka": "adapter_depth=1"} — the calibrated λ holds with them (the losses table of docs/losses.md)."""
    chosen = results / "chosen.json"
    if not chosen.exists():
        return {}
    record = json.loads(chosen.read_text())
    out = {}
    for key, weight in record["weights"].items():
        prefix = record["keys"][key].rsplit(".", 1)[0] + "."  # distill.losses.<name>.
        points = [r for v in record["variants"] for r in point_records(results, v, key).get(weight, [])]
        options = sorted({o[len(prefix):] for r in filter(made_with_current_config, points)
                          for o in r["overrides"] if o.startswith(prefix) and not o.startswith(record["keys"][key] + "=")})
        if options:
            out[prefix.split(".")[-2]] = ", ".join(options)
    return out




def write_docs(results: Path, table: str) -> None:
    """docs/results.md: the sweep table between its markers; docs/losses.md: the losses table with the
    calibrated weights."""
    from benchmarks.docs_pages import write_block

    write_block("results.md", "sweep", table)
    write_losses_table(results)


def write_losses_table(results: Path) -> None:
    """Replaces docs/losses.md's losses table with one that has the calibrated weights."""
    from skd_tf.console import QUIET, start_tensorflow

    start_tensorflow(QUIET)  # the losses module imports TensorFlow: without its start-up noise
    from skd_tf.losses import markdown_table

    from benchmarks.docs_pages import replace_table

    replace_table("losses.md", "| config name | loss | formula |",
                  markdown_table(calibrated_losses(results), calibration_options(results)))


def ensure_variant(variant: str, runs: Path, results: Path, holdout: int,
                   overrides: list[str]) -> tuple[Path, str, float]:
    """Trains the variant's teacher and baseline (on the training split minus the held-out images)."""
    sets = variant_sets(variant, holdout) + [o for o in overrides if not o.startswith("distill.")]
    teacher_out = runs / variant / "teacher"
    _cli("train", "synthetic_teacher", teacher_out, sets)
    teacher = teacher_out / "model.keras"
    fingerprint, teacher_miou = teacher_fingerprint(teacher)
    base = results / variant / fingerprint / "baseline.json"
    if not base.exists():
        scores = _cli("train", "synthetic_student", runs / variant / "baseline", sets)
        base.parent.mkdir(parents=True, exist_ok=True)
        base.write_text(json.dumps({"variant": variant, "teacher": fingerprint, "teacher_miou": teacher_miou,
                                    "miou": scores["miou"], "per_class_iou": scores["per_class_iou"],
                                    "host": host_cpu()}, indent=1))
    record = json.loads(base.read_text())
    baseline = runs / variant / "baseline"
    if "teacher_distance" not in record and (baseline / "model.keras").exists():  # how far CE alone leaves it
        record["teacher_distance"] = trained_teacher_distance("synthetic_student", baseline, teacher, sets)
        base.write_text(json.dumps(record, indent=1))
    return teacher, fingerprint, teacher_miou


def run_point(key: str, weight: float, fixed: list[str], variants: list[str], teachers: dict, runs: Path,
              results: Path, args, start: float) -> None:
    """Runs one weight of a method on every variant where it is not recorded with the current config, and
    records each run's scores and diagnostics."""
    label, config = METHOD_BY_KEY[key][1], METHOD_BY_KEY[key][2]
    for variant in variants:
        teacher, fingerprint, teacher_miou = teachers[variant]
        sets = point_sets(key, variant, weight, fixed, args.holdout, args.overrides)
        digest = current_digest(key, sets)
        recorded = point_records(results, variant, key).get(weight, [])
        if any(r.get("config_digest", digest) == digest for r in recorded):  # none: made before digests
            continue
        for path in results.glob(f"{variant}/*/{key}/{weight_label(weight)}.json"):
            path.unlink()  # made with another config (e.g. an earlier chained weight): stale
        print(f"{label} λ={weight:g} on {variant} ({(time.time() - start) / 60:.1f} min so far)"
              + (" (recorded with an older config: rerun)" if recorded else ""), flush=True)
        out = runs / variant / key / weight_label(weight)
        if out.exists() and (recorded or stale_run(out, digest)):
            shutil.rmtree(out)
        began = time.time()
        scores = _cli("distill", config, out, sets, teacher)
        record = {"method": key, "variant": variant, "weight": weight, "fixed": fixed, "seed": SEED,
                  "teacher": fingerprint, "teacher_miou": teacher_miou, "miou": scores["miou"],
                  "per_class_iou": scores["per_class_iou"],
                  "teacher_distance": scores.get("teacher_distance", {}),
                  "gradient_share": scores.get("gradient_share", {}).get("mean", {}),
                  "autoencoder": scores.get("autoencoder", {}).get("final"),
                  "overrides": args.overrides, "holdout": args.holdout, "config_digest": digest,
                  "minutes": round((time.time() - began) / 60, 2), "host": host_cpu()}
        target = results / variant / fingerprint / key / f"{weight_label(weight)}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(record, indent=1))
        print(f"    mIoU {100 * scores['miou']:.2f} on the held-out images, recorded in {target}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--methods", help=f"only these (comma-separated, of {', '.join(m[0] for m in METHODS)})")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"data variants to choose on (default {','.join(VARIANTS)})")
    parser.add_argument("--grid", help=f"multiples of each literature weight, for the --methods swept (default: "
                                       f"{','.join(f'{m:g}' for m in GRID)}, or the method's METHOD_GRID entry: "
                        + "; ".join(f"{k} {','.join(f'{m:g}' for m in v)}" for k, v in METHOD_GRID.items()) + ")")
    parser.add_argument("--holdout", type=int, default=DEFAULT_HOLDOUT, help="training images held out (default %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value in every run's config (distill.* only in the distilled students'; "
                             "e.g. train.steps=200 for a plumbing check)")
    parser.add_argument("--runs", default="runs/sweep", help="where the runs go (default %(default)s)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks/results/sweep"),
                        help="where the per-point JSON records and chosen.json go (default benchmarks/results/sweep)")
    parser.add_argument("--noise-seeds", type=int, default=1,
                        help="train the baseline under seeds 0..N-1 too, to show the seed-to-seed spread "
                             "(default %(default)s: seed 0 only)")
    parser.add_argument("--table-only", action="store_true", help="run nothing; print the choice from the records")
    parser.add_argument("--docs", "--readme", dest="docs", action="store_true",
                        help="write the sweep table (docs/results.md) and the chosen weights (the losses table of "
                             "docs/losses.md); --readme: the old name")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    if unknown := [v for v in variants if v not in VARIANTS]:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    keys = [m[0] for m in METHODS]
    wanted = args.methods.split(",") if args.methods else keys
    if unknown := [m for m in wanted if m not in keys]:
        raise SystemExit(f"--methods: unknown {', '.join(unknown)}; choose from {', '.join(keys)}")
    override = None
    if args.grid:
        try:
            override = tuple(float(v) for v in args.grid.split(","))
        except ValueError:
            raise SystemExit(f"--grid: expected comma-separated numbers, got {args.grid!r}") from None
        if any(m <= 0 for m in override):
            raise SystemExit("--grid: every multiple must be positive (a zero weight is the baseline)")
    grids = {key: override for key in wanted} if override else {}  # --grid: only for the methods named
    runs, results = Path(args.runs).resolve(), Path(args.results).resolve()
    methods = {m[0]: m for m in METHODS}
    start = time.time()
    if not args.table_only:
        teachers = {}
        for variant in variants:
            print(f"variant {variant}: teacher and baseline ({(time.time() - start) / 60:.1f} min so far)", flush=True)
            teachers[variant] = ensure_variant(variant, runs, results, args.holdout, args.overrides)
            for seed in range(1, args.noise_seeds):
                fingerprint = teachers[variant][1]
                target = results / variant / fingerprint / f"baseline_seed{seed}.json"
                if not target.exists():
                    print(f"variant {variant}: baseline under seed {seed}", flush=True)
                    sets = variant_sets(variant, args.holdout) + [f"seed={seed}"] + \
                        [o for o in args.overrides if not o.startswith("distill.")]
                    scores = _cli("train", "synthetic_student", runs / variant / f"baseline_seed{seed}", sets)
                    target.write_text(json.dumps({"variant": variant, "seed": seed, "teacher": fingerprint,
                                                  "miou": scores["miou"], "host": host_cpu()}, indent=1))
        for key in wanted:
            _, label, config, _, literature, chain = methods[key]
            fixed = []
            for earlier in chain:
                pick = choose(results, earlier, variants,
                              swept_grid(results, earlier, variants,
                                         grid_of(methods[earlier][4], method_multiples(earlier, grids))))
                if pick is None:
                    raise SystemExit(f"{label} is swept with {methods[earlier][1]}'s weight chosen: sweep "
                                     f"{earlier} first (--methods {earlier},{key})")
                fixed.append(f"{methods[earlier][3]}={pick:g}")
            grid = grid_of(literature, method_multiples(key, grids))
            for weight in grid:
                run_point(key, weight, fixed, variants, teachers, runs, results, args, start)
            while (lower := needs_lower_weight(results, key, variants, grid)) is not None:
                print(f"{label}: the smallest weight still costs mIoU on a variant: trying λ={lower:g}", flush=True)
                run_point(key, lower, fixed, variants, teachers, runs, results, args, start)
    table, chosen = summary_markdown(results, variants, grids)
    print("\n" + table, flush=True)
    if chosen:
        results.mkdir(parents=True, exist_ok=True)
        (results / "chosen.json").write_text(json.dumps(
            {"variants": variants, "grids": {k: list(method_multiples(k, grids)) for k in chosen},
             "weights": chosen,
             "keys": {k: methods[k][3] for k in chosen}, "configs": {k: methods[k][2] for k in chosen}}, indent=1))
    if args.docs:
        write_docs(results, table)
        print("docs/results.md (sweep) and docs/losses.md (losses table) updated", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
