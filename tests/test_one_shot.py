"""The one-shot search strategy (``search.strategy: one-shot``): its schema, a whole search
through the command line (supernet, candidates scored in the study, the top and the seeds
trained standalone, confirmed and exported from standalone rows only), and a driver killed
with SIGKILL in the supernet phase and again among the candidates, resumed to the end with
nothing trained or scored twice."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from sla_nas import ArchSpec
from sla_nas.results import (
    FIDELITY,
    KEY,
    STATUS,
    TRAINED_STATUSES,
    TRIAL,
    finished_ok,
    load_results,
    winners,
)
from sla_nas.space import SearchSpace, SpaceError

from conftest import REPO, clean_env, run_cli
from search_helpers import write_space

ONE_SHOT = {"strategy": "one-shot", "one_shot": {"supernet_tokens": 12000, "candidates": 20,
                                                 "top": 2}}


# ---------------------------------------------------------------------- the schema
@pytest.mark.parametrize("sections, expected", [
    ({"search": {"one_shot": {"top": 2}}},
     "search: one_shot belongs to strategy: one-shot"),
    ({"search": {"strategy": "one-shot", "one_shot": {"candidates": 0}}},
     "search.one_shot.candidates: Input should be greater than or equal to 1, got 0"),
    ({"search": {"strategy": "one-shot", "one_shot": {"top": 10**7}}},
     "search.one_shot.top: Input should be less than or equal to 1000000"),
    ({"search": {"strategy": "one-shot", "one_shot": {"finetune_tokens": -1}}},
     "search.one_shot.finetune_tokens: Input should be greater than or equal to 0"),
    ({"search": {"strategy": "one-shot", "one_shot": {"supernet_tokens": 10**30}}},
     "search.one_shot.supernet_tokens: Input should be less than or equal to"),
    ({"search": {"strategy": "one-shot", "one_shot": {"score_tokens": 0}}},
     "search.one_shot.score_tokens: Input should be greater than or equal to 1, got 0"),
    ({"search": {"strategy": "one-shot", "one_shot": {"sampling": "random"}}},
     "search.one_shot.sampling: Input should be 'balanced', 'fair' or 'uniform'"),
    ({"search": {"strategy": "one-shot", "one_shot": {"split_projections": "maybe"}}},
     "search.one_shot.split_projections: Input should be a valid boolean"),
    ({"search": {"strategy": "one-shot", "one_shot": {"topp": 3}}},
     "unknown key 'topp' (did you mean 'top'?)"),
    ({"search": {"strategy": "one shot"}},
     "search.strategy: Input should be 'multi-trial' or 'one-shot'"),
    ({"search": {"strategy": "one-shot"}, "model": {"d_model": [16, 32]}},
     "search.strategy: one-shot shares one supernet's weights between every architecture, so "
     "the model's dimensions must be fixed, but this space searches model.d_model"),
    ({"search": {"strategy": "one-shot"}, "objectives": [{"metric": "tokens_per_s"}]},
     "search.strategy: one-shot ranks candidates by the supernet's val_loss or val_acc"),
])
def test_the_schema_refuses_what_one_shot_cannot_do(tmp_path, sections, expected):
    space = write_space(tmp_path, "bad", **sections)
    with pytest.raises(SpaceError) as err:
        SearchSpace.from_yaml(space)
    assert str(err.value).startswith(f"{space}:") and expected in str(err.value), err.value


def test_one_shot_defaults(tmp_path):
    search = SearchSpace.from_yaml(write_space(tmp_path, "ok", search={
        "strategy": "one-shot"})).config.search
    shot = search.one_shot
    assert (shot.supernet_tokens, shot.candidates, shot.top, shot.finetune_tokens,
            shot.score_tokens, shot.split_projections, shot.sampling) == (
        None, 1000, 4, 0, None, False, "balanced")
    assert SearchSpace.from_yaml(write_space(tmp_path, "multi")).config.search.strategy == \
        "multi-trial"


def test_supernet_rows_are_never_winners():
    """A supernet score is no training: even the lowest loss of the table is not a winner."""
    frame = pd.DataFrame({TRIAL: [0, 1, 2], KEY: ["a", "b", "c"], STATUS: ["ok"] * 3,
                          FIDELITY: ["supernet", "standalone", "standalone"],
                          "train_seed": [0, 0, 0], "seed_preset": [None, "vanilla", None],
                          "val_loss": [1.0, 3.0, 2.0]})
    assert finished_ok(frame)[KEY].tolist() == ["b", "c"]
    assert winners(frame, [("val_loss", "min")])[KEY].tolist() == ["c"]


def test_validate_shows_the_one_shot_plan(tmp_path):
    space = write_space(tmp_path, "plan", search=ONE_SHOT)
    done = run_cli(["-m", "sla_nas.cli", "validate", str(space)], cwd=tmp_path, home=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    text = " ".join(done.stdout.split())
    assert "one-shot: a supernet of 12,000 tokens" in text
    assert "scores 20 candidates, then the top 2 and 2 seed runs train standalone" in text
    assert "against" in text and "for the multi-trial plan above" in text


# ---------------------------------------------------------------------- whole searches
@pytest.mark.slow
def test_a_one_shot_search_ends_with_standalone_winners_confirmed_and_exported(tmp_path):
    space = write_space(tmp_path, "oneshot", search=ONE_SHOT,
                        confirm={"top": 1, "seeds": 2, "tokens": 6000, "presets": []})
    done = run_cli([str(REPO / "run_search.py"), str(space), "--results",
                    str(tmp_path / "results"), "--no-report"], cwd=tmp_path, home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "one-shot: training the supernet for 12,000 tokens" in done.stderr
    assert "one-shot: 20 of 20 candidates scored" in done.stderr
    run_dir = tmp_path / "results" / "oneshot"
    frame = load_results(run_dir)
    supernet = frame[frame[FIDELITY] == "supernet"]
    standalone = frame[frame[FIDELITY] == "standalone"]
    scored = supernet[supernet[STATUS] == "ok"]
    assert len(scored) == 20 and scored[KEY].is_unique
    assert set(supernet[STATUS]) <= {"ok", "duplicate", "infeasible"}
    assert scored["val_loss"].notna().all()
    # the top 2 by supernet score (no seed preset among them) and the 2 seeds, trained once
    assert len(standalone) == 4 and (standalone[STATUS] == "ok").all()
    seeds = {spec.key for _, spec in SearchSpace.from_yaml(space).seeds}
    top = scored[~scored[KEY].isin(seeds)].sort_values(["val_loss", TRIAL]).head(2)[KEY]
    assert set(standalone[KEY]) == set(top) | seeds
    assert standalone[TRIAL].min() > supernet[TRIAL].max()  # phase 3 after phase 2
    # the winner, the confirmation and the export come from standalone rows
    best = ArchSpec.load(run_dir / "best.yaml")
    expected = standalone.sort_values(["val_loss", TRIAL]).iloc[0][KEY]
    assert best.key == expected
    confirm = pd.read_csv(run_dir / "confirm.csv")
    assert set(confirm[KEY]) <= set(standalone[KEY])
    exported = [p.name for p in (run_dir / "exported").iterdir()]
    assert len(exported) == 1 and exported[0].split("-")[-1] in set(standalone[KEY])
    record = json.loads((run_dir / "supernet" / "supernet.json").read_text())
    assert record["status"] == "ok" and len(record["history"]) == 4


DRIVER = """
import os, signal, sys, threading, time
from pathlib import Path
from sla_nas.search import SearchOptions, run_search

space, results, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

def log(message):
    print(message, file=sys.stderr, flush=True)
    if mode == "candidates" and "10 of 20 candidates scored" in message:
        os.kill(os.getpid(), signal.SIGKILL)

if mode == "supernet":  # killed right after the supernet's first checkpoint
    state = results / "killed" / "supernet" / "supernet_state.pt"
    def watch():
        while not state.exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, daemon=True).start()
run_search(space, SearchOptions(results=results, resume=mode != "supernet", quiet=True,
                                confirm=False), log=log)
"""


@pytest.mark.slow
def test_a_one_shot_search_killed_in_each_phase_resumes_without_repeating_work(tmp_path):
    shot = {**ONE_SHOT, "one_shot": {**ONE_SHOT["one_shot"], "supernet_tokens": 16000}}
    space = write_space(tmp_path, "killed", search=shot)
    results = tmp_path / "results"
    (tmp_path / "driver.py").write_text(DRIVER)

    def drive(mode: str) -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(space),
                              str(results), mode], cwd=tmp_path, env=clean_env(tmp_path),
                             capture_output=True, text=True, timeout=600)
        time.sleep(3)  # the embedded Ray's processes end with their driver
        return out

    killed = drive("supernet")
    assert killed.returncode == -9, killed.stderr[-3000:]
    run_dir = results / "killed"
    assert not (run_dir / "supernet" / "supernet.json").exists()  # stopped mid-training
    assert not (run_dir / "trials.csv").exists()

    killed = drive("candidates")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert "one-shot: continuing the supernet" in killed.stderr
    before = load_results(run_dir)
    assert (before[STATUS] == "ok").sum() == 10 and (before[FIDELITY] == "supernet").all()

    done = drive("end")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "one-shot: 10 candidates scored before; continuing to 20" in done.stderr
    assert "one-shot: loading the supernet trained before" in done.stderr  # not trained again
    after = load_results(run_dir)
    supernet = after[after[FIDELITY] == "supernet"]
    scored = supernet[supernet[STATUS] == "ok"]
    assert len(scored) == 20 and scored[KEY].is_unique  # nothing scored twice
    kept = after.set_index(TRIAL).loc[before[TRIAL]]
    assert kept["val_loss"].tolist() == before["val_loss"].tolist()
    standalone = after[after[FIDELITY] == "standalone"]
    trained = standalone[standalone[STATUS].isin(TRAINED_STATUSES)]
    assert len(trained) == 4 and (trained[STATUS] == "ok").all() and trained[KEY].is_unique
    assert not after[STATUS].isin(("running", "waiting", "queued", "abandoned")).any()
    record = json.loads((run_dir / "supernet" / "supernet.json").read_text())
    steps = [h["step"] for h in record["history"]]
    assert len(steps) == 4 and steps == sorted(steps)
    assert yaml.safe_load((run_dir / "space.yaml").read_text())["search"]["strategy"] == \
        "one-shot"
