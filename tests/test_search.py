"""The search on a real local Ray (one per module): seeds first, the tables, infeasible and
duplicate architectures never trained, ASHA stops told to Optuna as PRUNED, failures,
divergence, retries from checkpoints, several objectives, grid."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import torch
import yaml
from ray import cloudpickle

from sla_nas import ArchSpec, presets
from sla_nas.proxy import Budget, make_task, train_proxy
from sla_nas.results import (
    CURVE,
    HISTORY,
    KEY,
    N_SEEDS,
    NODE_ID,
    NODES,
    REUSED_FROM,
    SEED_PRESET,
    SPEC,
    STATE,
    STATUS,
    TOKENS,
    TRIAL,
    WALL_SECONDS,
    load_results,
    ranked,
    search_noise,
)
from sla_nas.search import SearchOptions, run_search
from sla_nas.search._trainable import run_trial

from search_helpers import DIMS, VAL_TOKENS, write_space

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the wrappers below run in Ray
FAIL_KEY = ""  # set by a test before the search; captured when the trainable is pickled
MARKER = ""


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]


def search(tmp_path: Path, name: str, trainable=None, options: dict | None = None, **sections):
    space = write_space(tmp_path, name, **sections)
    return run_search(space, SearchOptions(results=tmp_path / "results", quiet=True,
                                           **(options or {})), trainable=trainable)


def study_of(outcome) -> optuna.Study:
    return optuna.load_study(study_name=outcome.paths.root.name,
                             storage=outcome.paths.sqlite_url())


def tune_folders(outcome) -> list[str]:
    return sorted(p.name for p in outcome.paths.tune.glob("trial-*"))


def direct_val_loss(name: str, tokens: int = 6000, seed: int = 0) -> float:
    """The same proxy training outside Ray (one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = presets.get(name, **DIMS)
        return train_proxy(spec, make_task("bytes-lm", 16, val_tokens=VAL_TOKENS),
                           Budget(tokens=tokens, eval_at=(tokens,), batch_size=8),
                           seed=seed)["val_loss"]
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Basic:
    """One search of the default space, read by several tests: seeds vanilla and cla2, four
    trials, FIFO."""

    outcome: Any
    table: pd.DataFrame  # every trial, as load_results reads it back
    trained: pd.DataFrame  # the trials that trained (status ok)
    folder: Path  # where the space file was written


@pytest.fixture(scope="module")
def basic(local_ray, tmp_path_factory) -> Basic:
    folder = tmp_path_factory.mktemp("basic")
    outcome = search(folder, "basic")
    table = load_results(outcome.paths.root)
    return Basic(outcome, table, table[table[STATUS] == "ok"], folder)


def test_trials_are_numbered_in_order_and_the_seeds_come_first(basic):
    table = basic.table
    assert list(table[TRIAL]) == list(range(len(table)))
    assert list(table[SEED_PRESET][:2]) == ["vanilla", "cla2"]
    assert list(table[KEY][:2]) == [presets.get(n, **DIMS).key for n in ("vanilla", "cla2")]


def test_every_trial_completes_and_each_architecture_trains_once(basic):
    table = basic.table
    assert set(table[STATUS]) <= {"ok", "duplicate"} and (table[STATE] == "COMPLETE").all()
    assert len(basic.trained) == 4 and basic.trained[KEY].nunique() == 4  # n_trials
    assert len(tune_folders(basic.outcome)) == 4


def test_the_search_trains_exactly_the_proxy(basic):
    """The same loss as a direct run of train_proxy outside Ray."""
    frame = basic.trained
    assert frame[frame[SEED_PRESET] == "vanilla"]["val_loss"].item() == \
        direct_val_loss("vanilla")


def test_each_trained_trial_records_its_node_wall_time_and_tokens(basic):
    frame = basic.trained
    assert frame[NODE_ID].notna().all() and (frame[WALL_SECONDS] > 0).all()
    assert (frame[NODES] == frame[NODE_ID]).all()  # one attempt each
    assert (frame[TOKENS] == 6016).all()  # 39 main + 8 cooldown steps of 8 x 16 tokens


def test_each_trained_trial_keeps_its_spec_history_and_curve(basic):
    for _, row in basic.trained.iterrows():
        assert ArchSpec.from_json(row[SPEC]).key == row[KEY]
        history = json.loads(row[HISTORY])
        assert history[-1]["val_loss"] == row["val_loss"]
        assert len(json.loads(row[CURVE])) > 10


def test_trials_csv_holds_the_table(basic):
    csv = pd.read_csv(basic.outcome.paths.trials_csv)
    assert list(csv[KEY]) == list(basic.table[KEY])
    assert list(csv[STATUS]) == list(basic.table[STATUS])


def test_the_best_is_saved_and_ranked_first(basic):
    best = basic.trained.loc[basic.trained["val_loss"].idxmin()]
    assert ArchSpec.load(basic.outcome.paths.best).key == best[KEY]
    assert basic.outcome.winners.iloc[0][KEY] == best[KEY]


def test_the_run_folder_keeps_the_space_the_versions_and_the_study(basic):
    paths = basic.outcome.paths
    assert paths.space.read_text() == (basic.folder / "basic.yaml").read_text()
    info = json.loads(paths.run_info.read_text())
    assert set(info["versions"]) == {"sla_nas", "torch", "ray", "optuna", "python"}
    assert study_of(basic.outcome).study_name == "basic"


def test_the_verdict_and_the_notes(basic):
    assert "vanilla" in basic.outcome.verdict
    assert basic.outcome.notes == ["FIFO: every trial trains to the full budget"]


def test_seed_architectures_run_with_several_seeds_and_give_a_noise_estimate(tmp_path):
    outcome = search(tmp_path, "noise", search={"n_trials": 5, "seed_runs": 2})
    frame = outcome.frame
    seeds = frame[frame[SEED_PRESET].notna()]
    assert list(zip(seeds[SEED_PRESET], seeds["train_seed"])) == [
        ("vanilla", 0), ("cla2", 0), ("vanilla", 1), ("cla2", 1)]
    assert (seeds[STATUS] == "ok").all() and list(seeds[TRIAL]) == [0, 1, 2, 3]
    assert seeds[seeds[SEED_PRESET] == "vanilla"]["val_loss"].tolist() == [
        direct_val_loss("vanilla", seed=0), direct_val_loss("vanilla", seed=1)]
    noise = search_noise(frame)
    vanilla, cla2 = (seeds[seeds[SEED_PRESET] == n]["val_loss"].to_numpy() for n in
                     ("vanilla", "cla2"))
    # pooled std over seeds; paired: std of the seed-by-seed differences / sqrt(2)
    assert noise["unpaired"] == pytest.approx(
        math.sqrt(((vanilla - vanilla.mean()) ** 2 + (cla2 - cla2.mean()) ** 2).sum() / 2))
    diff = vanilla - cla2
    assert noise["paired"] == pytest.approx(abs(diff[0] - diff[1]) / math.sqrt(2) / math.sqrt(2))
    ranked_ = ranked(frame, "val_loss", "min").set_index(KEY)
    assert ranked_.loc[presets.get("vanilla", **DIMS).key, "val_loss"] == \
        pytest.approx(vanilla.mean())
    assert ranked_.loc[presets.get("vanilla", **DIMS).key, N_SEEDS] == 2


def test_a_new_run_never_continues_an_old_one(tmp_path):
    search(tmp_path, "again", search={"n_trials": 1})
    with pytest.raises(ValueError, match="already holds a run; add --resume"):
        search(tmp_path, "again", search={"n_trials": 1})
    with pytest.raises(ValueError, match="nothing to resume"):
        search(tmp_path, "fresh", options={"resume": True})


def test_infeasible_samples_are_told_and_never_trained(tmp_path):
    outcome = search(tmp_path, "constrained", search={"n_trials": 3},
                     constraints={"max_kv_cache_bytes_per_token": 160})
    frame = outcome.frame
    vanilla = frame[frame[SEED_PRESET] == "vanilla"].iloc[0]
    assert vanilla[STATUS] == "infeasible" and vanilla[STATE] == "COMPLETE"
    assert vanilla["message"] == "kv_cache_bytes_per_token 192 > 160"
    trial = study_of(outcome).trials[int(vanilla[TRIAL])]
    assert trial.values == [math.inf] and trial.constraints == {
        "kv_cache_bytes_per_token": pytest.approx(32 / 160)}
    trained = frame[frame[STATUS] == "ok"]
    assert len(trained) == 3 and (trained["kv_cache_bytes_per_token"] <= 160).all()
    assert tune_folders(outcome) == sorted(f"trial-{n:04d}-{k}" for n, k in
                                           zip(trained[TRIAL], trained[KEY]))
    assert "vanilla seed was not evaluated" in outcome.verdict


def test_duplicates_reuse_results_and_a_spent_space_ends_the_search(tmp_path):
    # two architectures: layer 2, group 1 reads its own layer or reuses layer 1's K/V
    outcome = search(tmp_path, "spent", seeds=["vanilla"],
                     connectivity={"layers": [2], "groups": [1], "modes": ["reuse"]},
                     search={"n_trials": 4})
    frame = outcome.frame
    trained = frame[frame[STATUS] == "ok"]
    assert len(trained) == 2 and trained[KEY].nunique() == 2
    assert len(tune_folders(outcome)) == 2  # each architecture trained once
    dups = frame[frame[STATUS] == "duplicate"]
    assert len(dups) >= 200
    source = trained.set_index(KEY)
    for _, row in dups.iterrows():
        assert row["val_loss"] == source.loc[row[KEY], "val_loss"]
        assert row[REUSED_FROM] == source.loc[row[KEY], TRIAL]
    assert "the space is spent" in outcome.notes[-1]


def test_asha_stops_are_pruned_in_optuna_with_their_rung_value(tmp_path):
    outcome = search(tmp_path, "asha", seeds=[],
                     search={"n_trials": 8, "scheduler": "asha", "grace_tokens": 3000,
                             "concurrency": 1})
    assert outcome.plan.rungs == (3000,) and outcome.plan.eval_at == (3000, 6000)
    frame = outcome.frame
    pruned = frame[frame[STATUS] == "pruned"]
    assert len(pruned) >= 1 and set(frame[STATUS]) == {"ok", "pruned"}
    study = study_of(outcome)
    for _, row in pruned.iterrows():
        trial = study.trials[int(row[TRIAL])]
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert trial.intermediate_values == {3000: row["val_loss"]}
        assert row[TOKENS] < 6000
    for _, row in frame[frame[STATUS] == "ok"].iterrows():
        assert study.trials[int(row[TRIAL])].state == optuna.trial.TrialState.COMPLETE
        assert set(study.trials[int(row[TRIAL])].intermediate_values) == {3000, 6000}


def raise_for_one_key(config, setup):
    if ArchSpec.from_json(config["arch"]).key == FAIL_KEY:
        raise RuntimeError("injected failure for this architecture")
    run_trial(config, setup)


def test_a_failing_trial_does_not_stop_the_search(tmp_path):
    global FAIL_KEY
    FAIL_KEY = presets.get("cla2", **DIMS).key
    outcome = search(tmp_path, "failing", trainable=raise_for_one_key)
    frame = outcome.frame
    failed = frame[frame[KEY] == FAIL_KEY].iloc[0]
    assert failed[STATUS] == "error" and failed[STATE] == "FAIL"
    assert "injected failure for this architecture" in failed["message"]
    others = frame[frame[KEY] != FAIL_KEY]
    assert set(others[STATUS]) <= {"ok", "duplicate"} and (others[STATUS] == "ok").sum() == 3


def fail_once_after_first_evaluation(config, setup):
    from ray import tune

    if ArchSpec.from_json(config["arch"]).key != FAIL_KEY or Path(MARKER).exists():
        return run_trial(config, setup)
    report = tune.report

    def report_then_die(metrics, checkpoint=None):
        report(metrics, checkpoint=checkpoint)
        Path(MARKER).touch()
        raise RuntimeError("injected failure after the first evaluation")

    tune.report = report_then_die
    try:
        run_trial(config, setup)
    finally:
        tune.report = report


def test_max_failures_retries_from_the_checkpoint(tmp_path):
    global FAIL_KEY, MARKER
    FAIL_KEY, MARKER = presets.get("vanilla", **DIMS).key, str(tmp_path / "failed-once")
    outcome = search(tmp_path, "retry", trainable=fail_once_after_first_evaluation,
                     budget={"eval_every": 3000}, options={"max_failures": 1})
    assert Path(MARKER).exists()
    vanilla = outcome.frame[outcome.frame[KEY] == FAIL_KEY].iloc[0]
    assert vanilla[STATUS] == "ok"
    folder = outcome.paths.tune / f"trial-{vanilla[TRIAL]:04d}-{FAIL_KEY}"
    assert (folder / "error.txt").read_text().count("Failure #") == 1
    assert vanilla[NODES].split() == [vanilla[NODE_ID]] * 2  # two attempts, one node
    # resumed from the checkpoint of its first evaluation: the uninterrupted result
    history = json.loads(vanilla[HISTORY])
    assert [h["tokens"] for h in history] == [3072, 6016]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = train_proxy(presets.get("vanilla", **DIMS),
                             make_task("bytes-lm", 16, val_tokens=VAL_TOKENS),
                            Budget(tokens=6000, eval_at=(3000, 6000), batch_size=8))
    finally:
        torch.set_num_threads(threads)
    assert [h["val_loss"] for h in history] == [h["val_loss"] for h in whole["history"]]


def test_divergence_is_recorded_and_the_search_goes_on(tmp_path):
    outcome = search(tmp_path, "diverging", seeds=["vanilla"], search={"n_trials": 2},
                     budget={"lr": 1.0e3})
    frame = outcome.frame
    assert list(frame[STATUS]) == ["diverged", "diverged"]
    assert (frame[STATE] == "FAIL").all()
    assert frame["message"].str.startswith("diverged (a non-finite training loss)").all()
    assert outcome.winners.empty and not outcome.paths.best.exists()
    assert outcome.verdict.startswith("no trial finished its full budget")


def test_two_objectives_leave_a_pareto_folder(tmp_path):
    outcome = search(tmp_path, "pareto", search={"n_trials": 5, "sampler": "nsga2"},
                     objectives=[{"metric": "val_loss", "mode": "min"},
                                 {"metric": "kv_cache_bytes_per_token", "mode": "min"}])
    front = outcome.winners
    files = sorted(p.name for p in outcome.paths.pareto.glob("*.yaml"))
    assert files == sorted(f"rank-{i}-{k}.yaml" for i, k in enumerate(front[KEY], 1))
    ok = outcome.frame[outcome.frame[STATUS] == "ok"]
    for _, row in ok.iterrows():  # nothing outside the front dominates a front member
        dominated = ((ok["val_loss"] <= row["val_loss"]) &
                     (ok["kv_cache_bytes_per_token"] <= row["kv_cache_bytes_per_token"]) &
                     ((ok["val_loss"] < row["val_loss"]) |
                      (ok["kv_cache_bytes_per_token"] < row["kv_cache_bytes_per_token"])))
        assert dominated.any() != (row[KEY] in set(front[KEY]))
    assert not outcome.paths.best.exists()


def test_a_measured_decode_objective_runs_end_to_end(tmp_path):
    """decode_speedup beside val_loss: every trained trial measures it after training (vanilla
    of the same dimensions timed in the trial's own process), the table and Optuna hold the
    same value, Optuna maximises it and the Pareto set treats it as better when higher."""
    budget = 0.25  # MiB: 10 vanilla sequences of 32 tokens at 768 bytes a token (fp32)
    outcome = search(tmp_path, "decode", model={"d_model": 32, "seq_len": 32},
                     search={"n_trials": 3},
                     objectives=[{"metric": "val_loss"},
                                 {"metric": "decode_speedup", "batch": 4, "context": 32,
                                  "cache_budget_mb": budget}])
    frame = outcome.frame
    ok = frame[frame[STATUS] == "ok"]
    assert len(ok) >= 2 and set(ok[SEED_PRESET].dropna()) == {"vanilla", "cla2"}
    assert (ok["decode_speedup"] > 0).all() and (ok["decode_tokens_per_s"] > 0).all()
    study = study_of(outcome)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    for _, row in ok.iterrows():
        assert study.trials[int(row[TRIAL])].values == [row["val_loss"], row["decode_speedup"]]
    for _, row in ok.iterrows():  # nothing outside the front dominates a front member
        dominated = ((ok["val_loss"] <= row["val_loss"]) &
                     (ok["decode_speedup"] >= row["decode_speedup"]) &
                     ((ok["val_loss"] < row["val_loss"]) |
                      (ok["decode_speedup"] > row["decode_speedup"])))
        assert dominated.any() != (row[KEY] in set(outcome.winners[KEY]))
    assert "decode_speedup" in pd.read_csv(outcome.paths.trials_csv).columns


def test_a_cache_that_holds_no_sequence_scores_zero_and_a_failure_names_the_trial():
    """An architecture whose cache holds not one sequence in the budget (in a search: a concat
    storing more than vanilla; here a budget the space would refuse) serves nothing there:
    speedup 0, nothing measured. A measurement that fails says which trial and settings."""
    from sla_nas.search._trainable import decode_metrics

    spec = presets.get("vanilla", **DIMS)
    assert decode_metrics(spec, {"batch": 4, "context": None, "cache_budget_mb": 0.001},
                          "cpu", "fp32", "trial 3") == {"decode_speedup": 0.0,
                                                        "decode_tokens_per_s": 0.0}
    with pytest.raises(ValueError) as err:
        decode_metrics(spec, {"batch": 4, "context": 17, "cache_budget_mb": None}, "cpu",
                       "fp32", "trial 3 (abc, seed 0)")
    assert str(err.value) == (
        "trial 3 (abc, seed 0): measuring decode_speedup (batch 4, context 17, fp32 on cpu) "
        "failed: context 17 is past the learned positions, which end at seq_len 16: use a "
        "context <= 16 (only rope models decode further)")


def test_grid_trains_every_distinct_architecture_once(tmp_path):
    outcome = search(tmp_path, "grid", seeds=["vanilla"],
                     connectivity={"layers": [2], "groups": [1], "modes": ["reproject",
                                                                           "reuse"]},
                     search={"n_trials": 10, "sampler": "grid"})
    frame = outcome.frame
    assert list(frame[STATUS]) == ["ok", "ok", "ok"] and frame[KEY].nunique() == 3
    # n_trials above the grid's size: the search ends complete, not "interrupted"
    assert not outcome.interrupted and not any("interrupted" in n for n in outcome.notes)
    assert yaml.safe_load(outcome.paths.space.read_text())["search"]["sampler"] == "grid"


def test_a_trial_checkpointed_but_unrecorded_is_queued_again_from_its_checkpoint(tmp_path):
    """The driver died after a trial's first checkpoint reached the storage but before Tune's
    experiment snapshot recorded the trial: on restore the architecture is queued again and
    its new trial starts from that checkpoint."""
    from sla_nas.search import STORAGES
    from sla_nas.search._searcher import SpaceSearch
    from sla_nas.search._trainable import ARCH, NUMBER, RESUME_FROM
    from sla_nas.space import SearchSpace

    space = SearchSpace.from_yaml(write_space(tmp_path, "requeue", seeds=["vanilla"]))
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    STORAGES["requeue"] = storage
    tune_dir = tmp_path / "tune"
    vanilla = presets.get("vanilla", **DIMS)
    searcher = SpaceSearch(space, [("val_loss", "min")], optuna.samplers.RandomSampler(0),
                           storage, "requeue", 0, 6000, tune_dir,
                           [("vanilla", space.params_for(vanilla), 0)], "fifo")
    searcher.save(str(tmp_path / "snapshot.pkl"))  # Tune's last snapshot, before the trial
    config = searcher.suggest("tune-1")
    folder = tune_dir / f"trial-{config[NUMBER]:04d}-{vanilla.key}" / "checkpoint_000000"

    def die_after_first_evaluation(metrics):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # the trial checkpoints once, then the driver dies
        train_proxy(vanilla, make_task("bytes-lm", 16, val_tokens=VAL_TOKENS),
                    Budget(tokens=6000, eval_at=(3000, 6000), batch_size=8),
                    report=die_after_first_evaluation, checkpoint=folder)
    restored = SpaceSearch.__new__(SpaceSearch)
    restored.restore(str(tmp_path / "snapshot.pkl"))
    again = restored.suggest("tune-2")
    assert again[ARCH] == config[ARCH] and again[NUMBER] == config[NUMBER] + 1
    assert again[RESUME_FROM] == str(folder)
    first = optuna.load_study(study_name="requeue", storage=storage).trials[config[NUMBER]]
    assert first.user_attrs[STATUS] == "abandoned"
    assert "queued again to continue from that checkpoint" in first.user_attrs["message"]


def test_a_restarted_trial_finds_the_newest_complete_checkpoint_of_its_earlier_run(tmp_path):
    """A trial Tune restores without a checkpoint (its first one reached the storage after the
    last experiment snapshot) continues from what its folder holds; a checkpoint the kill cut
    short is passed over for the one before it, and a folder with none gives None."""
    from sla_nas.search._trainable import FINAL_FILE, _left_by_an_earlier_run

    spec = presets.get("vanilla", **DIMS)
    task, folder = make_task("bytes-lm", spec.dims.seq_len), tmp_path / "trial-0003-abc"
    assert _left_by_an_earlier_run(folder) is None
    train_proxy(spec, task, Budget(tokens=2 * 4 * spec.dims.seq_len, batch_size=4,
                                   eval_every=4 * spec.dims.seq_len),
                seed=0, checkpoint=folder / "checkpoint_000000",
                report=lambda metrics: None)
    complete = folder / "checkpoint_000000"
    state = complete / "state.pt"
    assert state.is_file()
    cut = folder / "checkpoint_000001"
    cut.mkdir()
    (cut / "state.pt").write_bytes(state.read_bytes()[:100])  # cut short by the kill
    assert _left_by_an_earlier_run(folder) == complete
    final = folder / "checkpoint_000002"
    final.mkdir()
    (final / FINAL_FILE).write_text(json.dumps({"status": "ok"}))  # its weights never arrived
    assert _left_by_an_earlier_run(folder) == complete
