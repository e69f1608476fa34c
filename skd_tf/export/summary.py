"""The terminal table ``skd-tf export`` prints from an export.json record."""

from __future__ import annotations

from skd_tf.export.file_bytes import describe

# Below this share of Keras' labels a file is not a faithful copy: the exports that work keep 98.5 % or more (the
# demo's five files 98.98–100 %, the phone students' int8 98.56–99.23 %, the published ESPNets' float16 99.6–99.8 %),
# post-training int8 of the published ESPNets 7–76 % (docs/export.md, docs/published-weights.md).
LOW_AGREEMENT = 0.95


def format_export(record: dict, quantizations: list[str] | None = None) -> str:
    """One row per exported quantization: size, mIoUs ("-" when checked on unlabelled ``--images``), label
    agreement, logit parity, integer-only, GPU."""
    rows = [("quantization", "size (KiB)", "mIoU TFLite", "mIoU Keras", "agreement", "max |Δlogit|",
             "integer-only", "GPU delegate")]
    shown = {q: entry for q, entry in record.get("exports", {}).items() if not quantizations or q in quantizations}
    for q, entry in shown.items():
        p, d = entry["parity"], entry["deployability"]
        diff = p.get("max_abs_logit_diff")
        rows.append((q, f"{entry['file_bytes'] / 1024:.1f}", _percent(p.get("miou_tflite")),
                     _percent(p.get("miou_keras")), f"{100 * p['argmax_agreement']:.2f}%",
                     "-" if diff is None else f"{diff:.2e}",
                     {True: "yes", False: "NO: " + ",".join(d["float_ops"]), None: "-"}[d["all_integer"]],
                     "compatible" if d["gpu_delegate_compatible"] else "see report"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    if "calibration_agreement" in shown.get("int8", {}):
        lines.append(ranges_choice(shown["int8"]))
    if shown.get("int8", {}).get("bias_correction"):
        lines.append(bias_correction_line(shown["int8"]["bias_correction"]))
    lines += [line for q, entry in shown.items()
              if (line := low_agreement_warning(q, entry, record.get("exports", {}).get("dynamic")))]
    if "int8_to_float32_size" in record:
        lines.append(f"int8 / float32 file size: {record['int8_to_float32_size']:.3f}")
        breakdown = record["exports"]["int8"].get("bytes")
        if breakdown:  # per-channel scales and zero points weigh on small networks: say so
            lines.append(f"int8 file: {describe(breakdown)}")
    return "\n".join(lines)


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.2f}"


def ranges_named(ranges: str) -> str:
    """int8 activation ranges (``ExportConfig.int8_calibrations``) in words: ``the 99.99th percentile``."""
    if ranges.startswith("p"):
        return f"the {ranges[1:]}th percentile"
    return {"extremes": "the extremes", "mean_extremes": "the mean of each image's extremes"}[ranges]


def ranges_choice(entry: dict) -> str:
    """The line saying which int8 activation ranges ``calibration_ranges: auto`` kept (``entry``: the int8
    file's export.json record) and the labels each gave on the check."""
    percentile = entry.get("calibration_percentile")
    kept = f"p{percentile!r}" if percentile is not None else entry["calibration_ranges"]
    tried = ", ".join(f"{ranges_named(ranges)} {100 * share:.2f} %"
                      for ranges, share in entry["calibration_agreement"].items())
    return (f"int8 activation ranges: {ranges_named(kept)} kept (labels equal to Keras' with {tried}; "
            f"--calibration-ranges or --calibration-percentile sets them)")


def bias_correction_line(facts: dict) -> str:
    """The line saying what ``export.bias_correction_samples`` did (``facts``: ``corrected_biases``' facts)."""
    where = f" ({facts['largest_error_op']})" if facts.get("largest_error_op") else ""
    return (f"int8 biases corrected on {facts['samples']} calibration images: {facts['ops']} convolutions, the "
            f"largest channel-mean error {facts['largest_error_steps']:.2f} int8 steps{where}")


def low_agreement_warning(quantization: str, entry: dict, dynamic: dict | None = None) -> str:
    """A warning line when an exported file gives Keras' labels on fewer than ``LOW_AGREEMENT`` of the checked
    pixels (``entry``: the file's export.json record), saying what to try instead; ``""`` otherwise.
    ``dynamic``: the same export's dynamic-range file's record, if it made one (its agreement is then quoted)."""
    parity = entry.get("parity", {})
    share = parity.get("argmax_agreement")
    if share is None or share >= LOW_AGREEMENT or not parity.get("num_images"):
        return ""
    # int8 weights with activations quantized per image at run time keep labels where calibrated int8 does not:
    # the published ESPNets on street frames 93.7-99.2 % against 68-96 % (docs/published-weights.md)
    dynamic_share = (dynamic or {}).get("parity", {}).get("argmax_agreement")
    if dynamic_share is None:
        fallback = "or ship dynamic (int8 weights, float activations) or float16"
    elif dynamic_share >= LOW_AGREEMENT:
        fallback = f"or ship dynamic ({100 * dynamic_share:.2f} % here) or float16"
    else:
        fallback = "or ship float16"
    if quantization == "float32":
        remedy = "a float32 file should give Keras' labels: please report it with export.json"
    elif quantization == "int8":
        percentile = entry.get("calibration_percentile")
        if entry.get("calibration_agreement"):  # auto: the extremes and a percentile were tried
            ranges = "--calibration-percentile 99.9"
        elif percentile is not None:
            ranges = f"another --calibration-percentile than {percentile:g}"
        elif entry.get("calibration_ranges") == "mean_extremes":
            ranges = "--calibration-percentile 99.9 instead of --calibration-ranges mean_extremes"
        else:
            ranges = "--calibration-percentile 99.99 or --calibration-ranges mean_extremes"
        more = ", more --images" if parity.get("checked_on") == "images" else ""
        more += "" if entry.get("bias_correction") else ", --bias-correction-samples 32"
        remedy = f"try {ranges}{more} or --quantization qat, {fallback}"
    elif quantization == "qat":
        teacher = (entry.get("qat") or {}).get("teacher")
        remedy = ("try more --qat-steps or a higher export.qat.learning_rate" if teacher else
                  "try more --qat-steps or a teacher (export.teacher)") + f", {fallback}"
    else:
        remedy = "compare it with the float32 file"
    images = "images" if parity.get("checked_on") == "images" else "validation images"
    return (f"warning: {quantization} gives Keras' labels on only {100 * share:.2f} % of the pixels of "
            f"{parity['num_images']} {images} (below {100 * LOW_AGREEMENT:.0f} %): {remedy} (docs/export.md)")
