import keras
import numpy as np
import pytest

from skd_tf.config import ModelConfig
from skd_tf.models import at_input_size, build_model, is_segmentation_model, load_model, output_stride
from skd_tf.models.backbones import MOBILENETV3, copy_weights_by_name, dilate_last_stage, resnet
from skd_tf.models.layers import AdaptiveAveragePooling2D

ARCHS = [
    dict(arch="pspnet", backbone="resnet18", output_stride=8, aux_head=True),
    dict(arch="pspnet", backbone="resnet50", output_stride=16),
    dict(arch="deeplabv3", backbone="resnet34", output_stride=8),
    dict(arch="deeplabv3", backbone="resnet101", output_stride=16),
    dict(arch="lraspp", backbone="mobilenetv2", output_stride=16),
    dict(arch="lraspp", backbone="mobilenetv3_large", output_stride=16),
    dict(arch="deeplabv3", backbone="mobilenetv3_small", output_stride=16),
]


@pytest.mark.parametrize("kw", ARCHS, ids=lambda kw: f"{kw['arch']}-{kw['backbone']}-os{kw['output_stride']}")
def test_every_architecture_exposes_logits_and_features(kw):
    model = build_model(ModelConfig(width=0.125, head_channels=16, **kw), 5, (32, 48))
    out = model(np.random.rand(2, 32, 48, 3).astype("float32"))
    stride = 8 if kw["arch"] == "lraspp" else kw["output_stride"]
    assert out["logits"].shape == (2, 32 // stride, 48 // stride, 5)
    assert out["features"].shape == (2, 32 // stride, 48 // stride, 16)
    assert ("aux_logits" in out) == kw.get("aux_head", False)
    assert is_segmentation_model(model)


@pytest.mark.parametrize("kw", ARCHS, ids=lambda kw: f"{kw['arch']}-{kw['backbone']}-os{kw['output_stride']}")
def test_an_odd_input_size_gives_the_rounded_up_map(kw):
    """769×769 crops (DeepLab's Cityscapes convention) give 97×97 maps at stride 8: every architecture
    takes a size its stride does not divide, with ⌈H/stride⌉ rows, and evaluation reads the stride right."""
    model = build_model(ModelConfig(width=0.125, head_channels=16, **kw), 5, (33, 49))
    out = model(np.random.rand(1, 33, 49, 3).astype("float32"))
    stride = 8 if kw["arch"] == "lraspp" else kw["output_stride"]
    assert out["logits"].shape == (1, -(-33 // stride), -(-49 // stride), 5)
    assert np.isfinite(np.asarray(out["logits"])).all()
    assert output_stride(model) == stride


def reference_adaptive_pool(x, bins):
    """PyTorch's AdaptiveAvgPool2d, written out with loops."""
    b, h, w, c = x.shape
    out = np.zeros((b, bins, bins, c))
    for i in range(bins):
        for j in range(bins):
            r0, r1 = (i * h) // bins, -(-(i + 1) * h // bins)
            c0, c1 = (j * w) // bins, -(-(j + 1) * w // bins)
            out[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
    return out


@pytest.mark.parametrize("bins,size", [(1, (8, 8)), (2, (8, 6)), (3, (8, 8)), (6, (7, 10))])
def test_adaptive_average_pooling_matches_reference(bins, size):
    x = np.random.default_rng(0).normal(size=(2, *size, 3)).astype("float32")
    got = AdaptiveAveragePooling2D(bins)(x)
    np.testing.assert_allclose(got, reference_adaptive_pool(x, bins), rtol=1e-5, atol=1e-6)


def test_resnet50_is_keras_applications_resnet50_at_stride_32():
    inputs = keras.Input((64, 64, 3))
    ours = keras.Model(inputs, resnet(inputs, 50, output_stride=32)["out"])
    theirs = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
    copied = copy_weights_by_name(theirs, ours)
    assert copied == 106  # 53 convolutions and 53 batch norms
    x = np.random.default_rng(1).normal(size=(1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-4, atol=1e-4)


def test_weight_copy_rejects_other_widths():
    inputs = keras.Input((32, 32, 3))
    narrow = keras.Model(inputs, resnet(inputs, 50, output_stride=32, width=0.5)["out"])
    theirs = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="width 1.0"):
        copy_weights_by_name(theirs, narrow)


def test_rebuild_at_another_size_keeps_weights():
    model = build_model(ModelConfig(width=0.125, head_channels=8), 3, (32, 32))
    bigger = at_input_size(model, (48, 64))
    assert bigger.output["logits"].shape[1:3] == (6, 8)
    for a, b in zip(model.get_weights(), bigger.get_weights()):
        np.testing.assert_array_equal(a, b)
    # a constant image gives a constant map away from the borders, the same at both sizes
    x = np.ones((1, 32, 32, 3), "float32")
    assert at_input_size(model, (32, 32)) is model
    assert np.isfinite(bigger(np.ones((1, 48, 64, 3), "float32"))["logits"]).all()
    assert model(x)["logits"].shape == (1, 4, 4, 3)


def test_save_load_roundtrip_and_bad_checkpoints(tmp_path):
    model = build_model(ModelConfig(arch="lraspp", backbone="mobilenetv2", output_stride=16, width=0.35,
                                    head_channels=8), 3, (32, 32))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = load_model(path)
    x = np.random.rand(1, 32, 32, 3).astype("float32")
    np.testing.assert_allclose(loaded(x)["logits"], model(x)["logits"], rtol=1e-6)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.keras")
    (tmp_path / "junk.keras").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot load"):
        load_model(tmp_path / "junk.keras")
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.save(tmp_path / "plain.keras")
    with pytest.raises(ValueError, match="not an skd-tf segmentation model"):
        load_model(tmp_path / "plain.keras")


def test_keras_builds_each_attribute_skipset_once():
    """skd_tf.models memoises Keras 3.15's get_attr_skipset, whose own cache never hits (keras_saving.py): the
    saving walk gets the set Keras computes, built once. Fails loudly when the private function moves, and
    when Keras mends its cache (then keras_saving.py can go)."""
    from keras.src.saving import saving_lib

    skipset = saving_lib.get_attr_skipset
    assert hasattr(skipset, "cache_info"), "skd_tf.models did not memoise keras' get_attr_skipset"
    # Python makes a class's empty __annotations__ on its first read (typing, pydantic), after which dir() of a
    # new instance lists it: a set made earlier in the session lacks it (a dict, harmless to the saving walk)
    lazy = {"__annotations__"}
    for kind in ("Layer", "Functional", "Optimizer", "Metric"):
        assert skipset(kind) is skipset(kind) and skipset(kind) - lazy == skipset.__wrapped__(kind) - lazy
    assert skipset.__wrapped__("Layer") is not skipset.__wrapped__("Layer"), \
        "Keras caches its attribute skip-sets now: skd_tf/models/keras_saving.py is no longer needed"


@pytest.mark.parametrize("variant", sorted(MOBILENETV3))
def test_mobilenetv3_last_stage_is_dilated_instead_of_strided(variant):
    """Output stride 16: the same network as at 32 with the last stage's depthwise convolutions at stride 1
    and dilation 2 (its strided block's zero padding gone), every weight kept, everything before it equal."""
    cfg = ModelConfig(arch="lraspp", backbone=variant, output_stride=32, width=0.75, head_channels=8)
    strided = build_model(cfg, 3, (64, 96))
    dilated = dilate_last_stage(strided, variant)
    assert output_stride(dilated) == 8 and output_stride(build_model(
        cfg.model_copy(update={"arch": "deeplabv3", "output_stride": 16}), 3, (64, 96))) == 16
    blocks = MOBILENETV3[variant]["last_stage"]
    for b in blocks:
        layer = dilated.get_layer(f"expanded_conv_{b}_depthwise")
        assert (layer.strides, layer.dilation_rate, layer.padding) == ((1, 1), (2, 2), "same")
        assert layer.output.shape[1:3] == (4, 6)  # 64×96 at stride 16
        assert strided.get_layer(f"expanded_conv_{b}_depthwise").dilation_rate == (1, 1)
    names = {layer.name for layer in dilated.layers}
    assert f"expanded_conv_{blocks[0]}_depthwise_pad" not in names
    assert {layer.name for layer in strided.layers} - names == {f"expanded_conv_{blocks[0]}_depthwise_pad"}
    assert len(dilated.weights) == len(strided.weights)
    for a, b in zip(strided.weights, dilated.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = np.random.default_rng(2).normal(size=(1, 64, 96, 3)).astype("float32")
    before = MOBILENETV3[variant]["stride16"]
    np.testing.assert_allclose(*(keras.Model(m.input, m.get_layer(before).output)(x) for m in (strided, dilated)),
                               rtol=1e-5, atol=1e-5)


def test_bn_momentum_reaches_every_batch_norm_and_is_saved(tmp_path):
    cfg = ModelConfig(arch="lraspp", backbone="mobilenetv3_small", output_stride=16, width=0.75, head_channels=8)
    default = build_model(cfg, 3, (32, 32))
    assert {layer.momentum for layer in default.layers if isinstance(layer, keras.layers.BatchNormalization)} == {
        0.999, 0.99}  # keras.applications' own, and our head's
    model = build_model(cfg.model_copy(update={"bn_momentum": 0.9}), 3, (32, 32))
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    norms = [layer for layer in loaded.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) > 30 and {layer.momentum for layer in norms} == {0.9}


# torchvision's mobilenet_v3_large / _small(reduced_tail=True): the last stage's first block projects to
# 160 // 2 / 96 // 2, the others expand to 960 // 2 / 576 // 2 and project to the same half; the last 1×1
# convolution is six times that.
REDUCED_TAIL = {
    "mobilenetv3_large": {"first_expand": 672, "project": 80, "expand": 480, "squeeze": 120, "conv_1": 480},
    "mobilenetv3_small": {"first_expand": 288, "project": 48, "expand": 288, "squeeze": 72, "conv_1": 288}}


@pytest.mark.parametrize("variant", sorted(MOBILENETV3))
def test_mobilenetv3_reduced_tail_halves_the_last_stage_only(variant, tmp_path):
    cfg = ModelConfig(arch="lraspp", backbone=variant, output_stride=16, head_channels=8, reduced_tail=True)
    reduced = build_model(cfg, 3, (32, 48))
    full = build_model(cfg.model_copy(update={"reduced_tail": False}), 3, (32, 48))
    want = REDUCED_TAIL[variant]
    first, *rest = MOBILENETV3[variant]["last_stage"]
    filters = {f"expanded_conv_{first}_expand": want["first_expand"],
               f"expanded_conv_{first}_project": want["project"], "conv_1": want["conv_1"]}
    for b in rest:
        filters.update({f"expanded_conv_{b}_expand": want["expand"], f"expanded_conv_{b}_project": want["project"],
                        f"expanded_conv_{b}_squeeze_excite_conv": want["squeeze"],
                        f"expanded_conv_{b}_squeeze_excite_conv_1": want["expand"]})
    for name, count in filters.items():
        assert reduced.get_layer(name).filters == count, name
    assert reduced.get_layer(f"expanded_conv_{rest[-1]}_depthwise").dilation_rate == (2, 2)  # still stride 16
    # every layer before the stage, and the head's layers past their input width, are the full network's
    before = {w.path: w.shape for w in full.weights if not w.path.startswith(
        tuple(f"expanded_conv_{b}_" for b in (first, *rest)) + ("conv_1", "lraspp_main", "lraspp_gate"))}
    assert before and all(dict((w.path, w.shape) for w in reduced.weights)[p] == s for p, s in before.items())
    assert reduced.count_params() < 0.6 * full.count_params()
    reduced.save(tmp_path / "reduced.keras")
    loaded = load_model(tmp_path / "reduced.keras")
    x = np.random.default_rng(0).normal(size=(1, 32, 48, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x)["logits"], reduced(x)["logits"], rtol=1e-5, atol=1e-6)
    for bad in ({"backbone": "mobilenetv2"}, {"pretrained": "imagenet"}):
        with pytest.raises(ValueError, match="reduced_tail"):
            ModelConfig(**{**cfg.model_dump(), **bad})


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square")  # Keras' note on 224×224 weights
@pytest.mark.parametrize("kw", [dict(arch="lraspp", backbone="mobilenetv3_small", output_stride=16),
                                dict(arch="pspnet", backbone="resnet50", output_stride=8)],
                         ids=lambda kw: kw["backbone"])
def test_imagenet_weights_that_cannot_be_downloaded_are_one_clear_error(kw, tmp_path, monkeypatch):
    """Offline, Keras' own download fails with a bare Exception and a traceback; the model names the file,
    where Keras looks for it and how to train without it. The real get_file runs, down to its urlretrieve."""
    import urllib.error

    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))  # no weights cached from an earlier download
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    with pytest.raises(ValueError, match=r"^model\.pretrained: imagenet needs keras\.applications' ImageNet weights "
                                         rf"for {kw['backbone']}, .*failed \(.*Name or service not known\): put "
                                         r"\S+\.h5 \(from https://\S+\.h5\) in .*models, or set model\.pretrained: "
                                         r"none") as raised:
        build_model(ModelConfig(pretrained="imagenet", head_channels=16, **kw), 5, (64, 64))
    assert "\n" not in str(raised.value)
