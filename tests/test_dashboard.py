"""Optuna Dashboard on a search's study: the real ``optuna-dashboard`` server on loopback, read
through its JSON API, shows every trial with its architecture key, status, costs, spec and
fidelity, and the objectives by name; a trial that is still running already shows them."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from sla_nas import ArchSpec
from sla_nas.arch import estimate
from sla_nas.results import COSTS, FIDELITY, KEY, SEED, STATUS, STATUSES, RunPaths, load_results
from sla_nas.search._searcher import STANDALONE, SpaceSearch, describe_study
from sla_nas.search._trainable import ARCH
from sla_nas.space import SearchSpace

from search_helpers import write_space

pytest.importorskip("optuna_dashboard")
DASHBOARD = Path(sys.executable).with_name("optuna-dashboard")  # the console script


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(base: str, route: str) -> Any:
    with urllib.request.urlopen(base + route, timeout=30) as response:
        body = response.read().decode()
    return json.loads(body) if route.startswith("/api/") else body


@contextlib.contextmanager
def dashboard(storage_url: str, timeout: float = 90.0) -> Iterator[str]:
    """``optuna-dashboard URL --host 127.0.0.1`` on a free port (wsgiref: one process, no
    workers to leave behind); yields its base URL once it answers, and stops it after."""
    port = _free_port()
    process = subprocess.Popen(
        [str(DASHBOARD), storage_url, "--host", "127.0.0.1", "--port", str(port),
         "--server", "wsgiref", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"optuna-dashboard exited with {process.returncode}: "
                                     f"{process.stdout.read()[-2000:]}")
            try:
                _get(base, "/api/meta")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"optuna-dashboard did not answer on {base} within "
                                         f"{timeout:g} s") from None
                time.sleep(0.25)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        process.stdout.close()
        assert process.returncode is not None  # no server left behind


def _attrs(serialized: dict[str, Any]) -> dict[str, str]:
    """The dashboard's [{key, value}] attribute list as a dict (values are strings)."""
    return {a["key"]: a["value"] for a in serialized["user_attrs"]}


def _study_detail(base: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the study's summary from /api/studies, its detail from /api/studies/<id>)."""
    summaries = _get(base, "/api/studies")["study_summaries"]
    summary = next(s for s in summaries if s["study_name"] == name)
    return summary, _get(base, f"/api/studies/{summary['study_id']}")


def _check_trial_attrs(attrs: dict[str, str]) -> ArchSpec:
    """A trial's key, status, fidelity, spec and every cost, as the dashboard shows them."""
    spec = ArchSpec.from_json(attrs["spec"])
    assert attrs[KEY] == spec.key
    assert attrs[STATUS] in STATUSES
    assert attrs[FIDELITY] == STANDALONE
    costs = estimate(spec)
    assert set(COSTS) <= set(costs)
    for metric in COSTS:
        assert attrs[metric] == str(costs[metric]), metric
    return spec


# ---------------------------------------------------------------------- a finished search
@pytest.mark.slow
def test_the_dashboard_shows_a_finished_search(finished_pareto_run):
    """The real search path (`finished_pareto_run`: val_loss and KV cache, NSGA-II, 8 trials):
    the dashboard lists the study with its settings and names its two objectives; every
    trial the search asked carries its key, status, fidelity, spec and costs, as in the
    study itself and in the trials table."""
    paths = RunPaths(finished_pareto_run)
    name = paths.root.name
    study = optuna.load_study(study_name=name, storage=paths.sqlite_url())
    table = load_results(paths.root).set_index("trial")
    with dashboard(f"sqlite:///{paths.study_db}") as base:
        summary, detail = _study_detail(base, name)
        csv_header = _get(base, f"/csv/{summary['study_id']}").splitlines()[0]
    assert summary["directions"] == detail["directions"] == ["minimize", "minimize"]
    assert detail["objective_names"] == ["val_loss", "kv_cache_bytes_per_token"]
    assert csv_header.startswith("Number,State,val_loss,kv_cache_bytes_per_token,")
    settings = _attrs(summary)
    assert json.loads(settings["objectives"]) == [
        {"metric": "val_loss", "mode": "min"},
        {"metric": "kv_cache_bytes_per_token", "mode": "min"}]
    assert settings["space_file"] == f"{name}.yaml"
    assert settings["sampler"] == "nsga2" and settings["n_trials"] == "8"
    assert int(settings["budget_tokens"]) == 6000
    trials = {t["number"]: t for t in detail["trials"]}
    assert sorted(trials) == [t.number for t in study.trials] == sorted(table.index)
    asked = [n for n, t in trials.items() if KEY in _attrs(t)]
    assert len(asked) >= 8  # every trained trial at least (and any duplicates)
    trained = 0
    for number in asked:
        attrs = _attrs(trials[number])
        spec = _check_trial_attrs(attrs)
        stored = study.trials[number].user_attrs
        assert set(attrs) == set(stored)  # the dashboard shows every attribute
        assert all(attrs[k] == (v if isinstance(v, str) else str(v))
                   for k, v in stored.items() if isinstance(v, str | int | float))
        assert table.at[number, KEY] == spec.key
        assert table.at[number, STATUS] == attrs[STATUS]
        assert table.at[number, FIDELITY] == STANDALONE
        if attrs[STATUS] == "ok":
            trained += 1
            assert trials[number]["state"] == "Complete"
            assert len(trials[number]["values"]) == 2
            assert float(attrs["val_loss"]) == pytest.approx(trials[number]["values"][0])
    assert trained >= 1
    assert {t["number"] for t in detail["best_trials"]} <= set(asked)


# ---------------------------------------------------------------------- a running trial
def test_a_trial_shows_its_architecture_as_soon_as_it_is_asked(tmp_path):
    """No Ray: the searcher asks Optuna for a trial as Tune would; before it is trained the
    dashboard already shows its key, spec, costs, fidelity and status running."""
    space = SearchSpace.from_yaml(write_space(tmp_path, "live"))
    objectives = [("val_loss", "min"), ("kv_cache_bytes_per_token", "min")]
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = optuna.storages.RDBStorage(url)
    searcher = SpaceSearch(space, objectives, optuna.samplers.RandomSampler(seed=0), storage,
                           "live", 0, 6000, tmp_path / "tune", [], "fifo")
    config = searcher.suggest("tune-1")
    assert config is not None
    describe_study(optuna.load_study(study_name="live", storage=storage), space, objectives,
                   6000, 4, "fifo")
    with dashboard(url) as base:
        summary, detail = _study_detail(base, "live")
    assert detail["objective_names"] == ["val_loss", "kv_cache_bytes_per_token"]
    assert _attrs(summary)["space_file"] == "live.yaml"
    (trial,) = detail["trials"]
    assert trial["state"] == "Running"
    attrs = _attrs(trial)
    assert attrs[STATUS] == "running" and attrs[SEED] == "0"
    assert _check_trial_attrs(attrs).to_json() == config[ARCH]


def test_describing_a_study_twice_as_a_resume_does_changes_nothing(tmp_path):
    space = SearchSpace.from_yaml(write_space(tmp_path, "again"))
    study = optuna.create_study(study_name="again", directions=["minimize", "minimize"])
    objectives = [("val_loss", "min"), ("params", "min")]
    describe_study(study, space, objectives, 6000, 4, "asha")
    first = (study.metric_names, dict(study.user_attrs))
    describe_study(study, space, objectives, 6000, 4, "asha")
    assert (study.metric_names, study.user_attrs) == first
    assert first == (["val_loss", "params"], {
        "space_file": "again.yaml", "task": "bytes-lm",
        "objectives": [{"metric": "val_loss", "mode": "min"},
                       {"metric": "params", "mode": "min"}],
        "budget_tokens": 6000, "n_trials": 4, "sampler": "tpe", "scheduler": "asha"})
