"""The exported file's label heads: model-resolution logits → a label map at the input size.

Five heads (``LABEL_HEADS``), from the exact to the cheapest:

* ``bilinear``: the logits upsampled bilinearly to H×W, then argmax — what evaluation scores. Its cost is
  the full-size K-channel tensor (RESIZE_BILINEAR then ARG_MAX over 19 classes at 512×1024: 6.5–11 ms in
  int8 on one x86 core, a quarter of LR-ASPP MobileNetV2's time; docs/real-size.md).
* ``two_class``: the bilinear head's labels without the full-size K-channel tensor. Bilinear interpolation
  is linear, so inside the cell between four neighbouring logit vectors the argmax between two classes a, b
  is the sign of the interpolated difference l_a − l_b. The head picks each cell's two classes at model
  resolution — c₁, the corners' winning class with the highest score summed over the four, and c₂, the best
  other corners' winner (c₁ again when all four agree) — interpolates the one difference l_c₁ − l_c₂ to the f×f
  pixels of the cell with a 1×1 convolution of constant bilinear weights, and takes c₁ where it is ≥ 0, c₂
  elsewhere. Equal to ``bilinear`` wherever a pixel's winner is one of its cell's two classes: every pixel
  of a cell whose corners show at most two winning classes, except where a third class overtakes both
  inside the cell. Needs the input an even multiple f of the logits on both sides (f = 2, 4, 8, …, the
  same f for both) and half-pixel centres; otherwise it *is* the bilinear head. In an int8 file (up to 128
  classes) its last step is a saturating ReLU6 convolution, a MUL and an ADD instead of the comparison and
  SELECT_V2 (``_integer_switch``), and the labels leave the file as int8.
* ``half`` / ``quarter``: bilinearly to ⌈H/2⌉×⌈W/2⌉ / ⌈H/4⌉×⌈W/4⌉ (when that is larger than h×w), argmax,
  then the labels repeated by nearest neighbour (``repeat_nearest``) — boundaries placed at half / a quarter of
  the resolution;
* ``nearest``: argmax at h×w, then nearest neighbour — no interpolation at all.

Every head lowers to TFLite builtins that take int8, so an int8 file stays integer-only.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from skd_tf.models.logits import resize_bilinear

LABEL_HEADS = ("bilinear", "two_class", "half", "quarter", "nearest")
# The int8 switch holds class indices and their differences at scale 1 in int8: up to 128 classes.
INTEGER_SWITCH_CLASSES = 128
# Names of the int8 switch's ops, which ``flatbuffer_edit.exact_two_class_switch`` finds in the converted file.
SWITCH_NAMES = {"step": "two_class_step", "second": "two_class_second", "change": "two_class_change",
                "sixths": "two_class_change_sixths", "switched": "two_class_switched", "labels": "two_class_labels"}
_HEAD_DIVISOR = {"half": 2, "quarter": 4}


def label_head(logits: tf.Tensor, size: tuple[int, int], head: str = "bilinear", dtype=tf.uint8,
               align_corners: bool = False, integer: bool = False) -> tf.Tensor:
    """B×h×w×K logits → B×H×W class indices (``dtype``) at ``size`` = (H, W), by ``head`` (module docstring).

    Resizes use half-pixel centres (TFLite's RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR); with ``align_corners``
    the bilinear ones align the corner pixels instead, as ``skd_tf.models.logits.upsample_logits`` does for
    the published networks trained that way (the nearest-neighbour step keeps half-pixel centres).

    ``integer``: the graph is converted to an int8 file, and ``two_class`` with at most ``INTEGER_SWITCH_CLASSES``
    classes ends in ops XNNPACK runs in int8 (``_integer_switch``); its labels are then a float tensor that
    only the converted file, edited by ``flatbuffer_edit.exact_two_class_switch``, makes exact."""
    if head not in LABEL_HEADS:
        raise ValueError(f"unknown label head {head!r}; choose from {', '.join(LABEL_HEADS)}")
    h, w = size
    head = effective_head(head, logits.shape[1:3], size, align_corners)
    if head == "two_class":
        return _two_class_labels(logits, size, dtype, integer and logits.shape[-1] <= INTEGER_SWITCH_CLASSES)
    if head == "bilinear":
        return tf.cast(tf.math.argmax(resize_bilinear(logits, (h, w), align_corners), axis=-1, output_type=tf.int32),
                       dtype)
    if head in _HEAD_DIVISOR:
        k = _HEAD_DIVISOR[head]
        target = (-(-h // k), -(-w // k))
        if target[0] > logits.shape[1] or target[1] > logits.shape[2]:
            logits = resize_bilinear(logits, target, align_corners)
    return repeat_nearest(tf.cast(tf.math.argmax(logits, axis=-1, output_type=tf.int32), dtype), size)


def repeat_nearest(labels: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """B×h×w labels → B×H×W by nearest neighbour with half-pixel centres (source index ⌊(i + ½)·h/H⌋, the
    bilinear head's grid), in integer ops only: TFLite's RESIZE_NEAREST_NEIGHBOR takes no integer tensor in a
    float graph, and a float detour would put float ops into an int8 file.

    Along an axis where H is a multiple f of h the source index is ⌊i/f⌋: each label repeated f times, which
    two TILEs lay out (the columns' repeats as a last axis, then each full-width row fy times): 1.4 ms against
    5.7 ms for GATHERs at 1024×2048 (int8, 1 thread; TFLite's GATHER copies element by element). Along any
    other axis, a GATHER of the constant source rows or columns."""
    _, h, w = labels.shape
    big_h, big_w = size
    for axis, (n_in, n_out) in ((1, (h, big_h)), (2, (w, big_w))):
        if n_out % n_in:
            source = np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int32), n_in - 1)
            labels = tf.gather(labels, tf.constant(source), axis=axis)
    _, h, w = labels.shape
    fy, fx = big_h // h, big_w // w
    if fx > 1:
        labels = tf.tile(tf.reshape(labels, [-1, h, w, 1]), [1, 1, 1, fx])            # B, h, w, fx
    if fy > 1:
        labels = tf.tile(tf.reshape(labels, [-1, h, 1, big_w]), [1, 1, fy, 1])         # B, h, fy, W
    return tf.reshape(labels, [-1, big_h, big_w])


def effective_head(head: str, logits_size, size, align_corners: bool = False) -> str:
    """The head ``label_head`` computes for ``head``: ``bilinear`` for ``two_class`` where that cannot work
    (corners aligned, or ``size`` not the same even multiple of ``logits_size`` on both sides)."""
    if head == "two_class" and (align_corners or not two_class_factor(logits_size, size)):
        return "bilinear"
    return head


def two_class_factor(logits_size, size) -> int:
    """The upsampling factor f of the ``two_class`` head, or 0 when it cannot work there (it then computes
    the bilinear head): H = f·h and W = f·w with the same even f ≥ 2."""
    (h, w), (big_h, big_w) = tuple(logits_size), tuple(size)
    if not h or not w or big_h % h or big_w % w:
        return 0
    f = big_h // h
    return f if f == big_w // w and f >= 2 and f % 2 == 0 else 0


def two_class_weights(f: int) -> np.ndarray:
    """16 × f² constant weights of the ``two_class`` head's 1×1 convolution.

    The f×f output block of low-resolution pixel (i, j) has four quadrants (qy, qx); quadrant (qy, qx) lies
    in the cell whose top-left corner is (i + qy − 1, j + qx − 1) and its pixel (py, px) of the block sits at
    t = (p + ½)/f − ½ + 1 − q between that cell's corners along each axis (half-pixel centres). Input channel
    (qy, qx, corner iy, corner ix); output channel (qy, qx, py mod f/2, px mod f/2): quadrant first, so the
    labels broadcast on the last axis and two DEPTH_TO_SPACEs lay the block out."""
    half = f // 2
    weights = np.zeros((2, 2, 2, 2, f, f))  # qy qx iy ix py px
    t = (np.arange(f) + 0.5) / f - 0.5
    for py in range(f):
        qy = int(py >= half)
        ty = t[py] + 1 - qy
        for px in range(f):
            qx = int(px >= half)
            tx = t[px] + 1 - qx
            for iy, wy in ((0, 1 - ty), (1, ty)):
                for ix, wx in ((0, 1 - tx), (1, tx)):
                    weights[qy, qx, iy, ix, py, px] = wy * wx
    weights = weights.reshape(2, 2, 2, 2, 2, half, 2, half).transpose(0, 1, 2, 3, 4, 6, 5, 7)
    return weights.reshape(16, f * f).astype(np.float32)


def _cell_corners(x: tf.Tensor) -> list[tf.Tensor]:
    """The four corners (00, 01, 10, 11) of every cell of a B×(n+1)×(m+1)×… tensor, each B×n×m×…."""
    if x.dtype == tf.int32:
        # SLICE, not STRIDED_SLICE, for the class maps: TFLite runs an int32 STRIDED_SLICE on its reference
        # kernel, a function call per element (a fifth of the int8 head's time at 1024×2048, perf), and SLICE
        # copies rows; the int8 corners stay strided slices, which XNNPACK runs.
        n, m = x.shape[1] - 1, x.shape[2] - 1
        rest = [0] * (len(x.shape) - 3)
        size = [-1, n, m, *[-1] * len(rest)]
        return [tf.slice(x, [0, dy, dx, *rest], size) for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1))]
    return [x[:, :-1, :-1], x[:, :-1, 1:], x[:, 1:, :-1], x[:, 1:, 1:]]


def _corners(x: tf.Tensor, axis: int) -> tf.Tensor:
    """``_cell_corners`` stacked on ``axis``."""
    return tf.stack(_cell_corners(x), axis=axis)


def _two_class_labels(logits: tf.Tensor, size: tuple[int, int], dtype, integer: bool = False) -> tf.Tensor:
    """The ``two_class`` head (module docstring); ``two_class_factor`` has said it applies."""
    _, h, w, _ = logits.shape
    f = two_class_factor((h, w), size)
    half = f // 2
    # Edge rows and columns repeated: the border cells, where the bilinear resize clamps to the edge.
    padded = tf.concat([logits[:, :1], logits, logits[:, -1:]], axis=1)
    padded = tf.concat([padded[:, :, :1], padded, padded[:, :, -1:]], axis=2)             # B, h+2, w+2, K
    winners = _corners(tf.math.argmax(padded, axis=-1, output_type=tf.int32), -1)        # B, h+1, w+1, 4
    # the cell's summed logits (three ADDs: int8 AVERAGE_POOL_2D of 2×2, stride 1, took 0.4 ms more at 64×128)
    top_left, *rest = _cell_corners(padded)
    cell_sum = sum(rest, top_left)                                                         # B, h+1, w+1, K
    score = tf.gather(cell_sum, winners, axis=3, batch_dims=3)                            # B, h+1, w+1, 4
    first = tf.gather(winners, tf.math.argmax(score, -1, output_type=tf.int32), axis=3, batch_dims=3)
    is_first = tf.equal(winners, tf.expand_dims(first, -1))  # a RESHAPE; first[..., None] is an int32 STRIDED_SLICE
    others = tf.where(is_first, tf.reduce_min(score, -1, keepdims=True), score)
    second = tf.gather(winners, tf.math.argmax(others, -1, output_type=tf.int32), axis=3, batch_dims=3)
    # argmax may land on c₁'s own corner where the scores tie (in int8, often: the best other score can round
    # to the minimum); then any other corner's winner, exactly (integer ops), or c₁ when all four agree
    any_other = tf.reduce_max(tf.where(is_first, -1, winners), axis=-1)
    second = tf.where(tf.equal(second, first), tf.where(any_other >= 0, any_other, first), second)
    corner_logits = _corners(padded, 3)                                                    # B, h+1, w+1, 4, K
    difference = (tf.gather(corner_logits, first, axis=4, batch_dims=3)
                  - tf.gather(corner_logits, second, axis=4, batch_dims=3))                # B, h+1, w+1, 4
    # each output block's four quadrants lie in four cells: (qy, qx) in cell (i + qy, j + qx) of the padded grid
    quadrants = tf.concat(_cell_corners(difference), axis=-1)                              # B, h, w, 16
    if integer:
        return _integer_switch(quadrants, first, second, size, f)
    inside = tf.nn.conv2d(quadrants, tf.constant(two_class_weights(f))[None, None], 1, "VALID")  # B, h, w, f²
    pick = tf.reshape(inside >= 0, [-1, h * w, 4, half * half])
    labels = tf.where(pick, tf.reshape(_corners(first, -1), [-1, h * w, 4, 1]),
                      tf.reshape(_corners(second, -1), [-1, h * w, 4, 1]))
    labels = tf.nn.depth_to_space(tf.cast(tf.reshape(labels, [-1, h, w, f * f]), dtype), 2)
    if half > 1:
        labels = tf.nn.depth_to_space(labels, half)
    return tf.reshape(labels, [-1, *size])  # a reshape, not [..., 0]: TFLite's strided slice is slow at full size


def _integer_switch(quadrants: tf.Tensor, first: tf.Tensor, second: tf.Tensor, size, f: int):
    """The ``two_class`` head's last step written for an int8 file: float labels c₂ + (c₁ − c₂)/6 · s at the
    input size, where s = ReLU6 of the interpolated difference (each output channel's weights scaled to a
    largest of 1, which keeps its sign). TFLite's comparison and SELECT_V2 take half of the head's time at full
    size on builtin kernels (docs/real-size.md); this is one CONV_2D with its ReLU6 fused, a MUL, an ADD and the
    DEPTH_TO_SPACEs, all of which XNNPACK runs in int8. In float it is not a step; in the int8 file
    ``flatbuffer_edit.exact_two_class_switch`` makes it one: the convolution's output saturates at 0 or 6 from
    one accumulator step (its requantization multiplier set to 255.5, its bias to +1 so that a zero difference
    picks c₁ as ``inside >= 0`` does), and c₂, (c₁ − c₂)/6 and the labels are held at scales 1, ⅙ and 1, so
    every label is a class index exactly; the class indices, cast to float here, are cast to int8 there."""
    _, h, w, _ = quadrants.shape
    half = f // 2
    weights = two_class_weights(f)
    weights = weights / np.abs(weights).max(axis=0, keepdims=True)
    step = tf.nn.relu6(tf.nn.conv2d(quadrants, tf.constant(weights)[None, None], 1, "VALID"),
                       name=SWITCH_NAMES["step"])                                        # B, h, w, f²
    first, second = (tf.reshape(_corners(x, -1), [-1, h * w, 4, 1]) for x in (first, second))
    second_class = tf.cast(second, tf.float32, name=SWITCH_NAMES["second"])
    change = tf.multiply(tf.cast(first - second, tf.float32, name=SWITCH_NAMES["change"]), 1 / 6,
                         name=SWITCH_NAMES["sixths"])
    switched = tf.multiply(change, tf.reshape(step, [-1, h * w, 4, half * half]), name=SWITCH_NAMES["switched"])
    labels = tf.add(second_class, switched, name=SWITCH_NAMES["labels"])
    labels = tf.nn.depth_to_space(tf.reshape(labels, [-1, h, w, f * f]), 2)
    if half > 1:
        labels = tf.nn.depth_to_space(labels, half)
    return tf.reshape(labels, [-1, *size])
