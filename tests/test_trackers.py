"""Experiment trackers: the search's TensorBoard files under tune/ and its MLflow runs, read
back from a real local MLflow store (SQLite, the default) and the event files themselves."""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from sla_nas import ArchSpec, presets
from sla_nas.cli import main
from sla_nas.results import HISTORY, KEY, SPEC, STATUS, TRAINED_STATUSES, TRIAL, load_results
from sla_nas.search import SearchOptions, run_search
from sla_nas.search._searcher import STORAGES
from sla_nas.search._trackers import (
    TAG_KEY,
    TAG_SEARCH,
    TAG_STATUS,
    TAG_TRIAL,
    TRACKING_URIS,
    MLflowTracker,
    Tracking,
    choose_tracking,
    masked_uri,
    open_experiment,
)
from sla_nas.search._trainable import ARCH, NUMBER, TRAIN_SEED
from sla_nas.space import SearchSpace, SpaceError

from search_helpers import DIMS, write_space


# ---------------------------------------------------------------------- the settings
def _space(tmp_path: Path, search: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(f"model: {{n_layers: 4}}\nconnectivity: {{modes: [reproject]}}\n"
                    f"search:\n{search}")
    return path


@pytest.mark.parametrize("value, found", [
    ("[tensorbord]", "got ['tensorbord']: 'tensorbord' is unknown (did you mean "
                     "'tensorboard'?)"),
    ("tensorboard", "got 'tensorboard'"),
    ("[mlflow, 3]", "got ['mlflow', 3]"),
])
def test_an_unknown_tracker_names_the_file_the_key_and_the_trackers(tmp_path, value, found):
    path = _space(tmp_path, f"  trackers: {value}\n")
    with pytest.raises(SpaceError) as refused:
        SearchSpace.from_yaml(path)
    assert str(refused.value) == (f"{path}:4: search.trackers: expected a list of trackers "
                                  f"from ['tensorboard', 'mlflow'], {found}")


def test_trackers_and_a_tracking_uri_are_read_from_the_space(tmp_path):
    search = SearchSpace.from_yaml(_space(
        tmp_path, "  trackers: [mlflow, tensorboard, mlflow]\n  mlflow_uri: http://h:5000\n")
    ).config.search
    assert search.trackers == ["mlflow", "tensorboard"]
    assert search.mlflow_uri == "http://h:5000"
    with pytest.raises(SpaceError, match=r"search.mlflow_uri: expected an MLflow tracking URI"):
        SearchSpace.from_yaml(_space(tmp_path, "  mlflow_uri: ''\n"))
    assert SearchSpace.from_yaml(_space(tmp_path, "  seed: 1\n")).config.search.trackers == []


def test_the_command_line_overrides_the_space_and_a_resume_keeps_the_run_s(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    search = SimpleNamespace(trackers=["tensorboard"], mlflow_uri="sqlite:///space.db")
    assert choose_tracking(search, None, None) == Tracking(("tensorboard",), None)
    chosen = choose_tracking(search, ("mlflow",), None)
    assert chosen == Tracking(("mlflow",), "sqlite:///space.db")
    assert choose_tracking(search, ("mlflow",), "http://u:pw@h:5000").record() == {
        "trackers": ["mlflow"], "mlflow_uri": "http://u:***@h:5000"}
    recorded = {"trackers": ["mlflow"], "mlflow_uri": "http://u:***@h:5000"}
    with pytest.raises(ValueError, match="give --mlflow-uri again"):
        choose_tracking(search, None, None, recorded, resume=True)
    assert choose_tracking(search, None, "http://u:pw@h:5000", recorded, resume=True) == \
        Tracking(("mlflow",), "http://u:pw@h:5000")
    with pytest.raises(ValueError, match="--tracker tensorboard differs from the run's "
                                         "trackers \\(mlflow\\)"):
        choose_tracking(search, ("tensorboard",), None, recorded, resume=True)
    with pytest.raises(ValueError, match="--mlflow-uri http://other differs"):
        choose_tracking(search, None, "http://other", recorded, resume=True)
    with pytest.raises(ValueError, match="--mlflow-uri is where the mlflow tracker logs"):
        choose_tracking(search, None, "http://h:5000")
    with pytest.raises(ValueError, match=r"^r/run.json: trackers: expected \{\"trackers\""):
        choose_tracking(search, None, None, {"trackers": "mlflow"}, True, "r/run.json")
    # a run begun before trackers existed resumes without them
    assert choose_tracking(search, None, None, None, resume=True) == Tracking((), None)
    assert masked_uri("postgresql://me:secret@db/x") == "postgresql://me:***@db/x"


def test_without_mlflow_the_search_says_what_to_install_and_trains_nothing(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    space = write_space(tmp_path, "nomlflow")
    results = tmp_path / "results"
    code = main(["search", str(space), "--results", str(results), "--tracker", "mlflow",
                 "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == ("sla-nas search: error: the mlflow tracker needs MLflow: pip install "
                       "'sla-nas[mlflow]'")
    assert not (results / "nomlflow").exists()


# ---------------------------------------------------------------------- MLflow, resumed
def _trial(number: int, spec: ArchSpec, tune_id: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=tune_id, config={NUMBER: number, ARCH: spec.to_json(),
                                                      TRAIN_SEED: 0})


def _result(evaluations: list[dict], status: str = "running") -> dict:
    return {"history": json.dumps(evaluations), "status": status,
            "val_loss": evaluations[-1]["val_loss"], "tokens": evaluations[-1]["tokens"]}


@pytest.mark.parametrize("store", ["sqlite", "file"])
def test_a_restarted_driver_continues_the_trial_s_run_and_logs_nothing_twice(
        tmp_path, monkeypatch, store):
    """The callback as Tune pickles it with the experiment and restores it on --resume: the
    trial's run is found again, the evaluations it reports again are not logged again. With
    an SQLite store and with MLflow's file store (which MLflow 3 opens only when
    MLFLOW_ALLOW_FILE_STORE is set)."""
    from mlflow import MlflowClient

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="resumed", storage=storage)
    trial = study.ask()
    trial.suggest_categorical("kv.1", ["own", "reuse"])
    STORAGES["resumed"] = storage
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    if store == "file":
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = (tmp_path / "mlruns").as_uri()
    TRACKING_URIS["resumed"] = uri
    open_experiment(uri, "resumed", tmp_path)  # as the search does before training
    spec = presets.get("cla2", **DIMS)
    first = [{"tokens": 2000, "val_loss": 5.0, "train_loss": 5.1},
             {"tokens": 4000, "val_loss": 4.0, "train_loss": 4.1}]
    tracker = MLflowTracker("resumed")
    tracker.on_trial_result(0, [], _trial(0, spec, "a_1"), _result(first[:1]))
    tracker.on_trial_result(0, [], _trial(0, spec, "a_1"), _result(first))
    saved = pickle.dumps(tracker)  # what Tune keeps; the driver stops here
    assert b"sqlite" not in saved  # the URI stays out of the run folder's pickles
    restored = pickle.loads(saved)
    again = first + [{"tokens": 6000, "val_loss": 3.0, "train_loss": 3.1}]
    restored.on_trial_result(0, [], _trial(0, spec, "a_1"), _result(first))  # from checkpoint
    restored.on_trial_result(0, [], _trial(0, spec, "a_1"), _result(again, "ok"))
    trial.set_user_attr(STATUS, "ok")  # the searcher's record, before the callbacks hear
    study.tell(trial, 3.0)
    restored.on_trial_complete(0, [], _trial(0, spec, "a_1"))
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("resumed").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == f"trial-0000-{spec.key}"
    assert run.data.tags[TAG_STATUS] == "ok" and run.data.tags[TAG_KEY] == spec.key
    assert run.data.params == {"kv.1": trial.params["kv.1"], TRAIN_SEED: "0"}
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(2000, 5.0), (4000, 4.0), (6000, 3.0)]
    artifacts = Path(client.download_artifacts(run.info.run_id, "arch.yaml", str(tmp_path)))
    assert ArchSpec.from_yaml(artifacts.read_text()) == spec
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["study.db", "arch.yaml", *(["mlflow.db", "mlflow-artifacts"] if store == "sqlite"
                                    else ["mlruns"])])


# ---------------------------------------------------------------------- a real search
def _events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in ``folder``'s TensorBoard event files (the TFRecord format: length,
    its CRC, the Event protobuf, its CRC), tag -> [(step, value)]."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_a_search_logs_each_trained_trial_to_mlflow_and_tensorboard(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # vanilla is over the constraint: told infeasible, never trained, no MLflow run
    space = write_space(tmp_path, "tracked", search={"n_trials": 3,
                                                     "trackers": ["tensorboard", "mlflow"]},
                        budget={"eval_every": 2000},
                        constraints={"max_kv_cache_bytes_per_token": 160})
    outcome = run_search(space, SearchOptions(results=tmp_path / "results", quiet=True))
    table = load_results(outcome.paths.root)
    trained = table[table[STATUS].isin(TRAINED_STATUSES)]
    assert len(trained) == 3 and (table[STATUS] == "infeasible").sum() >= 1
    root = outcome.paths.root
    assert json.loads(outcome.paths.run_info.read_text())["trackers"] == {
        "trackers": ["tensorboard", "mlflow"], "mlflow_uri": None}
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked")
    assert experiment.artifact_location == (root / "mlflow-artifacts").resolve().as_uri()
    runs = {int(r.data.tags[TAG_TRIAL]): r for r in client.search_runs(
        [experiment.experiment_id])}
    assert sorted(runs) == sorted(trained[TRIAL])  # one run per trained trial, no other
    assert len({r.data.tags[TAG_SEARCH] for r in runs.values()}) == 1
    study = optuna.load_study(study_name="tracked", storage=outcome.paths.sqlite_url())
    for _, row in trained.iterrows():
        run = runs[row[TRIAL]]
        assert run.info.status == "FINISHED" and run.data.tags[TAG_STATUS] == row[STATUS]
        assert run.data.tags[TAG_KEY] == row[KEY]
        decisions = {k: str(v) for k, v in study.trials[row[TRIAL]].params.items()}
        assert decisions and run.data.params == {**decisions, TRAIN_SEED: "0"}
        evaluations = json.loads(row[HISTORY])
        assert len(evaluations) == 3
        for metric in ("val_loss", "train_loss"):
            logged = client.get_metric_history(run.info.run_id, metric)
            assert sorted((m.step, m.value) for m in logged) == [
                (e["tokens"], e[metric]) for e in evaluations]
        spec = Path(client.download_artifacts(run.info.run_id, "arch.yaml", str(tmp_path)))
        assert ArchSpec.load(spec).key == ArchSpec.from_json(row[SPEC]).key == row[KEY]
        assert spec.read_text() == ArchSpec.from_json(row[SPEC]).to_yaml()
        scalars = _events(outcome.paths.tune / f"trial-{row[TRIAL]:04d}-{row[KEY]}")
        assert [(s, pytest.approx(v)) for s, v in scalars["ray/tune/val_loss"]] == [
            (e["tokens"], e["val_loss"]) for e in evaluations]
    assert not list(Path.cwd().glob("mlruns"))  # nothing in the working folder


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_without_trackers_no_tensorboard_files_and_no_mlflow_store(tmp_path):
    space = write_space(tmp_path, "untracked", search={"n_trials": 1})
    outcome = run_search(space, SearchOptions(results=tmp_path / "results", quiet=True))
    folders = list(outcome.paths.tune.glob("trial-*"))
    assert folders and not [e for f in folders for e in f.glob("events.out.tfevents.*")]
    assert not (outcome.paths.root / "mlflow.db").exists()


@pytest.mark.slow
def test_a_killed_driver_resumed_keeps_one_run_per_trial_and_logs_nothing_twice(tmp_path):
    """The driver is killed with SIGKILL after one trial finished and another reached a
    checkpoint; ``--resume`` continues the unfinished trials' MLflow runs (Tune restores the
    callback it pickled) and never logs a finished trial again."""
    from mlflow import MlflowClient

    from conftest import REPO, clean_env, run_cli

    space = write_space(tmp_path, "killed", search={"n_trials": 3, "concurrency": 2,
                                                    "trackers": ["mlflow"]},
                        budget={"tokens": 40000, "eval_every": 10000})
    run_dir = tmp_path / "results" / "killed"
    command = [str(REPO / "run_search.py"), str(space), "--results", str(tmp_path / "results"),
               "--quiet", "--no-export", "--no-report"]
    env = {k: v for k, v in clean_env(tmp_path).items() if k != "MLFLOW_TRACKING_URI"}
    driver = subprocess.Popen([sys.executable, *command], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    caught, deadline = False, time.monotonic() + 300
    while not caught and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.1)
        try:
            table = load_results(run_dir)
        except (ValueError, OSError):
            continue
        running = table[table[STATUS] == "running"]
        caught = (table[STATUS] == "ok").sum() >= 1 and any(
            any((run_dir / "tune" / f"trial-{r[TRIAL]:04d}-{r[KEY]}").glob("checkpoint_*"))
            for _, r in running.iterrows())
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert caught, "no trial was caught between two evaluations"
    time.sleep(3)  # the embedded Ray's processes end with their driver
    resumed = run_cli([*command, "--resume"], cwd=tmp_path, home=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    table = load_results(run_dir)
    trained = table[table[STATUS] == "ok"]
    assert len(trained) == 3
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("killed").experiment_id
    runs: dict[int, list] = {}
    for run in client.search_runs([experiment]):
        runs.setdefault(int(run.data.tags[TAG_TRIAL]), []).append(run)
    abandoned = set(table[table[STATUS] == "abandoned"][TRIAL])
    assert set(runs) - abandoned == set(trained[TRIAL])
    for _, row in trained.iterrows():
        (run,) = runs[row[TRIAL]]  # one run, continued by the resumed driver
        assert run.info.status == "FINISHED" and run.data.tags[TAG_STATUS] == "ok"
        logged = [(m.step, m.value) for m in
                  client.get_metric_history(run.info.run_id, "val_loss")]
        assert sorted(logged) == [(e["tokens"], e["val_loss"])
                                  for e in json.loads(row[HISTORY])]  # each step once


# ---------------------------------------------------------------------- passwords stay out
def test_a_password_never_reaches_a_message_or_run_json():
    """MLflow quotes the URI it was given, password and all, in its errors; an SQLAlchemy URL
    may carry the password in its query instead."""
    from sla_nas.search._trackers import open_experiment

    with pytest.raises(ValueError) as caught:
        open_experiment("nosuchscheme://me:s3cret-pw@host/x", "leak")
    assert "s3cret-pw" not in str(caught.value) and "me:***@host" in str(caught.value)
    assert masked_uri("postgresql://db/x?user=me&password=s3cret&sslmode=require") == \
        "postgresql://db/x?user=me&password=***&sslmode=require"
    assert masked_uri("sqlite:///relative.db?mode=ro") == "sqlite:///relative.db?mode=ro"
    assert masked_uri("http://me:p%40ss@host:5000") == "http://me:***@host:5000"
    given = "postgresql://db/x?password=s3cret"
    assert "s3cret" not in json.dumps(Tracking(("mlflow",), given).record())
    with pytest.raises(ValueError, match="give --mlflow-uri again"):
        Tracking.resumed(Tracking(("mlflow",), given).record(), None, (None, None, None))
    assert Tracking.resumed(Tracking(("mlflow",), given).record(), None,
                            (given, None, None)).mlflow_uri == given


def test_a_failing_store_mid_search_prints_no_password(tmp_path, capsys):
    tracker = MLflowTracker("leaky")
    TRACKING_URIS["leaky"] = "nosuchscheme://me:s3cret-pw@host/x"
    spec = presets.get("cla2", **DIMS)
    tracker.on_trial_result(0, [], _trial(0, spec, "a_1"),
                            _result([{"tokens": 2000, "val_loss": 5.0}]))
    err = capsys.readouterr().err
    assert "trial 0: logging a result failed" in err and "s3cret-pw" not in err


def test_a_store_that_fails_is_left_alone_for_a_while_then_catches_up(monkeypatch, capsys):
    """One failed call pauses MLflow calls for PAUSE_SECONDS (a dead server would otherwise
    hold the driver for each call); the next call after the pause logs what was missed."""
    import sla_nas.search._trackers as trackers

    clock = [1000.0]
    monkeypatch.setattr(trackers.time, "monotonic", lambda: clock[0])
    tracker, calls = MLflowTracker("paused"), []
    TRACKING_URIS["paused"] = "http://127.0.0.1:1/"

    def fails() -> None:
        calls.append(clock[0])
        raise ConnectionError("refused")

    trial = SimpleNamespace(trial_id="t", config={NUMBER: 4})
    tracker._guarded(trial, "logging a result", fails)
    clock[0] += trackers.PAUSE_SECONDS - 1
    tracker._guarded(trial, "logging a result", fails)  # paused: not called
    assert calls == [1000.0]
    clock[0] += 1
    tracker._guarded(trial, "logging a result", lambda: calls.append("ok"))
    assert calls == [1000.0, "ok"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mlflow (http://127.0.0.1:1/): trial 4: logging a result failed: "
                   "ConnectionError: refused (no MLflow call for 60 s)"]


def test_mlflow_http_calls_give_up_quickly_unless_the_user_said_otherwise(monkeypatch):
    import sla_nas.search._trackers as trackers

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    trackers._quiet_mlflow()
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "15"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"


@pytest.mark.parametrize("uri, where", [
    ("sqlite:///{tmp}/db/m.db", "{tmp}/db/mlflow-artifacts"),
    ("postgresql://u:pw@host/db", "{tmp}/run/mlflow-artifacts"),
    ("mysql+pymysql://host/db", "{tmp}/run/mlflow-artifacts"),
    ("http://host:5000", None),  # a tracking server chooses its own
])
def test_a_database_store_never_puts_artifacts_in_the_working_folder(tmp_path, uri, where):
    from sla_nas.search._trackers import _artifact_location

    found = _artifact_location(uri.format(tmp=tmp_path), tmp_path / "run")
    assert found == (None if where is None else Path(where.format(tmp=tmp_path)).as_uri())
