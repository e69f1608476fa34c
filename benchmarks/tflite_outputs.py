"""Runs .tflite files on saved inputs with the TFLite runtime alone and saves what they output.

    python tflite_outputs.py [--no-xnnpack] INPUTS.npz OUTPUTS.npz MODEL.tflite [MODEL.tflite ...]

INPUTS.npz holds ``images`` (N×H×W×3 raw pixels). OUTPUTS.npz gets, per model, its outputs for every image
(``<index>``: N×... as the runtime returns them, dequantized) and ``info`` (JSON): the runtime, its version,
the machine and, on Linux/aarch64, the CPU features the kernel reports (HWCAP: fp16 arithmetic, dot
product, i8mm, bf16, SVE, SME). Needs only numpy and a runtime (ai-edge-litert, tflite-runtime): benchmarks/
arm64_check.py runs it on an emulated 64-bit ARM CPU and on the host, with the skd_tf/benchmark folder on
the path as ``benchmark``.
"""

from __future__ import annotations

import json
import platform
import struct
import sys

import numpy as np

try:  # on the emulated board, the copied folder; on the host, the installed package
    from benchmark import runtime
except ImportError:
    from skd_tf.benchmark import runtime

# bits of AT_HWCAP / AT_HWCAP2 on aarch64 (Linux arch/arm64/include/uapi/asm/hwcap.h)
HWCAP = {"asimd": (16, 1), "fphp": (16, 9), "asimdhp": (16, 10), "asimddp": (16, 20), "sve": (16, 22),
         "asimdfhm": (16, 23), "sve2": (26, 1), "i8mm": (26, 13), "bf16": (26, 14), "sme": (26, 23), "sme2": (26, 37)}


def aarch64_features(raw: bytes | None = None) -> list[str]:
    """The HWCAP features in an auxiliary vector (default: this process's /proc/self/auxv, where qemu-user
    reports the emulated CPU's)."""
    if raw is None:
        try:
            raw = open("/proc/self/auxv", "rb").read()
        except OSError:
            return []
    values = dict(struct.iter_unpack("<QQ", raw[: len(raw) // 16 * 16]))
    return [name for name, (key, bit) in HWCAP.items() if values.get(key, 0) >> bit & 1]


def main(argv: list[str]) -> int:
    xnnpack = not (argv and argv[0] == "--no-xnnpack")  # the builtin kernels alone
    argv = argv if xnnpack else argv[1:]
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    inputs, target, models = argv[0], argv[1], argv[2:]
    images = np.load(inputs)["images"]
    rt = runtime.load_runtime()
    results = {}
    for index, path in enumerate(models):
        interpreter = runtime.make_interpreter(path, threads=1, xnnpack=xnnpack, runtime=rt)
        results[str(index)] = np.stack([runtime.run(interpreter, image[None]) for image in images])
        print(f"{path}: {results[str(index)].shape}", flush=True)
    machine = platform.machine()
    info = {"runtime": rt.name, "version": rt.version, "machine": machine, "xnnpack": xnnpack,
            "features": aarch64_features() if machine == "aarch64" else [], "models": models}
    np.savez(target, info=np.array(json.dumps(info)), **results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
