"""The export stage: every quantization of the synthetic student architecture through the CLI,
QAT on every shipped student architecture, the tf_keras mirror, the interpreter I/O helpers and
each bad input (with no .tflite left behind)."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

from skd_tf.benchmark import runtime
from skd_tf.export.convert import ServingSpec, UnsupportedOpsError, convert, keras_logits_fn, serving_function
from skd_tf.cli import main as cli_main
from skd_tf.config import config_from_dict
from skd_tf.models import build_model
from tests.conftest import tiny_config_dict
from small_networks import small_segmenter


def _save_student(tmp_path, **model):
    raw = tiny_config_dict(tmp_path, **model)
    cfg = config_from_dict(raw)
    net = build_model(cfg.model, cfg.data.num_classes, tuple(cfg.data.crop_size))
    path = tmp_path / "student.keras"
    net.save(path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    return cfg, path


def test_all_quantizations_of_the_synthetic_student_architecture(tmp_path, capsys):
    """float32, float16, dynamic, int8 (activation ranges at percentiles) and QAT through `skd-tf export`,
    checked in export.json."""
    cfg, ckpt = _save_student(tmp_path)  # PSPNet on dilated ResNet-18, as configs/synthetic_student.yaml
    # QAT's teacher: only its logits are read (tests/small_networks.py's network, traced into each QAT step)
    keras.utils.set_random_seed(0)
    small_segmenter(cfg.data.num_classes, 8, size=tuple(cfg.data.crop_size), name="teacher").save(
        tmp_path / "teacher.keras")
    out = tmp_path / "export"
    assert cli_main(["export", "--config", str(tmp_path / "config.yaml"), "--checkpoint", str(ckpt),
                     "--quantization", "float32,float16,dynamic,int8,qat", "--out", str(out),
                     "--calibration-samples", "4", "--calibration-percentile", "99.9", "--qat-steps", "2",
                     "--eval-limit", "3", "--teacher", str(tmp_path / "teacher.keras"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "export.json").read_text())
    exports = record["exports"]
    assert sorted(exports) == ["dynamic", "float16", "float32", "int8", "qat"]
    for q, entry in exports.items():
        assert Path(entry["file"]).stat().st_size == entry["file_bytes"]
        assert entry["parity"]["num_images"] == 3
        assert 0.0 <= entry["parity"]["miou_tflite"] <= 1.0
        assert entry["deployability"]["ops"]["CONV_2D"] > 0
        assert "Flex" not in " ".join(entry["deployability"]["ops"])
        assert entry["deployability"]["output"]["dtype"] == "uint8"  # the label head
        assert entry["deployability"]["output"]["shape"] == [1, 32, 32]
    assert exports["float32"]["parity"]["max_abs_logit_diff"] <= 1e-4
    assert exports["float32"]["parity"]["argmax_agreement"] > 0.999
    assert exports["float32"]["deployability"]["input"]["dtype"] == "uint8"  # raw RGB, normalisation baked in
    for q in ("int8", "qat"):
        deploy = exports[q]["deployability"]
        assert deploy["all_integer"] is True and deploy["float_ops"] == []
        assert deploy["input"]["dtype"] == "uint8"
        assert deploy["input"]["quantization"] == {"scale": 1.0, "zero_point": 0}
    assert exports["qat"]["qat"]["steps"] == 2 and exports["qat"]["qat"]["teacher"].endswith("teacher.keras")
    # int8's ranges from percentiles; QAT's come from its fine-tuning
    assert exports["int8"]["calibration_percentile"] == 99.9 and "calibration_percentile" not in exports["qat"]
    assert exports["int8"]["file_bytes"] < 0.5 * exports["float32"]["file_bytes"]
    for q, entry in exports.items():  # where the bytes go: the parts add up to the file
        parts = entry["bytes"]
        assert parts["total"] == entry["file_bytes"] and parts["structure"] >= 0
        assert sum(v for k, v in parts.items() if k != "total") == parts["total"]
    assert exports["float32"]["bytes"]["quantization"] == 0
    per_channel = sum(12 * len(t["quantization_parameters"]["scales"])  # float32 scale + int64 zero point
                      for t in runtime.make_interpreter(exports["int8"]["file"]).get_tensor_details())
    tensors = len(runtime.make_interpreter(exports["int8"]["file"]).get_tensor_details())
    assert per_channel <= exports["int8"]["bytes"]["quantization"] <= per_channel + 8 * tensors
    assert "int8 file: weights" in printed
    assert exports["float16"]["file_bytes"] < 0.6 * exports["float32"]["file_bytes"]
    assert (out / "saved_model" / "saved_model.pb").exists()
    assert "int8" in printed and "report:" in printed
    # the SavedModel serves the same label map as the float32 file
    served = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    image = np.random.RandomState(0).randint(0, 256, (1, 32, 32, 3)).astype(np.uint8)
    interpreter = runtime.make_interpreter(exports["float32"]["file"])
    # TensorFlow (oneDNN) and LiteRT (XNNPACK) sum in different orders: a pixel whose two best logits
    # tie to float32 rounding may take the other label; more than 1 in 1024 would be a real difference
    agreement = np.mean(served(image=tf.constant(image))["labels"].numpy() == runtime.run(interpreter, image))
    assert agreement >= 1 - 1 / 1024


MOBILE = [dict(arch="lraspp", backbone="mobilenetv2", output_stride=16, width=0.35),
          dict(arch="lraspp", backbone="mobilenetv3_large", output_stride=16, width=0.75),
          dict(arch="deeplabv3", backbone="mobilenetv3_small", output_stride=16, width=0.75)]


# ESPNet with one block per stage: every layer kind the mirror rewrites, in half the layers of the published one
@pytest.mark.parametrize("model", [dict(), dict(arch="deeplabv3", output_stride=16), *MOBILE,
                                   dict(arch="espnet", backbone="espnet", espnet_blocks=(1, 1))],
                         ids=lambda m: f"{m.get('arch', 'pspnet')}-{m.get('backbone', 'resnet18')}")
def test_tf_keras_mirror_computes_the_same_logits(tmp_path, model):
    """The tf_keras twin computes the Keras 3 network's logits (ESPNet's with PReLU, standalone batch norms
    and transposed convolutions written as the int8 export writes them); for the phone students tfmot also
    annotates every layer of it (MobileNetV3's operation nodes and hard-swish included) and the QAT model runs
    (not for MobileNetV3-Large, whose layer kinds are -Small's)."""
    from skd_tf.export.qat import quantization_aware
    from skd_tf.export.tf_keras_mirror import mirror

    cfg = config_from_dict(tiny_config_dict(tmp_path, head_channels=16, **model))
    classes = 5 if model.get("arch") == "espnet" else cfg.data.num_classes  # ESPNet's decoder needs five
    net = build_model(cfg.model, classes, (48, 48))
    rng = np.random.default_rng(2)
    for weight in net.weights:  # PReLU slopes and batch-norm statistics other than their initial 0.25, 0, 1
        if weight.path.endswith(("alpha", "moving_mean", "moving_variance", "gamma", "beta")):
            weight.assign(rng.uniform(0.3, 1.5, weight.shape).astype(np.float32) if "variance" in weight.path
                          or "gamma" in weight.path else rng.uniform(-0.1, 0.6, weight.shape).astype(np.float32))
    prelus = [layer for layer in net._flatten_layers() if isinstance(layer, keras.layers.PReLU)]
    if prelus:  # one slope above 1: that PReLU takes the leaky form, the others the depthwise one
        prelus[0].alpha.assign(np.concatenate([[[[1.5]]], prelus[0].alpha.numpy()[..., 1:]], axis=-1))
    x = np.random.RandomState(1).randn(2, 48, 48, 3).astype(np.float32)
    twin = mirror(net)
    expected = net(x, training=False)["logits"].numpy()
    # the same function summed in another order (ESPNet's PReLU and batch norms are rewritten): float32
    # rounding, relative to the logits' scale (ESPNet's reach 10 here and differ by 3e-5)
    np.testing.assert_allclose(twin(x, training=False).numpy(), expected,
                               atol=2e-5 * max(1.0, float(np.abs(expected).max())))
    # tfmot annotates each layer kind once: MobileNetV3-Large's are -Small's (and LR-ASPP's are MobileNetV2's),
    # 16 s of the suite for no layer kind more (test_mobile_students exports LR-ASPP MobileNetV3-Small by QAT)
    if model.get("backbone") in ("mobilenetv2", "mobilenetv3_small", "espnet"):
        fake_quant = quantization_aware(net)(x, training=False).numpy()
        assert fake_quant.shape == (2, *net.output["logits"].shape[1:]) and np.isfinite(fake_quant).all()


def test_interpreter_io_quantization_by_hand():
    detail = {"dtype": np.uint8, "quantization": (0.5, 10)}
    np.testing.assert_array_equal(runtime.to_input(np.array([0.0, 1.0, 200.0]), detail), [10, 12, 255])
    out = {"dtype": np.int8, "quantization": (0.25, -2)}
    np.testing.assert_allclose(runtime.from_output(np.array([-2, 2, 6], np.int8), out), [0.0, 1.0, 2.0])
    raw = {"dtype": np.uint8, "quantization": (0.0, 0)}  # an unquantized uint8 input takes the values as they are
    np.testing.assert_array_equal(runtime.to_input(np.array([3.4, 300.0]), raw), [3, 255])
    labels = np.array([1, 5], np.uint8)
    assert runtime.from_output(labels, {"dtype": np.uint8, "quantization": (0.0, 0)}) is labels


def test_not_a_tflite_file(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(runtime.ModelFileError, match="not a TFLite model"):
        runtime.make_interpreter(str(bad))
    with pytest.raises(runtime.ModelFileError, match="not found"):
        runtime.make_interpreter(str(tmp_path / "missing.tflite"))


def test_flex_ops_are_refused_with_the_layer_named(tmp_path):
    """tf.Erf has no TFLite builtin: the error names the op and the layer it comes from."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = keras.layers.Activation(keras.ops.erf, name="head_erf")(x)
    logits = keras.layers.Identity(name="logits")(keras.layers.Conv2D(3, 1, name="classifier")(x))
    net = keras.Model(inputs, {"logits": logits, "features": keras.layers.Identity(name="features")(x)})
    spec = ServingSpec((16, 16), 3, "labels", True)
    with pytest.raises(UnsupportedOpsError, match=r"Erf.*head_erf"):
        convert(serving_function(keras_logits_fn(net), spec), "float32")


@pytest.mark.parametrize("quantization", ["float32", "int8"])
def test_the_baked_in_normalisation_is_one_depthwise_convolution(quantization):
    """(x − mean) / std as x · (1/std) + (−mean/std): the same numbers as NumPy's, and in the file one
    DEPTHWISE_CONV_2D instead of a SUB and a MUL over the full-size image."""
    from skd_tf.export.convert import normalise

    mean, std = (123.7, 116.3, 103.5), (58.4, 57.1, 57.4)
    image = np.random.default_rng(0).integers(0, 256, (2, 7, 9, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(normalise(tf.constant(image), mean, std)),
                               (image - np.array(mean)) / np.array(std), rtol=1e-5, atol=1e-5)
    spec = ServingSpec((8, 8), 3, "logits", True, mean, std)
    integer = quantization == "int8"
    fn = serving_function(lambda x: tf.nn.avg_pool2d(x, 2, 2, "VALID"), spec, integer_model=integer)
    data = [[image[:1, :8, :8]], [image[1:, :8, :8]]]
    content = convert(fn, quantization, (lambda: iter(data)) if integer else None)
    from ai_edge_litert.interpreter import Interpreter

    ops = [op["op_name"] for op in Interpreter(model_content=content)._get_ops_details()]
    assert ops.count("DEPTHWISE_CONV_2D") == 1 and "SUB" not in ops and "MUL" not in ops, ops


def test_an_int8_input_feeding_the_normalisation_takes_raw_pixels_after_its_bias_is_rescaled():
    """With int8 I/O the image feeds the normalisation's depthwise convolution: giving the input scale 1 must
    re-scale that convolution's bias, so that the file fed pixel − 128 computes what it computed before, fed
    its calibrated quantization of the same pixels."""
    from ai_edge_litert.interpreter import Interpreter

    from skd_tf.export.flatbuffer_edit import raw_pixel_input

    rng = np.random.default_rng(0)
    calibration = [[rng.uniform(20, 230, (1, 8, 8, 3)).astype(np.float32)] for _ in range(4)]  # scale ≠ 1
    spec = ServingSpec((8, 8), 3, "logits", True, (123.7, 116.3, 103.5), (58.4, 57.1, 57.4))
    fn = serving_function(lambda x: tf.nn.avg_pool2d(x, 2, 2, "VALID"), spec, integer_model=True)
    before = convert(fn, "int8", lambda: iter(calibration), int8_io="int8")
    after = raw_pixel_input(before)
    pixels = rng.integers(20, 231, (1, 8, 8, 3))
    outputs = []
    for content, feed in ((before, None), (after, pixels - 128)):
        interpreter = Interpreter(model_content=content)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        if feed is None:
            scale, zero_point = detail["quantization"]
            assert abs(scale - 1) > 0.05, "the calibration should have given another scale than 1"
            feed = np.clip(np.rint(pixels / scale + zero_point), -128, 127)
        else:
            assert detail["quantization"] == (1.0, -128)
        interpreter.set_tensor(detail["index"], feed.astype(np.int8))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).astype(int))
    assert np.abs(outputs[0] - outputs[1]).max() <= 1  # the pixels' own rounding in the old file's input


def _export_args(tmp_path, ckpt, *extra):
    return ("export", "--config", str(tmp_path / "config.yaml"), "--checkpoint", str(ckpt),
            "--quantization", "float32", "--out", str(tmp_path / "export"), "--no-savedmodel", "--quiet", *extra)


def test_bad_inputs_give_one_line_errors_and_no_tflite(tmp_path, capsys):
    cfg, ckpt = _save_student(tmp_path)
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 truncated zip")
    plain = tmp_path / "plain.keras"
    keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)]).save(plain)
    cases = [
        (_export_args(tmp_path, tmp_path / "missing.keras"), "checkpoint not found"),
        (_export_args(tmp_path, corrupt), "cannot load checkpoint"),
        (_export_args(tmp_path, plain), "not an skd-tf segmentation model"),
        (_export_args(tmp_path, ckpt, "--input-size", "36x36"), "multiples of its output stride 8"),
        (_export_args(tmp_path, ckpt, "--input-size", "big"), "--input-size must look like"),
        (_export_args(tmp_path, ckpt, "--quantization", "int4"), "unknown quantization 'int4'"),
        (_export_args(tmp_path, ckpt, "--calibration-samples", "0"), "export.calibration_samples"),
        (_export_args(tmp_path, ckpt, "--calibration-percentile", "100"), "export.calibration_percentile"),
        (_export_args(tmp_path, ckpt, "--bias-correction-samples", "-1"), "export.bias_correction_samples"),
        (_export_args(tmp_path, ckpt, "--calibration-percentile", "99.9", "--calibration-ranges", "mean_extremes"),
         "both set the int8 ranges: give one"),
    ]
    for args, message in cases:  # in-process: the CLI's error handling, without a process start each
        assert cli_main(list(args)) == 2, args
        err = capsys.readouterr().err
        assert message in err, (message, err[-2000:])
    assert not list(tmp_path.rglob("*.tflite"))


def test_empty_representative_dataset_is_an_error_and_writes_nothing(tmp_path, capsys):
    """int8 calibration on a folder dataset whose training split holds no image (its validation split one)."""
    cfg, ckpt = _save_student(tmp_path)
    for d in ("train/images", "train/masks", "val/images", "val/masks"):
        (tmp_path / d).mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "val" / "images" / "a.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "val" / "masks" / "a.png")
    raw = yaml.safe_load((tmp_path / "config.yaml").read_text())
    raw["data"].update(source="folder", train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val"))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    assert cli_main(list(_export_args(tmp_path, ckpt, "--quantization", "int8"))) == 2
    err = capsys.readouterr().err
    assert "representative dataset is empty" in err and "no .jpg or .png files" in err
    assert not list(tmp_path.rglob("*.tflite"))


def test_a_model_without_its_data_set_exports_calibrated_and_checked_on_unlabelled_images(tmp_path, capsys):
    """`--images`: a published model's user has no Cityscapes. The data set named by the config does not exist
    (any read of it fails); int8 is calibrated on the images, each resized to the input as an app would, and
    every file is checked on them: agreement with Keras, no mIoU (QAT on images: the next test)."""
    from skd_tf.export.checks import raw_photo
    from skd_tf.export.convert import ServingSpec
    from skd_tf.export.run import representative_images

    cfg, ckpt = _save_student(tmp_path)
    raw = yaml.safe_load((tmp_path / "config.yaml").read_text())
    raw["data"].update(source="folder", train_dir=str(tmp_path / "absent"), val_dir=str(tmp_path / "absent"))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    rng = np.random.default_rng(5)
    (tmp_path / "frames").mkdir()
    for i, (h, w) in enumerate([(32, 32), (48, 40), (24, 64)]):  # the app's frames, not at the input size
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "frames" / f"f{i}.png")
    frames = sorted((tmp_path / "frames").glob("*.png"))

    spec = ServingSpec((32, 32), 4, "labels", True, tuple(cfg.data.mean), tuple(cfg.data.std))
    samples = list(representative_images(cfg, spec, 2, 0, frames)())
    assert len(samples) == 2  # the first `count` images, raw pixels (normalisation is in the file)
    first = np.asarray(Image.open(frames[0]), np.float32)[None]
    np.testing.assert_array_equal(samples[0][0], first)
    resized = tf.image.resize(np.asarray(Image.open(frames[1]), np.float32)[None], (32, 32), method="bilinear")
    np.testing.assert_array_equal(samples[1][0], np.clip(np.round(resized.numpy()), 0, 255))
    np.testing.assert_array_equal(raw_photo(frames[1], (32, 32)), samples[1][0])

    images = ["--images", str(tmp_path / "frames")]
    assert cli_main(list(_export_args(tmp_path, ckpt, "--quantization", "float32,int8", *images))) == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "export" / "export.json").read_text())
    assert record["images"] == [str(f) for f in frames]
    for quantization in ("float32", "int8"):
        parity = record["exports"][quantization]["parity"]
        assert parity["num_images"] == 3 and parity["checked_on"] == "images" and parity["miou_tflite"] is None
    assert record["exports"]["float32"]["parity"]["argmax_agreement"] > 0.99
    assert record["exports"]["int8"]["calibration_samples"] == 3  # all there are (200 asked)
    row = next(line.split() for line in printed.splitlines() if line.startswith("int8 "))
    assert row[2:4] == ["-", "-"]  # the summary's mIoU columns
    capsys.readouterr()
    assert cli_main(list(_export_args(tmp_path, ckpt, "--images", str(tmp_path / "none*.png")))) == 2
    assert f"input not found: {tmp_path / 'none*.png'}" in capsys.readouterr().err
    for quantization in ("float32", "int8"):  # without --images the missing data set is named, and the way out
        args = _export_args(tmp_path, ckpt, "--quantization", quantization, "--out", str(tmp_path / "no_data"))
        assert cli_main(list(args)) == 2
        err = capsys.readouterr().err
        assert str(tmp_path / "absent") in err and err.rstrip().endswith(
            "; without the data set, --images FRAMES... calibrates and checks the files on images of your own"), err
        assert not (tmp_path / "no_data").exists()  # stopped before any file was written


def test_qat_on_unlabelled_images_fine_tunes_the_int8_twin_towards_the_float_network(tmp_path, capsys):
    """`export --images ... --quantization qat`: without labels the fine-tuning is the pixel-wise KL alone, to the
    float network being exported (no teacher given). The batches are the frames as an app feeds them, normalised as
    training normalises, flipped at random; the data set named by the config is never read."""
    from skd_tf.config import DataConfig
    from skd_tf.export.checks import raw_photo
    from skd_tf.export.config import QATConfig, parse_export
    from skd_tf.export.qat import finetune, photo_batches
    from skd_tf.export.run import ExportError, export_student

    rng = np.random.default_rng(7)
    (tmp_path / "frames").mkdir()
    for i, (h, w) in enumerate([(32, 32), (48, 40), (24, 64), (40, 40)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "frames" / f"f{i}.png")
    frames = sorted((tmp_path / "frames").glob("*.png"))
    data = DataConfig(num_classes=4, crop_size=(32, 32), hflip=False, mean=(100.0, 110.0, 120.0),
                      std=(50.0, 60.0, 70.0))
    images, labels = next(photo_batches(frames, (32, 32), (32, 32), 2, 3, data))
    order = np.random.default_rng(3).permutation(4)[:2]
    expected = (np.concatenate([raw_photo(frames[i], (32, 32)) for i in order]) - [100, 110, 120]) / [50, 60, 70]
    assert labels is None
    np.testing.assert_allclose(images.numpy(), expected, rtol=1e-6)
    flipped = [next(photo_batches(frames, (32, 32), (32, 32), 4, seed, data.model_copy(update={"hflip": True})))[0]
               .numpy() for seed in (3, 4)]
    assert any(not np.allclose(batch, batch[:, :, ::-1]) for batch in flipped)
    # smaller crops: windows of the frames at the file's size (the scale the file sees), at several places
    places = set()
    for seed in range(4):
        crops = next(photo_batches(frames, (32, 32), (16, 24), 4, seed, data))[0].numpy()
        assert crops.shape == (4, 16, 24, 3)
        for crop, i in zip(crops, np.random.default_rng(seed).permutation(4)):
            frame = (raw_photo(frames[i], (32, 32))[0] - [100, 110, 120]) / [50, 60, 70]
            found = [(t, left) for t in range(17) for left in range(9)
                     if np.allclose(frame[t:t + 16, left:left + 24], crop, rtol=1e-6)]
            assert len(found) == 1
            places.add(found[0])
    assert len(places) > 4
    with pytest.raises(ValueError, match=r"crops of \(48, 24\) do not fit in frames of \(32, 32\)"):
        next(photo_batches(frames, (32, 32), (48, 24), 2, 0, data))

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    net = keras.Model(inputs, {"logits": keras.layers.Conv2D(4, 1, name="logits")(x)})
    with pytest.raises(ValueError, match="needs a teacher"):
        finetune(net, None, data, QATConfig(steps=1, batch_size=2), (32, 32), progress=False, photos=frames)

    raw = tiny_config_dict(tmp_path)
    raw["data"].update(num_classes=4, source="folder", train_dir=str(tmp_path / "absent"),
                       val_dir=str(tmp_path / "absent"))
    cfg = config_from_dict(raw)
    ecfg = parse_export({}, {"images": [str(tmp_path / "frames")], "savedmodel": False,
                             "qat": {"steps": 2, "batch_size": 2, "calibration_batches": 1}})
    record = export_student(cfg, net, ecfg, ["qat"], tmp_path / "export", progress=True)
    assert "qat: fine-tuning on 4 of the --images without labels (pixel-wise KL to the float network alone)" in \
        capsys.readouterr().out
    entry = record["exports"]["qat"]
    assert entry["qat"]["teacher"] == "the float network" and entry["qat"]["data"] == "images"
    assert entry["qat"]["ce_weight"] == 0.0 and np.isfinite(entry["qat"]["last_loss"])
    assert entry["deployability"]["all_integer"] is True
    assert entry["parity"]["checked_on"] == "images" and entry["parity"]["num_images"] == 4
    too_big = parse_export({}, {"images": [str(tmp_path / "frames")], "savedmodel": False})
    with pytest.raises(ExportError, match="qat on --images fine-tunes on batches of 8 of them: 4 given"):
        export_student(cfg, net, too_big, ["float32", "qat"], tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()


def test_the_export_summary_warns_of_files_that_lose_keras_labels_and_says_what_to_try():
    from skd_tf.export.summary import format_export

    def entry(share, **facts):
        return {"file_bytes": 2048, **facts,
                "parity": {"num_images": 3, "argmax_agreement": share, "miou_tflite": 0.5, "miou_keras": 0.5},
                "deployability": {"all_integer": True, "float_ops": [], "gpu_delegate_compatible": True}}

    record = {"exports": {"float32": entry(1.0), "float16": entry(0.996), "dynamic": entry(0.9499),
                          "int8": entry(0.0866), "qat": entry(0.95)}}
    warnings = [line for line in format_export(record).splitlines() if line.startswith("warning")]
    assert warnings == [  # 95 % is enough; float16 at 99.6 % (the published ESPNets') is not warned of
        "warning: dynamic gives Keras' labels on only 94.99 % of the pixels of 3 validation images (below 95 %): "
        "compare it with the float32 file (docs/export.md)",
        "warning: int8 gives Keras' labels on only 8.66 % of the pixels of 3 validation images (below 95 %): "
        "try --calibration-percentile 99.99 or --calibration-ranges mean_extremes, --bias-correction-samples 32 or "
        "--quantization qat, or ship float16 (docs/export.md)"]
    record["exports"]["int8"]["calibration_percentile"] = 99.9
    record["exports"]["float32"]["parity"]["argmax_agreement"] = 0.5
    text = format_export(record, ["float32", "int8", "qat"])
    assert "int8 gives Keras' labels on only 8.66 %" in text and "try another --calibration-percentile than 99.9" in text
    assert "float32 file should give Keras' labels: please report it" in text and "dynamic gives" not in text
    record["exports"]["dynamic"]["parity"]["argmax_agreement"] = 0.986  # a faithful dynamic file is named
    assert "or --quantization qat, or ship dynamic (98.60 % here) or float16 (docs/export.md)" in format_export(record)
    photos = {"exports": {"int8": entry(0.4276)}}  # checked on --images: no labels, no mIoU
    photos["exports"]["int8"]["parity"].update(checked_on="images", miou_tflite=None, miou_keras=None)
    assert format_export(photos).splitlines()[-1] == (
        "warning: int8 gives Keras' labels on only 42.76 % of the pixels of 3 images (below 95 %): "
        "try --calibration-percentile 99.99 or --calibration-ranges mean_extremes, more --images, "
        "--bias-correction-samples 32 or --quantization qat, or ship dynamic (int8 weights, float activations) or "
        "float16 (docs/export.md)")
    photos["exports"]["int8"]["calibration_ranges"] = "mean_extremes"
    assert "try --calibration-percentile 99.9 instead of --calibration-ranges mean_extremes, more --images, " \
        "--bias-correction-samples 32 or" in format_export(photos)
    del photos["exports"]["int8"]["calibration_ranges"]  # auto kept the percentile
    photos["exports"]["int8"].update(calibration_percentile=99.99,
                                     calibration_agreement={"extremes": 0.3112, "p99.99": 0.4276},
                                     bias_correction={"samples": 32, "ops": 93, "largest_error_steps": 4.244,
                                                      "largest_error_op": "level3.7.bn_1/add_1"})
    assert format_export(photos).splitlines()[-3:] == [
        "int8 activation ranges: the 99.99th percentile kept (labels equal to Keras' with the extremes 31.12 %, "
        "the 99.99th percentile 42.76 %; --calibration-ranges or --calibration-percentile sets them)",
        "int8 biases corrected on 32 calibration images: 93 convolutions, the largest channel-mean error 4.24 int8 "
        "steps (level3.7.bn_1/add_1)",
        "warning: int8 gives Keras' labels on only 42.76 % of the pixels of 3 images (below 95 %): try "
        "--calibration-percentile 99.9, more --images or --quantization qat, or ship dynamic (int8 weights, float "
        "activations) or float16 (docs/export.md)"]
    for teacher, remedy in ((None, "try more --qat-steps or a teacher (export.teacher)"),  # CE alone
                            ("the float network", "try more --qat-steps or a higher export.qat.learning_rate")):
        qat = {"exports": {"qat": entry(0.6423, qat={"steps": 150, "teacher": teacher})}}
        assert (f"only 64.23 % of the pixels of 3 validation images (below 95 %): {remedy}, or ship dynamic (int8 "
                "weights, float activations) or float16") in format_export(qat)
    record["exports"]["int8"]["parity"]["num_images"] = 0  # nothing was checked: nothing to warn of
    assert "int8 gives" not in format_export(record)


def test_converter_diagnostics_are_shortened_to_the_op_and_kept_once():
    from skd_tf.export.convert import converter_log

    frames = " at ".join(f'callsite("/venv/site-packages/tf_keras/src/m{i}.py":{i}:1' for i in range(40))
    located = (f'loc(fused["Conv2D:", callsite("net/quant_conv.conv/Conv2D"("/venv/functional.py":692:1) at {frames}'
               f'{")" * 40}]): error: scale out of expressed type range [1.401298e-45, 3.402823e+38]')
    text = "\n".join([located, located, "error: scale out of expressed type range [1.401298e-45, 3.402823e+38]",
                      "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", 'loc("head/add"): warning: kept',
                      "a line of its own"])
    assert converter_log(text.replace("scale out of expressed type range", "a real error")) == [
        "converter: net/quant_conv.conv/Conv2D: error: a real error [1.401298e-45, 3.402823e+38]",
        "converter: head/add: warning: kept", "a line of its own"]
    # a diagnostic of a file that converts correctly (an all-zero channel's weight scale) said as the note it is
    assert converter_log(text) == [
        "converter: net/quant_conv.conv/Conv2D: note: an output channel whose weights are all zero (a batch norm's "
        "scale γ of 0 folded into them): the quantizer gives it a tiny weight scale instead of none; the channel "
        "computes what it did", "converter: head/add: warning: kept", "a line of its own"]


def test_the_private_litert_apis_we_use_exist(tmp_path):
    """Interpreter._get_ops_details (op lists) and _pywrap_analyzer_wrapper (the GPU-compatibility report) are
    private LiteRT APIs: if an upgrade removes or changes them, this names which, before any export does."""
    from ai_edge_litert import _pywrap_analyzer_wrapper
    from ai_edge_litert.interpreter import Interpreter

    inputs = keras.Input((8, 8, 3))
    tiny_tflite_file = str(tmp_path / "tiny.tflite")
    net = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
    Path(tiny_tflite_file).write_bytes(tf.lite.TFLiteConverter.from_keras_model(net).convert())
    interpreter = Interpreter(model_path=tiny_tflite_file)
    ops = interpreter._get_ops_details()
    assert ops and {"op_name", "inputs", "outputs"} <= set(ops[0]), "Interpreter._get_ops_details changed"
    report = _pywrap_analyzer_wrapper.ModelAnalyzer(tiny_tflite_file, True, True)
    assert "Subgraph#0" in report and "GPU" in report, "LiteRT's model analyzer report changed"


def _np_resize_bilinear(x: np.ndarray, size, align_corners: bool = False) -> np.ndarray:
    """B×h×w×K → B×H×W×K, bilinear with half-pixel centres (TFLite's RESIZE_BILINEAR), or with the corner
    pixels aligned (torch's align_corners=True: source i·(h−1)/(H−1)), in float64."""
    def axis(n_in, n_out):
        if align_corners:
            src = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        else:
            src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        low = np.floor(src)
        return np.clip(low, 0, n_in - 1).astype(int), np.clip(np.ceil(src), 0, n_in - 1).astype(int), src - low

    (r0, r1, fr), (c0, c1, fc) = axis(x.shape[1], size[0]), axis(x.shape[2], size[1])
    x = x.astype(np.float64)
    rows = x[:, r0] + (x[:, r1] - x[:, r0]) * fr[None, :, None, None]
    return rows[:, :, c0] + (rows[:, :, c1] - rows[:, :, c0]) * fc[None, None, :, None]


def _np_resize_nearest(labels: np.ndarray, size) -> np.ndarray:
    """B×h×w → B×H×W, nearest neighbour with half-pixel centres (source index ⌊(i + ½)·h/H⌋)."""
    rows = np.minimum(((np.arange(size[0]) + 0.5) * labels.shape[1] / size[0]).astype(int), labels.shape[1] - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * labels.shape[2] / size[1]).astype(int), labels.shape[2] - 1)
    return labels[:, rows][:, :, cols]


def _np_two_class(logits: np.ndarray, size) -> np.ndarray:
    """The two_class head pixel by pixel, in float64: the four logit vectors around the pixel's half-pixel-centre
    source position (clamped at the border); c1 = the corners' winning class with the highest sum over the four,
    c2 = the best other corners' winner (c1 when none, first corner on ties); c1 where the bilinearly interpolated
    l_c1 − l_c2 ≥ 0, else c2."""
    def axis(n_in, n_out):
        src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        low = np.floor(src)
        return np.clip(low, 0, n_in - 1).astype(int), np.clip(low + 1, 0, n_in - 1).astype(int), src - low

    x = logits.astype(np.float64)
    (r0, r1, ty), (c0, c1, tx) = axis(x.shape[1], size[0]), axis(x.shape[2], size[1])
    corners = np.stack([x[:, r0][:, :, c0], x[:, r0][:, :, c1], x[:, r1][:, :, c0], x[:, r1][:, :, c1]], axis=3)
    ty, tx = ty[None, :, None, None], tx[None, None, :, None]
    weights = np.concatenate([(1 - ty) * (1 - tx), (1 - ty) * tx, ty * (1 - tx), ty * tx], axis=3)  # 1, H, W, 4
    winners = corners.argmax(-1)                                                 # B, H, W, 4
    score = np.take_along_axis(corners.sum(3), winners, axis=-1)                 # B, H, W, 4
    first = np.take_along_axis(winners, score.argmax(-1)[..., None], -1)[..., 0]
    others = np.where(winners == first[..., None], -np.inf, score)
    second = np.take_along_axis(winners, others.argmax(-1)[..., None], -1)[..., 0]
    second = np.where(np.isinf(others.max(-1)), first, second)
    pick = lambda c: np.take_along_axis(corners, c[..., None, None].repeat(4, 3), -1)[..., 0]  # noqa: E731
    inside = np.sum(weights * (pick(first) - pick(second)), axis=-1)
    return np.where(inside >= 0, first, second)


def _np_label_head(logits: np.ndarray, size, head: str, align_corners: bool = False) -> np.ndarray:
    if head == "two_class":
        h, w = logits.shape[1:3]
        f = size[0] // h
        if size == (f * h, f * w) and f % 2 == 0 and not align_corners:
            return _np_two_class(logits, size)
        head = "bilinear"  # where the two_class head does not apply it is the bilinear head
    if head == "bilinear":
        return _np_resize_bilinear(logits, size, align_corners).argmax(-1)
    if head in ("half", "quarter"):
        k = 2 if head == "half" else 4
        logits = _np_resize_bilinear(logits, (-(-size[0] // k), -(-size[1] // k)))
    return _np_resize_nearest(logits.argmax(-1), size)


def test_upsampling_logits_with_aligned_corners_matches_a_numpy_reference(monkeypatch, caplog):
    """Training and evaluation bring the published networks' logits to label size as torch's align_corners=True
    does, the others with half-pixel centres; saved models keep which (their ``logits`` layer). No TensorFlow
    deprecation notice on the way (tf.compat.v1.image.resize_bilinear logged one into every such export)."""
    from tensorflow.python.util import deprecation

    from skd_tf.models.logits import Logits, logits_align_corners, upsample_logits

    monkeypatch.setattr(deprecation, "_PRINTED_WARNING", {})  # TensorFlow logs each deprecation once a process
    logits = np.random.default_rng(3).normal(size=(2, 5, 7, 4)).astype(np.float32)
    labels = tf.zeros((2, 37, 50), tf.int32)
    for aligned in (True, False):
        np.testing.assert_allclose(upsample_logits(tf.constant(logits), labels, aligned).numpy(),
                                   _np_resize_bilinear(logits, (37, 50), aligned), atol=1e-5)
    assert not [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(3, 1, strides=4)(inputs)
    for layer, aligned in ((Logits(name="logits"), True), (keras.layers.Identity(name="logits"), False)):
        model = keras.Model(inputs, {"logits": layer(x), "features": x})
        assert logits_align_corners(model) is aligned


def _stride8_net(size) -> keras.Model:
    """A seeded 5-class network with this project's dict outputs and logits at 1/8 of ``size``."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((*size, 3))
    x = keras.layers.Conv2D(8, 3, strides=8, padding="same", activation="relu")(inputs)
    logits = keras.layers.Identity(name="logits")(keras.layers.Conv2D(5, 1)(x))
    return keras.Model(inputs, {"logits": logits, "features": keras.layers.Identity(name="features")(x)})


@pytest.mark.parametrize("size", [(64, 96), (66, 100)])  # stride 8 exactly, and sizes it does not divide
def test_label_heads_match_a_numpy_reference(size):
    """Each exported label head against NumPy on the same TFLite logits: the full bilinear head, bilinear to a
    quarter + argmax + nearest, and nearest only. The nearest head repeats labels exactly; the bilinear ones
    may differ where two classes' interpolated scores tie to float32 precision (≤ 0.1 % of pixels)."""
    from ai_edge_litert.interpreter import Interpreter
    from skd_tf.export.label_heads import LABEL_HEADS

    net = _stride8_net(size)
    image = np.random.default_rng(1).integers(0, 256, (1, *size, 3)).astype(np.uint8)

    def run(spec):
        interpreter = Interpreter(model_content=convert(serving_function(keras_logits_fn(net), spec), "float32"))
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    model_logits = run(ServingSpec(size, 5, "logits", True))
    assert model_logits.shape[1:3] == (-(-size[0] // 8), -(-size[1] // 8))
    for head in LABEL_HEADS:
        labels = run(ServingSpec(size, 5, "labels", True, label_head=head))
        expected = _np_label_head(model_logits, size, head)
        assert labels.shape == expected.shape == (1, *size)
        agreement = float(np.mean(labels == expected))
        assert agreement == 1.0 if head == "nearest" else agreement >= 0.999, (head, agreement)
    # the published networks' head: bilinear with the corners aligned (skd_tf.models.logits)
    labels = run(ServingSpec(size, 5, "labels", True, align_corners=True))
    assert np.mean(labels == _np_label_head(model_logits, size, "bilinear", align_corners=True)) >= 0.999
    assert np.mean(labels == _np_label_head(model_logits, size, "bilinear")) < 0.999  # it is another head
    with pytest.raises(ValueError, match="unknown label head 'box'"):
        serving_function(keras_logits_fn(net), ServingSpec(size, 5, "labels", True, label_head="box"))


def test_nearest_neighbour_repeats_labels_by_tiles_along_a_multiple_and_gathers_elsewhere():
    """repeat_nearest is NumPy's half-pixel nearest neighbour for a batch, at multiples of the label map's size
    (TILEs), at other sizes (GATHERs) and mixed; a file repeating by a multiple on both axes has no GATHER
    (TFLite's copies element by element)."""
    from ai_edge_litert.interpreter import Interpreter
    from skd_tf.export.label_heads import repeat_nearest

    labels = np.random.default_rng(4).integers(0, 19, (2, 5, 7)).astype(np.uint8)
    for size in ((10, 21), (15, 7), (5, 7), (11, 21), (10, 17), (3, 4)):
        np.testing.assert_array_equal(repeat_nearest(tf.constant(labels), size).numpy(),
                                      _np_resize_nearest(labels, size), err_msg=str(size))
    ops = {}
    for size in ((40, 56), (41, 56)):
        fn = tf.function(lambda x, size=size: repeat_nearest(x, size),
                         input_signature=[tf.TensorSpec([1, 5, 7], tf.uint8)]).get_concrete_function()
        interpreter = Interpreter(model_content=convert(fn, "float32"))
        ops[size] = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "TILE" in ops[(40, 56)] and "GATHER" not in ops[(40, 56)], ops
    assert {"TILE", "GATHER"} <= ops[(41, 56)], ops


def test_the_two_class_head_is_the_bilinear_head_between_two_classes_and_stays_integer_in_int8(tmp_path):
    """Between two classes the two_class head's labels are the bilinear head's (factors 2, 4 and 8, a batch of
    two, non-square); with three classes it may differ where a third class overtakes both inside a cell — and
    then it is still exactly its NumPy rule. Its int8 file is all-integer and gives the labels its own int8
    logits give through the NumPy rule."""
    from skd_tf.export.checks import deployability
    from skd_tf.export.label_heads import effective_head, label_head

    assert effective_head("two_class", (8, 12), (64, 96)) == "two_class"
    for logits_size, size, aligned in (((8, 12), (64, 96), True), ((9, 13), (66, 100), False),
                                       ((8, 12), (24, 36), False), ((8, 12), (64, 48), False)):
        assert effective_head("two_class", logits_size, size, aligned) == "bilinear"  # aligned, ragged, odd, unequal
    rng = np.random.default_rng(5)
    for logits_size, size in (((6, 9), (12, 18)), ((5, 7), (20, 28)), ((4, 6), (32, 48))):
        logits = rng.normal(size=(2, *logits_size, 2)).astype(np.float32)
        labels = label_head(tf.constant(logits), size, "two_class", tf.int32).numpy()
        assert np.mean(labels == _np_label_head(logits, size, "bilinear")) >= 0.999
    # corners: class 0 wins on the left, 1 on the right; class 2, second everywhere, wins midway
    logits = np.array([[[2.0, 0.0, 1.9], [0.0, 2.0, 1.9]]] * 2, np.float32)[None]
    labels = label_head(tf.constant(logits), (16, 16), "two_class", tf.int32).numpy()
    np.testing.assert_array_equal(labels, _np_two_class(logits, (16, 16)))
    assert 2 in _np_label_head(logits, (16, 16), "bilinear") and 2 not in labels

    net = _stride8_net((64, 96))
    images = rng.integers(0, 256, (4, 1, 64, 96, 3)).astype(np.float32)
    outputs = {}
    for output in ("logits", "labels"):
        spec = ServingSpec((64, 96), 5, output, True, label_head="two_class")
        path = tmp_path / f"{output}.tflite"
        path.write_bytes(convert(serving_function(keras_logits_fn(net), spec, integer_model=True), "int8",
                                 lambda: ([image] for image in images)))
        interpreter = runtime.make_interpreter(str(path))
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images[0].astype(np.uint8))
        interpreter.invoke()
        detail = interpreter.get_output_details()[0]
        outputs[output] = interpreter.get_tensor(detail["index"])
        if output == "logits":
            scale, zero = detail["quantization"]
            outputs[output] = (outputs[output].astype(np.float32) - zero) * scale
        assert deployability(str(path), "int8")["all_integer"], output
    agreement = np.mean(outputs["labels"] == _np_two_class(outputs["logits"], (64, 96)))
    # 99.6 % here; int8 rounds the interpolated difference as RESIZE_BILINEAR rounds the interpolated logits (the
    # int8 bilinear head against NumPy's on its own int8 logits, checked the same way: 99.3 % too)
    assert agreement >= 0.98, agreement


def test_the_int8_two_class_switch_is_a_step_made_exact_in_the_file(monkeypatch):
    """In an int8 file the two_class head ends in a ReLU6 convolution, a MUL and an ADD (ops XNNPACK runs in
    int8) instead of a comparison and SELECT_V2, made exact and all-integer by `exact_two_class_switch`: its
    step tensor holds only 0 and 6, every label is a class index, and the labels are the NumPy rule's on the
    file's own int8 logits (as the SELECT head's are). Unedited, the converter's file gives other
    labels; with more than 128 classes the head keeps the SELECT and uint8 labels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    from skd_tf.export import convert as convert_module
    from skd_tf.export.label_heads import SWITCH_NAMES, label_head

    rng = np.random.default_rng(3)

    def smooth(classes):
        coarse = rng.normal(size=(1, 5, 7, classes)).astype(np.float32) * 4
        return tf.image.resize(coarse, (8, 12)).numpy()

    def head_file(classes, edit=True):
        fn = tf.function(lambda x: {"labels": label_head(x, (64, 96), "two_class", integer=True)},
                         input_signature=[tf.TensorSpec([1, 8, 12, classes], tf.float32)]).get_concrete_function()
        if not edit:
            monkeypatch.setattr(convert_module, "exact_two_class_switch", lambda content: content)
        content = convert(fn, "int8", lambda: ([smooth(classes)] for _ in range(6)), int8_io="int8")
        monkeypatch.undo()
        return content

    def labels_and_rule(content, classes):
        interpreter = Interpreter(model_content=content, experimental_preserve_all_tensors=True,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
        detail, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        scale, zero = detail["quantization"]
        found, rule, steps = [], [], set()
        for _ in range(3):
            q = np.clip(np.rint(smooth(classes) / scale) + zero, -128, 127).astype(np.int8)
            interpreter.set_tensor(detail["index"], q)
            interpreter.invoke()
            found.append(interpreter.get_tensor(out["index"]))
            rule.append(_np_two_class((q.astype(np.float32) - zero) * scale, (64, 96)))
            steps |= {int(v) for t in interpreter.get_tensor_details() if SWITCH_NAMES["step"] in t["name"]
                      for v in np.unique(interpreter.get_tensor(t["index"]))}
        return np.stack(found), np.stack(rule), steps, out

    content = head_file(5)
    interpreter = Interpreter(model_content=content)
    assert {"MUL", "DEPTH_TO_SPACE"} <= {op["op_name"] for op in interpreter._get_ops_details()}
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    # the class maps' corners are SLICEs: TFLite's int32 STRIDED_SLICE copies element by element
    assert not [op for op in interpreter._get_ops_details()
                if op["op_name"] == "STRIDED_SLICE" and dtypes[op["inputs"][0]] == np.int32]
    assert not [t["name"] for t in interpreter.get_tensor_details() if t["dtype"] == np.float32]  # all-integer
    labels, rule, steps, out = labels_and_rule(content, 5)
    assert out["dtype"] == np.int8 and out["quantization"] == (1.0, 0)
    assert steps == {-128, 127}  # 0 and 6 at scale 6/255: a step
    assert set(np.unique(labels)) <= set(range(5))
    assert np.mean(labels == rule) >= 0.99, np.mean(labels == rule)  # 99.8 % (the SELECT head's file: 99.6 %)
    unedited, _, _, _ = labels_and_rule(head_file(5, edit=False), 5)
    assert np.mean(unedited == rule) < 0.9
    _, _, _, wide = labels_and_rule(head_file(130), 130)
    assert wide["dtype"] == np.uint8


def test_a_cheaper_label_head_is_checked_against_its_own_keras_twin_and_scored_against_evaluation(tmp_path):
    """`--label-head nearest`: the file's labels equal the Keras graph's with the same head (agreement 1.0 in
    float32: the export is faithful), its mIoU is the head's, and "mIoU Keras" stays what evaluation scores
    (the bilinear head) — so the head's cost is the difference of the two."""
    from skd_tf.cli import main as cli_main

    cfg, ckpt = _save_student(tmp_path)
    records = {}
    for head in ("bilinear", "two_class", "nearest"):
        out = tmp_path / head
        assert cli_main(["export", "--config", str(tmp_path / "config.yaml"), "--checkpoint", str(ckpt),
                         "--quantization", "float32", "--out", str(out), "--no-savedmodel", "--quiet",
                         "--label-head", head]) == 0
        records[head] = json.loads((out / "export.json").read_text())
    assert records["nearest"]["label_head"] == "nearest" and records["two_class"]["label_head"] == "two_class"
    assert records["two_class"]["exports"]["float32"]["parity"]["argmax_agreement"] >= 0.999
    bilinear, nearest = (records[h]["exports"]["float32"]["parity"] for h in ("bilinear", "nearest"))
    assert nearest["argmax_agreement"] == 1.0 and bilinear["argmax_agreement"] == 1.0
    assert nearest["miou_keras"] == pytest.approx(bilinear["miou_keras"], abs=1e-12)
    assert bilinear["miou_tflite"] == pytest.approx(bilinear["miou_keras"], abs=1e-6)


def test_qat_calibration_sets_each_range_from_the_first_batch_then_by_its_ema(tmp_path):
    """calibrate_ranges: the first batch sets every activation range outright (tfmot starts them at ±6), later
    batches move it by the EMA with the given decay, and every other variable (batch-norm statistics included)
    is as before. Checked on the first ReLU's output range, which no other range changes (the input
    quantizer keeps tfmot's ±6 for inputs inside it, and the weights' ranges are their own)."""
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    from skd_tf.export.qat import _is_range_variable, calibrate_ranges, quantization_aware

    original = quant_ops.MovingAvgQuantize
    cfg = config_from_dict(tiny_config_dict(tmp_path, head_channels=8))
    net = build_model(cfg.model, cfg.data.num_classes, (32, 32))
    rng = np.random.default_rng(0)
    a, b = (scale * rng.standard_normal((2, 32, 32, 3)).astype(np.float32) for scale in (1.0, 1.5))
    assert max(np.abs(a).max(), np.abs(b).max()) < 6

    model = quantization_aware(net)
    initial = [(v, v.numpy()) for v in model.variables]

    def relu_range(batches):
        for variable, value in initial:  # every calibration from tfmot's starting point
            variable.assign(value)
        kept = [(v, v.numpy()) for v in model.variables if not _is_range_variable(v)]
        calibrate_ranges(model, batches, decay=0.8)
        assert quant_ops.MovingAvgQuantize is original
        for variable, value in kept:
            np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.name)
        found = {v.name: float(v.numpy()) for v in model.variables if v.name.startswith("quant_conv1_relu/output_")}
        return np.array([found["quant_conv1_relu/output_min:0"], found["quant_conv1_relu/output_max:0"]])

    only_a, only_b, both = relu_range([a]), relu_range([b]), relu_range([a, b])
    assert only_a[0] == 0 and 0 < only_a[1] < 6 and only_b[1] != only_a[1]
    np.testing.assert_allclose(both, 0.8 * only_a + 0.2 * only_b, rtol=1e-6)


def test_int8_calibration_records_each_tensors_own_range(tmp_path):
    """x + 1, · 2, + 1 on inputs in [0, 1]: the int8 file's activations get the scales of [0, 1], [0, 2], [0, 4]
    and [0, 5] (over 255 steps; the constants 1 and 2 give 1/255 and 2/255). TFLite's calibrator alone records
    x + 1 with the range of its in-place successor (tensorflow/tensorflow#127842): 4/255 instead of 2/255.
    Also fails loudly if the calibrator method skd_tf.export.calibration hooks is gone."""
    from tensorflow.lite.python.optimize import calibrator

    from skd_tf.export.convert import convert

    original = calibrator.Calibrator.calibrate

    @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32)])
    def chain(x):
        return (x + 1.0) * 2.0 + 1.0

    ramp = np.linspace(0, 1, 64, dtype=np.float32)[None]
    content = convert(chain.get_concrete_function(), "int8", lambda: ([ramp] for _ in range(2)), float_output=False)
    (tmp_path / "chain.tflite").write_bytes(content)
    details = runtime.make_interpreter(str(tmp_path / "chain.tflite")).get_tensor_details()
    steps = sorted(d["quantization"][0] * 255 for d in details if d["dtype"] == np.int8)
    np.testing.assert_allclose(steps, [1, 1, 2, 2, 4, 5], rtol=1e-4)
    assert calibrator.Calibrator.calibrate is original  # the hook is undone after conversion


def test_int8_calibration_ranges_span_every_sample_though_the_calibrator_sees_only_the_first(tmp_path):
    """The same chain calibrated on a ramp over [0, 1], then one over [0, 3]: every activation's range comes from
    both (steps 3, 4, 8, 9 × 1/255 besides the constants' 1 and 2; from the first alone they would be 1, 2, 4,
    5), while TFLite's calibrator, which runs on the builtin kernels, is fed the first sample only."""
    from tensorflow.lite.python.optimize import calibrator

    from skd_tf.export.convert import convert

    @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32)])
    def chain(x):
        return (x + 1.0) * 2.0 + 1.0

    ramp = np.linspace(0, 1, 64, dtype=np.float32)[None]
    fed = []
    original = calibrator.Calibrator._feed_tensors

    def counting(self, dataset_gen, resize_input):
        def counted():
            for sample in dataset_gen():
                fed.append(sample)
                yield sample
        return original(self, counted, resize_input)

    calibrator.Calibrator._feed_tensors = counting
    try:
        content = convert(chain.get_concrete_function(), "int8", lambda: iter([[ramp], [3 * ramp]]),
                          float_output=False)
    finally:
        calibrator.Calibrator._feed_tensors = original
    (tmp_path / "chain.tflite").write_bytes(content)
    details = runtime.make_interpreter(str(tmp_path / "chain.tflite")).get_tensor_details()
    steps = sorted(d["quantization"][0] * 255 for d in details if d["dtype"] == np.int8)
    np.testing.assert_allclose(steps, [1, 2, 3, 4, 8, 9], rtol=1e-4)
    assert len(fed) == 1


@tf.function(input_signature=[tf.TensorSpec([1, 1000], tf.float32)])
def _chain(x):
    """(x + 1) · 2 + 1: four activations and the constants 1 and 2, for the calibration tests."""
    return (x + 1.0) * 2.0 + 1.0


def _chain_int8_steps(tmp_path, samples, **ranges) -> list:
    """The int8 steps (× 255) of every int8 tensor of ``_chain`` converted to int8 on ``samples``."""
    from skd_tf.export.convert import convert

    content = convert(_chain.get_concrete_function(), "int8", lambda: iter([[x] for x in samples]),
                      float_output=False, **ranges)
    (tmp_path / "chain.tflite").write_bytes(content)
    details = runtime.make_interpreter(str(tmp_path / "chain.tflite")).get_tensor_details()
    return sorted(d["quantization"][0] * 255 for d in details if d["dtype"] == np.int8)


def test_int8_calibration_percentile_sets_each_range_to_the_percentiles_of_its_values(tmp_path):
    """The same chain on a ramp of 990 values in [0, 1] and 10 outliers at 10: by extremes the activations' int8
    steps are 10, 11, 22, 23 (× 1/255), a tenth of them spanning the ramp; with ``calibration_percentile`` 98
    each range is [0, P₉₈] of its tensor, and the constants keep 1 and 2. P₉₈ is NumPy's percentile of the same
    values within the histogram's bin, (max − min) / BINS, plus the gap between neighbouring values (NumPy
    interpolates between order statistics, the histogram between bin edges)."""
    from skd_tf.export.calibration import BINS
    from skd_tf.export.convert import convert

    values = np.concatenate([np.linspace(0, 1, 990), np.full(10, 10.0)]).astype(np.float32)
    rng = np.random.default_rng(0)
    samples = [values[None], rng.permutation(values)[None]]

    def steps(**percentile):
        return _chain_int8_steps(tmp_path, samples, **percentile)

    np.testing.assert_allclose(steps(), [1, 2, 10, 11, 22, 23], rtol=1e-4)
    top = float(np.percentile(values, 98))  # 0.99: the outliers clipped
    expected = sorted([1, 2, top, top + 1, 2 * (top + 1), 2 * (top + 1) + 1])
    # the tensors span 10, 10, 20 and 20 (a bin at most 20 / BINS); neighbouring values 1/989 apart, × 2 after the MUL
    np.testing.assert_allclose(steps(calibration_percentile=98), expected, rtol=0, atol=20 / BINS + 2 / 989)
    with pytest.raises(ValueError, match="applies to int8 post-training quantization, not qat"):
        convert(_chain.get_concrete_function(), "qat", lambda: iter([[x] for x in samples]), calibration_percentile=98)


def test_int8_calibration_ranges_at_the_mean_of_each_samples_extremes(tmp_path):
    """``calibration_ranges="mean_extremes"``: the chain (x + 1) · 2 + 1 on two samples, a ramp in [0, 1] with 10
    outliers at 10 and the ramp alone. Per sample its tensors span [0, 10], [1, 11], [2, 22], [3, 23] and [0, 1],
    [1, 2], [2, 4], [3, 5]; the mean of the extremes, widened to hold 0, gives int8 steps 5.5, 6.5, 13, 14
    (× 1/255) where the extremes give 10, 11, 22, 23; the constants keep 1 and 2."""
    import pydantic

    from skd_tf.export.config import ExportConfig
    from skd_tf.export.convert import convert

    ramp = np.linspace(0, 1, 1000).astype(np.float32)
    samples = [np.concatenate([ramp[:990], np.full(10, 10.0, np.float32)])[None], ramp[None]]

    def steps(**ranges):
        return _chain_int8_steps(tmp_path, samples, **ranges)

    np.testing.assert_allclose(steps(), [1, 2, 10, 11, 22, 23], rtol=1e-4)
    np.testing.assert_allclose(steps(calibration_ranges="mean_extremes"), [1, 2, 5.5, 6.5, 13, 14], rtol=1e-4)
    with pytest.raises(ValueError, match="apply to int8 post-training quantization, not qat"):
        convert(_chain.get_concrete_function(), "qat", lambda: iter([[x] for x in samples]),
                calibration_ranges="mean_extremes")
    with pytest.raises(ValueError, match="not both"):
        steps(calibration_ranges="mean_extremes", calibration_percentile=98)
    with pytest.raises(pydantic.ValidationError, match="both set the int8 ranges: give one"):
        ExportConfig(calibration_percentile=99.9, calibration_ranges="mean_extremes")
    # what the export converts int8 with: the extremes and the 99.99th percentile by default (auto), else the
    # ranges asked for
    assert ExportConfig().int8_calibrations() == ("extremes", "p99.99")
    assert ExportConfig(calibration_ranges="mean_extremes").int8_calibrations() == ("mean_extremes",)
    assert ExportConfig(calibration_percentile=99.9).int8_calibrations() == ("p99.9",)
    assert ExportConfig(calibration_percentile=99.12345678).int8_calibrations() == ("p99.12345678",)  # not rounded


def test_int8_calibration_ranges_auto_keeps_the_file_whose_labels_agree_more(tmp_path, capsys, monkeypatch):
    """`skd-tf export --quantization int8` (calibration_ranges auto, the default) converts with the extremes and
    with the 99.99th percentile, checks both and keeps the one giving more of Keras' labels: its record holds
    each one's agreement — those of the files exported with each alone — and its file is byte for byte the
    kept one's file, though auto measured the extremes once for both files (``calibration.shared_extremes``)."""
    from skd_tf.export import calibration

    measured = calibration.measured_ranges
    passes = []
    monkeypatch.setattr(calibration, "measured_ranges", lambda *a: passes.append(1) or measured(*a))
    cfg, ckpt = _save_student(tmp_path)
    records = {}
    for ranges, flags in (("extremes", ["--calibration-ranges", "extremes"]),
                          ("p99.99", ["--calibration-percentile", "99.99"]), ("auto", [])):
        passes.clear()
        out = tmp_path / ranges
        assert cli_main(list(_export_args(tmp_path, ckpt, "--quantization", "int8", "--out", str(out), *flags,
                                          "--calibration-samples", "4", "--eval-limit", "3"))) == 0
        records[ranges] = json.loads((out / "export.json").read_text())["exports"]["int8"]
        assert len(passes) == 1, ranges
    printed = capsys.readouterr().out
    agreement = {ranges: records[ranges]["parity"]["argmax_agreement"] for ranges in ("extremes", "p99.99")}
    auto = records["auto"]
    assert auto["calibration_agreement"] == agreement
    kept = "p99.99" if agreement["p99.99"] > agreement["extremes"] else "extremes"
    assert (auto.get("calibration_percentile"), auto.get("calibration_ranges")) == (
        (99.99, None) if kept == "p99.99" else (None, "extremes"))
    assert auto["parity"] == records[kept]["parity"]
    assert Path(auto["file"]).read_bytes() == Path(records[kept]["file"]).read_bytes()
    assert Path(records["extremes"]["file"]).read_bytes() != Path(records["p99.99"]["file"]).read_bytes()
    assert "calibration_agreement" not in records["extremes"]
    named = {"extremes": "the extremes", "p99.99": "the 99.99th percentile"}[kept]
    assert f"int8 activation ranges: {named} kept (labels equal to Keras' with the extremes " in printed


def test_skd_tf_export_corrects_int8_biases_on_the_calibration_images_it_is_told(tmp_path, capsys):
    """`skd-tf export --bias-correction-samples 2`: the int8 record says how many images and convolutions were
    corrected, the summary prints it, and the file's integer weights are the uncorrected file's (only int32 biases
    move); without the flag nothing is corrected."""
    from ai_edge_litert.tools import flatbuffer_utils

    cfg, ckpt = _save_student(tmp_path)
    files = {}
    for samples in ("0", "2"):
        out = tmp_path / f"bc{samples}"
        assert cli_main(list(_export_args(tmp_path, ckpt, "--quantization", "int8", "--out", str(out),
                                          "--calibration-ranges", "extremes", "--calibration-samples", "4",
                                          "--bias-correction-samples", samples, "--eval-limit", "3"))) == 0
        entry = json.loads((out / "export.json").read_text())["exports"]["int8"]
        files[samples] = flatbuffer_utils.convert_bytearray_to_object(bytearray(Path(entry["file"]).read_bytes()))
        if samples == "0":
            assert "bias_correction" not in entry
            continue
        facts = entry["bias_correction"]
        assert facts["samples"] == 2 and facts["ops"] > 0 and facts["largest_error_steps"] > 0
        assert f"int8 biases corrected on 2 calibration images: {facts['ops']} convolutions" in capsys.readouterr().out

    def constants(model, dtype):
        graph = model.subgraphs[0]
        return [bytes(bytearray(model.buffers[t.buffer].data)) for t in graph.tensors
                if t.type == dtype and t.buffer < len(model.buffers) and model.buffers[t.buffer].data is not None]

    from ai_edge_litert import schema_py_generated as schema

    assert constants(files["0"], schema.TensorType.INT8) == constants(files["2"], schema.TensorType.INT8)
    assert constants(files["0"], schema.TensorType.INT32) != constants(files["2"], schema.TensorType.INT32)


def test_int8_calibration_percentile_samples_every_channel_of_a_large_tensor(tmp_path, monkeypatch):
    """Beyond SAMPLED_VALUES a tensor's values are sampled, never strided: four channels, the last one 10
    everywhere (a quarter of the values), so P₉₈ is 10 — a stride of 4 (4096 values, 1024 sampled) would see
    only the first channel's ramp and clip to 0.98."""
    from skd_tf.export import calibration
    from skd_tf.export.convert import convert

    monkeypatch.setattr(calibration, "SAMPLED_VALUES", 1024)

    @tf.function(input_signature=[tf.TensorSpec([1, 1024, 4], tf.float32)])
    def double(x):
        return x * 2.0

    ramp = np.linspace(0, 1, 1024, dtype=np.float32)
    values = np.stack([ramp, ramp[::-1], ramp, np.full(1024, 10.0, np.float32)], axis=-1)[None]
    content = convert(double.get_concrete_function(), "int8", lambda: iter([[values]]), float_output=False,
                      calibration_percentile=98)
    (tmp_path / "double.tflite").write_bytes(content)
    interpreter = runtime.make_interpreter(str(tmp_path / "double.tflite"))
    steps = sorted(d["quantization"][0] * 255 for d in interpreter.get_tensor_details() if d["dtype"] == np.int8)
    np.testing.assert_allclose(steps, [2, 10, 20], rtol=1e-3)  # the constant 2, x in [0, 10], 2x in [0, 20]


def _np_conv_same(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A stride-1 'same' convolution of NHWC ``x`` with a k×k×C×D kernel ``w`` and bias ``b``, in float64."""
    k, pad = w.shape[0], w.shape[0] // 2
    padded = np.pad(x.astype(np.float64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    h, width = x.shape[1:3]
    return b + sum(np.einsum("nhwc,cd->nhwd", padded[:, i:i + h, j:j + width], w[i, j])
                   for i in range(k) for j in range(k))


def test_int8_bias_correction_moves_each_convolutions_channel_means_to_the_float_networks():
    """Three convolutions (3×3 with a narrow channel, 1×1, 1×1 + ReLU) converted to int8 on 4 samples, without
    and with ``bias_correction_samples=4``. The first convolution's int32 bias moves by round((mean of the file's
    dequantized output − mean of NumPy's float output) / bias scale) per channel; the second's by the same
    computed on the file with the first one corrected (corrections follow the data); the third, whose ReLU is
    fused, keeps its bias. ±1 bias unit (1/300 of an output step or less here) for the float twin's
    rounding against NumPy's float64 at a rounding boundary."""
    from ai_edge_litert.tools import flatbuffer_utils

    from skd_tf.export.bias_correction import _channel_means

    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.5, (3, 3, 3, 4)).astype(np.float32)
    w1[..., 0] *= 0.01  # a channel spanning a few int8 steps of its tensor
    w2 = rng.normal(0, 0.5, (1, 1, 4, 5)).astype(np.float32)
    w3 = rng.normal(0, 0.5, (1, 1, 5, 2)).astype(np.float32)
    b1, b2, b3 = (rng.normal(0, 0.1, n).astype(np.float32) for n in (4, 5, 2))

    @tf.function(input_signature=[tf.TensorSpec([1, 12, 12, 3], tf.float32)])
    def net(x):
        y1 = tf.nn.bias_add(tf.nn.conv2d(x, w1, 1, "SAME"), b1)
        y2 = tf.nn.bias_add(tf.nn.conv2d(y1, w2, 1, "SAME"), b2)
        return tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(y2, w3, 1, "SAME"), b3))

    samples = [rng.uniform(0, 1, (1, 12, 12, 3)).astype(np.float32) for _ in range(4)]

    def int8_file(corrected: int, report=None):
        content = convert(net.get_concrete_function(), "int8", lambda: iter([[x] for x in samples]),
                          float_output=False, bias_correction_samples=corrected, report=report)
        return flatbuffer_utils.convert_bytearray_to_object(bytearray(content))

    report = {}
    plain, corrected = int8_file(0), int8_file(4, report)
    assert report["bias_correction"]["ops"] == 2 and report["bias_correction"]["samples"] == 4

    def convolutions(model):  # (bias tensor, bias values, output tensor id) of the three CONV_2Ds in order
        graph = model.subgraphs[0]
        found = [op for op in graph.operators if len(op.inputs) == 3 and graph.tensors[op.inputs[1]].shape.size == 4]
        return [(graph.tensors[op.inputs[2]], np.frombuffer(bytes(bytearray(
            model.buffers[graph.tensors[op.inputs[2]].buffer].data)), np.int32), op.outputs[0]) for op in found]

    (bias1, plain1, out1), (bias2, plain2, out2), (_, plain3, _) = convolutions(plain)
    (_, fixed1, _), (_, fixed2, _), (_, fixed3, _) = convolutions(corrected)
    y1 = [_np_conv_same(x, w1, b1) for x in samples]
    y2 = [_np_conv_same(y, w2, b2) for y in y1]
    inputs = [[x] for x in samples]

    def expected_shift(model, output, bias, floats):
        error = _channel_means(model, [output], inputs)[output] - np.mean([y.reshape(-1, y.shape[-1]).mean(0)
                                                                          for y in floats], axis=0)
        return np.round(error / np.asarray(bias.quantization.scale, np.float64))

    shift1 = expected_shift(plain, out1, bias1, y1)
    assert np.abs(shift1).max() > 1  # the file's means are off: there is something to correct
    np.testing.assert_allclose(plain1 - fixed1, shift1, atol=1)
    plain.buffers[bias1.buffer].data = np.frombuffer(fixed1.tobytes(), np.uint8)  # the first one corrected alone
    np.testing.assert_allclose(plain2 - fixed2, expected_shift(plain, out2, bias2, y2), atol=1)
    np.testing.assert_array_equal(fixed3, plain3)
    for quantization, representative in (("qat", lambda: iter([[x] for x in samples])), ("int8", None)):
        with pytest.raises(ValueError, match="bias correction applies to int8 post-training quantization with"):
            convert(net.get_concrete_function(), quantization, representative, bias_correction_samples=4)


def test_qat_concatenations_and_their_inputs_share_one_range_so_the_file_converts():
    """After fine-tuning, moving averages leave ESPNet's first concatenation a hair off the image pooling it
    reads (300 CamVid steps: [-1.7301, 4.0748] against [-1.7570, 4.0616]) and the converter refused the file
    ("same scale constraint"): each concatenation and its fake-quantized inputs get the union of their ranges."""
    from skd_tf.config import ModelConfig
    from skd_tf.export.qat import _output_range, calibrate_ranges, qat_logits_fn, quantization_aware
    from skd_tf.export.qat import tie_concatenation_ranges

    keras.utils.set_random_seed(0)
    net = build_model(ModelConfig(arch="espnet", espnet_blocks=(1, 1)), 5, (32, 32))
    model = quantization_aware(keras.Model(net.input, {"logits": net.get_layer("b2.act").output}))
    rng = np.random.default_rng(0)
    calibrate_ranges(model, [rng.standard_normal((2, 32, 32, 3)).astype(np.float32)])
    concat = model.get_layer("quant_b1_concat")
    ranges = [r for r in map(_output_range, [concat, *concat.inbound_nodes[0].inbound_layers]) if r is not None]
    assert len(ranges) == 2  # the concatenation's, the image pooling's (the PReLU's Add carries none)
    for (low, high), values in zip(ranges, ((-1.7301, 4.0748), (-1.7570, 4.0616))):  # as the CamVid run left them
        low.assign(values[0])
        high.assign(values[1])
    spec = ServingSpec((32, 32), int(model.output.shape[-1]), output="logits", preprocess=False)

    def converted():
        return convert(serving_function(qat_logits_fn(model), spec, integer_model=True), "qat",
                       lambda: ([rng.standard_normal((1, 32, 32, 3)).astype(np.float32)] for _ in range(2)))

    with pytest.raises(ValueError, match="same scale constraint"):
        converted()
    assert tie_concatenation_ranges(model) == 4  # b1, level 2's two ESP blocks, b2: none shares an input
    assert [(round(float(a.numpy()), 4), round(float(b.numpy()), 4)) for a, b in ranges] == [(-1.757, 4.0748)] * 2
    assert converted()


def test_qat_espnet_converts_and_computes_what_its_fake_quantized_model_computes(tmp_path, capfd):
    """ESPNet's input reinforcement average-pools the zero-padded image next to its first convolution. TFLite's
    int8 PAD and AVERAGE_POOL_2D keep their input's scale: with tfmot's own range on the pooling the conversion
    failed once calibration had moved the ranges apart ("'tfl.pad' op quantization parameters violate the same
    scale constraint"); without one, the converter merged the two paddings and requantized the image to the
    concatenation's scale, clipping the first convolution's input (b1_concat 20 % RMS off the fake-quantized
    model). Integer exports make each zero-padded pooling one "same"-padded depthwise convolution of ninths,
    which the mirror carries as a frozen DepthwiseConv2D: the file converts, is integer-only,
    and its first concatenation is the fake-quantized model's within one output step — with a dead channel
    (a batch norm's γ of 0, as in the published Cityscapes ESPNet), whose converter diagnostic is said as the
    note it is. tfmot cannot rebuild a layer that reads one tensor twice (ESPNet without blocks at level 2): a
    clear error, not a shape mismatch."""
    from skd_tf.config import ModelConfig
    from skd_tf.export.qat import calibrate_ranges, qat_logits_fn, quantization_aware

    with pytest.raises(ValueError, match="'b2_concat' reads the same tensor twice"):  # no block: level2_0 twice
        quantization_aware(build_model(ModelConfig(arch="espnet", espnet_blocks=(0, 1)), 5, (32, 32)))
    keras.utils.set_random_seed(0)
    net = build_model(ModelConfig(arch="espnet", espnet_blocks=(1, 1)), 5, (32, 32))
    gamma, *statistics = net.get_layer("level1.bn").get_weights()
    net.get_layer("level1.bn").set_weights([np.where(np.arange(len(gamma)) == 3, 0.0, gamma), *statistics])
    # the encoder to level 2 (both poolings of the image) converts; the first concatenation is checked by value
    second, first = (keras.Model(net.input, {"logits": net.get_layer(name).output}) for name in ("b2.act", "b1_concat"))
    rng = np.random.default_rng(0)
    calibration = [scale * rng.standard_normal((2, 32, 32, 3)).astype(np.float32) for scale in (1.0, 2.0)]
    samples = [rng.standard_normal((1, 32, 32, 3)).astype(np.float32) for _ in range(2)]
    for network in (second, first):
        model = quantization_aware(network)
        calibrate_ranges(model, calibration)
        spec = ServingSpec((32, 32), network.output["logits"].shape[-1], output="logits", preprocess=False)
        content = convert(serving_function(qat_logits_fn(model), spec, integer_model=True), "qat",
                          lambda: ([sample] for sample in samples))
        (tmp_path / "qat.tflite").write_bytes(content)
        interpreter = runtime.make_interpreter(str(tmp_path / "qat.tflite"))
        assert not [d["name"] for d in interpreter.get_tensor_details() if d["dtype"] == np.float32]
        said = capfd.readouterr().err
        assert "quant_level1.conv/Conv2D: note: an output channel whose weights are all zero" in said, said
        assert "error" not in said, said
    image = rng.standard_normal((1, 32, 32, 3)).astype(np.float32)
    (scale, zero), (out_scale, out_zero) = (d["quantization"] for d in (interpreter.get_input_details()[0],
                                                                        interpreter.get_output_details()[0]))
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"],
                           np.clip(np.round(image / scale + zero), 0, 255).astype(np.uint8))
    interpreter.invoke()
    concatenated = (interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).astype(np.float32)
                    - out_zero) * out_scale
    assert np.abs(concatenated - model(image, training=False).numpy()).max() <= 1.01 * out_scale


def test_qat_fine_tuning_repeats_exactly():
    """Two QAT fine-tunings of the same network with the same export.qat.seed end with the same weights, whatever
    the global generators held before: tf_keras draws the dropout masks from its own generator, which the
    fine-tuning seeds (unseeded, two `skd-tf export --quantization qat` runs of one checkpoint wrote different
    files: first losses 1.053 and 1.083). ``after_step`` sees the model before the first step and after each."""
    from skd_tf.config import DataConfig, SyntheticConfig
    from skd_tf.export.config import QATConfig
    from skd_tf.export.qat import finetune

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Dropout(0.5)(keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs))
    net = keras.Model(inputs, {"logits": keras.layers.Conv2D(4, 1, name="logits")(x)})
    data = DataConfig(num_classes=4, crop_size=(32, 32), synthetic=SyntheticConfig(num_train=4, num_val=2,
                                                                                   image_size=32))
    cfg = QATConfig(steps=1, batch_size=2, calibration_batches=1, learning_rate=1e-2, seed=3)
    runs, seen = [], {}
    for before in (1, 2):
        tf.random.set_seed(before)
        result = finetune(net, None, data, cfg, (32, 32), progress=False,
                          after_step=lambda n, model: seen.update({n: [w.copy() for w in model.get_weights()]}))
        runs.append((result.first_loss, [w.copy() for w in result.model.get_weights()]))
    (first_a, a), (first_b, b) = runs
    assert first_a == first_b
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # after_step saw the calibrated model before the step and the fine-tuned one after it
    assert sorted(seen) == [0, 1]
    assert all(np.array_equal(x, y) for x, y in zip(seen[1], b))
    assert not all(np.array_equal(x, y) for x, y in zip(seen[0], b))


def test_qat_cosine_schedule_scales_each_steps_update_by_its_learning_rate():
    """export.qat.schedule cosine: step k of n moves the weights by lr · ½(1 + cos(π(k − 1)/n)) where a constant
    rate moves them by lr (Adam's steps; at a rate this small both runs see the same gradients)."""
    from skd_tf.config import DataConfig, SyntheticConfig
    from skd_tf.export.config import QATConfig
    from skd_tf.export.qat import finetune

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    net = keras.Model(inputs, {"logits": keras.layers.Conv2D(4, 1, name="logits")(x)})
    data = DataConfig(num_classes=4, crop_size=(32, 32), synthetic=SyntheticConfig(num_train=8, num_val=2,
                                                                                   image_size=32))
    moves = {}
    for schedule in ("constant", "cosine"):
        seen = {}
        cfg = QATConfig(steps=3, batch_size=2, calibration_batches=1, learning_rate=1e-6, schedule=schedule)
        finetune(net, None, data, cfg, (32, 32), progress=False,
                 after_step=lambda n, model: seen.update({n: [w.numpy() for w in model.trainable_weights]}))
        moves[schedule] = [sum(float(np.abs(b - a).sum()) for a, b in zip(seen[k - 1], seen[k])) for k in (1, 2, 3)]
    assert min(moves["constant"]) > 0
    ratios = np.divide(moves["cosine"], moves["constant"])
    np.testing.assert_allclose(ratios, [1.0, 0.75, 0.25], rtol=0.02)


def test_qat_scale_range_replaces_the_training_splits_random_scaling(monkeypatch):
    """export.qat.scale_range: QAT's calibration and fine-tuning batches are drawn at that scale range instead of
    data.scale_range (the pipeline's scaling itself is tested in test_data); a bad range is refused."""
    import pydantic

    from skd_tf.config import DataConfig, SyntheticConfig
    from skd_tf.data import pipeline
    from skd_tf.export.config import QATConfig
    from skd_tf.export.qat import finetune

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    net = keras.Model(inputs, {"logits": keras.layers.Conv2D(4, 3, padding="same", name="logits")(inputs)})
    data = DataConfig(num_classes=4, crop_size=(32, 32), scale_range=(0.5, 2.0),
                      synthetic=SyntheticConfig(num_train=4, num_val=2, image_size=32))
    drawn, real = [], pipeline.train_dataset
    monkeypatch.setattr(pipeline, "train_dataset",
                        lambda d, *a, **k: (drawn.append(d.scale_range), real(d, *a, **k))[1])
    for given, expected in ((None, (0.5, 2.0)), ((1.0, 1.0), (1.0, 1.0))):
        drawn.clear()
        finetune(net, None, data, QATConfig(steps=1, batch_size=2, calibration_batches=1, scale_range=given),
                 (32, 32), progress=False)
        assert drawn == [expected, expected]
    with pytest.raises(pydantic.ValidationError, match="export.qat.scale_range must be 0 < low <= high"):
        QATConfig(scale_range=(2.0, 1.0))


def test_qat_fine_tuning_reports_progress_in_a_log_and_stops_at_the_first_non_finite_loss(capsys):
    """Off a terminal (a log file, CI) no bar is drawn, so a long fine-tuning printed nothing for 20 minutes: it
    prints a line every tenth of its steps. A diverged run stops at the step that diverged (it ran to its end)."""
    from skd_tf.config import DataConfig, SyntheticConfig
    from skd_tf.export.config import QATConfig
    from skd_tf.export.qat import finetune

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    net = keras.Model(inputs, {"logits": keras.layers.Conv2D(4, 3, padding="same", name="logits")(inputs)})
    data = DataConfig(num_classes=4, crop_size=(32, 32), synthetic=SyntheticConfig(num_train=4, num_val=2,
                                                                                   image_size=32))
    finetune(net, None, data, QATConfig(steps=20, batch_size=2, calibration_batches=1), (32, 32), progress=True)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"QAT fine-tune: step {k}/20" for k in range(2, 21, 2)]
    assert "(mean of the last 10)" in lines[-1] and lines[-1].endswith(" s/step")
    with pytest.raises(FloatingPointError, match=r"diverged at step [2-9] \(loss (nan|inf)\)"):
        finetune(net, None, data, QATConfig(steps=20, batch_size=2, calibration_batches=1, learning_rate=1e38),
                 (32, 32), progress=False)
    assert capsys.readouterr().out == ""
