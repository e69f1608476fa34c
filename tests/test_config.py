from pathlib import Path

import pytest
import yaml

from skd_tf.config import ConfigError, config_from_dict, load_config

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.train.steps % cfg.train.steps_per_epoch == 0


def test_unknown_key_is_named(tiny_config):
    tiny_config["train"]["lerning_rate"] = 0.1
    with pytest.raises(ConfigError, match=r"train\.lerning_rate: unknown key"):
        config_from_dict(tiny_config)


def test_wrong_type_is_named(tiny_config):
    tiny_config["data"]["crop_size"] = "big"
    with pytest.raises(ConfigError, match=r"data\.crop_size"):
        config_from_dict(tiny_config)


def test_bad_combination_is_explained(tiny_config):
    tiny_config["model"]["arch"] = "lraspp"
    with pytest.raises(ConfigError, match="lraspp"):
        config_from_dict(tiny_config)


def test_overrides_and_missing_file(tmp_path, tiny_config):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    cfg = load_config(path, ["train.steps=8", "model.width=0.25"])
    assert cfg.train.steps == 8 and cfg.model.width == 0.25
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        load_config(path, ["train.steps=7"])
