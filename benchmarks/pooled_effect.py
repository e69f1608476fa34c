"""A method's paired effect on the student, per data set and pooled over several ablation record folders.

    python -m benchmarks.pooled_effect --rows ka benchmarks/results/ablation benchmarks/results/ablation_s2c5 \\
        benchmarks/results/ablation_128

Each folder holds the records of `benchmarks/ablation.py` on one data set (its own teacher). A pair is one
(data set, teacher, seed) block where both the row and the baseline were recorded; per folder the table gives
the paired difference to the baseline with its 95 % t-interval (as the ablation table does), then the same
over every pair of every folder taken together: the average effect over these data sets, whose interval
also carries how much the effect varies between them. Only records made with the configs as they are now
count (each record's own `--set`s on today's config give its digest); `--any-config` counts every record.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from benchmarks.ablation import (ROWS, config_digest, interval_cell, load_records, paired_difference,  # noqa: E402
                      row_overrides)

COMMAND = {config: command for _, _, config, command, _ in ROWS}
LABEL = {key: label for key, label, *_ in ROWS}


@functools.cache
def current_digest(config: str, overrides: tuple[str, ...]) -> str:
    """The digest of ``config`` as it is now with ``overrides`` (a row's records share it: loaded once)."""
    return config_digest(config, list(overrides))


def made_with_current_config(record: dict) -> bool:
    """True when ``record``'s config with its own overrides still resolves to its recorded digest."""
    if "config_digest" not in record:
        return True
    overrides = tuple(row_overrides(COMMAND[record["config"]], record["overrides"]))
    return current_digest(record["config"], overrides) == record["config_digest"]


def blocks(folder: Path, any_config: bool) -> dict[str, dict[tuple, float]]:
    """{row key: {(teacher, seed): mIoU}} of one record folder."""
    out: dict[str, dict[tuple, float]] = {}
    for r in load_records(folder):
        if any_config or made_with_current_config(r):
            out.setdefault(r["row"], {})[(r["teacher"], r["seed"])] = r["miou"]
    return out


def effects(folders: list[Path], rows: list[str], any_config: bool = False) -> dict[str, dict]:
    """{row: {"per_folder": {folder name: paired difference}, "pooled": paired difference over all pairs,
    "positive": pairs above the baseline}} (differences as ``ablation.paired_difference``, in mIoU units)."""
    per_folder = {f: blocks(f, any_config) for f in folders}
    out = {}
    for row in rows:
        pooled_row, pooled_base, entry = {}, {}, {"per_folder": {}}
        for folder, table in per_folder.items():
            mine, base = table.get(row, {}), table.get("baseline", {})
            entry["per_folder"][folder.name] = paired_difference(mine, base)
            for block in set(mine) & set(base):
                pooled_row[(folder.name, *block)], pooled_base[(folder.name, *block)] = mine[block], base[block]
        entry["pooled"] = paired_difference(pooled_row, pooled_base)
        entry["positive"] = sum(pooled_row[b] > pooled_base[b] for b in pooled_row)
        out[row] = entry
    return out


def markdown(found: dict[str, dict], folders: list[Path]) -> str:
    def cell(d: dict | None) -> str:
        return "–" if d is None else interval_cell(d) + ("" if d["low"] is None else f" ({d['n']})")

    lines = ["| method | " + " | ".join(f.name for f in folders) + " | pooled | pairs above the baseline |",
             "|---|" + "---|" * len(folders) + "---|---|"]
    for row, e in found.items():
        pooled = e["pooled"]
        lines.append(f"| {LABEL[row]} | " + " | ".join(cell(e["per_folder"][f.name]) for f in folders)
                     + f" | {cell(pooled)} | {e['positive']} of {pooled['n'] if pooled else 0} |")
    return "\n".join(lines) + ("\n\nPaired Δ mIoU vs the baseline in points [95 % t-interval] (pairs); pooled: "
                               "every (data set, seed) pair of the folders together.\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("folders", nargs="+", help="record folders of benchmarks/ablation.py (one per data set)")
    parser.add_argument("--rows", required=True,
                        help=f"comma-separated row keys ({', '.join(k for k, *_ in ROWS if k != 'baseline')})")
    parser.add_argument("--any-config", action="store_true", help="count every record, whatever config made it")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    rows = args.rows.split(",")
    unknown = [r for r in rows if r not in LABEL or r == "baseline"]
    if unknown:
        parser.error(f"--rows: unknown or baseline key(s) {', '.join(unknown)}")
    folders = [Path(f) for f in args.folders]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        parser.error(f"no such record folder: {', '.join(missing)}")
    found = effects(folders, rows, args.any_config)
    print(markdown(found, folders))
    if args.json:
        Path(args.json).write_text(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
