"""Faults outside the trials, without a cluster: which actor deaths count against
``--max-failures``, the study storage's retries when its connection drops, and the message a
stopped search ends with. The same faults for real (a killed raylet, a restarted PostgreSQL
server, an unwritable run folder) are in test_search_cluster.py."""

from __future__ import annotations

import sqlite3

import optuna
import pytest
from ray.exceptions import ActorDiedError, RayTaskError
from ray.tune import TuneError
from ray.tune.experiment import Trial
from sqlalchemy import exc

from sla_nas.search import _ray, _storage
from sla_nas.search._ray import node_loss_is_no_failure
from sla_nas.search._storage import ReconnectingStorage, SearchStopped, stop_reason


class BareTrial(Trial):
    """A Tune trial with no folder (nothing written on an error)."""

    local_path = None


def failed_trial(error, node="node-a", dead=("node-a",), monkeypatch=None) -> BareTrial:
    """A trial at --max-failures 0 that last reported from ``node`` and then failed with
    ``error``, in a cluster whose dead nodes are ``dead``."""
    monkeypatch.setattr(_ray, "_node_died", lambda node, wait: node in dead)
    trial = BareTrial("fn", stub=True, max_failures=0)
    trial.run_metadata.last_result = {"node_id": node}
    trial.handle_error(error)
    return trial


def test_a_process_lost_with_its_node_is_retried_and_not_counted(monkeypatch):
    lost: list = []
    with node_loss_is_no_failure(lost):
        trial = failed_trial(ActorDiedError(), monkeypatch=monkeypatch)
    assert trial.run_metadata.num_failures == 0 and trial.should_recover()
    assert lost == [(trial.trial_id, "node-a")]


@pytest.mark.parametrize("why", ["the trial's code raised", "its node is alive",
                                 "it never reported", "outside the search"])
def test_every_other_failure_counts(monkeypatch, why):
    lost: list = []
    error = RayTaskError("fn", "Traceback ...", ValueError("boom")) \
        if why == "the trial's code raised" else ActorDiedError()  # e.g. killed for memory
    node = None if why == "it never reported" else "node-a"
    dead = () if why == "its node is alive" else ("node-a",)
    if why == "outside the search":
        trial = failed_trial(error, node, dead, monkeypatch)
    else:
        with node_loss_is_no_failure(lost):
            trial = failed_trial(error, node, dead, monkeypatch)
    assert trial.run_metadata.num_failures == 1 and not trial.should_recover()
    assert lost == []


def dropped() -> optuna.exceptions.StorageInternalError:
    """What RDBStorage raises when the server closed the connection mid-call."""
    try:
        raise exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError(
            "server closed the connection unexpectedly"))
    except exc.OperationalError as err:
        try:
            raise optuna.exceptions.StorageInternalError("commit failed") from err
        except optuna.exceptions.StorageInternalError as wrapped:
            return wrapped


def test_a_dropped_connection_is_retried_until_the_server_answers(tmp_path, monkeypatch):
    storage = ReconnectingStorage(f"sqlite:///{tmp_path / 'study.db'}", retry_seconds=30)
    study = optuna.create_study(study_name="s", storage=storage)
    calls = []
    real = optuna.storages.RDBStorage.get_all_studies

    def flaky(self):
        calls.append(1)
        if len(calls) < 3:
            raise dropped()
        return real(self)

    monkeypatch.setattr(optuna.storages.RDBStorage, "get_all_studies", flaky)
    monkeypatch.setattr(_storage.time, "sleep", lambda s: None)
    assert [s.study_name for s in storage.get_all_studies()] == [study.study_name]
    assert len(calls) == 3


def test_a_finished_trial_whose_ending_was_committed_before_the_drop_is_done(tmp_path,
                                                                            monkeypatch):
    storage = ReconnectingStorage(f"sqlite:///{tmp_path / 'study.db'}", retry_seconds=30)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    real = optuna.storages.RDBStorage.set_trial_state_values
    calls = []

    def committed_then_dropped(self, trial_id, state, values=None):
        calls.append(1)
        if len(calls) == 1:  # the commit reached the server, its answer did not
            real(self, trial_id, state, values)
            raise dropped()
        return real(self, trial_id, state, values)

    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_state_values",
                        committed_then_dropped)
    monkeypatch.setattr(_storage.time, "sleep", lambda s: None)
    assert storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.COMPLETE,
                                          [1.0]) is True
    assert len(calls) == 2 and study.trials[0].values == [1.0]


def test_a_server_down_too_long_stops_the_search_naming_it_without_password(tmp_path,
                                                                            monkeypatch):
    storage = ReconnectingStorage(f"sqlite:///{tmp_path / 'study.db'}", retry_seconds=0)
    storage.url = "postgresql+psycopg2://user:s3cret@db.example:5432/studies"

    def down(self, *args, **kwargs):
        raise dropped()

    monkeypatch.setattr(optuna.storages.RDBStorage, "get_trial", down)
    with pytest.raises(SearchStopped) as caught:
        storage.get_trial(0)
    message = str(caught.value)
    assert "user:***@db.example:5432/studies" in message and "s3cret" not in message
    assert "server closed the connection" in message and "--resume" in message


def test_an_error_that_is_not_the_connection_is_not_retried(tmp_path, monkeypatch):
    storage = ReconnectingStorage(f"sqlite:///{tmp_path / 'study.db'}")
    calls = []

    def wrong(self, *args, **kwargs):
        calls.append(1)
        raise KeyError("no trial 7")

    monkeypatch.setattr(optuna.storages.RDBStorage, "get_trial", wrong)
    with pytest.raises(KeyError):
        storage.get_trial(7)
    assert len(calls) == 1


def as_tune_raises(error: BaseException) -> TuneError:
    """Tune re-raises a callback's or searcher's exception as text, during the original."""
    try:
        try:
            raise error
        except BaseException:
            raise TuneError("Traceback (most recent call last): ...") from None
    except TuneError as tune_error:
        tune_error.__context__ = error
        return tune_error


def test_a_run_folder_that_cannot_be_written_names_the_path(tmp_path):
    error = PermissionError(1, "Operation not permitted", str(tmp_path / "run" / "trials.csv"))
    stopped = stop_reason(as_tune_raises(error), tmp_path / "run", "sqlite:///x.db")
    assert str(stopped).startswith(f"{tmp_path / 'run' / 'trials.csv'}: cannot write "
                                   f"(Operation not permitted)")
    assert f"run folder {tmp_path / 'run'} writable" in str(stopped)
    assert "--resume" in str(stopped)


def test_a_study_file_that_cannot_be_written_names_the_file(tmp_path):
    study = tmp_path / "run" / "study.db"
    stopped = stop_reason(as_tune_raises(dropped()), tmp_path / "run", f"sqlite:///{study}")
    assert str(stopped).startswith(f"{study}: the study could not be written")


def test_a_trial_s_own_error_is_not_a_stop(tmp_path):
    assert stop_reason(as_tune_raises(ValueError("a bug")), tmp_path, "sqlite:///x") is None


def test_schedulers_never_stop_a_seed_architecture():
    """The seed architectures are the verdict's baseline: ASHA or the median rule may stop any
    other trial at a rung, never one of them (they still count in the rung's cut-off)."""
    from ray.tune.schedulers import TrialScheduler

    from sla_nas.search._schedulers import SeedsRunASHA, SeedsRunMedian
    from sla_nas.search._trainable import SEED_RUN

    class Controller:  # the median rule asks for trials waiting to run: none
        def get_live_trials(self):
            return []

    controller = Controller()

    for scheduler in (SeedsRunASHA(time_attr="t", metric="loss", mode="min", max_t=8,
                                   grace_period=1, reduction_factor=2),
                      SeedsRunMedian(time_attr="t", metric="loss", mode="min", grace_period=1,
                                     min_samples_required=3)):
        decisions = {}
        for loss in [1.0, 1.1, 1.2, 1.3]:  # good trials reach the rungs first, and finish
            trial = BareTrial("fn", stub=True, config={SEED_RUN: False})
            scheduler.on_trial_add(controller, trial)
            for t in (1, 2):
                result = {"t": t, "loss": loss + t / 10, "training_iteration": t}
                if scheduler.on_trial_result(controller, trial, result) == TrialScheduler.STOP:
                    break
            else:
                scheduler.on_trial_complete(controller, trial, result)
        for name, seed_run in (("seed", True), ("other", False)):
            trial = BareTrial("fn", stub=True, config={SEED_RUN: seed_run})
            scheduler.on_trial_add(controller, trial)
            decisions[name] = []
            for t in (1, 2):  # a stopped trial reports no more
                decisions[name].append(scheduler.on_trial_result(
                    controller, trial, {"t": t, "loss": 9.0, "training_iteration": t}))
                if decisions[name][-1] == TrialScheduler.STOP:
                    break
        assert TrialScheduler.STOP in decisions["other"], type(scheduler).__name__
        assert decisions["seed"] == [TrialScheduler.CONTINUE] * 2, type(scheduler).__name__
