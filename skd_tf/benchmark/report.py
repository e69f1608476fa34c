"""The results as a table and as plots (latency per configuration; latency against mIoU)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

def export_facts(model: str) -> dict:
    """The export.json entry that describes ``model`` when one sits next to it."""
    record_path = Path(model).with_name("export.json")
    if not record_path.exists():
        return {}
    try:
        record = json.loads(record_path.read_text())
    except ValueError:
        return {}
    return record


# ----------------------------------------------------------------------------------------------- output

def distinct_names(paths: list[str]) -> dict[str, str]:
    """Each path's shortest trailing part that no other path shares: the file name, or as many parent
    folders as it takes (``a/export/x.tflite`` and ``b/export/x.tflite`` → ``a/export/x.tflite`` …)."""
    unique = list(dict.fromkeys(paths))
    parts = {p: Path(p).parts for p in unique}
    names = {}
    for p in unique:
        for depth in range(1, len(parts[p]) + 1):
            tail = parts[p][-depth:]
            if not any(q != p and parts[q][-depth:] == tail for q in unique):
                break
        names[p] = str(Path(*tail))
    return names


def format_table(results: list[dict]) -> str:
    """One row per model × configuration, latencies in ms."""
    rows = [("model", "KiB", "threads", "delegate", "init", "first", "mean", "median", "p5", "p95", "std",
             "runs", "RSS MB")]
    names = distinct_names([r["model"] for r in results])
    for r in results:
        lat = r["latency_ms"]
        rows.append((names[r["model"]], f"{r['model_bytes'] / 1024:.0f}", str(r["threads"]), r["delegate"],
                     *(("-" if lat.get(k) is None else f"{lat[k]:.2f}")
                       for k in ("init", "first", "mean", "median", "p5", "p95", "std")),
                     str(r["runs"]), "-" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.0f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    device = results[0]["device"] if results else ""
    return "\n".join(lines + [f"{results[0]['runtime'] if results else ''} on {device}"])


def plot(results: list[dict], path: str, export_records: list[dict]) -> None:
    """Latency per model and thread count; with export records, the latency–mIoU Pareto chart too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = pareto_points(results, export_records)
    fig, axes = plt.subplots(1, 2 if points else 1, figsize=(12 if points else 7, 4.5), squeeze=False)
    draw_latency(axes[0][0], results)
    if points:
        draw_pareto(axes[0][1], points)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_latency(ax, results: list[dict]) -> None:
    """Grouped bars: mean latency (± std) of each model, one bar per thread count × delegate."""
    models = list(dict.fromkeys(Path(r["model"]).name for r in results))
    configs = list(dict.fromkeys((r["threads"], r["delegate"]) for r in results))
    width = 0.8 / max(len(configs), 1)
    for i, config in enumerate(configs):
        chosen = {Path(r["model"]).name: r for r in results if (r["threads"], r["delegate"]) == config}
        values = [chosen[m]["latency_ms"]["mean"] if m in chosen else np.nan for m in models]
        errors = [chosen[m]["latency_ms"]["std"] or 0.0 if m in chosen else 0.0 for m in models]
        ax.bar(np.arange(len(models)) + i * width, values, width, yerr=errors,
               label=f"{config[0]} thread{'s' if config[0] > 1 else ''}, {config[1]}")
    ax.set_xticks(np.arange(len(models)) + width * (len(configs) - 1) / 2, models, rotation=20, ha="right")
    ax.set_ylabel("mean latency (ms)")
    ax.set_title(results[0]["device"][:60] if results else "")
    ax.legend(fontsize=8)


def draw_pareto(ax, points: list[tuple[float, float, str]]) -> None:
    """TFLite mIoU against latency for each file, with the Pareto front (faster or more accurate)."""
    points = sorted(points)
    # One marker per file, named in the legend: labels written next to the points overlap whenever
    # two files are about as fast and as accurate (a float32 and a float16 export, say).
    markers = "osD^v<>ph*"
    for i, (lat, miou, name) in enumerate(points):
        ax.scatter([lat], [miou], marker=markers[i % len(markers)], s=50, label=f"{name}: {miou:.1f} %, {lat:.2f} ms",
                   zorder=3)
    front, best = [], -math.inf
    for lat, miou, _ in points:
        if miou > best:
            front.append((lat, miou))
            best = miou
    ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="grey", label="Pareto front")
    ax.set_xlabel("mean latency (ms, fastest configuration)")
    ax.set_ylabel("TFLite mIoU (%)")
    ax.set_title("latency vs mIoU")
    ax.legend(fontsize=8, loc="best")


def pareto_points(results: list[dict], export_records: list[dict],
                  labels: dict[str, str] | None = None) -> list[tuple[float, float, str]]:
    """(fastest mean latency, TFLite mIoU in %, name) of every benchmarked file an export record describes;
    the name is ``labels[absolute path]`` when given (e.g. "distilled, int8"), else the file name."""
    labels = {os.path.abspath(k): v for k, v in (labels or {}).items()}
    miou = {}
    for record in export_records:
        for entry in record.get("exports", {}).values():
            if entry["parity"].get("miou_tflite") is not None:  # None: checked on unlabelled images
                miou[os.path.abspath(entry["file"])] = 100.0 * entry["parity"]["miou_tflite"]
    points = {}
    for r in results:
        key = os.path.abspath(r["model"])
        if key in miou:
            lat = r["latency_ms"]["mean"]
            points[key] = min(points.get(key, (math.inf,))[0], lat), miou[key], labels.get(key, Path(key).name)
    return list(points.values())
