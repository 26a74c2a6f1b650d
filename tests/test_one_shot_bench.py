"""benchmarks/one_shot_fidelity.py: its quick mode end to end (the JSON's structure, taus in
[-1, 1] computed from the losses and scores it states, a rerun that trains nothing), the preset
set it measures, and the per-decision model."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from scipy.stats import kendalltau

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "one_shot_fidelity.py"


def load_script():
    spec = importlib.util.spec_from_file_location("one_shot_fidelity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def run(tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--parts", "quickstart", "--archs", "4",
         "--bootstrap", "50", "--score-tokens", "64,256", "--out", str(tmp_path / "fid.json")],
        capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.slow
def test_quick_mode_writes_taus_computed_from_its_losses(tmp_path):
    done = run(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "fid.json").read_text())
    assert result["quick"] is True and result["seeds"] == 2 and result["ratio"] == 4
    part = result["parts"]["quickstart"]
    archs = part["architectures"]
    assert len(archs) == 4 and len({a["key"] for a in archs}) == 4
    assert all(len(a["losses"]) == 2 and all(math.isfinite(v) for v in a["losses"])
               for a in archs)
    assert set(part["variants"]) == {"fair", "uniform", "sandwich", "finetune", "per-decision",
                                     "split", "balanced"}
    keys = [a["key"] for a in archs]
    mean = [statistics.mean(a["losses"]) for a in archs]
    for name, entry in part["variants"].items():
        assert -1 <= entry["tau"] <= 1, name
        assert all(-1 <= t <= 1 for t in entry["tau_per_seed"]), name
        if math.isfinite(entry["low"]):
            assert -1 <= entry["low"] <= entry["high"] <= 1, name
        assert entry["ratio"] <= 4.0 + 1e-9, name  # at most 4x one standalone run's tokens
        scores = [entry["scores"][k] for k in keys]
        assert entry["tau"] == pytest.approx(kendalltau(scores, mean).statistic, abs=1e-12)
    fair = part["variants"]["fair"]
    per_seed = [[a["losses"][s] for a in archs] for s in range(2)]
    assert fair["tau_per_seed"][1] == pytest.approx(
        kendalltau([fair["scores"][k] for k in keys], per_seed[1]).statistic, abs=1e-12)
    assert part["seed_tau"]["tau"] == pytest.approx(
        kendalltau(per_seed[0], per_seed[1]).statistic, abs=1e-12)
    assert part["variants"]["finetune"]["finetune_tokens"] > 0
    assert part["variants"]["finetune"]["scores"] != fair["scores"]  # it did train
    assert "noise ceiling" in done.stdout
    runs = (tmp_path / "fid.runs.jsonl").read_text().splitlines()
    assert len(runs) == 5 + 4 * 2 + 1  # five supernets, four architectures by two seeds, and
    # the fair supernet scoring on 64 and 256 held-out tokens (and the whole set)
    subsets = part["score_tokens"]
    assert list(subsets) == ["None", "64", "256"]
    assert subsets["None"]["tau_vs_whole_set"] == pytest.approx(1.0)
    assert subsets["None"]["tau_vs_standalone"] == pytest.approx(fair["tau"], abs=1e-12)
    assert subsets["None"]["architectures"] == 4 + 6  # the candidates and the quick pool
    assert all(-1 <= e["tau_vs_whole_set"] <= 1 for e in subsets.values())

    again = run(tmp_path)  # every run cached: nothing to do, the same numbers
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 to do" in again.stdout
    assert json.loads((tmp_path / "fid.json").read_text())["parts"] == result["parts"]
    assert len((tmp_path / "fid.runs.jsonl").read_text().splitlines()) == len(runs)


def test_the_preset_set_is_rank_fidelitys_presets_at_its_default_size(tmp_path):
    from sla_nas import presets

    module = load_script()
    args = argparse.Namespace(parts=["presets"], quick=False, tokens=None, archs=None,
                              sample_seed=0)
    (part,) = module.make_parts(args, tmp_path)
    assert [label for label, _ in part.archs] == module.PRESETS
    assert len(module.PRESETS) == 8
    for name, text in part.archs:
        assert module._key(text) == presets.get(name, d_model=128, seq_len=128, n_heads=4,
                                                n_layers=4).key
    assert part.budget["tokens"] == 1_500_000 and part.budget["batch_size"] == 32
    assert all(part.params[module._key(text)] for _, text in part.archs)  # inside the space


def test_per_decision_scores_are_the_sum_of_option_effects():
    module = load_script()
    pool = [{"params": {"a": 0, "b": 0}, "score": 1.0}, {"params": {"a": 1, "b": 0}, "score": 3.0},
            {"params": {"a": 0, "b": 1}, "score": 2.0}, {"params": {"a": 1, "b": 1}, "score": 4.0}]
    params = {"x": {"a": 0, "b": 1}, "y": {"a": 1, "b": 0}}
    got = module.per_decision(pool, params, {"x": 2.0, "y": 3.0})
    # all six rows: mean 2.5; a=0 rows (1, 2, 2) mean 5/3, b=1 rows (2, 4, 2) mean 8/3
    assert got["x"] == pytest.approx(2.5 + (5 / 3 - 2.5) + (8 / 3 - 2.5))
    # a=1 rows (3, 4, 3) mean 10/3, b=0 rows (1, 3, 3) mean 7/3
    assert got["y"] == pytest.approx(2.5 + (10 / 3 - 2.5) + (7 / 3 - 2.5))


def test_bootstrap_interval_holds_the_tau_of_a_perfect_ranking():
    module = load_script()
    a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert module.bootstrap(a, a, 100) == (1.0, 1.0)
    low, high = module.bootstrap(a, [6.0, 1.0, 5.0, 2.0, 4.0, 3.0], 200)
    assert -1 <= low <= high <= 1
