"""The Python way in: the README's example as written, the same with plain-logits Keras models, the
Distiller's arguments, and the documentation (strict mkdocs build, README links)."""

import re
import runpy
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from skd_tf.distill import Distiller
from skd_tf.losses import HolisticDistillation, PairwiseDistillation, PixelwiseDistillation
from skd_tf.models import segmentation_outputs

ROOT = Path(__file__).resolve().parents[1]


def _block(path: Path, name: str) -> str:
    """The fenced Python code between ``<!-- name:start -->`` and ``<!-- name:end -->`` of a markdown file."""
    text = path.read_text()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    assert start in text and end in text, f"{path.name} has no {name} block"
    inner = text.split(start, 1)[1].split(end, 1)[0].strip()
    match = re.fullmatch(r"```python\n(.*)\n```", inner, re.S)
    assert match, f"the {name} block of {path.name} is not one ```python fence"
    return match.group(1) + "\n"


def _run(code: str, cwd: Path, monkeypatch, capsys) -> str:
    """Runs ``code`` as a script (``__main__``) from ``cwd`` in this process and returns what it printed. In this
    process rather than a new one: a Python start-up with TensorFlow costs ~7 s of CPU, and the suite is
    CPU-bound; the script still sees only what it imports itself."""
    script = cwd / "example.py"
    script.write_text(code)
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    runpy.run_path(str(script), run_name="__main__")
    return capsys.readouterr().out


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch, capsys):
    code = _block(ROOT / "README.md", "python-example")
    assert code == _block(ROOT / "docs" / "python.md", "python-example"), "README and docs/python.md differ"
    out = _run(code, tmp_path, monkeypatch, capsys)
    assert re.search(r"student mIoU: 0\.\d+", out)
    assert (tmp_path / "export" / "student_float32.tflite").stat().st_size > 0
    assert (tmp_path / "export" / "student_int8.tflite").stat().st_size > 0
    assert any((tmp_path / "logs").rglob("events.out.tfevents.*"))
    from skd_tf.models import load_model

    student = load_model(str(tmp_path / "student.keras"))
    assert student.output["logits"].shape[-1] == 6
    assert re.search(r"^float32 .*student_float32\.tflite 100\.00% of labels as Keras$", out, re.M), out


def test_plain_logits_example_runs_as_written(tmp_path, monkeypatch, capsys):
    out = _run(_block(ROOT / "docs" / "python.md", "python-plain-example"), tmp_path, monkeypatch, capsys)
    assert re.search(r"TFLite labels equal to Keras': 1\.0$", out, re.M), out
    student = keras.saving.load_model(str(tmp_path / "student.keras"))
    assert student.output.shape[1:] == (16, 16, 6)  # still the user's plain model


# ------------------------------------------------------------------------------------ the Distiller's API

def _plain(width: int, name: str, seed: int) -> keras.Model:
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", kernel_initializer=init,
                            name="decoder")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(3, 1, kernel_initializer=init, name="classifier")(x), name=name)


def _batch():
    rng = np.random.default_rng(0)
    return (tf.constant(rng.normal(size=(4, 16, 16, 3)), tf.float32),
            tf.constant(rng.integers(0, 3, size=(4, 16, 16)), tf.int32))


def test_a_plain_logits_student_is_trained_in_place_and_its_terms_are_the_losses_of_its_logits():
    teacher, student = _plain(8, "teacher", 1), _plain(4, "student", 2)
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    pixel = PixelwiseDistillation()
    distiller = Distiller(teacher, student, losses=[(pixel, 2.0)], teacher_features="decoder",
                          student_features=lambda m: m.get_layer("decoder").output)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    images, labels = _batch()
    logs = distiller.test_step((images, labels))
    # the logged term is the loss of the two models' own logits; the total is CE + 2 × it
    expected = float(pixel({"logits": student(images)}, {"logits": teacher(images)}))
    assert float(logs[pixel.name]) == pytest.approx(expected, rel=1e-5)  # a list names each loss by its name
    assert float(logs["loss"]) == pytest.approx(float(logs["ce"]) + 2.0 * expected, rel=1e-5)
    distiller.fit(tf.data.Dataset.from_tensors((images, labels)).repeat(), steps_per_epoch=2, epochs=1, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(teacher_before, teacher.get_weights()))
    assert all(not np.array_equal(a, b) for a, b in zip(student_before, student.get_weights()))


def test_distiller_arguments_are_checked_in_one_line():
    teacher, student = _plain(8, "teacher", 1), _plain(4, "student", 2)
    with pytest.raises(ValueError, match=r"loss 'pairwise' reads features, and the teacher has none: give "
                                         r"Distiller\(teacher_features="):
        Distiller(teacher, student, losses={"pairwise": PairwiseDistillation()})
    with pytest.raises(ValueError, match=r"student_features: the student has no layer named 'nope'"):
        Distiller(teacher, student, losses={"pixel": PixelwiseDistillation()}, student_features="nope")
    with pytest.raises(ValueError, match=r"made with global_batch_size=8, the Distiller with 16"):
        Distiller(teacher, student, losses={"pixel": PixelwiseDistillation(global_batch_size=8)},
                  global_batch_size=16)
    with pytest.raises(ValueError, match=r"holistic term goes in Distiller\(holistic="):
        Distiller(teacher, student, losses=[HolisticDistillation()])
    with pytest.raises(TypeError, match=r"is not a loss layer"):
        Distiller(teacher, student, losses={"pixel": "pixel"})

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match=r"the student \(Subclassed\) is not a functional Keras model"):
        segmentation_outputs(Subclassed(), role="student")


def test_distiller_defaults_match_the_configs():
    """The critic's objective is scaled by λ_ho unless told otherwise (the configs' critic_loss_weight: null);
    a global batch given once reaches every loss; bare losses weigh 1; num_classes is the student's."""
    teacher, student = _plain(8, "teacher", 1), _plain(4, "student", 2)
    pixel, holistic = PixelwiseDistillation(), HolisticDistillation(seed=0)
    distiller = Distiller(teacher, student, losses={"pixel": pixel}, holistic=holistic, holistic_weight=0.03,
                          global_batch_size=16)
    assert distiller.critic_loss_weight == 0.03
    assert pixel.global_batch_size == 16 and holistic.global_batch_size == 16
    assert distiller.distill_losses == {"pixel": (pixel, 1.0)}
    assert distiller.miou.num_classes == 3
    assert Distiller(teacher, student, holistic=HolisticDistillation(seed=0), holistic_weight=0.03,
                     critic_loss_weight=1.0).critic_loss_weight == 1.0


# ------------------------------------------------------------------------------------------ documentation

def test_the_docs_build_strictly(tmp_path):
    """mkdocs --strict: a broken link between pages or an API reference to a missing object fails."""
    mkdocs = Path(sys.executable).with_name("mkdocs")
    proc = subprocess.run([str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    assert "PixelwiseDistillation" in reference and "export_tflite" in reference


def test_readme_links_resolve_and_it_stays_short():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert links, "the README links to the docs"
    missing = [link for link in links if not link.startswith("http") and not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    linked = {Path(link).name for link in links if link.startswith("docs/")}
    assert pages - {"index.md"} <= linked, f"docs pages the README does not reach: {sorted(pages - linked)}"
