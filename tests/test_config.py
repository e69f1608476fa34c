from pathlib import Path

import pytest
import yaml

from skd_tf.config import ConfigError, config_from_dict, load_config

CONFIGS = sorted(Path(__file__).resolve().parents[1].joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    from skd_tf.distill.config import parse_distill

    cfg = load_config(path)
    assert cfg.train.steps % cfg.train.steps_per_epoch == 0
    if cfg.distill is not None:
        parse_distill(cfg.distill, str(path))


def test_a_runs_config_json_reads_back_as_the_config_of_every_shipped_config(tmp_path):
    """`evaluate`, `export` and `predict` take the config.json that `train` / `import` (``model_dump_json``) and
    `distill` (``json.dumps(model_dump())``) write beside a model for the run's config: it must read back equal."""
    import json

    for path in CONFIGS:
        cfg = load_config(path)
        for i, text in enumerate((cfg.model_dump_json(indent=2), json.dumps(cfg.model_dump(), indent=2))):
            (tmp_path / f"{i}.json").write_text(text)
            assert load_config(tmp_path / f"{i}.json").model_dump() == cfg.model_dump(), path.name


def test_base_configs_merge_and_cycles_are_caught(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\ntrain: {steps: 10, steps_per_epoch: 5, learning_rate: 0.5}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nname: b\ntrain: {steps: 20}\n")
    cfg = load_config(tmp_path / "b.yaml")
    assert (cfg.name, cfg.train.steps, cfg.train.steps_per_epoch, cfg.train.learning_rate) == ("b", 20, 5, 0.5)
    (tmp_path / "c.yaml").write_text("base: d.yaml\n")
    (tmp_path / "d.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "c.yaml")


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


def test_docs_losses_table_matches_the_registry_and_the_sweep():

    from skd_tf.losses import markdown_table

    root = Path(__file__).resolve().parents[1]
    from benchmarks import sweep

    page = root.joinpath("docs", "losses.md").read_text()
    assert markdown_table(sweep.calibrated_losses(), sweep.calibration_options()) in page, \
        "regenerate with: python -m benchmarks.sweep --table-only --docs"
