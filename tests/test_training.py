import json
import math

import keras
import numpy as np
import pytest

from skd_tf.cli import main
from skd_tf.config import config_from_dict
from skd_tf.models import load_model
from skd_tf.training.checkpointing import RunCheckpoint, TrainingDiverged, read_epoch
from skd_tf.training.run import train


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C after the first checkpoint


def test_train_writes_model_scores_and_resumes_exactly(tmp_path, tiny_config, traced_once):
    full = config_from_dict(tiny_config)
    scores = train(full, verbose=0)
    assert set(scores) == {"miou", "per_class_iou", "pixel_accuracy", "num_images"}
    assert scores["num_images"] == 6 and 0 <= scores["miou"] <= 1
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert saved["miou"] == pytest.approx(scores["miou"])
    assert read_epoch(tmp_path / "run" / "state") == 2
    timing = json.loads((tmp_path / "run" / "timing.json").read_text())
    assert timing["steps"] == 4 and 0 < timing["median_step_s"] <= timing["first_step_s"]  # the first traces
    assert timing["images_per_second"] == pytest.approx(4 / timing["median_step_s"])
    assert timing["peak_rss_mib"] > 100  # TensorFlow alone takes more

    tiny_config["train"]["out_dir"] = str(tmp_path / "interrupted")
    interrupted = config_from_dict(tiny_config)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, verbose=0, extra_callbacks=[StopAfterFirstEpoch()])
    assert read_epoch(tmp_path / "interrupted" / "state") == 1
    train(interrupted, verbose=0)  # resumes at epoch 1, step 2

    a = load_model(tmp_path / "run" / "model.keras").get_weights()
    b = load_model(tmp_path / "interrupted" / "model.keras").get_weights()
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_nan_loss_stops_with_the_term_and_step(tmp_path):
    cb = RunCheckpoint(tmp_path, steps_per_epoch=10, watch=("loss", "pixel"))
    cb.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    cb.on_epoch_begin(2)
    cb.on_train_batch_end(3, {"loss": 1.0, "pixel": math.nan})
    assert cb.model.stop_training
    cb.on_epoch_end(2)  # must not overwrite the last good state
    assert read_epoch(tmp_path) == 0
    with pytest.raises(TrainingDiverged, match="'pixel' became nan at step 24"):
        cb.raise_if_diverged()


def test_cli_train_and_evaluate(tmp_path, tiny_config, capsys, traced_once):
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", "--config", str(path), "--quiet", "--set", "train.steps=2"]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "model.keras" in out
    model = tmp_path / "run" / "model.keras"
    target = tmp_path / "scores.json"
    assert main(["evaluate", "--config", str(path), "--checkpoint", str(model), "--json", str(target),
                 "--quiet", "--limit", "4"]) == 0
    scores = json.loads(target.read_text())
    assert scores["num_images"] == 4 and len(scores["per_class_iou"]) == 4
    assert set(scores) == {"miou", "per_class_iou", "pixel_accuracy", "num_images"}
    # without --config: the config.json train wrote beside the model, named on stdout
    assert main(["evaluate", "--checkpoint", str(model), "--json", str(target), "--limit", "4", "--errors"]) == 0
    out = capsys.readouterr().out
    assert f"config: {model.parent / 'config.json'}" in out and "objects split between classes" in out
    assert json.loads(target.read_text())["miou"] == scores["miou"]
    errors = json.loads(target.read_text())["errors"]  # the kinds partition the wrong pixels
    wrong = sum(errors[k] for k in ("whole_object", "split", "edge", "spill"))
    assert wrong == pytest.approx(1 - scores["pixel_accuracy"], abs=1e-9) and 0 <= errors["objects_misread"] <= 1


def test_cli_errors_are_one_line(tmp_path, tiny_config, capsys):
    import yaml

    tiny_config["train"]["bogus"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", "--config", str(path)]) == 2
    assert "train.bogus: unknown key" in capsys.readouterr().err
    del tiny_config["train"]["bogus"]
    path.write_text(yaml.safe_dump(tiny_config))
    assert main(["evaluate", "--config", str(path), "--checkpoint", str(tmp_path / "none.keras")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_a_trainer_fit_from_python_traces_its_step_once():
    """`SegmentationTrainer.fit` as the README calls it (compile, then fit): Keras leaves a single device's
    optimizer variables to the first traced step, and a tf.function that creates variables is traced twice
    (seconds per trace on a real network); the trainer makes them before. Python code in a traced step runs
    once per trace, so the counter counts traces."""
    from skd_tf.config import DataConfig, SyntheticConfig
    from skd_tf.data import train_dataset
    from skd_tf.training import SegmentationTrainer
    from small_networks import small_segmenter

    class Counting(SegmentationTrainer):
        traces = 0

        def train_step(self, data):
            Counting.traces += 1
            return super().train_step(data)

    keras.utils.set_random_seed(0)
    data = DataConfig(num_classes=4, crop_size=(32, 32), synthetic=SyntheticConfig(num_train=8, num_val=4,
                                                                                   image_size=32))
    network = small_segmenter(4, 4)  # what is counted is the trainer's tracing, not a backbone's
    trainer = Counting(network, num_classes=4)
    trainer.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    before = [w.copy() for w in network.get_weights()]
    trainer.fit(train_dataset(data, 2, seed=0), steps_per_epoch=3, epochs=1, verbose=0)
    assert Counting.traces == 1
    assert trainer.optimizer.iterations.numpy() == 3
    assert any(not np.array_equal(a, b) for a, b in zip(before, network.get_weights()))  # it trained
