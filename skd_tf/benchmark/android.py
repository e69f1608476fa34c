"""Benchmarking on an Android phone with TensorFlow Lite's ``benchmark_model`` over adb.

The binary and the model are pushed to /data/local/tmp, run once per thread
count × delegate (optionally pinned to cores with ``taskset``), and the output
is parsed into the same fields as the host benchmark. ``parse_output`` reads
every output variant we know (SPEC §4): the current ``Inference timings in us:
Init: …, First inference: …, Warmup (avg): …, Inference (avg): …`` with
``Memory footprint delta … init=… overall=…``, older builds' ``Average
inference timings in us: …`` with ``Peak memory footprint (MB): …``, the
per-phase ``count=… first=… curr=… min=… max=… avg=… std=…`` statistics lines
(with ``p5=… median=… p95=…`` in recent builds), and the op-profiling tables.
Imports neither TensorFlow nor numpy-heavy code: it runs wherever adb does.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .device import cpu_features
from .errors import BenchmarkError
from .measure import Settings

BINARY_URL = ("https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/"
              "nightly/latest/android_aarch64_benchmark_model")
REMOTE_DIR = "/data/local/tmp"
DELEGATE_FLAGS = {
    "cpu": ["--use_xnnpack=false"],
    "xnnpack": ["--use_xnnpack=true"],
    "gpu": ["--use_gpu=true"],
    "nnapi": ["--use_nnapi=true"],
}

_NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"


def _adb(adb: str, serial: str | None, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [adb] + (["-s", serial] if serial else []) + list(args)
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise BenchmarkError(f"adb not found ({adb}); install Android platform-tools or pass --adb PATH") from None
    except subprocess.TimeoutExpired:
        raise BenchmarkError(f"adb {' '.join(args[:2])} timed out after {timeout:.0f} s") from None


def pick_device(adb: str, serial: str | None) -> str:
    """The serial to use: ``serial`` or the only connected device; errors for missing/unauthorized/offline."""
    proc = _adb(adb, None, "devices")
    if proc.returncode != 0:
        raise BenchmarkError(f"adb devices failed: {(proc.stderr or proc.stdout).strip()}")
    devices = {}
    for line in proc.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            devices[parts[0]] = parts[1]
    if serial is not None and serial not in devices:
        raise BenchmarkError(f"device {serial} is not connected (adb devices lists: "
                             f"{', '.join(devices) or 'nothing'})")
    if serial is None:
        if not devices:
            raise BenchmarkError("no Android device connected (adb devices lists nothing); connect one and enable "
                                 "USB debugging")
        if len(devices) > 1:
            raise BenchmarkError(f"several devices connected ({', '.join(devices)}): choose one with --serial")
        serial = next(iter(devices))
    state = devices[serial]
    if state == "unauthorized":
        raise BenchmarkError(f"device {serial} is unauthorized: accept the USB debugging prompt on the phone")
    if state == "offline":
        raise BenchmarkError(f"device {serial} is offline: reconnect it (adb reconnect) and retry")
    if state != "device":
        raise BenchmarkError(f"device {serial} is in state {state!r}, not ready")
    return serial


def push(adb: str, serial: str, local: str, remote: str) -> None:
    proc = _adb(adb, serial, "push", local, remote)
    if proc.returncode != 0 or "error" in proc.stderr.lower():
        raise BenchmarkError(f"adb push {local} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")


def device_name(adb: str, serial: str) -> str:
    """``android: <model> (<serial>)``, and the CPU's instruction-set features when the phone shows them."""
    proc = _adb(adb, serial, "shell", "getprop", "ro.product.model")
    model = proc.stdout.strip() if proc.returncode == 0 else ""
    info = _adb(adb, serial, "shell", "cat", "/proc/cpuinfo")
    features = cpu_features(info.stdout) if info.returncode == 0 else []
    return f"android: {model or 'unknown model'} ({serial})" + (f" [{' '.join(features)}]" if features else "")


def command(remote_model: str, threads: int, delegate: str, runs: int, warmup: int, min_seconds: float,
            taskset: str | None, op_profiling: bool) -> list[str]:
    """The benchmark_model command line run in ``adb shell``."""
    if delegate not in DELEGATE_FLAGS:
        raise BenchmarkError(f"unknown delegate {delegate!r}; choose from {', '.join(DELEGATE_FLAGS)}")
    cmd = (["taskset", taskset] if taskset else []) + [
        f"{REMOTE_DIR}/benchmark_model", f"--graph={remote_model}", f"--num_threads={threads}",
        f"--num_runs={runs}", f"--warmup_runs={warmup}", f"--min_secs={min_seconds}", *DELEGATE_FLAGS[delegate]]
    if op_profiling:
        cmd.append("--enable_op_profiling=true")
    return cmd


def parse_output(text: str) -> dict:
    """benchmark_model's output as ``{"latency_ms": {...}, "runs", "peak_rss_mb", "op_profile"}``.

    Missing figures are None. Raises BenchmarkError when the output shows a crash
    or no inference timings at all.
    """
    lat = {k: None for k in ("init", "first", "mean", "median", "p5", "p95", "min", "max", "std")}
    runs, memory = None, None
    m = re.search(r"(?<!Average )Inference timings in us:(.*)", text)
    if m:
        fields = dict(re.findall(r"([A-Za-z ()]+):\s*" + _NUMBER, m.group(1)))
        fields = {k.strip(): float(v) for k, v in fields.items()}
        lat["init"] = _ms(fields.get("Init"))
        lat["first"] = _ms(fields.get("First inference"))
        lat["mean"] = _ms(fields.get("Inference (avg)"))
    m = re.search(r"Average inference timings in us:(.*)", text)
    if m:
        fields = {k.strip(): float(v) for k, v in re.findall(r"([A-Za-z ()]+):\s*" + _NUMBER, m.group(1))}
        lat["init"] = _ms(fields.get("Init"))
        lat["mean"] = _ms(fields.get("Inference", fields.get("no stats")))  # "no stats" in the oldest builds
    stats = [dict(re.findall(r"(\w+)=" + _NUMBER, line)) for line in text.splitlines()
             if re.match(r"\s*count=\d+", line.strip())]
    if stats:
        last = {k: float(v) for k, v in stats[-1].items()}  # warm-up first, then the timed runs
        runs = int(last["count"])
        for key, name in (("min", "min"), ("max", "max"), ("std", "std"), ("p5", "p5"), ("median", "median"),
                          ("p95", "p95")):
            if key in last:
                lat[name] = _ms(last[key])
        if lat["mean"] is None and "avg" in last:
            lat["mean"] = _ms(last["avg"])
        warmup = {k: float(v) for k, v in stats[0].items()}
        if lat["first"] is None and "first" in warmup:
            lat["first"] = _ms(warmup["first"])
        elif lat["first"] is None and warmup.get("count") == 1 and "curr" in warmup:
            lat["first"] = _ms(warmup["curr"])  # old builds: a single warm-up run, printed as curr=
    m = re.search(r"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\):\s*"
                  r"init=" + _NUMBER + r"\s+overall=" + _NUMBER, text)
    if m:
        memory = float(m.group(2))
    if lat["mean"] is None:
        crash = [line for line in text.splitlines()
                 if re.search(r"Segmentation fault|Aborted|Failed|ERROR|error:|not found|CANNOT LINK", line)]
        raise BenchmarkError("benchmark_model produced no inference timings"
                             + (f": {crash[0].strip()}" if crash else ""))
    return {"latency_ms": lat, "runs": runs, "peak_rss_mb": memory, "op_profile": parse_op_profile(text)}


def _ms(us):
    return None if us is None else us / 1000.0


def parse_op_profile(text: str) -> list[dict]:
    """The ``Summary by node type`` table of an op-profiling run (last one printed), one dict per op type."""
    blocks = re.split(r"=+\s*Summary by node type\s*=+", text)
    if len(blocks) < 2:
        return []
    rows = []
    for line in blocks[-1].splitlines()[1:]:
        line = line.strip()
        if not line or line.startswith("="):
            if rows:
                break
            continue
        if line.startswith("[") or line.startswith("Timings") or line.startswith("Memory"):
            continue
        parts = line.split()
        if len(parts) < 7:
            break
        try:  # the node type may contain spaces (XNNPACK's per-op names): read the 6 numbers from the right
            count, avg_ms = int(parts[-6]), float(parts[-5])
            avg_pct, cdf_pct = float(parts[-4].rstrip("%")), float(parts[-3].rstrip("%"))
            mem_kb, called = float(parts[-2]), int(float(parts[-1]))
        except ValueError:
            break
        name = " ".join(parts[:-6])
        rows.append({"node_type": name, "count": count, "avg_ms": avg_ms, "avg_pct": avg_pct,
                     "cdf_pct": cdf_pct, "mem_kb": mem_kb, "times_called": called})
    return rows


@dataclass(frozen=True)
class Phone:
    """Where and how to run on a phone: the ``benchmark_model`` binary to push, the adb executable, the
    device's serial (None: the only one connected), comma-separated delegates of DELEGATE_FLAGS, a hex
    ``taskset`` CPU mask (None: no pinning) and whether to collect the per-op profile."""
    benchmark_binary: str | None
    adb: str = "adb"
    serial: str | None = None
    delegate: str = "xnnpack"
    taskset: str | None = None
    op_profiling: bool = False


def benchmark(models: list[str], threads: list[int], settings: Settings, phone: Phone) -> list[dict]:
    """Pushes the binary and models, runs every model × thread count × delegate, returns report records."""
    if not phone.benchmark_binary:
        raise BenchmarkError("--android needs --benchmark-binary PATH: TensorFlow Lite's Android benchmark_model, "
                             f"published at {BINARY_URL}")
    if not Path(phone.benchmark_binary).is_file():
        raise BenchmarkError(f"benchmark binary not found: {phone.benchmark_binary} (download it from {BINARY_URL})")
    delegates = [d.strip() for d in phone.delegate.split(",") if d.strip()]
    for d in delegates:
        if d not in DELEGATE_FLAGS:
            raise BenchmarkError(f"unknown delegate {d!r}; choose from {', '.join(DELEGATE_FLAGS)}")
    if phone.taskset and not re.fullmatch(r"(0x)?[0-9a-fA-F]+", phone.taskset):
        raise BenchmarkError(f"--taskset takes a hex CPU mask such as f0 (got {phone.taskset!r})")
    serial = pick_device(phone.adb, phone.serial)
    device = device_name(phone.adb, serial)
    push(phone.adb, serial, phone.benchmark_binary, f"{REMOTE_DIR}/benchmark_model")
    chmod = _adb(phone.adb, serial, "shell", "chmod", "755", f"{REMOTE_DIR}/benchmark_model")
    if chmod.returncode != 0:
        raise BenchmarkError(f"cannot make benchmark_model executable: {chmod.stderr.strip()}")
    results = []
    for model in models:
        remote = f"{REMOTE_DIR}/{Path(model).name}"
        push(phone.adb, serial, model, remote)
        for t in threads:
            for d in delegates:
                cmd = command(remote, t, d, settings.runs, settings.warmup, settings.min_seconds, phone.taskset,
                              phone.op_profiling)
                proc = _adb(phone.adb, serial, "shell", " ".join(shlex.quote(c) for c in cmd))
                text = proc.stdout + "\n" + proc.stderr
                try:
                    parsed = parse_output(text)
                except BenchmarkError as err:
                    raise BenchmarkError(f"{Path(model).name} ({t} threads, {d}) on {serial}: {err} "
                                         f"(exit {proc.returncode})") from None
                if proc.returncode != 0:
                    raise BenchmarkError(f"benchmark_model exited with {proc.returncode} on {serial}")
                record = {"runtime": "benchmark_model", "model": model, "model_bytes": Path(model).stat().st_size,
                          "threads": t, "delegate": d, "device": device, **parsed}
                if phone.taskset:
                    record["taskset"] = phone.taskset
                results.append(record)
    return results
