"""The demo's ``report.md`` and its three figures (predictions, per-class IoU, latency vs mIoU)."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from skd_tf.atomic import write_text
from skd_tf.benchmark import runtime
from skd_tf.benchmark.device import host_device
from skd_tf.benchmark.labels import palette
from skd_tf.benchmark.report import draw_pareto, pareto_points
from skd_tf.export.checks import labels_from_logits, model_input, raw_validation_images
from skd_tf.export.convert import ServingSpec
from skd_tf.config import RunConfig
from skd_tf.data import class_names
from skd_tf.models import at_input_size, load_model
from skd_tf.models.flops import count_flops

PREDICTIONS, PER_CLASS, LATENCY = "predictions.png", "per_class_iou.png", "latency_miou.png"
FIGURES = (PREDICTIONS, PER_CLASS, LATENCY)  # drawn beside report.md
ROLE_TITLES = {"teacher": "teacher", "baseline": "baseline student", "distilled": "distilled student"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _latency(bench: list[dict], path: str):
    for r in bench:
        if Path(r["model"]).resolve() == Path(path).resolve():
            return r["latency_ms"]["mean"]
    return None


def evaluation_networks(cfgs: dict[str, RunConfig]) -> dict:
    """Each role's trained network, loaded once and rebuilt at its evaluation size."""
    return {role: at_input_size(load_model(str(Path(cfg.train.out_dir) / "model.keras")), tuple(cfg.data.eval_size))
            for role, cfg in cfgs.items()}


def model_rows(cfgs: dict[str, RunConfig], nets: dict, scores: dict, records: dict, bench: list[dict]) -> list[dict]:
    """One row per model and TFLite file: params, GFLOPs, mIoUs, file size, host latency (``nets``: from
    ``evaluation_networks``)."""
    rows = []
    for role, cfg in cfgs.items():
        network = nets[role]
        params, gflops = network.count_params(), count_flops(network) / 1e9
        for q, entry in records[role]["exports"].items():
            rows.append({"model": f"{ROLE_TITLES[role]} ({cfg.model.arch}, {cfg.model.backbone} ×{cfg.model.width})",
                         "role": role, "format": f"TFLite {q}", "params": params, "gflops": gflops,
                         "miou_keras": scores[role]["miou"], "miou_tflite": entry["parity"]["miou_tflite"],
                         "bytes": entry["file_bytes"], "latency_ms": _latency(bench, entry["file"])})
    return rows


def predictions_figure(path: Path, cfgs: dict[str, RunConfig], nets: dict, records: dict, count: int = 4) -> None:
    """Image, ground truth, teacher, baseline, distilled and the int8 TFLite model on ``count`` val images
    (``nets``: from ``evaluation_networks``)."""
    plt = _plt()
    data = cfgs["distilled"].data
    size = tuple(data.eval_size)
    int8 = records["distilled"]["exports"].get("int8")
    interpreter = runtime.make_interpreter(int8["file"]) if int8 else None
    spec = ServingSpec(size, data.num_classes, records["distilled"]["output"], records["distilled"]["preprocess"],
                       tuple(data.mean), tuple(data.std))
    colours = palette(max(data.num_classes, 256))
    columns = ["image", "ground truth", "teacher", "baseline", "distilled"]
    columns += ["distilled int8 TFLite"] if int8 else []
    fig, axes = plt.subplots(count, len(columns), figsize=(2.0 * len(columns), 2.0 * count), squeeze=False)
    mean, std = np.asarray(data.mean, np.float32), np.asarray(data.std, np.float32)
    for i, (raw, label) in enumerate(raw_validation_images(data, size, count)):
        label = np.asarray(label)[0]
        shown = [raw[0].astype(np.uint8), np.where(label == data.ignore_label, 0, label)]
        for role in ("teacher", "baseline", "distilled"):
            logits = nets[role]((raw - mean) / std, training=False)["logits"]
            shown.append(labels_from_logits(np.asarray(logits), size)[0])
        if interpreter is not None:
            out = runtime.run(interpreter, model_input(raw, spec))
            shown.append(out[0] if out.ndim == 3 else labels_from_logits(out, size)[0])
        for j, img in enumerate(shown):
            ax = axes[i][j]
            ax.imshow(img if j == 0 else colours[np.asarray(img, np.int64)])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=9)
    from matplotlib.patches import Patch

    # which colour is which class: one legend row under the grid
    handles = [Patch(facecolor=colours[c] / 255.0, edgecolor="grey", label=name)
               for c, name in enumerate(class_names(data)[:20])]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04 * (1 + (len(handles) - 1) // 8) * 4 / count, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def per_class_figure(path: Path, names: list[str], scores: dict, int8_iou=None) -> None:
    """Grouped bars of per-class IoU for the teacher, the baseline and the distilled student."""
    plt = _plt()
    series = [(ROLE_TITLES[r], scores[r]["per_class_iou"]) for r in ("teacher", "baseline", "distilled")]
    if int8_iou is not None:
        series.append(("distilled int8 TFLite", int8_iou))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names)), 4))
    width = 0.8 / len(series)
    for k, (label, values) in enumerate(series):
        values = [np.nan if v is None else 100 * v for v in values]
        ax.bar(np.arange(len(names)) + k * width, values, width, label=label)
    ax.set_xticks(np.arange(len(names)) + width * (len(series) - 1) / 2, names, rotation=20, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title("per-class IoU on the validation split")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency_figure(path: Path, bench: list[dict], records: dict) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    labels = {entry["file"]: role if quantization == "float32" else f"{role}, {quantization}"
              for role, record in records.items() for quantization, entry in record.get("exports", {}).items()}
    draw_pareto(ax, pareto_points(bench, list(records.values()), labels))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(demo_dir: Path, cfgs: dict[str, RunConfig], scores: dict, records: dict, bench: list[dict],
                 seconds: float) -> Path:
    """Writes report.md and the figures into ``demo_dir``; returns the report's path."""
    names = class_names(cfgs["distilled"].data)
    nets = evaluation_networks(cfgs)
    rows = model_rows(cfgs, nets, scores, records, bench)
    int8 = records["distilled"]["exports"].get("int8")
    predictions_figure(demo_dir / PREDICTIONS, cfgs, nets, records)
    per_class_figure(demo_dir / PER_CLASS, names, scores,
                     int8["parity"]["per_class_iou_tflite"] if int8 else None)
    latency_figure(demo_dir / LATENCY, bench, records)

    base, dist, teach = (100 * scores[r]["miou"] for r in ("baseline", "distilled", "teacher"))
    delta = dist - base
    if delta > 0:
        verdict = (f"The distilled student is **{delta:.2f} points above** the baseline student "
                   f"({dist:.2f} vs {base:.2f} mIoU), closing {100 * delta / (teach - base):.0f} % of the "
                   f"teacher–student gap ({teach:.2f} − {base:.2f}).") if teach > base else \
            f"The distilled student is {delta:.2f} points above the baseline student."
    else:
        verdict = (f"**On this run the distilled student is NOT above the baseline**: {dist:.2f} vs {base:.2f} "
                   f"mIoU ({delta:+.2f} points). The evaluation is unchanged; single runs vary with the seed "
                   "(see `benchmarks/ablation.py` for the mean over seeds).")
    latency_note = next((r["device"] for r in bench), host_device())
    runtime_name = next((r["runtime"] for r in bench), "")
    threads = next((r["threads"] for r in bench), "")
    lines = [
        "# skd-tf demo report", "",
        f"Synthetic dataset ({cfgs['distilled'].data.synthetic.num_val} validation images, "
        f"{cfgs['distilled'].data.eval_size[0]}×{cfgs['distilled'].data.eval_size[1]}, "
        f"{len(names)} classes: {', '.join(names)}). Made by `skd-tf demo` in {seconds / 60:.1f} min "
        f"(this invocation; reused stages are not re-timed).", "",
        verdict, "",
        f"| model | format | params | GFLOPs | mIoU Keras (%) | mIoU TFLite (%) | size (KiB) | "
        f"latency (ms, {threads} threads) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lat = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.2f}"
        lines.append(f"| {r['model']} | {r['format']} | {r['params'] / 1e6:.2f} M | {r['gflops']:.3f} | "
                     f"{100 * r['miou_keras']:.2f} | {100 * r['miou_tflite']:.2f} | {r['bytes'] / 1024:.0f} | {lat} |")
    lines += [
        "",
        f"Latency: mean of {bench[0]['runs'] if bench else 0} timed runs after 10 warm-up runs, {runtime_name} "
        f"with XNNPACK on {latency_note}; Python {platform.python_version()}. mIoU TFLite is the exported file "
        "run through the interpreter on raw uint8 images (normalisation baked in).", "",
        "![predictions](predictions.png)", "",
        "Columns: input, ground truth, teacher, baseline student, distilled student, and the distilled student's "
        "int8 TFLite file.", "",
        "![per-class IoU](per_class_iou.png)", "",
        "![latency vs mIoU](latency_miou.png)", "",
        "Reproduce: `make demo` (or `skd-tf demo`; `--fresh` starts over). Per-stage outputs: "
        + ", ".join(f"`{cfg.train.out_dir}`" for cfg in cfgs.values()) + f", `{demo_dir}/export/*/export.json`, "
        f"`{demo_dir}/benchmark.json`.",
    ]
    report = demo_dir / "report.md"
    write_text(report, "\n".join(lines) + "\n")
    return report
