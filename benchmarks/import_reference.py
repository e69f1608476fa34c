"""The SKD authors' six ESPNet / ESPNet-C checkpoints: imported, exported to TFLite and checked against PyTorch.

    python -m benchmarks.import_reference ../shared/reference-weights/skd-cvpr19 [--reference-code DIR] [--docs]

For each file: ``skd-tf import`` with its config (configs/{cityscapes,camvid}_espnet[_c].yaml), the torch
network (benchmarks/torch_nets.py; with ``--reference-code`` also the authors' own ``network/ESPnet.py`` from a
checkout of irfanICMLL/structure_knowledge_distillation, branch cvpr_19) loaded strictly from the same file,
then on natural photos at the evaluation size (512×1024 Cityscapes, 360×480 CamVid): Keras vs PyTorch logits,
and the labels of PyTorch fp32, Keras, TFLite float32, float16, dynamic (int8 weights) and int8 — twice: with
the extremes and with the 99.99th percentile as activation ranges, the two files `skd-tf export` chooses between
(int8 calibrated on fabricated street scenes, benchmarks/cityscapes_fabric.py, never on the photos it is checked
on). Each photo is fed as each network expects: PyTorch the reference loader's BGR minus its means over its stds,
Keras and TFLite the pipeline's RGB (the conversion is inside the imported model). Labels are compared at the
input size (logits upsampled bilinearly with align_corners as the SKD code does, then argmax; before 2026-12-06
with half-pixel centres, which changes the ESPNet-C rows only). Latency: the median of ``skd-tf benchmark``'s
runs of the label files, 1 and 2 threads (``--retime``: every file again, in ``--rounds`` interleaved rounds, on
an idle machine). Writes benchmarks/results/import_reference.json and, with ``--docs``, the table of
docs/published-weights.md.

The photos: every ``--images`` file, by default the colour photos shipped inside installed packages
(matplotlib's grace_hopper.jpg; scikit-image's astronaut, chelsea, coffee, motorcycle_left/right, rocket
when scikit-image is installed: pip install scikit-image).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from benchmarks.cityscapes_fabric import street_scenes  # noqa: E402
from benchmarks.phone_students import export_file  # noqa: E402
from skd_tf.export.config import AUTO_PERCENTILE, QUANTIZATIONS as EXPORT_QUANTIZATIONS  # noqa: E402

# (file under the folder, config, decoder, classes, evaluation size)
FILES = [
    ("cityscapes/ESPNet_Ours_64.pth", "cityscapes_espnet", True, 19, (512, 1024)),
    ("cityscapes/ESPNet_C_Ours_60.pth", "cityscapes_espnet_c", False, 19, (512, 1024)),
    ("camvid/espnet/base_57.8.pth", "camvid_espnet", True, 11, (360, 480)),
    ("camvid/espnet/SD+KD+CITY_65.1.pth", "camvid_espnet", True, 11, (360, 480)),
    ("camvid/espnet-c/BASE56.7.pth", "camvid_espnet_c", False, 11, (360, 480)),
    ("camvid/espnet-c/OURS60.3.pth", "camvid_espnet_c", False, 11, (360, 480)),
]
PACKAGE_PHOTOS = [("matplotlib", "mpl-data/sample_data/grace_hopper.jpg")] + [
    ("skimage", f"data/{name}") for name in ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png",
                                             "motorcycle_right.png", "rocket.jpg")]
QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
# the int8 file again with activation ranges at this percentile (`skd-tf export --calibration-percentile`): the
# other candidate of the default, calibration_ranges auto
PERCENTILE = AUTO_PERCENTILE
# each exported file: (record key, quantization, calibration percentile)
VARIANTS = [(q, q, None) for q in QUANTIZATIONS] + [(f"int8_p{PERCENTILE}", "int8", PERCENTILE)]
RESULTS = ROOT / "benchmarks" / "results" / "import_reference.json"


def int8_ranges(text: str) -> str:
    """A benchmark's ``--calibration-ranges``: ``extremes``, ``mean_extremes`` (`skd-tf export
    --calibration-ranges`) or ``pP``, the P-th percentile (`--calibration-percentile P`, 50 < P < 100);
    SystemExit otherwise."""
    if text in ("extremes", "mean_extremes"):
        return text
    try:
        percentile = float(text.removeprefix("p"))
    except ValueError:
        percentile = None
    if not text.startswith("p") or percentile is None or not 50 < percentile < 100:
        raise SystemExit(f"--calibration-ranges {text}: expected extremes, mean_extremes or pP with 50 < P < 100, "
                         f"e.g. p99.99")
    return f"p{percentile:g}"


def add_int8_arguments(parser) -> None:
    """A benchmark's int8 options, as `skd-tf export` names them: ``--calibration-ranges`` (``int8_ranges``) and
    ``--bias-correction-samples``; each setting is recorded as its own entry (``int8_key``)."""
    parser.add_argument("--calibration-ranges", type=int8_ranges, default="extremes",
                        help="int8's activation ranges: extremes, mean_extremes (export.calibration_ranges) or pP, "
                             "the P-th percentile (export.calibration_percentile); each its own entry")
    parser.add_argument("--bias-correction-samples", type=int, default=0, metavar="N",
                        help="int8's biases corrected on N calibration images (export.bias_correction_samples; "
                             "default: %(default)s, off); each N its own entry")


def int8_export_options(ranges: str, bias_correction: int = 0) -> dict:
    """The `skd-tf export` settings of ``ranges`` (``int8_ranges``) and biases corrected on ``bias_correction``
    images (0: not; settings of the export's defaults are left out)."""
    options = ({"calibration_percentile": float(ranges[1:])} if ranges.startswith("p")
               else {"calibration_ranges": ranges})
    return {**options, "bias_correction_samples": bias_correction} if bias_correction else options


def int8_key(ranges: str, bias_correction: int = 0) -> str:
    """The record key of an int8 file exported with ``ranges`` (``int8_ranges``) and its biases corrected on
    ``bias_correction`` images (0: not): ``int8`` for the extremes, ``int8_mean_extremes``, ``int8_p99.99``,
    ``int8_p99.99_bc32``."""
    return ("int8" if ranges == "extremes" else f"int8_{ranges}") + (f"_bc{bias_correction}" if bias_correction else "")


def ranges_shown(ranges: str, bias_correction: int = 0) -> str:
    """How a table names an int8 row's ``ranges`` (``int8_ranges``) and bias correction (``int8_key``)."""
    if ranges.startswith("p"):
        how = [f"ranges at the {ranges[1:]}th percentile"]
    else:
        how = {"extremes": [], "mean_extremes": ["mean of each image's extremes"]}[ranges]
    how += [f"biases corrected on {bias_correction} images"] if bias_correction else []
    return f"int8 ({', '.join(how)})" if how else "int8"


def by_kind(quantizations: dict) -> list:
    """``quantizations``' (record key, facts) pairs grouped by kind — float32, float16, dynamic, int8 …, qat …, in
    the order of `skd-tf export`'s quantizations — each kind in the order it was recorded."""
    return sorted(quantizations.items(), key=lambda item: EXPORT_QUANTIZATIONS.index(item[0].split("_")[0]))


def chosen_files(folder: Path, files: str | None, entries: list, kind: str) -> list[str]:
    """The checkpoint paths of ``files`` (comma-separated; None: every one of ``entries``), each checked to be one
    of ``entries`` (``kind`` names them in the error) and to be in ``folder``."""
    chosen = files.split(",") if files else [entry[0] for entry in entries]
    unknown = sorted(set(chosen) - {entry[0] for entry in entries})
    if unknown:
        raise SystemExit(f"--files: not a {kind} checkpoint of the set: {', '.join(unknown)}")
    for rel in chosen:
        if not (folder / rel).is_file():
            raise SystemExit(f"{folder / rel} not found (the SKD authors' checkpoints: docs/published-weights.md)")
    return chosen


def json_records(results: Path, fresh: bool):
    """A script's records (``{}`` when ``fresh`` or none yet) and the function that writes them back whole."""
    records = {} if fresh or not results.is_file() else json.loads(results.read_text())

    def save():
        from skd_tf.atomic import write_text

        write_text(results, json.dumps(records, indent=1) + "\n")

    return records, save


def file_stem(rel: str) -> str:
    """The name the imported and exported files of a checkpoint get in --out."""
    return rel.replace("/", "_").replace("+", "p").removesuffix(".pth")


def config_of(name: str):
    from skd_tf.config import load_config

    return load_config(ROOT / "configs" / f"{name}.yaml")


def package_photos() -> list[Path]:
    found = []
    for package, rel in PACKAGE_PHOTOS:
        spec = importlib.util.find_spec(package)
        if spec and spec.origin and (Path(spec.origin).parent / rel).is_file():
            found.append(Path(spec.origin).parent / rel)
    return found


def chosen_photos(images: list[str] | None) -> list[Path]:
    """The ``--images`` files, else the photos shipped in installed packages; exits when there are none."""
    photos = [Path(p) for p in images] if images else package_photos()
    if not photos:
        raise SystemExit("no photos: pass --images or pip install scikit-image")
    if not images and len(photos) < len(PACKAGE_PHOTOS):
        # the docs table is made on all of them: a run on fewer is not comparable with it
        print(f"warning: {len(photos)} of the {len(PACKAGE_PHOTOS)} package photos found (pip install scikit-image "
              f"for the rest, which the table in docs/published-weights.md was made on)", file=sys.stderr, flush=True)
    return photos


def load_photos(paths: list[Path], size) -> np.ndarray:
    """uint8 RGB N×H×W×3, each photo resized bilinearly to ``size`` (as the reference loader's cv2.resize)."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((size[1], size[0]), Image.BILINEAR))
                     for p in paths])


def torch_network(module, decoder: bool, classes: int, state: dict):
    import torch

    if module is None:
        from benchmarks.torch_nets import ESPNet

        net = ESPNet(classes, decoder=decoder)
    else:
        net = (module.ESPNet if decoder else module.ESPNet_Encoder)(classes, p=2, q=8)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return net.eval()


def torch_logits(net, rgb: np.ndarray, convention) -> np.ndarray:
    """NHWC logits of ``net`` on uint8 RGB photos fed as the reference loader feeds them."""
    import torch

    order = [2, 1, 0] if convention.channel_order == "bgr" else [0, 1, 2]
    x = (rgb[..., order].astype(np.float32) * convention.value_scale - np.asarray(convention.mean, np.float32)) \
        / np.asarray(convention.std, np.float32)
    out = []
    with torch.no_grad():
        for image in x:
            out.append(net(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None])))[0][0].numpy())
    return np.stack(out).transpose(0, 2, 3, 1)


def labels_at(logits: np.ndarray, size, align_corners: bool) -> np.ndarray:
    """Labels at ``size``: logits upsampled bilinearly (as the network's code did: ``align_corners``), argmax."""
    from skd_tf.models.logits import resize_bilinear

    if tuple(logits.shape[1:3]) != tuple(size):
        logits = resize_bilinear(logits, size, align_corners).numpy()
    return logits.argmax(-1).astype(np.uint8)


def boundary_share(reference: np.ndarray, wrong: np.ndarray) -> float | None:
    """Share of the wrong pixels that lie on a label boundary of ``reference`` (a 3×3 neighbour differs)."""
    if not wrong.any():
        return None
    padded = np.pad(reference, ((0, 0), (1, 1), (1, 1)), mode="edge")
    edge = np.zeros(reference.shape, bool)
    h, w = reference.shape[1:]
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            edge |= padded[:, dy:dy + h, dx:dx + w] != reference
    return float((edge & wrong).sum() / wrong.sum())


def tflite_labels(path: Path, rgb: np.ndarray) -> np.ndarray:
    from skd_tf.benchmark.runtime import make_interpreter, run

    interpreter = make_interpreter(str(path), 2)
    return np.stack([run(interpreter, image[None].astype(np.float32))[0] for image in rgb]).astype(np.uint8)


def latency(path: Path, threads: int) -> float:
    """The median latency (ms) of ``path`` on ``threads`` threads, in a fresh process (``skd-tf benchmark``'s)."""
    from skd_tf.benchmark.measure import Settings, run_isolated

    settings = Settings(warmup=3, runs=20, min_seconds=3.0)
    return float(run_isolated(str(path), threads, True, settings)["latency_ms"]["median"])


def retime(record: dict, out: Path, rounds: int) -> None:
    """Every recorded file in ``out`` timed again in ``rounds`` interleaved rounds (each round times every file
    with 1 and 2 threads once); ``latency_ms`` becomes the median of the rounds, ``latency_rounds_ms`` keeps
    them. Interleaving spreads a slow phase of the machine over all files instead of a few."""
    files = []  # (the file's record, its path), every one checked before any is timed
    for row in record["rows"]:
        for key, *_ in VARIANTS:
            path = out / f"{file_stem(row['file'])}_{key}.tflite"
            if key not in row or not path.is_file():
                raise SystemExit(f"{path} is missing: run without --retime first")
            files.append((row[key], path))
    for facts, _ in files:
        facts["latency_rounds_ms"] = {"1": [], "2": []}
    for turn in range(rounds):
        for facts, path in files:
            for threads in ("1", "2"):
                facts["latency_rounds_ms"][threads].append(latency(path, int(threads)))
        print(f"round {turn + 1} of {rounds} timed", flush=True)
    for facts, _ in files:
        facts["latency_ms"] = {t: float(np.median(times)) for t, times in facts["latency_rounds_ms"].items()}


def check_file(folder: Path, entry, photos: list[Path], reference, out: Path, calibration_count: int,
               variants=VARIANTS) -> dict:
    from skd_tf.importing import import_checkpoint
    from skd_tf.models import at_input_size, load_model, logits_align_corners
    from skd_tf.models.torch_checkpoint import read_state_dict

    rel, config, decoder, classes, size = entry
    cfg = config_of(config)
    stem = file_stem(rel)
    keras_path = out / f"{stem}.keras"
    imported = import_checkpoint(cfg, str(folder / rel), keras_path)
    state = read_state_dict(folder / rel)
    network = load_model(keras_path, cfg.data)
    aligned = logits_align_corners(network)  # the label head resizes as the network's code did
    network = at_input_size(network, size)
    convention = cfg.model.input_convention
    rgb = load_photos(photos, size)
    twin = torch_logits(torch_network(None, decoder, classes, state), rgb, convention)
    row = {"file": rel, "config": config, "input_size": list(size), "tensors": imported["tensors"],
           "parameters": imported["parameters"], "photos": len(photos)}
    if reference is not None:
        authors = torch_logits(torch_network(reference, decoder, classes, state), rgb, convention)
        row["torch_twin_vs_authors_max_abs"] = float(np.abs(authors - twin).max())
    pipeline = (rgb.astype(np.float32) - np.asarray(cfg.data.mean, np.float32)) / np.asarray(cfg.data.std, np.float32)
    keras = np.concatenate([network(pipeline[i:i + 1], training=False)["logits"].numpy() for i in range(len(rgb))])
    row["logits_max_abs_diff"] = float(np.abs(keras - twin).max())
    row["logits_max_abs"] = float(np.abs(twin).max())
    torch_labels = labels_at(twin, size, aligned)
    row["keras_vs_torch_labels"] = float((labels_at(keras, size, aligned) == torch_labels).mean())
    calibration = street_scenes(calibration_count, size)
    for key, quantization, percentile in variants:
        path = out / f"{stem}_{key}.tflite"
        start = time.time()
        # export_one's conversion, calibrated on fabricated scenes (export_one draws from the config's training
        # data, which is the user's Cityscapes / CamVid and not on this machine)
        export_file(network, size, quantization, "labels", calibration, path, mean=cfg.data.mean, std=cfg.data.std,
                    align_corners=aligned, calibration_percentile=percentile)
        labels = tflite_labels(path, rgb)
        wrong = labels != torch_labels
        row[key] = {"file_bytes": path.stat().st_size, "labels_vs_torch": float(1 - wrong.mean()),
                    "wrong_on_boundaries": boundary_share(torch_labels, wrong),
                    "latency_ms": {str(t): latency(path, t) for t in (1, 2)},
                    "seconds": round(time.time() - start, 1)}
    return row


DIAGNOSIS_LAYERS = ("b1.act", "level2_0.act", "b2.act", "level3_0.act", "b3.act", "logits")
NOISE_LEVELS = (0.5, 2.0)  # ± grey levels of uniform input noise: 0.5 is what rounding to uint8 does


def _int8_file(fn, inputs: np.ndarray, denylisted_ops=()) -> bytes:
    """``fn`` converted to int8 (calibrated on ``inputs``) as `skd-tf export` converts it, float output; with
    ``denylisted_ops``, the ops of those types left in float (TF's QuantizationDebugger, float input)."""
    import tensorflow as tf

    from skd_tf.export.calibration import corrected_calibration
    from skd_tf.export.convert import convert

    def representative():
        return ([x[None]] for x in inputs)

    if not denylisted_ops:
        return convert(fn, "int8", representative, float_output=False)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(denylisted_ops))
    with corrected_calibration():  # the activation ranges convert() records
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=representative,
                                                             debug_options=options)
        return debugger.get_nondebug_quantized_model()


def _outputs(content: bytes, inputs: np.ndarray) -> tuple[np.ndarray, set[str]]:
    """The outputs of the TFLite model ``content`` on each of ``inputs`` (concatenated), and its op types."""
    from skd_tf.benchmark.runtime import make_interpreter, op_list, run

    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(content)
        f.flush()
        interpreter = make_interpreter(f.name, 2)
        ops = {op["op"] for op in op_list(interpreter)}
        return np.concatenate([run(interpreter, x[None]) for x in inputs]), ops


def int8_error_growth(network, cfg, calibration: np.ndarray, photos: np.ndarray) -> dict:
    """Where int8 loses ESPNet, three ways, on the photos at the diagnosis size:

    * ``relative_rms_error``: the network cut after each stage, converted to full int8 alone (float input and
      output), relative RMS error of that stage's output against Keras;
    * ``labels_with_one_op_type_int8``: the whole network converted with only the ops of one type in int8 and
      every other op in float — the share of Keras' labels each op type alone keeps;
    * ``labels_under_input_noise``: the float network's labels kept when every input value gets uniform noise
      of ± ``NOISE_LEVELS`` grey levels (how much a perturbation of the int8 input's size already moves it);
    * ``labels_with_int8_weights_only``: ``int8_weights_only``."""
    import keras
    import tensorflow as tf

    from skd_tf.export.integer_graph import for_integer_export

    original, network = network, for_integer_export(network)  # as `skd-tf export` converts it (int8)

    def normalise(raw):
        return (raw.astype(np.float32) - np.asarray(cfg.data.mean, np.float32)) / np.asarray(cfg.data.std, np.float32)

    inputs, test = normalise(calibration), normalise(photos)

    def concrete(model):
        return tf.function(lambda x: model(x, training=False),
                           input_signature=[tf.TensorSpec([1, *inputs.shape[1:]], tf.float32)]).get_concrete_function()

    growth, narrow = {}, {}
    for name in DIAGNOSIS_LAYERS:
        part = keras.Model(network.input, network.get_layer(name).output)
        quantized, _ = _outputs(_int8_file(concrete(part), inputs), test)
        reference = part(test, training=False).numpy()
        growth[name] = float(np.sqrt(((quantized - reference) ** 2).mean()) / reference.std())
        narrow[name] = narrow_channels(part.predict(inputs, batch_size=1, verbose=0), reference)
    logits = keras.Model(network.input, network.output["logits"])
    reference = logits.predict(test, batch_size=1, verbose=0).argmax(-1)
    full, op_types = _outputs(_int8_file(concrete(logits), inputs), test)
    one_type = {"all": float((full.argmax(-1) == reference).mean())}
    quantizable = sorted(op_types - {"QUANTIZE", "DEQUANTIZE", "DELEGATE"})
    for kept in quantizable:
        content = _int8_file(concrete(logits), inputs, [op for op in quantizable if op != kept])
        one_type[kept] = float((_outputs(content, test)[0].argmax(-1) == reference).mean())
    rng = np.random.default_rng(0)
    std = np.asarray(cfg.data.std, np.float32)
    noise = {}
    for level in NOISE_LEVELS:
        noisy = test + (rng.uniform(-level, level, test.shape) / std).astype(np.float32)
        noise[str(level)] = float((logits.predict(noisy, batch_size=1, verbose=0).argmax(-1) == reference).mean())
    return {"relative_rms_error": growth, "narrow_channels": narrow, "labels_with_one_op_type_int8": one_type,
            "labels_under_input_noise": noise, "qat_fidelity": qat_fidelity(original, inputs, test, reference),
            "labels_with_int8_weights_only": int8_weights_only(original, network, test, reference)}


def _rounded(values: np.ndarray, channel_axes: tuple[int, ...] | None) -> np.ndarray:
    """``values`` rounded to symmetric int8, one scale per index along ``channel_axes`` (None: per tensor)."""
    keep = () if channel_axes is None else tuple(a % values.ndim for a in channel_axes)
    scale = np.abs(values).max(axis=tuple(a for a in range(values.ndim) if a not in keep), keepdims=True) / 127
    scale = np.where(scale == 0, 1.0, scale)
    return np.round(values / scale) * scale


def int8_weights_only(network, integer_network, test: np.ndarray, reference: np.ndarray) -> dict:
    """The share of the float labels ``reference`` kept on ``test`` when only weights are rounded as an int8
    file stores them and every activation stays float: ``convolutions``, every convolution kernel per output
    channel (the finest TFLite has); ``unfolded_batch_norms_as_mul``, the batch norms the converter cannot
    fold (those ``integer_network`` holds as ``BatchNormAsDepthwise``) as per-tensor MUL and ADD constants —
    as int8 files held them before that rewrite, which stores each factor per channel, exactly."""
    import keras

    from skd_tf.models.layers import BatchNormAsDepthwise

    unfolded = {layer.name for layer in integer_network.layers if isinstance(layer, BatchNormAsDepthwise)}
    original = [layer.get_weights() for layer in network.layers]

    def kept(rounding) -> float:
        for layer, weights in zip(network.layers, original):
            if weights:
                layer.set_weights(rounding(layer, [w.copy() for w in weights]))
        labels = network.predict(test, batch_size=1, verbose=0)["logits"].argmax(-1)
        for layer, weights in zip(network.layers, original):
            if weights:
                layer.set_weights(weights)
        return float((labels == reference).mean())

    def convolutions(layer, weights):
        if isinstance(layer, keras.layers.DepthwiseConv2D):  # kernel h × w × in × multiplier
            weights[0] = _rounded(weights[0], (2, 3))
        elif isinstance(layer, keras.layers.Conv2DTranspose):  # kernel h × w × out × in
            weights[0] = _rounded(weights[0], (2,))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            weights[0] = _rounded(weights[0], (-1,))
        return weights

    def batch_norms_as_mul(layer, weights):
        if layer.name in unfolded:  # y = k · x + c with k and c each rounded per tensor
            gamma, beta, mean, variance = weights
            root = np.sqrt(variance + layer.epsilon)
            k = _rounded(gamma / root, None)
            weights = [k * root, _rounded(beta - mean * gamma / root, None) + mean * k, mean, variance]
        return weights

    return {"convolutions": kept(convolutions), "unfolded_batch_norms_as_mul": kept(batch_norms_as_mul)}


def narrow_channels(calibration_values: np.ndarray, values: np.ndarray) -> dict:
    """How many of a tensor's live channels (std > 1e-6 on ``values``) vary by less than two int8 steps, the
    step being what per-tensor int8 gives it: (max − min) / 255 over ``calibration_values``."""
    step = (calibration_values.max() - min(calibration_values.min(), 0.0)) / 255
    spread = values.reshape(-1, values.shape[-1]).std(axis=0)
    live = spread > 1e-6
    return {"channels": int(spread.size), "live": int(live.sum()),
            "below_two_steps": int((live & (spread < 2 * step)).sum()), "step": float(step)}


def qat_fidelity(network, inputs: np.ndarray, test: np.ndarray, reference: np.ndarray) -> dict:
    """QAT's starting point on ``test``: the fake-quantized model (tfmot, ranges calibrated on ``inputs`` as
    `skd-tf export --quantization qat` does before fine-tuning) against the float labels ``reference``, and its
    converted int8 file against the fake-quantized model — how faithfully QAT would train what the file runs."""
    import tensorflow as tf

    from skd_tf.export.convert import ServingSpec, convert, serving_function
    from skd_tf.export.qat import calibrate_ranges, qat_logits_fn, quantization_aware

    model = quantization_aware(network)
    calibrate_ranges(model, (tf.constant(inputs[i:i + 4]) for i in range(0, len(inputs), 4)))
    simulated = np.concatenate([model(x[None], training=False).numpy() for x in test]).argmax(-1)
    spec = ServingSpec(tuple(test.shape[1:3]), int(network.output["logits"].shape[-1]), output="logits",
                       preprocess=False)
    content = convert(serving_function(qat_logits_fn(model), spec, integer_model=True), "qat",
                      lambda: ([x[None]] for x in inputs), float_output=False)
    converted = _outputs(content, test)[0].argmax(-1)
    return {"fake_quant_vs_float": float((simulated == reference).mean()),
            "file_vs_fake_quant": float((converted == simulated).mean()),
            "file_vs_float": float((converted == reference).mean())}


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def table(record: dict) -> str:
    kinds = " / ".join(QUANTIZATIONS) + f" / int8 P{PERCENTILE}"
    lines = [f"{record['host']}; {record['photos']} natural photos ({', '.join(record['photo_names'])}), int8 "
             f"calibrated on {record['calibration']} fabricated street scenes.", "",
             "| file | params | Keras vs PyTorch: max \\|Δ logit\\| / max \\|logit\\|, labels | TFLite labels vs "
             f"PyTorch: {kinds} | size {' / '.join(QUANTIZATIONS)} | latency {kinds}, 1 thread | 2 threads |",
             "|---|---|---|---|---|---|---|"]
    for row in record["rows"]:
        files = [row.get(key) for key, *_ in VARIANTS]  # a record made before the percentile file: "–"
        lines.append(
            f"| {row['file']} ({row['input_size'][0]}×{row['input_size'][1]}) | {row['parameters'] / 1e3:.0f} k | "
            f"{row['logits_max_abs_diff'] / row['logits_max_abs']:.1e}, {percent(row['keras_vs_torch_labels'])} | "
            + " / ".join(percent(f and f["labels_vs_torch"]) for f in files) + " | "
            + " / ".join(f"{f['file_bytes'] / 2**20:.2f}" if f else "–" for f in files[:len(QUANTIZATIONS)])
            + " MiB | "
            + " / ".join(f"{f['latency_ms']['1']:.0f}" if f else "–" for f in files) + " ms | "
            + " / ".join(f"{f['latency_ms']['2']:.0f}" if f else "–" for f in files) + " ms |")
    if "int8_diagnosis" in record:
        d = record["int8_diagnosis"]
        growth = ", ".join(f"{name} {100 * value:.0f} %" for name, value in d["relative_rms_error"].items())
        alone = d["labels_with_one_op_type_int8"]
        types = ", ".join(f"{op} {percent(value)}" for op, value in sorted(alone.items(), key=lambda kv: -kv[1])
                          if op != "all")
        noise = " and ".join(f"±{level} grey levels {percent(value)}"
                             for level, value in d["labels_under_input_noise"].items())
        lines += ["", f"Where int8 loses ({d['file']}, {d['input_size'][0]}×{d['input_size'][1]}, the photos, against "
                      f"Keras' labels): relative RMS error of the int8 output after each stage (each cut converted "
                      f"alone): {growth}. Labels kept with only one op type in int8 and every other op in float: "
                      f"{types} (all in int8: {percent(alone['all'])}). Under uniform input noise the float network "
                      f"keeps {noise} of its labels: it amplifies perturbations of the size of int8 rounding, and "
                      f"every op type's rounding costs labels."]
        if "narrow_channels" in d:
            narrow = ", ".join(f"{name} {n['below_two_steps']}/{n['live']}"
                               for name, n in d["narrow_channels"].items())
            qat = d["qat_fidelity"]
            lines += ["", f"Why: per-tensor int8 gives every channel of a tensor the step its widest channels "
                          f"need. Live channels whose spread on the photos (std) is below two int8 steps of their "
                          f"tensor: {narrow}: rounding alone is 14 % or more of their signal, a one-step shift from a "
                          f"requantization 50 % or more. QAT starts no better: its fake-quantized model (ranges "
                          f"calibrated on the same scenes) keeps {percent(qat['fake_quant_vs_float'])} of the "
                          f"float labels, and the int8 file converted from it agrees with it on "
                          f"{percent(qat['file_vs_fake_quant'])} "
                          f"({percent(qat['file_vs_float'])} with the float labels): on channels this narrow the "
                          f"file's requantizations and the fake-quantized graph round differently, so fine-tuning the "
                          f"one would not train the other."]
        if "labels_with_int8_weights_only" in d:
            weights = d["labels_with_int8_weights_only"]
            lines += ["", f"Weights alone (every activation float, only weights rounded as the int8 file stores "
                          f"them): the convolution kernels, per output channel, keep "
                          f"{percent(weights['convolutions'])} of the labels; the batch norms after concatenations "
                          f"and sums as per-tensor MUL and ADD constants (int8 files before they became depthwise "
                          f"convolutions) {percent(weights['unfolded_batch_norms_as_mul'])}."]
    if any("torch_twin_vs_authors_max_abs" in row for row in record["rows"]):
        worst = max(row.get("torch_twin_vs_authors_max_abs", 0.0) for row in record["rows"])
        lines += ["", f"The authors' own network code (`--reference-code`) and benchmarks/torch_nets.py give logits "
                      f"that differ by at most {worst:.1e} on these photos."]
    return "\n".join(lines)


def diagnosis(out: Path, photos: list[Path], size_text: str) -> dict:
    """``int8_error_growth`` of the first file's import in ``out`` at ``size_text`` (HxW)."""
    from skd_tf.models import at_input_size, load_model

    rel, config, *_ = FILES[0]
    cfg = config_of(config)
    size = tuple(int(v) for v in size_text.lower().split("x"))
    path = out / f"{file_stem(rel)}.keras"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run with the checkpoint folder first")
    network = at_input_size(load_model(path, cfg.data), size)
    return {"file": rel, "input_size": list(size),
            **int8_error_growth(network, cfg, street_scenes(32, size), load_photos(photos, size))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", help="the skd-cvpr19 folder (cityscapes/, camvid/)")
    parser.add_argument("--reference-code", help="a checkout of the SKD code (branch cvpr_19): also compare with "
                                                 "its network/ESPnet.py")
    parser.add_argument("--images", nargs="*", help="photos to check on (default: those shipped in packages)")
    parser.add_argument("--calibration", type=int, default=100, help="street scenes for int8 calibration")
    parser.add_argument("--out", default="runs/import_reference", help="where the .keras/.tflite files go")
    parser.add_argument("--docs", "--readme", dest="docs", action="store_true",
                        help="write the table into docs/published-weights.md (--readme: the old name)")
    parser.add_argument("--diagnosis-size", default="256x512",
                        help="HxW at which the first file's int8 error is followed stage by stage")
    parser.add_argument("--table-only", action="store_true", help="print (and --docs) the recorded table")
    parser.add_argument("--diagnosis-only", action="store_true",
                        help="only redo the int8 diagnosis on the first imported file in --out (no checkpoints needed)")
    parser.add_argument("--rounds", type=int, default=3, help="--retime's interleaved rounds (default 3)")
    parser.add_argument("--retime", action="store_true",
                        help="only re-measure the latency of the recorded files in --out (on an idle machine)")
    parser.add_argument("--variants", help="comma-separated files to export again, of "
                                           f"{', '.join(k for k, *_ in VARIANTS)} (default: all, and the diagnosis); "
                                           "the others keep their records")
    args = parser.parse_args()
    variants = VARIANTS
    if args.variants:
        chosen = {v.strip() for v in args.variants.split(",") if v.strip()}
        unknown = chosen - {k for k, *_ in VARIANTS}
        if unknown:
            parser.error(f"--variants: unknown {', '.join(sorted(unknown))}")
        variants = [v for v in VARIANTS if v[0] in chosen]
    if args.table_only:
        text = table(json.loads(RESULTS.read_text()))
    elif args.diagnosis_only:
        from skd_tf.console import QUIET, start_tensorflow

        start_tensorflow(QUIET)
        record = json.loads(RESULTS.read_text())
        photos = chosen_photos(args.images)
        record["int8_diagnosis"] = diagnosis(Path(args.out), photos, args.diagnosis_size)
        RESULTS.write_text(json.dumps(record, indent=2) + "\n")
        text = table(record)
    elif args.retime:
        from skd_tf.benchmark.device import host_device

        record = json.loads(RESULTS.read_text())
        retime(record, Path(args.out), args.rounds)
        record["host"] = host_device()
        RESULTS.write_text(json.dumps(record, indent=2) + "\n")
        text = table(record)
    else:
        if not args.folder:
            parser.error("the checkpoint folder is required (or --table-only)")
        from skd_tf.console import QUIET, start_tensorflow

        start_tensorflow(QUIET)
        from skd_tf.benchmark.device import host_device

        folder = Path(args.folder)
        missing = [rel for rel, *_ in FILES if not (folder / rel).is_file()]
        if missing:
            raise SystemExit(f"{folder} lacks {', '.join(missing)} (branch cvpr_19 of the SKD repository, "
                             f"folder checkpoint/; see docs/published-weights.md)")
        photos = chosen_photos(args.images)
        reference = None
        if args.reference_code:
            spec = importlib.util.spec_from_file_location("skd_reference_espnet",
                                                          Path(args.reference_code) / "network" / "ESPnet.py")
            reference = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(reference)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        record = json.loads(RESULTS.read_text()) if args.variants else None
        if record and (record["photo_names"] != [p.name for p in photos] or record["calibration"] != args.calibration):
            raise SystemExit(f"{RESULTS} was made on other photos or another calibration: run without --variants")
        rows = []
        for entry in FILES:
            print(f"{entry[0]} ...", flush=True)
            rows.append(check_file(folder, entry, photos, reference, out, args.calibration, variants))
            print(json.dumps(rows[-1]), flush=True)
        if record:  # the chosen files' entries replace theirs in the recorded rows, the host is this one
            for old, new in zip(record["rows"], rows):
                old.update({key: new[key] for key, *_ in variants})
                for gone in [key for key, value in old.items() if isinstance(value, dict) and "file_bytes" in value
                             and key not in {k for k, *_ in VARIANTS}]:
                    del old[gone]  # a file this script no longer makes
            record["host"] = host_device()
        else:
            record = {"host": host_device(), "photos": len(photos), "photo_names": [p.name for p in photos],
                      "calibration": args.calibration, "rows": rows}
            record["int8_diagnosis"] = diagnosis(out, photos, args.diagnosis_size)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(record, indent=2) + "\n")
        text = table(record)
    from benchmarks.docs_pages import show

    show(text, "published-weights.md", "import_reference", args.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
