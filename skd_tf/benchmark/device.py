"""What the measurements ran on: the CPU with the instruction-set features TFLite's kernels choose code paths
by, and the process's peak memory."""

from __future__ import annotations

import platform
import resource
import sys

CPU_FEATURES = (
    ("avx2", "avx2"), ("fma", "fma"), ("avx512f", "avx512f"), ("avx512_vnni", "avx512_vnni"),
    ("avx_vnni", "avx_vnni"), ("avx512_bf16", "avx512_bf16"), ("amx_int8", "amx_int8"), ("amx_bf16", "amx_bf16"),
    ("asimddp", "dotprod"), ("i8mm", "i8mm"), ("asimdhp", "fp16"), ("bf16", "bf16"), ("sve", "sve"),
)


def cpu_features(cpuinfo: str) -> list[str]:
    """The CPU_FEATURES present in a /proc/cpuinfo text (x86 ``flags``, ARM ``Features``), in that order."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return [name for flag, name in CPU_FEATURES if flag in flags]


def describe_cpu(cpuinfo: str, fallback: str) -> str:
    """``"<model name> x<count> [features]"`` from a /proc/cpuinfo text (ARM: the ``Hardware`` or
    ``CPU part`` when there is no model name)."""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
             if line.split(":", 1)[0].strip() in ("model name", "Hardware")]
    cores = sum(1 for line in cpuinfo.splitlines() if line.split(":", 1)[0].strip() == "processor")
    cpu = f"{names[0]} x{cores or 1}" if names else f"{fallback} x{cores or 1}"
    features = cpu_features(cpuinfo)
    return f"{cpu} [{' '.join(features) if features else 'no SIMD extensions listed'}]"


def host_device() -> str:
    """``host: <OS> <arch>, <CPU model> x<cores> [<instruction-set features>]``."""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = describe_cpu(f.read(), platform.processor() or platform.machine())
    except OSError:
        cpu = platform.processor() or platform.machine()
    return f"host: {platform.system()} {platform.machine()}, {cpu}"


def peak_rss_mb() -> float:
    """This process's peak resident set size. Linux: VmHWM, because ru_maxrss survives exec and would
    report the parent's peak (628 MB from a TensorFlow-loaded parent, measured)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / (1024.0 * 1024.0)
