"""The tensorflow-datasets loaders, offline: mock_data for ADE20K and pets, and the real
Cityscapes builder run end to end on tiny manual-download zips in the official layout."""

import io
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from skd_tf.config import DataConfig
from skd_tf.data import DataError
from skd_tf.data.sources import label_lookup_table, load_source


def decoded(cfg, split):
    return [{k: v.numpy() for k, v in ex.items()} for ex in load_source(cfg, split).decoded()]


def test_label_tables():
    city = label_lookup_table("cityscapes")
    assert city[7] == 0 and city[26] == 13 and city[33] == 18 and city[0] == 255 and city[255] == 255
    assert sum(v != 255 for v in city) == 19
    ade = label_lookup_table("scene_parse150")
    assert ade[0] == 255 and ade[1] == 0 and ade[150] == 149 and ade[151] == 255
    pets = label_lookup_table("oxford_iiit_pet")
    assert list(pets[:5]) == [255, 0, 1, 2, 255]


def test_scene_parse150_loader(tmp_path):
    with tfds.testing.mock_data(num_examples=3, max_value=160):
        cfg = DataConfig(source="scene_parse150", num_classes=150, val_split="test", data_dir=str(tmp_path))
        for split in ("train", "test"):
            examples = decoded(cfg, split)
            assert len(examples) == 3
            for ex in examples:
                assert ex["image"].dtype == np.uint8 and ex["image"].ndim == 3 and ex["image"].shape[-1] == 3
                assert ex["label"].dtype == np.uint8 and ex["label"].ndim == 2
                values = set(np.unique(ex["label"]))
                assert values <= set(range(150)) | {255}
                assert values & set(range(150))  # real classes come through, not only ignore


def test_oxford_iiit_pet_loader(tmp_path):
    # One example: tfds' random mock of this dataset's head_bbox feature breaks beyond the first.
    with tfds.testing.mock_data(num_examples=1, max_value=5):
        cfg = DataConfig(source="oxford_iiit_pet", num_classes=3, val_split="test", data_dir=str(tmp_path))
        (ex,) = decoded(cfg, "train")
        assert ex["image"].shape[-1] == 3 and ex["label"].ndim == 2
        assert set(np.unique(ex["label"])) <= {0, 1, 2, 255}


def test_wrong_class_count_is_rejected(tmp_path):
    with pytest.raises(DataError, match="has 3 classes"):
        load_source(DataConfig(source="oxford_iiit_pet", num_classes=5, data_dir=str(tmp_path)), "train")


def png_bytes(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def cityscapes_manual_dir(tmp_path_factory):
    """leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip with one 1024x2048 image per split."""
    root = tmp_path_factory.mktemp("cityscapes_manual")
    image = np.zeros((1024, 2048, 3), np.uint8)
    image[:, :1024] = (128, 64, 128)
    label = np.full((1024, 2048), 7, np.uint8)  # road
    label[:, 1024:] = 26  # car
    label[:100] = 0  # unlabeled
    with zipfile.ZipFile(root / "leftImg8bit_trainvaltest.zip", "w") as zi, \
            zipfile.ZipFile(root / "gtFine_trainvaltest.zip", "w") as zl:
        for split in ("train", "val", "test"):
            stem = f"aachen_000000_0000{10 + len(split)}"
            zi.writestr(f"leftImg8bit/{split}/aachen/{stem}_leftImg8bit.png", png_bytes(image))
            zl.writestr(f"gtFine/{split}/aachen/{stem}_gtFine_labelIds.png", png_bytes(label))
    return root


def test_cityscapes_real_builder_end_to_end(tmp_path, cityscapes_manual_dir):
    cfg = DataConfig(source="cityscapes", num_classes=19, data_dir=str(tmp_path / "tfds"),
                     manual_dir=str(cityscapes_manual_dir))
    for split in ("train", "validation"):
        (ex,) = decoded(cfg, split)
        assert ex["image"].shape == (1024, 2048, 3) and ex["label"].shape == (1024, 2048)
        assert ex["label"][500, 10] == 0 and ex["label"][500, 2000] == 13 and ex["label"][10, 10] == 255
        assert tuple(ex["image"][500, 10]) == (128, 64, 128)


def test_cityscapes_missing_manual_download_says_what_to_do(tmp_path):
    cfg = DataConfig(source="cityscapes", num_classes=19, data_dir=str(tmp_path / "tfds"),
                     manual_dir=str(tmp_path / "manual"))
    with pytest.raises(DataError, match=r"leftImg8bit_trainvaltest\.zip and gtFine_trainvaltest\.zip .* in .*manual"):
        load_source(cfg, "train")


def test_loading_leaves_no_temporary_folders_behind(tmp_path, monkeypatch, cityscapes_manual_dir):
    """tfds makes a /tmp/tmp*tfds folder per builder of an unprepared data set and never removes it."""
    import tempfile

    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    missing = DataConfig(source="cityscapes", num_classes=19, data_dir=str(tmp_path / "tfds"),
                         manual_dir=str(tmp_path / "manual"))
    with pytest.raises(DataError, match="manual download"):
        load_source(missing, "train")
    prepared = DataConfig(source="cityscapes", num_classes=19, data_dir=str(tmp_path / "tfds2"),
                          manual_dir=str(cityscapes_manual_dir))
    assert len(decoded(prepared, "validation")) == 1
    assert [p.name for p in system_tmp.iterdir() if p.name.endswith("tfds")] == []
    assert tempfile.tempdir == str(system_tmp)


def test_a_download_that_fails_is_one_clear_error(tmp_path, monkeypatch):
    """Offline, tfds' download of an unprepared data set ends in requests' ConnectionError and a traceback;
    load_source names the data set, the cause and what to copy where. tfds' real download code runs down to
    requests' Session.get."""
    import requests

    def no_network(self, url, *args, **kwargs):
        raise requests.exceptions.ConnectionError(f"HTTPSConnectionPool: Max retries exceeded with url: {url}\n"
                                                  "(Failed to resolve: Name or service not known)")

    monkeypatch.setattr(requests.Session, "get", no_network)
    cfg = DataConfig(source="oxford_iiit_pet", num_classes=3, data_dir=str(tmp_path / "tfds"))
    with pytest.raises(DataError, match=r"^preparing oxford_iiit_pet failed: tensorflow-datasets downloads its files "
                                        r"on first use, and the download failed \(.*Name or service not known\)\); "
                                        r"without network access, .* copy \S+/tfds/oxford_iiit_pet into \S+/tfds "
                                        r"here$") as raised:
        load_source(cfg, "train")
    assert "\n" not in str(raised.value)
