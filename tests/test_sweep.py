"""benchmarks/sweep.py: its choice by hand, resumable plumbing with the CLI faked, and that every point's
overrides are valid for the real configs."""

import json
from pathlib import Path

import pytest

from benchmarks import ablation, sweep

from skd_tf.config import load_config  # noqa: E402
from skd_tf.distill.config import parse_distill  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def fake_cli_factory(calls, gain):
    def fake_cli(args, log):  # stands in for `python -m skd_tf.cli ...`, writing what the real command writes
        sets = dict(a.split("=", 1) for a in args[args.index("--set") + 1::2])
        if args[0] == "evaluate":
            Path(args[args.index("--json") + 1]).write_text(json.dumps({"teacher_distance": {"pixel_kl": 1.0}}))
            return
        calls.append((args[0], sets))
        out = Path(sets["train.out_dir"])  # runs/<variant>/teacher|baseline|<method>/w<weight>
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.keras").write_bytes(b"")
        classes = int(sets["data.num_classes"])
        miou = 0.8 if out.name == "teacher" else 0.5 if out.name.startswith("baseline") else \
            0.5 + gain(out.parent.name, float(out.name[1:]), classes)
        (out / "eval.json").write_text(json.dumps({"miou": miou, "per_class_iou": [miou] * classes,
                                                   "gradient_share": {"mean": {"x": 1.0}}}))
    return fake_cli


def test_sweep_chooses_the_best_mean_gain_over_variants_and_resumes(tmp_path, monkeypatch):
    calls = []

    def gain(method, weight, classes):  # pixel-wise: best at λ=1 on 6 classes, at 3 on 8; worst case best at 3
        if method == "pi":
            return {6: {0.3: 0.01, 1.0: 0.05, 3.0: 0.04, 10.0: -0.1}, 8: {0.3: 0.0, 1.0: 0.0, 3.0: 0.03, 10.0: -0.2}
                    }[classes][weight]
        return 0.02 if weight == 3.0 else 0.0  # pair-wise (with pixel-wise fixed)

    fake = fake_cli_factory(calls, gain)
    monkeypatch.setattr(sweep, "run_cli", fake)
    monkeypatch.setattr(ablation, "run_cli", fake)  # the shared baseline-distance step
    argv = ["--methods", "pi,pa", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]
    assert sweep.main(argv + ["--noise-seeds", "3"]) == 0
    noise = sweep.baseline_noise(tmp_path / "results", ["s0c6", "s1c8"])
    assert noise == {"s0c6": (0.5, 0.0, 3), "s1c8": (0.5, 0.0, 3)}  # the fake baseline scores 0.5 under any seed
    chosen = json.loads((tmp_path / "results" / "chosen.json").read_text())
    assert chosen["weights"] == {"pi": 3.0, "pa": 3.0}
    baselines = list((tmp_path / "results").glob("*/*/baseline.json"))
    assert len(baselines) == 2 and all(json.loads(b.read_text())["teacher_distance"] for b in baselines)
    # pair-wise ran with the chosen pixel-wise weight; every run on the held-out images, never validation
    pa_runs = [s for _, s in calls if "/pa/" in s["train.out_dir"]]
    assert len(pa_runs) == 8 and all(s["distill.losses.pixel.weight"] == "3" for s in pa_runs)
    assert all(s["data.val_split"] == "train_holdout" and s["data.holdout"] == "500" for _, s in calls)
    # 2 teachers + 2 × 3 baselines + 2 methods × 4 weights × 2 variants
    assert len(calls) == 2 + 6 + 16 and sum(s["seed"] == "2" for _, s in calls) == 2
    calls.clear()
    assert sweep.main(argv) == 0 and calls == []  # everything recorded: nothing runs again
    # a new pixel-wise choice makes the pair-wise points stale: they are rerun with it
    for record in (tmp_path / "results").glob("*/*/pi/w10.json"):
        record.write_text(json.dumps(json.loads(record.read_text()) | {"miou": 0.9}))
    calls.clear()
    assert sweep.main(argv) == 0 and len(calls) == 8 and all("/pa/" in s["train.out_dir"] for _, s in calls)
    assert all(s["distill.losses.pixel.weight"] == "10" for _, s in calls)
    # --grid for one method leaves the others' choices (and grids) alone
    assert sweep.main(["--methods", "cc", "--grid", "0.1"] + argv[2:]) == 0
    chosen = json.loads((tmp_path / "results" / "chosen.json").read_text())
    assert chosen["weights"] == {"pi": 10.0, "pa": 3.0, "cc": 10.0} and chosen["grids"]["pi"] == list(sweep.GRID)
    with pytest.raises(SystemExit, match="sweep pi first"):
        sweep.main(["--methods", "pa", "--runs", str(tmp_path / "runs2"), "--results", str(tmp_path / "results2")])
    with pytest.raises(SystemExit, match="unknown nope"):
        sweep.main(["--methods", "nope"] + argv[2:])


@pytest.mark.parametrize("method", [m[0] for m in sweep.METHODS])
def test_every_sweep_point_is_a_valid_config(method):
    key, _, config, weight_key, literature, chain = next(m for m in sweep.METHODS if m[0] == method)
    fixed = [f"{dict((m[0], m[3]) for m in sweep.METHODS)[c]}=1" for c in chain]
    sets = sweep.variant_sets("s1c8", 500) + fixed + [f"{weight_key}={literature * 0.1:g}"]
    cfg = load_config(ROOT / "configs" / f"{config}.yaml", sets)
    assert cfg.data.holdout == 500 and cfg.data.val_split == "train_holdout" and cfg.data.num_classes == 8
    distill = parse_distill(cfg.distill)
    weights = {f"distill.losses.{n}.weight": s.weight for n, s in distill.losses.items()}
    if distill.holistic:
        weights["distill.holistic.weight"] = distill.holistic.weight
    assert weights[weight_key] == pytest.approx(literature * 0.1)


def test_shipped_configs_carry_the_chosen_weights():
    chosen = ROOT / "benchmarks" / "results" / "sweep" / "chosen.json"
    if not chosen.exists():
        pytest.skip("no sweep has finished a method yet")
    record = json.loads(chosen.read_text())
    for key, weight in record["weights"].items():
        for _, _, config, weight_key, _, chain in sweep.METHODS:
            keys = {weight_key} | {m[3] for m in sweep.METHODS if m[0] in chain}
            if record["keys"][key] in keys:
                cfg = parse_distill(load_config(ROOT / "configs" / f"{config}.yaml").distill)
                section, *rest = record["keys"][key].split(".")[1:]
                value = cfg.holistic.weight if section == "holistic" else cfg.losses[rest[0]].weight
                assert value == pytest.approx(weight), f"{config}: {record['keys'][key]} is not the chosen {weight}"


def test_choice_is_the_best_worst_case_not_the_best_mean(tmp_path):
    gains = {"s0c6": {0.3: 0.10, 1.0: 0.03}, "s1c8": {0.3: -0.05, 1.0: 0.01}}  # means 0.025 and 0.02
    for variant, points in gains.items():
        block = tmp_path / variant / "t"
        (block / "pi").mkdir(parents=True)
        (block / "baseline.json").write_text(json.dumps({"miou": 0.5}))
        for weight, gain in points.items():
            (block / "pi" / f"w{weight:g}.json").write_text(json.dumps({"weight": weight, "teacher": "t",
                                                                        "miou": 0.5 + gain}))
    assert sweep.choose(tmp_path, "pi", ["s0c6", "s1c8"], [0.3, 1.0]) == 1.0
    assert sweep.choose(tmp_path, "pi", ["s0c6", "s1c8"], [0.3, 1.0, 3.0]) is None  # 3.0 not measured yet


def test_the_table_leaves_out_a_point_made_with_an_earlier_config(tmp_path):
    block = tmp_path / "s0c6" / "t"
    (block / "pi").mkdir(parents=True)
    (block / "baseline.json").write_text(json.dumps({"miou": 0.5}))
    for weight, holdout, config_then in [(1.0, 500, []), (3.0, 300, []), (10.0, 500, ["distill.rampup_steps=7"])]:
        sets = sweep.point_sets("pi", "s0c6", weight, [], holdout, [])
        record = {"method": "pi", "variant": "s0c6", "weight": weight, "fixed": [], "overrides": [], "teacher": "t",
                  "miou": 0.6, "config_digest": sweep.current_digest("pi", sets + config_then)}
        if holdout != sweep.DEFAULT_HOLDOUT:
            record["holdout"] = holdout
        (block / "pi" / f"w{weight:g}.json").write_text(json.dumps(record))
    # λ = 10 was made when the config file ramped up over 7 steps (its digest no longer matches): left out
    assert sweep.gains(tmp_path, "pi", ["s0c6"]) == {1.0: {"s0c6": pytest.approx(0.1)},
                                                     3.0: {"s0c6": pytest.approx(0.1)}}


def test_the_losses_table_names_the_options_a_weight_was_chosen_with(tmp_path):
    (tmp_path / "chosen.json").write_text(json.dumps({"variants": ["s0c6"], "weights": {"ka": 0.03, "pi": 3.0},
                                                      "keys": {"ka": "distill.losses.ka.weight",
                                                               "pi": "distill.losses.pixel.weight"}}))
    for key, weight, overrides in [("ka", 0.03, ["distill.losses.ka.adapter_depth=1", "distill.losses.ka.weight=0.03", "train.steps=400"]),
                                   ("ka", 0.1, ["distill.losses.ka.beta=5"]), ("pi", 3.0, [])]:
        sets = sweep.point_sets(key, "s0c6", weight, [], 500, overrides)
        (tmp_path / "s0c6" / "t" / key).mkdir(parents=True, exist_ok=True)
        (tmp_path / "s0c6" / "t" / key / f"w{weight:g}.json").write_text(json.dumps(
            {"method": key, "variant": "s0c6", "weight": weight, "fixed": [], "overrides": overrides,
             "config_digest": sweep.current_digest(key, sets)}))
    # only the chosen point's loss options count (not λ = 0.1's, not the training override)
    assert sweep.calibration_options(tmp_path) == {"ka": "adapter_depth=1"}
    from skd_tf.losses import markdown_table
    assert "| 0.03 (with adapter_depth=1) |" in markdown_table(sweep.calibrated_losses(tmp_path),
                                                               sweep.calibration_options(tmp_path))


def test_a_run_left_by_another_config_is_not_reused(tmp_path):
    sets = sweep.point_sets("pi", "s0c6", 3.0, [], 500, [])
    digest = sweep.current_digest("pi", sets)
    cfg = load_config(ROOT / "configs" / "synthetic_skd_pi.yaml", sets + [f"train.out_dir={tmp_path}"])
    (tmp_path / "config.json").write_text(json.dumps(cfg.model_dump()))
    assert not sweep.stale_run(tmp_path, digest)  # the same config, whatever its out_dir and seed
    other = load_config(ROOT / "configs" / "synthetic_skd_pi.yaml", sets + ["distill.rampup_steps=7"])
    (tmp_path / "config.json").write_text(json.dumps(other.model_dump()))
    assert sweep.stale_run(tmp_path, digest)


def test_a_method_that_costs_mioU_at_every_grid_weight_is_swept_lower(tmp_path, monkeypatch):
    calls = []

    def gain(method, weight, classes):  # SP-like: hurts in proportion to its weight, harmless from ×0.01 down
        return -0.05 if classes == 8 and weight > 30.0 else 0.0

    fake = fake_cli_factory(calls, gain)
    monkeypatch.setattr(sweep, "run_cli", fake)
    monkeypatch.setattr(ablation, "run_cli", fake)
    argv = ["--methods", "sp", "--grid", "0.03,0.1,0.3,1", "--runs", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results")]
    assert sweep.main(argv) == 0
    weights = sorted({float(s["distill.losses.sp.weight"]) for _, s in calls if "/sp/" in s["train.out_dir"]})
    assert weights == [30.0, 90.0, 300.0, 900.0, 3000.0]  # the grid, then ×0.01 where it stops costing mIoU
    chosen = json.loads((tmp_path / "results" / "chosen.json").read_text())
    assert chosen["weights"]["sp"] == 30.0 and chosen["grids"]["sp"] == list(sweep.GRID)  # --grid: sp's only
    table, _ = sweep.summary_markdown(tmp_path / "results", ["s0c6", "s1c8"], {"sp": sweep.GRID})
    header = table.splitlines()[0]
    assert header.startswith("| method | literature λ | ×0.001 | ×0.003 | ×0.01 | ×0.03 |")  # METHOD_GRID's rungs
    sp_row = next(line for line in table.splitlines() if line.startswith("| similarity-preserving"))
    assert sp_row.endswith("| 30 |")

    def always_worse(method, weight, classes):
        return -0.01 * (classes == 8)

    calls.clear()
    fake = fake_cli_factory(calls, always_worse)
    monkeypatch.setattr(sweep, "run_cli", fake)
    monkeypatch.setattr(ablation, "run_cli", fake)
    argv = ["--methods", "cc", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]
    assert sweep.main(argv) == 0  # its own grid (METHOD_GRID: ×0.01-×0.1), then down every rung, then stops
    weights = sorted({float(s["distill.losses.cc.weight"]) for _, s in calls if "/cc/" in s["train.out_dir"]})
    assert weights == [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
    assert sweep.method_multiples("cc") == (0.01, 0.03, 0.1) and sweep.method_multiples("pi") == sweep.GRID
