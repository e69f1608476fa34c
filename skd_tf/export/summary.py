"""The terminal table ``skd-tf export`` prints from an export.json record."""

from __future__ import annotations

from skd_tf.export.file_bytes import describe


def format_export(record: dict, quantizations: list[str] | None = None) -> str:
    """One row per exported quantization: size, mIoUs, label agreement, logit parity, integer-only, GPU."""
    rows = [("quantization", "size (KiB)", "mIoU TFLite", "mIoU Keras", "agreement", "max |Δlogit|",
             "integer-only", "GPU delegate")]
    for q, entry in record.get("exports", {}).items():
        if quantizations and q not in quantizations:
            continue
        p, d = entry["parity"], entry["deployability"]
        diff = p.get("max_abs_logit_diff")
        rows.append((q, f"{entry['file_bytes'] / 1024:.1f}", f"{100 * p['miou_tflite']:.2f}",
                     f"{100 * p['miou_keras']:.2f}", f"{100 * p['argmax_agreement']:.2f}%",
                     "-" if diff is None else f"{diff:.2e}",
                     {True: "yes", False: "NO: " + ",".join(d["float_ops"]), None: "-"}[d["all_integer"]],
                     "compatible" if d["gpu_delegate_compatible"] else "see report"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    if "int8_to_float32_size" in record:
        lines.append(f"int8 / float32 file size: {record['int8_to_float32_size']:.3f}")
        breakdown = record["exports"]["int8"].get("bytes")
        if breakdown:  # per-channel scales and zero points weigh on small networks: say so
            lines.append(f"int8 file: {describe(breakdown)}")
    return "\n".join(lines)
