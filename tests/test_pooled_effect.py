"""benchmarks/pooled_effect.py: paired differences per record folder and pooled, by hand on made-up records."""

import json
import math
import statistics
from pathlib import Path

import pytest

from benchmarks import pooled_effect


def write(folder: Path, row: str, config: str, seed: int, miou: float, digest: str | None = None) -> None:
    path = folder / "t" / config / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"row": row, "config": config, "teacher": "t", "seed": seed, "miou": miou, "overrides": []}
    if digest:
        record["config_digest"] = digest
    path.write_text(json.dumps(record))


def test_pooled_effect_pairs_seeds_within_each_folder_and_leaves_out_stale_records(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for seed, (base, ka) in enumerate([(0.50, 0.52), (0.48, 0.51), (0.55, 0.54)]):
        write(a, "baseline", "synthetic_student", seed, base)
        write(a, "ka", "synthetic_ka", seed, ka)
    for seed, (base, ka) in enumerate([(0.60, 0.61), (0.62, 0.66)]):
        write(b, "baseline", "synthetic_student", seed, base)
        write(b, "ka", "synthetic_ka", seed, ka)
    write(b, "baseline", "synthetic_student", 2, 0.70)  # no KA pair: not counted
    write(b, "baseline", "synthetic_student", 3, 0.60)
    write(b, "ka", "synthetic_ka", 3, 0.90, digest="000000000000")  # an earlier config: left out
    found = pooled_effect.effects([a, b], ["ka"])["ka"]

    diffs = [0.02, 0.03, -0.01, 0.01, 0.04]
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    half = 2.7764451051977987 * sd / math.sqrt(5)  # t(0.975, 4)
    assert found["pooled"]["n"] == 5 and found["positive"] == 4
    assert found["pooled"]["mean"] == pytest.approx(mean)
    assert found["pooled"]["low"] == pytest.approx(mean - half, rel=1e-6)
    assert found["per_folder"]["a"]["mean"] == pytest.approx(statistics.mean(diffs[:3]))
    assert found["per_folder"]["b"]["n"] == 2
    assert pooled_effect.effects([b], ["ka"], any_config=True)["ka"]["per_folder"]["b"]["n"] == 3  # counted now

    assert pooled_effect.main(["--rows", "ka", str(a), str(b)]) == 0
    assert "| knowledge adaptation | +1.33 [" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        pooled_effect.main(["--rows", "baseline", str(a)])
    with pytest.raises(SystemExit):
        pooled_effect.main(["--rows", "ka", str(tmp_path / "nope")])
