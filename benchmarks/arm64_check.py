"""The exported files on 64-bit ARM kernels: label maps and logits on an emulated aarch64 CPU vs this host.

    python -m benchmarks.arm64_check                  # set up, export, run, compare; prints the table
    python -m benchmarks.arm64_check --table-only --docs

A phone runs XNNPACK's NEON kernels (dot-product and i8mm ones where the CPU has them); x86 runs others.
This script runs the same .tflite files under qemu-user on emulated ARM CPUs — ``cortex-a53`` (ARMv8.0
NEON: the oldest phones), ``cortex-a76`` (fp16 arithmetic and dot product: most phones in use), ``max``
(everything qemu emulates, i8mm and bf16 included) — with the aarch64 LiteRT wheel, and compares what they
output with this host's run of the same files on the same images. Timing under emulation means nothing:
only agreement is reported.

Set-up (once, in ``--work``; nothing is installed into the host): qemu-user from Debian's backports
(bookworm's own 7.2 emulates SME wrongly, see ``qemu``), an arm64 Python 3.11 root made from Debian's arm64 packages (a private apt
configuration resolves them; ``dpkg-deb -x`` unpacks them), and the aarch64 wheels of ai-edge-litert and
numpy at this host's versions (pip download, unpacked). binfmt_misc is not needed: the arm64 interpreter is
started through ``qemu-aarch64-static -L <root>``.

Files: each LR-ASPP student's seed-0 checkpoint (``benchmarks/phone_students.py --part accuracy``'s, else
trained here once into ``--work``/students) exported by ``skd-tf export`` to float32, float16, dynamic, int8 and
QAT (``--quantizations``) three times: the label map by the bilinear head, the label map by the ``two_class``
head, and the logits; images: the first ``--images`` of its config's validation set. With ``--published DIR``
(the SKD authors' checkpoints, ../shared/reference-weights/skd-cvpr19) also their Cityscapes ESPNet and ESPNet-C,
imported and exported to float32, float16, dynamic and int8 (calibrated on 8 fabricated street scenes,
benchmarks/cityscapes_fabric.py; no QAT: that needs their training data) at ``--published-size``, and run on 4
other fabricated scenes. Records: benchmarks/results/arm64_check.json, one row per network, output and
quantization (a run's rows replace those it ran again). Kept in ``--work`` for a rerun: the exports, made again
when the package's code changed (a digest beside them), and each CPU's outputs, run again when their files
changed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "arm64_check.json"
CPUS = ("cortex-a53", "cortex-a76", "max")
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8", "qat")
PUBLISHED_QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
# what the file outputs: (skd-tf export's --output, --label-head)
OUTPUTS = {"labels": ("labels", "bilinear"), "two_class": ("labels", "two_class"), "logits": ("logits", "bilinear")}
STUDENTS = ("mobilenetv3_large", "mobilenetv3_small", "mobilenetv2")
# the published networks: name → (file under --published, config)
PUBLISHED = {"espnet": ("cityscapes/ESPNet_Ours_64.pth", "cityscapes_espnet"),
             "espnet_c": ("cityscapes/ESPNet_C_Ours_60.pth", "cityscapes_espnet_c")}
PUBLISHED_IMAGES, PUBLISHED_CALIBRATION = 4, 8
NAMES = {"mobilenetv3_large": "LR-ASPP MobileNetV3-Large", "mobilenetv3_small": "LR-ASPP MobileNetV3-Small",
         "mobilenetv2": "LR-ASPP MobileNetV2", "espnet": "ESPNet (published, Cityscapes)",
         "espnet_c": "ESPNet-C (published, Cityscapes)"}
ARM64_PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
DEBIAN = "deb [arch={arch} signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian {} main"


class SetupFailed(RuntimeError):
    """A set-up step failed; the message says which and how to do it by hand."""


def _run(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SetupFailed(f"{what} failed: {' '.join(cmd[:4])} ...: {' / '.join(tail)}")
    return proc


def private_apt(folder: Path, source: str, arch: str) -> list[str]:
    """apt-get options for a configuration of its own in ``folder`` (one source line, one architecture, an
    empty status so every dependency is fetched): the host's apt state is not touched."""
    for sub in ("lists/partial", "cache/archives/partial", "etc/preferences.d"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "status").write_text("")
    (folder / "sources.list").write_text(source + "\n")
    options = [f"-oDir::State={folder}", f"-oDir::State::Lists={folder}/lists",
               f"-oDir::State::status={folder}/status", f"-oDir::Cache={folder}/cache",
               f"-oDir::Etc::SourceList={folder}/sources.list", "-oDir::Etc::SourceParts=/nonexistent",
               f"-oDir::Etc::Preferences={folder}/etc/preferences",
               f"-oDir::Etc::PreferencesParts={folder}/etc/preferences.d", f"-oAPT::Architecture={arch}",
               f"-oAPT::Architectures::={arch}", "-oDebug::NoLocking=1"]
    _run(["apt-get", "-q", *options, "update"], f"apt-get update ({source})")
    return options


def unpacked_debs(folder: Path, target: Path) -> Path:
    """Every .deb apt downloaded into ``folder`` unpacked into ``target`` (``dpkg-deb -x``: nothing runs)."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for deb in sorted((folder / "cache" / "archives").glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(partial)], f"dpkg-deb -x {deb.name}")
    partial.rename(target)
    return target


def qemu(work: Path) -> str:
    """qemu-aarch64 from Debian's backports (10.0 for bookworm), unpacked into ``work``; else the host's.

    The backported one because bookworm's own qemu 7.2 emulates SME wrongly: with ``-cpu max`` (which has
    SME) LiteRT's int8 files gave other labels on 37–58 % of the pixels, and the same files on the same
    emulated CPU agree on all of them under qemu 10.0 and under 7.2 with ``sme=off``."""
    binary = work / "qemu" / "usr" / "bin" / "qemu-aarch64"
    if binary.exists():
        return str(binary)
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    try:
        print("downloading qemu-user from Debian's backports", flush=True)
        options = private_apt(work / "apt-qemu", DEBIAN.format(f"{debian_suite()}-backports", arch=arch), arch)
        _run(["apt-get", "-q", *options, "install", "-y", "--download-only", "--no-install-recommends",
              "qemu-user"], "apt-get download of qemu-user (backports)")
        unpacked_debs(work / "apt-qemu", work / "qemu")
        return str(binary)
    except SetupFailed as err:
        found = shutil.which("qemu-aarch64-static")
        if found is None:
            raise SetupFailed(f"{err}; and no qemu-aarch64-static on the PATH (apt-get install "
                              f"qemu-user-static)") from None
        print(f"{err}: using {found} (SME under qemu 7.2 is not trustworthy)", flush=True)
        return found


def qemu_version(binary: str) -> str:
    return _run([binary, "--version"], "qemu --version").stdout.splitlines()[0]


def debian_suite() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    return "bookworm"


def arm64_root(work: Path) -> Path:
    """An arm64 Debian root with Python 3.11 (unpacked .deb files; nothing is configured or run)."""
    root = work / "root"
    if (root / "usr" / "bin" / "python3.11").exists():
        return root
    print("downloading Debian's arm64 Python 3.11", flush=True)
    options = private_apt(work / "apt", DEBIAN.format(debian_suite(), arch="arm64"), "arm64")
    _run(["apt-get", "-q", *options, "install", "-y", "--download-only", "--no-install-recommends",
          *ARM64_PACKAGES], "apt-get download of the arm64 packages")
    return unpacked_debs(work / "apt", root)


def arm64_site(work: Path) -> Path:
    """ai-edge-litert and numpy for aarch64 at this host's versions, unpacked, and skd_tf/benchmark as
    ``benchmark``."""
    from importlib import metadata

    site = work / "site"
    pins = [f"ai-edge-litert=={metadata.version('ai-edge-litert')}", f"numpy=={metadata.version('numpy')}"]
    stamp = site / "pins.txt"
    if not (stamp.exists() and stamp.read_text() == "\n".join(pins)):
        shutil.rmtree(site, ignore_errors=True)
        wheels = work / "wheels"
        print(f"downloading aarch64 wheels: {', '.join(pins)}", flush=True)
        _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", "3.11",
              "--implementation", "cp", "--abi", "cp311", "--platform", "manylinux_2_27_aarch64", "--platform",
              "manylinux_2_17_aarch64", "--platform", "manylinux2014_aarch64", "-d", str(wheels), *pins],
             "pip download of the aarch64 wheels")
        site.mkdir(parents=True)
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
        stamp.write_text("\n".join(pins))
    shutil.rmtree(site / "benchmark", ignore_errors=True)
    shutil.copytree(ROOT / "skd_tf" / "benchmark", site / "benchmark",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return site


# ------------------------------------------------------------------------------------------ files and images

def student_checkpoint(student: str, work: Path) -> Path:
    """The student's seed-0 checkpoint: phone_students.py's when present, else one trained here (once)."""
    checkpoint = ROOT / "runs" / "phone_students" / student / "seed0" / "model.keras"
    if checkpoint.exists():
        return checkpoint
    out = work / "students" / student
    if not (out / "model.keras").exists():
        print(f"training {student} (seed 0, into {out})", flush=True)
        shutil.rmtree(out, ignore_errors=True)
        _run([sys.executable, "-m", "skd_tf.cli", "train", "--config",
              str(ROOT / "configs" / f"synthetic_lraspp_{student}.yaml"), "--set", "seed=0",
              "--set", f"train.out_dir={out}", "--quiet"], f"training of {student}", cwd=ROOT)
    return out / "model.keras"


def code_digest() -> str:
    """A digest of the code that makes the files (the package and the export helpers used here): files
    exported by other code are exported again."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted([*(ROOT / "skd_tf").rglob("*.py"), *(ROOT / "benchmarks" / name for name in
                                                             ("phone_students.py", "cityscapes_fabric.py"))]):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _exported_by_this_code(folder: Path) -> bool:
    stamp = folder / "code.digest"
    return (folder / "export.json").exists() and stamp.exists() and stamp.read_text() == code_digest()


def _has(record: Path, quantizations, key: str) -> bool:
    """Whether the export record ``record`` lists a file for each of ``quantizations`` under ``key``."""
    return record.exists() and set(quantizations) <= set(json.loads(record.read_text())[key])


def exported(student: str, output: str, work: Path, qat_steps: int, quantizations=QUANTIZATIONS) -> dict:
    """{"files": {quantization: file}, "head": the label head computed} of the student's seed-0 checkpoint
    exported as ``output`` (an ``OUTPUTS`` key) to ``quantizations`` (again when the code changed)."""
    folder = work / "exports" / f"{student}_{output}"
    record = folder / "export.json"
    if not (_exported_by_this_code(folder) and _has(record, quantizations, "exports")):
        if not _exported_by_this_code(folder):
            record.unlink(missing_ok=True)  # `skd-tf export` keeps the entries it finds: none of older code
        checkpoint = student_checkpoint(student, work)
        print(f"exporting {student} ({output})", flush=True)
        what, head = OUTPUTS[output]
        _run([sys.executable, "-m", "skd_tf.cli", "export", "--config",
              str(ROOT / "configs" / f"synthetic_lraspp_{student}.yaml"), "--checkpoint", str(checkpoint),
              "--quantization", ",".join(quantizations), "--output", what, "--label-head", head,
              "--qat-steps", str(qat_steps), "--no-savedmodel", "--eval-limit", "50", "--out", str(folder),
              "--quiet"], f"export of {student}", cwd=ROOT)
        (folder / "code.digest").write_text(code_digest())
    written = json.loads(record.read_text())
    return {"files": {q: Path(written["exports"][q]["file"]) for q in quantizations},
            "head": written.get("label_head") if OUTPUTS[output][0] == "labels" else None}


def published_size(text: str) -> tuple[int, int]:
    """``--published-size`` "H,W" → (H, W)."""
    try:
        h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W (e.g. 256,512), not {text!r}") from None
    if h < 8 or w < 8 or h % 8 or w % 8:
        raise argparse.ArgumentTypeError(f"H and W must be multiples of 8, at least 8: {text!r}")
    return h, w


def published_exports(name: str, output: str, folder: Path, size: tuple[int, int], work: Path,
                      quantizations=PUBLISHED_QUANTIZATIONS) -> dict:
    """As ``exported`` for a published checkpoint: imported (``skd_tf.importing``; once), exported to
    ``quantizations`` (of ``PUBLISHED_QUANTIZATIONS``) by benchmarks/phone_students.py's ``export_file`` (`skd-tf
    export`'s conversion) at ``size``, int8 calibrated on fabricated street scenes (their training data is the
    user's). No files where the output's label head would be another one's (``two_class`` on logits it cannot
    take)."""
    from skd_tf.export.label_heads import effective_head

    rel, config = PUBLISHED[name]
    target = work / "exports" / f"{name}_{size[0]}x{size[1]}_{output}"
    what, head = OUTPUTS[output]
    record = target / "export.json"
    if not (_exported_by_this_code(target) and _has(record, quantizations, "files")):
        from skd_tf.config import load_config
        from skd_tf.importing import import_checkpoint
        from skd_tf.models import at_input_size, load_model, logits_align_corners

        from benchmarks.cityscapes_fabric import street_scenes
        from benchmarks.phone_students import export_file

        checkpoint = folder / rel
        if not checkpoint.is_file():
            raise SetupFailed(f"{checkpoint} is missing: --published takes the folder holding {rel}")
        print(f"importing and exporting {name} ({output})", flush=True)
        cfg = load_config(ROOT / "configs" / f"{config}.yaml")
        target.mkdir(parents=True, exist_ok=True)
        keras_path = work / "exports" / f"{name}.keras"
        if not keras_path.exists():
            from skd_tf.models.torch_checkpoint import CheckpointError

            try:
                import_checkpoint(cfg, str(checkpoint), keras_path)
            except CheckpointError as err:  # torch missing, another network's file, a damaged file
                raise SetupFailed(f"importing {checkpoint}: {err}") from None
        network = load_model(keras_path, cfg.data)
        aligned = logits_align_corners(network)
        network = at_input_size(network, size)
        head = effective_head(head, tuple(network.output["logits"].shape[1:3]), size, aligned)
        if OUTPUTS[output][1] != head:
            record.unlink(missing_ok=True)
            return {"files": {}, "head": head}  # the head cannot work there: no file of its own
        calibration = street_scenes(PUBLISHED_CALIBRATION, size)
        files = json.loads(record.read_text())["files"] if _exported_by_this_code(target) else {}
        for quantization in quantizations:
            files[quantization] = str(target / f"{name}_{quantization}.tflite")
            export_file(network, size, quantization, what, calibration, Path(files[quantization]), head,
                        mean=cfg.data.mean, std=cfg.data.std, align_corners=aligned)
        from skd_tf.atomic import write_text

        write_text(record, json.dumps({"files": files, "label_head": head if what == "labels" else None}) + "\n")
        write_text(target / "code.digest", code_digest())
    written = json.loads(record.read_text())
    return {"files": {q: Path(written["files"][q]) for q in quantizations}, "head": written["label_head"]}


def published_images(size: tuple[int, int], work: Path) -> Path:
    """``PUBLISHED_IMAGES`` fabricated street scenes the int8 calibration did not see, as raw pixels."""
    target = work / "inputs" / f"street_{size[0]}x{size[1]}.npz"
    if not target.exists():
        from benchmarks.cityscapes_fabric import street_scenes

        scenes = street_scenes(PUBLISHED_CALIBRATION + PUBLISHED_IMAGES, size)[PUBLISHED_CALIBRATION:]
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savez(target, images=scenes.astype(np.float32))
    return target


def images_for(student: str, count: int, work: Path) -> Path:
    """The first ``count`` validation images of the student's config as raw pixels (images.npz)."""
    target = work / "inputs" / f"{student}_{count}.npz"
    if not target.exists():
        from skd_tf.config import load_config
        from skd_tf.export.checks import raw_validation_images

        data = load_config(ROOT / "configs" / f"synthetic_lraspp_{student}.yaml").data
        images = [raw[0] for raw, _ in raw_validation_images(data, tuple(data.eval_size), count)]
        target.parent.mkdir(parents=True, exist_ok=True)
        np.savez(target, images=np.stack(images).astype(np.float32))
    return target


# MIDR (implementer, variant, part, revision) written into the root's /proc/cpuinfo for each emulated CPU;
# qemu's "max" has no core of its own: a Neoverse N1 is named for it
MIDR = {"cortex-a53": (0x41, 0x0, 0xD03, 4), "cortex-a76": (0x41, 0x4, 0xD0B, 1), "max": (0x41, 0x4, 0xD0C, 1)}


def write_cpuinfo(root: Path, cpu: str, work: Path) -> list[str]:
    """The root's /proc/cpuinfo for ``cpu``; returns the features the emulated CPU reports.

    qemu-user 7.2 passes the host's x86 /proc/cpuinfo through, in which the cpuinfo library that LiteRT's
    kernels ask about the CPU finds no ARM core, and LiteRT then crashes on the first invoke (seen here:
    a segmentation fault, even for one ADD). qemu maps absolute paths into ``-L``'s root first, so a
    cpuinfo file there with the core's MIDR is what the library reads (a qemu that emulates the file
    itself answers first); its instruction-set features it takes from HWCAP, which qemu sets from the
    emulated CPU."""
    probe = ("import sys; sys.path.insert(0, {!r}); from tflite_outputs import aarch64_features; "
             "print(' '.join(aarch64_features()))").format(str(Path(__file__).parent))
    features = _run([qemu(work), "-cpu", cpu, "-L", str(root), str(root / "usr" / "bin" / "python3.11"), "-c", probe],
                    f"the feature probe on {cpu}", env={"PYTHONPATH": str(work / "site")}).stdout.split()
    implementer, variant, part, revision = MIDR.get(cpu, MIDR["max"])
    entry = (f"BogoMIPS\t: 50.00\nFeatures\t: fp {' '.join(features)}\nCPU implementer\t: {implementer:#x}\n"
             f"CPU architecture: 8\nCPU variant\t: {variant:#x}\nCPU part\t: {part:#x}\nCPU revision\t: {revision}\n")
    (root / "proc").mkdir(exist_ok=True)
    (root / "proc" / "cpuinfo").write_text("".join(f"processor\t: {i}\n{entry}\n" for i in range(2)))
    return features


def outputs(inputs: Path, files: list[Path], target: Path, cpu: str | None, work: Path) -> dict:
    """Runs benchmarks/tflite_outputs.py on this host (``cpu`` None) or under qemu on ``cpu``; reuses
    ``target`` when it was made from the same inputs and files (their digests, kept beside it), so a rerun
    after an interruption or a change elsewhere does not emulate again what it has (``max`` takes 10 min and
    more per file set)."""
    import hashlib

    worker = [str(Path(__file__).with_name("tflite_outputs.py")), str(inputs), str(target), *map(str, files)]
    digests = "\n".join(hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in (inputs, *files))
    stamp = target.with_suffix(".digests")
    if target.exists() and stamp.exists() and stamp.read_text() == digests:
        print(f"  {target.name}: made from these files before, reused", flush=True)
    else:
        stamp.unlink(missing_ok=True)
        if cpu is None:
            _run([sys.executable, *worker], "the host run")
        else:
            root, site = work / "root", work / "site"
            write_cpuinfo(root, cpu, work)
            _run([qemu(work), "-cpu", cpu, "-L", str(root), str(root / "usr" / "bin" / "python3.11"), *worker],
                 f"the emulated run on {cpu}", env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
        stamp.write_text(digests)
    loaded = np.load(target)
    return {"info": json.loads(str(loaded["info"])), "outputs": [loaded[str(i)] for i in range(len(files))]}


def compare(host: np.ndarray, arm: np.ndarray, output: str) -> dict:
    """Label maps: the share of equal pixels. Logits: argmax agreement and max |Δ| / max |logit|."""
    if output == "labels":
        return {"equal": float(np.mean(host == arm))}
    scale = float(np.abs(host).max()) or 1.0
    return {"equal": float(np.mean(host.argmax(-1) == arm.argmax(-1))),
            "max_abs_diff_rel": float(np.abs(host - arm).max()) / scale,
            "values_equal": float(np.mean(host == arm))}


# ---------------------------------------------------------------------------------------------------- table

def percent(share: float) -> str:
    """A share as a percentage with two decimals — three where two would round a difference to 100.00."""
    text = f"{100 * share:.2f}"
    return f"{100 * share:.3f}" if text == "100.00" and share < 1 else text


def table(record: dict) -> str:
    cpus = [c for c in CPUS if any(c in r["arm"] for r in record["rows"])]
    features = {c: next((r["arm"][c]["features"] for r in record["rows"] if c in r["arm"]), []) for c in cpus}
    lines = ["| network | output | " + " | ".join(f"{q}" for q in QUANTIZATIONS) + " |",
             "|---|---|" + "---|" * len(QUANTIZATIONS)]
    for student in (*STUDENTS, *PUBLISHED):
        for output in OUTPUTS:
            rows = {r["quantization"]: r for r in record["rows"]
                    if r["student"] == student and r["output"] == output}
            if not rows:
                continue
            cells = []
            for q in QUANTIZATIONS:
                r = rows.get(q)
                if r is None:
                    cells.append("–")
                    continue
                values = [r["arm"][c]["equal"] for c in cpus if c in r["arm"]]
                cell = " / ".join(percent(v) for v in values)
                if output == "logits":
                    worst = max(r["arm"][c]["max_abs_diff_rel"] for c in cpus if c in r["arm"])
                    cell += f" (Δ ≤ {worst:.1e})"
                cells.append(cell)
            size = next(iter(rows.values())).get("size")
            name = NAMES[student] + (f", {size[0]}×{size[1]}" if student in PUBLISHED and size else "")
            what = {"labels": "labels (bilinear head)", "two_class": "labels (two_class head)"}.get(output, output)
            lines.append(f"| {name} | {what} | " + " | ".join(cells) + " |")
    cpu_text = "; ".join(f"`{c}`: {', '.join(features[c]) or 'NEON only'}" for c in cpus)
    published = (f"; published networks: {PUBLISHED_IMAGES} fabricated street scenes their int8 calibration did not "
                 f"see" if any(r["student"] in PUBLISHED for r in record["rows"]) else "")
    return ("\n".join(lines) + f"\n\n% of pixels equal to the x86 run, per emulated CPU ({' / '.join(cpus)}; "
            f"logits: argmax agreement, and the largest logit difference relative to the largest logit); "
            f"{record['images']} validation images per LR-ASPP student{published}. Emulated CPU features (HWCAP): "
            f"{cpu_text}. {hosts_text(record)}; runtime {record['runtime']}; {record.get('emulator', 'qemu')}.\n")


def host_name(host: dict) -> str:
    """A host as the records name it: "<model> (<features>)" — the model alone does not tell two AMD EPYCs
    with other instruction sets apart."""
    return f"{host['model']} ({', '.join(host['features'])})"


def hosts_text(record: dict) -> str:
    """"Host: <model> (<features>)", or with rows from runs on several hosts each host and the rows it ran."""
    hosts = record.get("hosts", {host_name(record["host"]): record["host"]})
    if len(hosts) == 1:
        return f"Host: {host_name(next(iter(hosts.values())))}"
    parts = []
    for name in hosts:
        ran = [NAMES[s] for s in (*STUDENTS, *PUBLISHED)
               if any(r["student"] == s and r.get("host") == name for r in record["rows"])]
        if ran:
            parts.append(f"{name} ran {', '.join(ran)}")
    return "Hosts: " + "; ".join(parts)


def check(student: str, output: str, inputs: Path, exports: dict, cpus: list[str], work: Path,
          size=None) -> tuple[list[dict], str]:
    """Runs one student's files for ``output`` on this host and every emulated CPU; its rows and the runtime."""
    files = exports["files"]
    out_dir = work / "outputs" / f"{student}_{output}"
    out_dir.mkdir(parents=True, exist_ok=True)
    host = outputs(inputs, list(files.values()), out_dir / "x86.npz", None, work)
    arm = {}
    for cpu in cpus:
        print(f"{student} {output}: running on an emulated {cpu}", flush=True)
        arm[cpu] = outputs(inputs, list(files.values()), out_dir / f"{cpu}.npz", cpu, work)
    kind = "logits" if output == "logits" else "labels"
    rows = []
    for i, quantization in enumerate(files):
        rows.append({"student": student, "output": output, "quantization": quantization, "head": exports["head"],
                     **({"size": list(size)} if size else {}),
                     "arm": {cpu: {**compare(host["outputs"][i], arm[cpu]["outputs"][i], kind),
                                   "features": arm[cpu]["info"]["features"]} for cpu in cpus}})
        print(f"  {quantization}: " + ", ".join(
            f"{cpu} {100 * rows[-1]['arm'][cpu]['equal']:.3f} %" for cpu in cpus), flush=True)
    return rows, f"{host['info']['runtime']} {host['info']['version']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "arm64",
                        help="set-up, exports and outputs (default runs/arm64; not committed)")
    parser.add_argument("--cpus", default=",".join(CPUS), help=f"emulated CPUs (default {','.join(CPUS)})")
    parser.add_argument("--students", default=",".join(STUDENTS),
                        help="LR-ASPP students (default all; empty: none, e.g. with --published)")
    parser.add_argument("--outputs", default=",".join(OUTPUTS), help=f"file outputs (default {','.join(OUTPUTS)})")
    parser.add_argument("--quantizations", default=",".join(QUANTIZATIONS),
                        help=f"exports to check (default {','.join(QUANTIZATIONS)}; the published networks have no "
                             "qat); rows of the others stay as recorded")
    parser.add_argument("--images", type=int, default=16, help="validation images per student (default 16)")
    parser.add_argument("--qat-steps", type=int, default=100, help="QAT fine-tuning steps of the export")
    parser.add_argument("--published", type=Path, metavar="DIR",
                        help="also the SKD authors' Cityscapes ESPNet and ESPNet-C from this folder "
                             "(../shared/reference-weights/skd-cvpr19)")
    parser.add_argument("--published-size", type=published_size, default=(256, 512), metavar="H,W",
                        help="input size of the published networks' files (default 256,512: half their "
                             "evaluation size, which keeps the emulated runs and the logits files small)")
    parser.add_argument("--table-only", action="store_true", help="print the recorded table, run nothing")
    parser.add_argument("--docs", action="store_true", help="write the table into docs/real-size.md")
    args = parser.parse_args(argv)
    from benchmarks.docs_pages import show

    if not args.table_only:
        cpus = args.cpus.split(",")
        students = [s for s in args.students.split(",") if s]
        chosen_outputs = [o for o in args.outputs.split(",") if o]
        if unknown := set(students) - set(STUDENTS):
            parser.error(f"--students: unknown {', '.join(sorted(unknown))}; choose from {', '.join(STUDENTS)}")
        if unknown := set(cpus) - set(CPUS):
            parser.error(f"--cpus: unknown {', '.join(sorted(unknown))}; choose from {', '.join(CPUS)}")
        if unknown := set(chosen_outputs) - set(OUTPUTS):
            parser.error(f"--outputs: unknown {', '.join(sorted(unknown))}; choose from {', '.join(OUTPUTS)}")
        quantizations = [q for q in args.quantizations.split(",") if q]
        if unknown := set(quantizations) - set(QUANTIZATIONS):
            parser.error(f"--quantizations: unknown {', '.join(sorted(unknown))}; choose from "
                         f"{', '.join(QUANTIZATIONS)}")
        if not quantizations:
            parser.error("--quantizations: name at least one")
        published_quantizations = [q for q in quantizations if q in PUBLISHED_QUANTIZATIONS]
        if args.images < 1:
            parser.error("--images must be >= 1")
        if args.published is not None and not args.published.is_dir():
            parser.error(f"--published: {args.published} is not a folder")
        if not students and args.published is None:
            parser.error("nothing to check: name --students or --published")
        from benchmarks.ablation import host_cpu

        published = list(PUBLISHED) if args.published is not None else []
        try:
            args.work.mkdir(parents=True, exist_ok=True)
            emulator = qemu_version(qemu(args.work))
            arm64_root(args.work), arm64_site(args.work)
            rows, runtime = [], None
            headless = set()  # (network, output) whose head cannot be made: recorded rows of it are stale
            for student in students:
                inputs = images_for(student, args.images, args.work)
                for output in chosen_outputs:
                    exports = exported(student, output, args.work, args.qat_steps, quantizations)
                    new, runtime = check(student, output, inputs, exports, cpus, args.work)
                    rows += new
            for name in published if published_quantizations else []:
                inputs = published_images(args.published_size, args.work)
                for output in chosen_outputs:
                    exports = published_exports(name, output, args.published, args.published_size, args.work,
                                                published_quantizations)
                    if not exports["files"]:
                        headless.add((name, output))
                        print(f"{name}: the {output} head cannot work on its logits (it would be the "
                              f"{exports['head']} head's file again); skipped", flush=True)
                        continue
                    new, runtime = check(name, output, inputs, exports, cpus, args.work, args.published_size)
                    rows += new
        except SetupFailed as err:
            print(f"arm64_check: {err}", file=sys.stderr)
            return 2
        from skd_tf.atomic import write_text

        # rows not rerun now stay (the file is one table); rows of other image counts go
        done = {(r["student"], r["output"], r["quantization"]) for r in rows}
        kept = []
        if RESULTS.exists():
            earlier = json.loads(RESULTS.read_text())
            if earlier["images"] == args.images:
                kept = [{"host": host_name(earlier["host"]), **r} for r in earlier["rows"]
                        if (r["student"], r["output"], r["quantization"]) not in done
                        and (r["student"], r["output"]) not in headless]
        host = host_cpu()
        for r in rows:
            r["host"] = host_name(host)
        record = {"images": args.images, "host": host, "runtime": runtime, "emulator": emulator,
                  "rows": kept + rows}
        if kept:  # each row names the host that ran it; the record's host is the latest run's
            record["hosts"] = {**earlier.get("hosts", {host_name(earlier["host"]): earlier["host"]}),
                               host_name(host): host}
        write_text(RESULTS, json.dumps(record, indent=2) + "\n")
    if not RESULTS.exists():
        print("no result recorded yet: run without --table-only", file=sys.stderr)
        return 2
    show(table(json.loads(RESULTS.read_text())), "real-size.md", "arm64-agreement", args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
