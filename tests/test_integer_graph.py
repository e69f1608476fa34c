"""Integer exports trace hard-swish and per-channel PReLU in ops XNNPACK runs in int8, and batch norms the
converter cannot fold as depthwise convolutions (skd_tf.export.integer_graph): the three layers against
NumPy, the rewrite keeps the network's function and weights, an int8 file keeps a batch norm's factors per
channel, an int8 ESPNet file carries depthwise PReLUs (LEAKY_RELU for slopes above 1) and DEPTH_TO_SPACE where
its float32 twin carries PRELU and TRANSPOSE_CONV, a transposed convolution whose kernel is its stride equals
its 1×1 + DEPTH_TO_SPACE form, and torch's zero-padded 3×3/2 average pooling equals its 4×4 "same" depthwise
form."""

import json

import keras
import numpy as np
import pytest

from skd_tf.benchmark import runtime
from skd_tf.config import DataConfig, ModelConfig
from skd_tf.export.integer_graph import for_integer_export, kernels_taking_the_sixth
from skd_tf.models import build_model
from skd_tf.models.layers import (BatchNormAsDepthwise, HardSwish, PaddedAveragePoolAsDepthwise, PReLUAsDepthwiseReLU,
                                  PReLUAsLeakyReLU, SixfoldHardSwish, TransposedConvAsDepthToSpace)


def test_hard_swish_matches_numpy():
    x = np.linspace(-8, 8, 1601, dtype=np.float32).reshape(1, 1, -1, 1)  # both kinks (−3, 3) on the grid
    expected = x * np.clip(x + 3, 0, 6) / 6
    np.testing.assert_allclose(np.asarray(HardSwish()(x)), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(HardSwish()(x)), np.asarray(keras.activations.hard_silu(x)),
                               rtol=1e-6, atol=1e-7)


def test_sixfold_hard_swish_is_six_times_hard_swish():
    x = np.linspace(-8, 8, 1601, dtype=np.float32).reshape(1, 1, -1, 1)
    np.testing.assert_allclose(np.asarray(SixfoldHardSwish()(x)), x * np.clip(x + 3, 0, 6), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("slope", [0.01, 0.3, 0.9])
def test_prelu_as_leaky_relu_matches_numpy(slope):
    rng = np.random.default_rng(0)
    y = rng.normal(0, 3, (2, 5, 7, 6)).astype(np.float32)
    alpha = np.array([-0.2, 0.0, 0.01, 0.25, 0.6, 1.5], np.float32)  # below, at and above the slope
    layer = PReLUAsLeakyReLU(slope)
    layer.build(y.shape)
    layer.alpha.assign(alpha.reshape(1, 1, -1))
    expected = np.where(y > 0, y, alpha * y)
    np.testing.assert_allclose(np.asarray(layer(y)), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="slope"):
        PReLUAsLeakyReLU(1.0)


def test_prelu_as_depthwise_relu_matches_numpy():
    rng = np.random.default_rng(0)
    y = rng.normal(0, 3, (2, 5, 7, 5)).astype(np.float32)
    alpha = np.array([-0.7, 0.0, 0.25, 0.99, 1.0], np.float32)  # negative, zero, usual, up to 1
    layer = PReLUAsDepthwiseReLU()
    layer.build(y.shape)
    layer.alpha.assign(alpha.reshape(1, 1, -1))
    np.testing.assert_allclose(np.asarray(layer(y)), np.where(y > 0, y, alpha * y), rtol=1e-5, atol=1e-5)


def test_batch_norm_as_depthwise_matches_numpy_and_keras():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, (2, 5, 7, 6)).astype(np.float32)
    gamma, beta, mean = (rng.normal(0, 2, 6).astype(np.float32) for _ in range(3))
    variance = rng.uniform(0.01, 4, 6).astype(np.float32)
    layer, keras_bn = BatchNormAsDepthwise(epsilon=1e-3), keras.layers.BatchNormalization(epsilon=1e-3)
    layer.build(x.shape)
    keras_bn.build(x.shape)
    for weights in (layer, keras_bn):
        weights.set_weights([gamma, beta, mean, variance])
    expected = gamma * (x - mean) / np.sqrt(variance + 1e-3) + beta
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(keras_bn(x, training=False)), rtol=1e-5, atol=1e-5)


def test_an_unfolded_batch_norm_keeps_each_channels_factor_in_int8(tmp_path):
    """A batch norm after a concatenation: int8 stores its factors per channel (a MUL constant would get one
    scale for factors 0.02 … 9, and 0.02 would be stored as 0 or 0.07)."""
    import tensorflow as tf

    from skd_tf.export.convert import convert

    factors = np.array([9.0, 1.3, 0.4, 0.02], np.float32)
    x = keras.Input((6, 8, 2))
    bn = keras.layers.BatchNormalization(epsilon=0.0, name="after_concat")
    y = keras.layers.Conv2D(3, 1, name="reads_it")(bn(keras.layers.Concatenate()([x, x])))
    model = for_integer_export(keras.Model(x, y))
    assert isinstance(model.get_layer("after_concat"), BatchNormAsDepthwise)
    model.get_layer("after_concat").set_weights([factors, np.zeros(4, np.float32), np.zeros(4, np.float32),
                                                 np.ones(4, np.float32)])
    fn = tf.function(model, input_signature=[tf.TensorSpec([1, 6, 8, 2], tf.float32)]).get_concrete_function()
    data = np.random.default_rng(0).uniform(-1, 1, (4, 1, 6, 8, 2)).astype(np.float32)
    path = tmp_path / "bn.tflite"
    path.write_bytes(convert(fn, "int8", lambda: ([d] for d in data)))
    interpreter = runtime.make_interpreter(str(path), xnnpack=False)  # XNNPACK would drop the constants
    stored = [t for t in interpreter.get_tensor_details() if t["dtype"] == np.int8 and t["shape"].tolist() == [1, 1, 1, 4]]
    assert len(stored) == 1, "the batch norm's factors are not a per-channel depthwise kernel"
    scales = stored[0]["quantization_parameters"]["scales"]
    assert scales.shape == (4,)
    kernel = interpreter.get_tensor(stored[0]["index"]).reshape(4) * scales
    np.testing.assert_allclose(kernel, factors, rtol=1 / 254)


def test_a_batch_norm_after_a_convolution_is_left_to_the_converter_to_fold():
    x = keras.Input((6, 8, 2))
    y = keras.layers.BatchNormalization(name="folded")(keras.layers.Conv2D(3, 1)(x))
    y = keras.layers.BatchNormalization(name="after_relu")(keras.layers.ReLU()(y))
    y = keras.layers.Conv2D(3, 1, activation="relu")(y)
    y = keras.layers.BatchNormalization(name="after_fused_relu")(y)
    model = for_integer_export(keras.Model(x, y))
    assert type(model.get_layer("folded")) is keras.layers.BatchNormalization
    assert isinstance(model.get_layer("after_relu"), BatchNormAsDepthwise)
    assert isinstance(model.get_layer("after_fused_relu"), BatchNormAsDepthwise)


def _randomise_prelu(model, seed=0):
    """Random PReLU slopes and batch-norm statistics (fresh ones are 0 and 1); the first PReLU gets one slope
    above 1, so that integer exports write it in the leaky form and the others in the depthwise one."""
    rng = np.random.default_rng(seed)
    first = True
    for weight in model.weights:
        if weight.path.endswith("alpha"):
            alpha = rng.uniform(-0.1, 0.6, weight.shape).astype(np.float32)
            if first:
                alpha.reshape(-1)[0], first = 1.5, False
            weight.assign(alpha)
        elif weight.path.endswith(("moving_mean", "beta")):
            weight.assign(rng.normal(0, 0.3, weight.shape).astype(np.float32))
        elif weight.path.endswith(("moving_variance", "gamma")):
            weight.assign(rng.uniform(0.3, 2.0, weight.shape).astype(np.float32))


@pytest.mark.parametrize("model", [dict(arch="espnet_c", backbone="espnet"),
                                   dict(arch="lraspp", backbone="mobilenetv3_large", output_stride=16,
                                        width=0.75, head_channels=16)], ids=lambda m: m["arch"])
def test_the_integer_rewrite_keeps_function_and_weights(model):
    keras.utils.set_random_seed(0)
    net = build_model(ModelConfig(**model), 5, (49, 65))
    _randomise_prelu(net)
    swapped = for_integer_export(net)
    kinds = [type(layer).__name__ for layer in swapped.layers]
    assert "PReLU" not in kinds and not any(isinstance(layer, keras.layers.Activation) and
                                            keras.activations.serialize(layer.activation) == "hard_silu"
                                            for layer in swapped.layers)
    divided = set()
    if "espnet" in model["arch"]:  # the one PReLU with a slope above 1 in the leaky form, the others depthwise
        assert kinds.count("PReLUAsLeakyReLU") == 1 and kinds.count("PReLUAsDepthwiseReLU") >= 10
    else:  # the stem's hard-swish feeds the first block's residual sum and keeps its ⅙; the other 19 pass it on
        assert kinds.count("HardSwish") == 1 and kinds.count("SixfoldHardSwish") == 19
        stem = next(layer for layer in swapped.layers if type(layer).__name__ == "HardSwish")
        assert "Add" in {type(node.operation).__name__ for node in stem._outbound_nodes}
        divided = {name for names in kernels_taking_the_sixth(net.get_config()).values() for name in names}
        # one kernel each, a second for the 5 squeeze-excites (pooled and multiplied) and LR-ASPP's pooled branch
        assert len(divided) == 19 + 5 + 1
    unfolded = {layer.name for layer in swapped.layers if isinstance(layer, BatchNormAsDepthwise)}
    if "espnet" in model["arch"]:  # the batch norms after concatenations and sums, not the convolutions' own
        assert {"b1.bn", "level2_0.bn", "b3.bn"} <= unfolded and "level1.bn" not in unfolded
    else:  # every batch norm of MobileNetV3 and LR-ASPP follows a convolution
        assert not unfolded
    assert len(swapped.weights) == len(net.weights)
    for a, b in zip(net.weights, swapped.weights):
        expected = np.asarray(a) / np.float32(6) if b.path.split("/")[0] in divided and b.name == "kernel" else a
        np.testing.assert_array_equal(np.asarray(b), np.asarray(expected), err_msg=b.path)
    x = np.random.default_rng(1).normal(size=(2, 49, 65, 3)).astype(np.float32)
    want, got = net(x, training=False)["logits"], swapped(x, training=False)["logits"]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5 * float(np.abs(want).max()))
    if "espnet" in model["arch"]:  # β = min α − 0.1 (within [0.01, 0.9]) per layer
        for layer in swapped.layers:
            if isinstance(layer, PReLUAsLeakyReLU):
                expected = np.clip(np.asarray(net.get_layer(layer.name).alpha).min() - 0.1, 0.01, 0.9)
                assert layer.slope == pytest.approx(float(expected))


def test_a_network_without_them_is_returned_as_it_is():
    net = build_model(ModelConfig(arch="lraspp", backbone="mobilenetv2", output_stride=16, width=0.35,
                                  head_channels=8), 3, (32, 32))
    assert for_integer_export(net) is net


def test_int8_and_qat_espnet_carry_leaky_relu_and_depth_to_space_where_float32_carries_prelu_and_transpose_conv(
        tmp_path):
    """The QAT file is converted from the tf_keras mirror of the same integer graph, so it has the int8
    file's ops (before, the mirror kept PRELU and TRANSPOSE_CONV: 21 XNNPACK partitions, 336 against 146 ms
    for ESPNet at 512×1024 on one core), and ESPNet's standalone batch norms and PReLUs as depthwise
    convolutions. (QAT is converted without fine-tuning here: the fine-tuning changes weights, not ops.)"""
    from skd_tf.export import export_tflite
    from skd_tf.export.convert import ServingSpec, convert, serving_function
    from skd_tf.export.qat import calibrate_ranges, qat_logits_fn, quantization_aware

    keras.utils.set_random_seed(0)
    # one block per stage (the published ESPNet has 2 and 8): which ops the files hold does not depend on it
    net = build_model(ModelConfig(arch="espnet", backbone="espnet", espnet_blocks=(1, 1)), 5, (32, 32))
    _randomise_prelu(net)
    data = DataConfig(num_classes=5, crop_size=(32, 32), synthetic={"num_train": 4, "num_val": 3, "image_size": 32})
    record = export_tflite(net, data, tmp_path, ("float32", "int8"), calibration_samples=2, eval_limit=3,
                           savedmodel=False, calibration_ranges="extremes")  # ops do not depend on the ranges
    ops = {q: entry["deployability"]["ops"] for q, entry in record["exports"].items()}
    rng = np.random.default_rng(0)
    images = [rng.standard_normal((1, 32, 32, 3)).astype(np.float32) for _ in range(2)]
    qat = quantization_aware(net)
    calibrate_ranges(qat, images)
    spec = ServingSpec((32, 32), 5, output="logits", preprocess=False)
    (tmp_path / "qat.tflite").write_bytes(convert(serving_function(qat_logits_fn(qat), spec, integer_model=True),
                                                  "qat", lambda: ([image] for image in images)))
    interpreter = runtime.make_interpreter(str(tmp_path / "qat.tflite"), xnnpack=False)
    ops["qat"] = {}
    for op in interpreter._get_ops_details():
        ops["qat"][op["op_name"]] = ops["qat"].get(op["op_name"], 0) + 1
    assert not [t["name"] for t in interpreter.get_tensor_details() if t["dtype"] == np.float32]
    assert "PRELU" in ops["float32"] and "LEAKY_RELU" not in ops["float32"]
    # the decoder's three 2×2 / 2 transposed convolutions: float32 keeps them, int8 writes 1×1 + DEPTH_TO_SPACE
    assert ops["float32"]["TRANSPOSE_CONV"] == 3 and "DEPTH_TO_SPACE" not in ops["float32"]
    # both normalise the input with one depthwise convolution; int8 writes its unfoldable batch norms as more
    assert ops["float32"]["DEPTHWISE_CONV_2D"] == 1
    assert record["exports"]["int8"]["deployability"]["all_integer"] is True
    prelus = ops["float32"]["PRELU"]
    for q in ("int8", "qat"):  # one PReLU has a slope above 1: the leaky form; the others the depthwise one
        assert "PRELU" not in ops[q] and ops[q]["LEAKY_RELU"] == 1, q
        assert "TRANSPOSE_CONV" not in ops[q] and ops[q]["DEPTH_TO_SPACE"] == 3, q
        assert ops[q]["DEPTHWISE_CONV_2D"] > 1, q
        # the input pyramid's zero-padded poolings: depthwise convolutions, no PAD of their own
        assert "AVERAGE_POOL_2D" not in ops[q] and ops[q]["PAD"] < ops["float32"]["PAD"], q
    assert ops["float32"]["AVERAGE_POOL_2D"] >= 1
    # the leaky PReLU's factors a and b: two MUL constants in int8, per-channel depthwise kernels in QAT; the
    # int8 file also normalises its input with one (this QAT file takes normalised input)
    assert ops["int8"]["MUL"] == 2 and "MUL" not in ops["qat"]
    assert ops["qat"]["DEPTHWISE_CONV_2D"] - (ops["int8"]["DEPTHWISE_CONV_2D"] - 1) == 2
    assert ops["int8"]["DEPTHWISE_CONV_2D"] > prelus  # the depthwise PReLUs, the batch norms, the poolings
    assert json.loads((tmp_path / "export.json").read_text())["exports"].keys() == {"float32", "int8"}


def _transposed_conv_numpy(x, kernel, bias, s):
    """y[s·i + a, s·j + b, o] = Σ_c x[i, j, c] · K[a, b, o, c] + bias_o (kernel = stride: no overlap)."""
    n, h, w, _ = x.shape
    y = np.zeros((n, h * s, w * s, kernel.shape[2]))
    for a in range(s):
        for b in range(s):
            y[:, a::s, b::s] = np.einsum("nijc,oc->nijo", x, kernel[a, b]) + bias
    return y


@pytest.mark.parametrize("stride,use_bias", [(2, False), (3, True)])
def test_a_stride_sized_transposed_convolution_becomes_a_pointwise_convolution_and_depth_to_space(stride, use_bias):
    rng = np.random.default_rng(stride)
    inputs = keras.Input((5, 7, 3))
    up = keras.layers.Conv2DTranspose(4, stride, strides=stride, use_bias=use_bias, name="up")(inputs)
    overlapping = keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same", name="overlapping")(up)
    net = keras.Model(inputs, {"logits": overlapping})
    net.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in net.get_weights()])
    swapped = for_integer_export(net)
    assert isinstance(swapped.get_layer("up"), TransposedConvAsDepthToSpace)
    assert type(swapped.get_layer("overlapping")) is keras.layers.Conv2DTranspose  # its windows overlap: kept
    x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    weights = net.get_layer("up").get_weights()
    want = _transposed_conv_numpy(x, weights[0], weights[1] if use_bias else 0.0, stride)
    np.testing.assert_allclose(np.asarray(swapped.get_layer("up")(x)), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(net.get_layer("up")(x)), want, rtol=1e-5, atol=1e-5)  # Keras' convention
    np.testing.assert_allclose(np.asarray(swapped(x)["logits"]), np.asarray(net(x)["logits"]), rtol=1e-5, atol=1e-5)


def test_hard_swish_hands_its_sixth_on_only_along_paths_that_commute_with_a_factor(tmp_path):
    """A hard-swish becomes x · ReLU6(x + 3) (one MUL fewer in the int8 file) with the ⅙ in the kernels it
    reaches through padding, pooling and one operand of a Multiply; one that feeds a sum, a concatenation, its
    own square, an output or a product with another hard-swish keeps its ⅙."""
    import tensorflow as tf

    from skd_tf.export.convert import convert

    layers = keras.layers
    x = keras.Input((8, 8, 4))

    def hard_swish(name):
        return layers.Activation("hard_silu", name=name)(layers.Conv2D(4, 1, name=f"{name}_in")(x))

    passes = hard_swish("passes")
    gate = layers.Conv2D(4, 1, activation="sigmoid", name="excite")(
        layers.Conv2D(2, 1, activation="relu", name="squeeze")(layers.GlobalAveragePooling2D(keepdims=True)(passes)))
    outputs = [layers.DepthwiseConv2D(3, name="depthwise")(layers.ZeroPadding2D(1)(passes)),
               layers.Conv2D(4, 1, name="project")(layers.Multiply()([passes, gate]))]
    to_sum, to_concat, squared, out, left, right = (hard_swish(name) for name in (
        "to_sum", "to_concat", "squared", "out", "left", "right"))
    outputs += [layers.Conv2D(4, 3, name="after_sum")(layers.Add()([to_sum, x])),
                layers.Conv2D(4, 3, name="after_concat")(layers.Concatenate()([to_concat, x])),
                layers.Conv2D(4, 3, name="after_square")(layers.Multiply()([squared, squared])), out,
                layers.Conv2D(4, 3, name="after_product")(layers.Multiply()([left, right]))]
    net = keras.Model(x, [layers.Flatten()(o) for o in outputs])
    assert kernels_taking_the_sixth(net.get_config()) == {"passes": {"depthwise", "squeeze", "project"}}
    swapped = for_integer_export(net)
    kinds = {name: type(swapped.get_layer(name)).__name__
             for name in ("passes", "to_sum", "to_concat", "squared", "out", "left", "right")}
    assert kinds == {"passes": "SixfoldHardSwish", **{name: "HardSwish" for name in kinds if name != "passes"}}
    data = np.random.default_rng(0).normal(0, 3, (4, 1, 8, 8, 4)).astype(np.float32)
    for want, got in zip(net(data[0]), swapped(data[0])):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    # the int8 file of the first two outputs: hard-swish as ADD and MUL, and the squeeze-excite's MUL
    single = keras.Model(swapped.inputs, swapped.outputs[:2])
    fn = tf.function(single, input_signature=[tf.TensorSpec([1, 8, 8, 4], tf.float32)]).get_concrete_function()
    path = tmp_path / "sixfold.tflite"
    path.write_bytes(convert(fn, "int8", lambda: ([d] for d in data)))
    ops = [op["op_name"] for op in runtime.make_interpreter(str(path), xnnpack=False)._get_ops_details()]
    assert ops.count("MUL") == 2 and ops.count("ADD") == 1, ops


def _torch_average_pool_numpy(x):
    """torch's AvgPool2d(3, stride=2, padding=1), count_include_pad: zeros around, every window / 9."""
    n, h, w, c = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out_h, out_w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    y = np.zeros((n, out_h, out_w, c))
    for i in range(out_h):
        for j in range(out_w):
            y[:, i, j] = padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].sum(axis=(1, 2)) / 9
    return y


@pytest.mark.parametrize("size", [(8, 10), (7, 9), (6, 5)])
def test_a_zero_padded_average_pooling_becomes_one_same_padded_depthwise_convolution(size):
    """Even and odd sides: "same" padding of the 4-wide kernel starts the window one row up as torch does."""
    rng = np.random.default_rng(size[0])
    inputs = keras.Input((*size, 3))
    pooled = keras.layers.AveragePooling2D(3, strides=2, name="pool")(keras.layers.ZeroPadding2D(1, name="pad")(inputs))
    # a padding that also feeds a convolution stays, and so does its pooling
    shared = keras.layers.ZeroPadding2D(1, name="shared_pad")(inputs)
    other = keras.layers.AveragePooling2D(3, strides=2, name="other_pool")(shared)
    conv = keras.layers.Conv2D(3, 3, strides=2, name="conv")(shared)
    net = keras.Model(inputs, {"logits": keras.layers.Concatenate()([pooled, other, conv])})
    swapped = for_integer_export(net)
    assert isinstance(swapped.get_layer("pool"), PaddedAveragePoolAsDepthwise)
    assert type(swapped.get_layer("pad")) is keras.layers.Identity
    assert type(swapped.get_layer("other_pool")) is keras.layers.AveragePooling2D
    assert type(swapped.get_layer("shared_pad")) is keras.layers.ZeroPadding2D
    x = rng.normal(size=(2, *size, 3)).astype(np.float32)
    want = _torch_average_pool_numpy(x)
    np.testing.assert_allclose(np.asarray(PaddedAveragePoolAsDepthwise()(x)), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(net.get_layer("pool")(net.get_layer("pad")(x))), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(swapped(x)["logits"]), np.asarray(net(x)["logits"]), rtol=1e-5, atol=1e-6)
