"""benchmarks/ablation.py: paired statistics by hand, and its resumable plumbing with the CLI faked."""

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import ablation


def test_paired_difference_by_hand():
    a, b = {0: 0.5, 1: 0.6, 2: 0.7, 5: 0.9}, {0: 0.4, 1: 0.45, 2: 0.65}  # seed 5 has no pair
    d = ablation.paired_difference(a, b)
    half = 4.302653 * 0.05 / np.sqrt(3)  # t(0.975, 2) · sd / √n, diffs 0.10, 0.15, 0.05
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.1)
    assert d["low"] == pytest.approx(0.1 - half, rel=1e-5) and d["high"] == pytest.approx(0.1 + half, rel=1e-5)
    assert ablation.paired_difference({0: 0.5}, {0: 0.25}) == {"mean": 0.25, "low": None, "high": None, "n": 1}
    assert ablation.paired_difference({0: 0.5}, {1: 0.25}) is None


def record(row, seed, miou, teacher="t1", teacher_miou=0.8, **distance):
    config = dict((k, c) for k, _, c, *_ in ablation.ROWS)[row]
    return {"row": row, "config": config, "seed": seed, "miou": miou, "teacher": teacher, "teacher_miou": teacher_miou,
            "teacher_distance": {"pixel_kl": 1.0, "pairwise": 0.1, **distance}, "gradient_share": {},
            "host": {"model": "cpu", "features": ["avx2"]}}


def test_summary_pairs_within_a_teachers_seed_and_closes_the_gap_per_seed():
    records = [record("baseline", 0, 0.5), record("baseline", 1, 0.6), record("pi", 0, 0.6), record("pi", 1, 0.65),
               record("pi_pa", 0, 0.65), record("baseline", 0, 0.3, teacher="t2", teacher_miou=0.5),
               record("pi", 0, 0.4, teacher="t2", teacher_miou=0.5)]
    rows = {r["key"]: r for r in ablation.summarise(records)["rows"]}
    assert rows["pi"]["vs_baseline"]["n"] == 3  # (t1, 0), (t1, 1), (t2, 0)
    assert rows["pi"]["vs_baseline"]["mean"] == pytest.approx((0.1 + 0.05 + 0.1) / 3)
    assert rows["pi"]["gap_closed"] == pytest.approx(np.mean([0.1 / 0.3, 0.05 / 0.2, 0.1 / 0.2]))
    assert rows["pi_pa"]["vs_previous"] == {"mean": pytest.approx(0.05), "low": None, "high": None, "n": 1}
    assert rows["baseline"]["vs_baseline"] is None and "vs_previous" in rows["pi"]


def test_ablation_records_each_run_once_and_resumes(tmp_path, monkeypatch):
    teacher = tmp_path / "teacher" / "model.keras"
    teacher.parent.mkdir()
    teacher.write_bytes(b"")
    (teacher.parent / "eval.json").write_text(json.dumps({"miou": 0.8, "per_class_iou": [0.9, 0.7]}))
    calls = []

    def fake_cli(args, log):  # stands in for `python -m skd_tf.cli ...`, writing what the real command writes
        calls.append(args[0])
        sets = dict(a.split("=", 1) for a in args[args.index("--set") + 1::2] if "=" in a) if "--set" in args else {}
        if args[0] in ("train", "distill"):
            out = Path(sets["train.out_dir"])
            out.mkdir(parents=True, exist_ok=True)
            (out / "model.keras").write_bytes(b"")
            scores = {"miou": 0.5 + 0.01 * int(sets["seed"]) + (0.05 if args[0] == "distill" else 0),
                      "per_class_iou": [0.5, 0.5]}
            if args[0] == "distill":
                scores |= {"teacher_distance": {"pixel_kl": 0.5, "pairwise": 0.05},
                           "gradient_share": {"mean": {"pixel": 2.0}}}
                if "skd_full" in args[2]:
                    (out / "critic.weights.h5").write_bytes(b"")
            (out / "eval.json").write_text(json.dumps(scores))
        elif "--errors" in args:
            split = {"whole_object": 0.02, "split": 0.01, "edge": 0.03, "spill": 0.04, "objects_misread": 0.1}
            Path(args[args.index("--json") + 1]).write_text(json.dumps({"errors": split}))
        else:
            distance = {"pixel_kl": 1.0, "pairwise": 0.1} | ({"critic": 0.3} if "--critic" in args else {})
            Path(args[args.index("--json") + 1]).write_text(json.dumps({"teacher_distance": distance}))

    monkeypatch.setattr(ablation, "run_cli", fake_cli)
    argv = ["--rows", "baseline,pi,full", "--seeds", "2", "--teacher", str(teacher), "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results")]
    assert ablation.main(argv) == 0
    records = ablation.load_records(tmp_path / "results")
    assert len(records) == 6 and all("critic" in r["teacher_distance"] for r in records)
    # 2 baseline distances, 6 critic scores, 6 students' error splits and the teacher's
    assert calls.count("train") == 2 and calls.count("distill") == 4 and calls.count("evaluate") == 2 + 6 + 6 + 1
    assert all(r["errors"]["split"] == 0.01 for r in records)
    summary = json.loads((tmp_path / "runs" / "ablation.json").read_text())
    rows = {r["key"]: r for r in summary["rows"]}
    assert summary["teacher_errors"]["spill"] == 0.04 and rows["pi"]["errors"]["edge"] == pytest.approx(0.03)
    table = (tmp_path / "runs" / "ablation.md").read_text()
    assert "| teacher | 10.00 | 2.00 | 1.00 | 3.00 | 4.00 | 10.0 |" in table
    assert rows["pi"]["vs_baseline"]["mean"] == pytest.approx(0.05) and rows["pi"]["gradient_share"] == {"pixel": 2.0}
    assert (tmp_path / "runs" / "ablation.png").stat().st_size > 1000
    calls.clear()
    assert ablation.main(argv) == 0 and calls == []  # everything recorded: nothing runs again
    # a record made with an older config (say, before a weight was calibrated) is rerun from scratch
    stale = next((tmp_path / "results").glob("*/synthetic_skd_pi/seed1.json"))
    stale.write_text(json.dumps(json.loads(stale.read_text()) | {"config_digest": "old", "miou": 0.0}))
    (tmp_path / "runs" / "synthetic_skd_pi" / "seed1" / "stale-marker").write_text("")
    assert ablation.main(argv) == 0 and calls.count("distill") == 1
    assert json.loads(stale.read_text())["miou"] == pytest.approx(0.56)
    assert not (tmp_path / "runs" / "synthetic_skd_pi" / "seed1" / "stale-marker").exists()
    # a table keeps only the records of the configs as they are now, unless --any-config (an archive)
    stale.write_text(json.dumps(json.loads(stale.read_text()) | {"config_digest": "old"}))
    for flags, seeds in (([], 1), (["--any-config"], 2)):
        assert ablation.main(argv + ["--table-only"] + flags) == 0
        rows = {r["key"]: r for r in json.loads((tmp_path / "runs" / "ablation.json").read_text())["rows"]}
        assert rows["pi"]["seeds"] == seeds
    with pytest.raises(SystemExit):
        ablation.main(argv + ["--any-config"])
    # a table of some seeds only: every row's count follows, the note says so
    assert ablation.main(argv + ["--table-only", "--any-config", "--seed-list", "1"]) == 0
    summary = json.loads((tmp_path / "runs" / "ablation.json").read_text())
    assert {r["key"]: r["seeds"] for r in summary["rows"]} == {"baseline": 1, "pi": 1, "full": 1}
    assert "Seeds 1 only" in (tmp_path / "runs" / "ablation.md").read_text()
    with pytest.raises(SystemExit):
        ablation.main(argv + ["--table-only", "--seed-list", "1", "--readme"])
    with pytest.raises(SystemExit, match="unknown key"):
        ablation.main(argv[:1] + ["baseline,nope"] + argv[2:])
