"""Experiment trackers a search logs to as it runs: TensorBoard files under ``tune/`` and an
MLflow run per trained trial.

Both are Ray Tune callbacks, so they run in the driver: no node of a cluster needs TensorBoard
or MLflow installed.

* ``tensorboard``: Ray's own `TBXLoggerCallback` (tensorboardX, which ``ray[tune]`` installs)
  writes every trial's results to ``tune/trial-NNNN-<key>/events.out.tfevents.*``, each number
  under ``ray/tune/<name>``. Ray adds that logger to every run by itself, at one point per
  report (Tune's ``training_iteration``); here it logs each evaluation at the number of tokens
  of the run it stands for (``tokens``), the axis the report's curves use. Without the tracker
  no TensorBoard files are written.
* ``mlflow``: one run per trial Tune trains (infeasible and duplicate architectures train
  nothing and get none): the trial's decisions (the Optuna parameters) and training seed as
  parameters, every evaluation's numbers as metrics at step = ``tokens``, the architecture key,
  trial number, seed and status as tags, the spec as the artifact ``arch.yaml``. Runs are
  found again by their search id and trial number: a resumed search continues a trial's run and
  never logs a finished trial twice. Ray's `MLflowLoggerCallback` would open a second run for a
  trial restarted after a driver restart, log Tune's whole config as parameters and upload the
  trial folder (checkpoints included) as artifacts, hence this callback.

The tracking URI is the user's (``--mlflow-uri``, ``search.mlflow_uri``, else
``$MLFLOW_TRACKING_URI``), by default an SQLite database in the run folder,
``results/<name>/mlflow.db``: MLflow 3 refuses its file store (``./mlruns``) unless
``MLFLOW_ALLOW_FILE_STORE`` is set. Artifacts of an SQLite store go beside the database
(``mlflow-artifacts/``), never to MLflow's default ``./mlruns`` in the working folder.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ray.tune import Callback
from ray.tune.logger import TBXLoggerCallback

from sla_nas.arch import ArchSpec
from sla_nas.results import SEED_PRESET, STATUS, RunPaths
from sla_nas.space import TRACKERS

from ._searcher import STORAGES
from ._trainable import ARCH, NUMBER, TRAIN_SEED, trial_folder

__all__ = ["TRACKERS", "TRACKING_URIS", "Tracking", "MLflowTracker", "TokensTensorBoard",
           "NoTensorBoard", "choose_tracking", "open_experiment", "tracker_callbacks",
           "masked_uri"]

# run name -> its MLflow tracking URI, in the driver only: Tune pickles the callbacks into the
# run folder, and a URI may carry a password, so the callback keeps only the run's name
TRACKING_URIS: dict[str, str] = {}
DB_FILE, ARTIFACTS = "mlflow.db", "mlflow-artifacts"
SPEC_ARTIFACT = "arch.yaml"
# tags, as MLflow names its own (``mlflow.runName``): a filter quotes them in backticks
TAG_SEARCH, TAG_TRIAL = "sla_nas.search", "sla_nas.trial"
TAG_KEY, TAG_STATUS, TAG_SEED, TAG_PRESET = ("sla_nas.key", "sla_nas.status", "sla_nas.seed",
                                             "sla_nas.seed_preset")
# an evaluation's numbers that are no metric: the step itself and the optimiser's step count
NOT_METRICS = ("tokens", "step")
FINAL_METRICS = ("decode_speedup", "decode_tokens_per_s")  # measured once, after training
SECRET_KEYS = ("password", "passwd", "pwd")  # query keys masked_uri hides


def masked_uri(uri: str) -> str:
    """``uri`` with its password (``scheme://user:password@host``, or a ``password=`` in the
    query, as SQLAlchemy URLs allow) replaced by ``***``; the rest as written."""
    parts = urlsplit(uri)
    head, sep, query = uri.partition("?")
    if parts.password:  # netloc = user:password@host, the last @ before the path
        start = head.index("//") + 2
        end = head.find("/", start) if "/" in head[start:] else len(head)
        at = head.rindex("@", start, end)
        head = head[:start] + head[start:at].partition(":")[0] + ":***" + head[at:]
    if sep:
        query = "&".join(f"{k}=***" if k.lower() in SECRET_KEYS and v else k + eq + v
                         for k, eq, v in (item.partition("=") for item in query.split("&")))
    return head + sep + query


def _secrets(uri: str) -> set[str]:
    """The passwords ``uri`` holds, as written and decoded."""
    parts = urlsplit(uri)
    found = {parts.password} if parts.password else set()
    found |= {v for k, _, v in (item.partition("=") for item in parts.query.split("&"))
              if k.lower() in SECRET_KEYS and v}
    return found | {unquote(v) for v in found}


def _first_line(err: BaseException, uri: str) -> str:
    """The first line of ``err``'s message (at most 300 characters) without ``uri``'s
    password: MLflow's messages quote the URI they were given, password and all."""
    text = str(err)
    for secret in sorted(_secrets(uri), key=len, reverse=True):
        text = text.replace(secret, "***")
    return (text.strip().splitlines() or [""])[0][:300]


DATABASES = ("postgresql", "mysql", "mssql")  # SQLAlchemy schemes (with +driver) MLflow takes


def _artifact_location(uri: str, run_folder: Path | None = None) -> str | None:
    """Where a new experiment's artifacts go when ``uri`` is a database: MLflow's default would
    be ``./mlruns`` in the working folder. An SQLite store's go beside its database, another
    database's into ``run_folder``; a tracking server keeps its own default."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).resolve()
        return (db.parent / ARTIFACTS).as_uri()
    if run_folder is not None and urlsplit(uri).scheme.split("+")[0] in DATABASES:
        return (run_folder.resolve() / ARTIFACTS).as_uri()
    return None


@dataclass(frozen=True)
class Tracking:
    """The trackers of one search and the MLflow tracking URI (``None``: the default)."""

    trackers: tuple[str, ...] = ()
    mlflow_uri: str | None = None

    def record(self) -> dict[str, Any]:
        """What run.json keeps (the URI without its password)."""
        return {"trackers": list(self.trackers),
                "mlflow_uri": masked_uri(self.mlflow_uri) if self.mlflow_uri else None}

    @classmethod
    def resumed(cls, recorded: Any, given: tuple[str, ...] | None,
                uris: tuple[str | None, ...], where: str = "run.json") -> Tracking:
        """The tracking of a resumed run: the trackers it started with (their callbacks were
        saved with it) at the URI it started with. ``given``: ``--tracker`` on this command
        line; ``uris``: ``--mlflow-uri``, ``search.mlflow_uri``, ``$MLFLOW_TRACKING_URI``, the
        first that is the recorded URI is used (run.json, ``where``, keeps it without its
        password)."""
        recorded = {"trackers": [], "mlflow_uri": None} if recorded is None else recorded
        if not isinstance(recorded, dict) or not isinstance(recorded.get("trackers"), list) or \
                not set(recorded["trackers"]) <= set(TRACKERS) or \
                not isinstance(recorded.get("mlflow_uri"), (str, type(None))):
            raise ValueError(f"{where}: trackers: expected {{\"trackers\": a list from "
                             f"{list(TRACKERS)}, \"mlflow_uri\": a URI or null}} (what sla-nas "
                             f"search writes)")
        started = tuple(recorded["trackers"])
        if given is not None and tuple(dict.fromkeys(given)) != started:
            raise ValueError(f"--tracker {' '.join(given) or '(none)'} differs from the run's "
                             f"trackers ({', '.join(started) or 'none'}); a resumed search "
                             f"keeps its settings")
        kept = recorded.get("mlflow_uri")
        if uris[0] is not None and masked_uri(uris[0]) != kept:
            raise ValueError(f"--mlflow-uri {masked_uri(uris[0])} differs from the run's "
                             f"{kept or 'default (mlflow.db in the run folder)'}; a resumed "
                             f"search keeps its settings")
        uri = next((u for u in uris if u is not None and masked_uri(u) == kept), kept)
        if "mlflow" in started and uri is not None and uri == kept and \
                masked_uri(uri) == uri and "***" in uri:  # run.json's, password masked
            raise ValueError(f"the run logs to MLflow at {kept}: give --mlflow-uri again (its "
                             f"password is not stored)")
        return cls(started, uri if "mlflow" in started else None)

    def uri(self, paths: RunPaths) -> str:
        """The tracking URI: the one given, else the run folder's SQLite database."""
        return self.mlflow_uri or f"sqlite:///{(paths.root / DB_FILE).resolve()}"


def choose_tracking(search: Any, trackers: tuple[str, ...] | None, mlflow_uri: str | None,
                    recorded: Any = None, resume: bool = False, where: str = "run.json"
                    ) -> Tracking:
    """The tracking of a search: ``--tracker`` (``trackers``) else the space's
    ``search.trackers`` (``search``: its search section); the URI ``--mlflow-uri``, else
    ``search.mlflow_uri``, else ``$MLFLOW_TRACKING_URI``. A resumed run keeps what run.json
    ``recorded``. Raises a ValueError naming what to install when a tracker's library is
    missing, before anything is trained."""
    for name in trackers or ():
        if name not in TRACKERS:
            raise ValueError(f"--tracker: expected one of {list(TRACKERS)}, got {name!r}")
    uris = (mlflow_uri, search.mlflow_uri, os.environ.get("MLFLOW_TRACKING_URI") or None)
    if resume:
        tracking = Tracking.resumed(recorded, trackers, uris, where)
    else:
        chosen = tuple(dict.fromkeys(trackers if trackers is not None else search.trackers))
        if mlflow_uri is not None and "mlflow" not in chosen:
            raise ValueError("--mlflow-uri is where the mlflow tracker logs: add --tracker "
                             "mlflow (or mlflow to the space's search.trackers)")
        uri = next((u for u in uris if u is not None), None)
        tracking = Tracking(chosen, uri if "mlflow" in chosen else None)
    if "mlflow" in tracking.trackers:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise ValueError("the mlflow tracker needs MLflow: pip install "
                             "'sla-nas[mlflow]'") from None
    if "tensorboard" in tracking.trackers:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise ValueError("the tensorboard tracker needs tensorboardX: pip install "
                             "tensorboardX (ray[tune] installs it)") from None
    return tracking


# ---------------------------------------------------------------------- TensorBoard
class TokensTensorBoard(TBXLoggerCallback):
    """Ray's TensorBoard logger with each result at its ``tokens`` (the length of the run the
    evaluation stands for) instead of its report number: Ray takes ``timesteps_total`` as the
    step when a result has one."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        tokens = result.get("tokens")
        if isinstance(tokens, int) and tokens > 0:
            result = {**result, "timesteps_total": tokens}
        super().log_trial_result(iteration, trial, result)


class NoTensorBoard(TBXLoggerCallback):
    """Stands in for the TensorBoard logger Ray adds to every run (Tune adds its own only when
    none is given): without the tensorboard tracker, no TensorBoard files."""

    def __init__(self) -> None:  # no tensorboardX needed to write nothing
        self._trial_writer, self._trial_result = {}, {}

    def log_trial_start(self, trial: Any) -> None:
        pass

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        pass

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        pass


# ---------------------------------------------------------------------- MLflow
# MLflow's HTTP client retries 7 times with backoff, 120 s each: a tracking server that went
# away would hold the driver (and every trial's results) for minutes per call. Set unless the
# user set them: 1 retry, 15 s.
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15"}
PAUSE_SECONDS = 60.0  # after a failed call, no call to the store for this long


def _quiet_mlflow() -> None:
    """MLflow logs its database migrations at INFO and SQLAlchemy warns about MLflow's
    mappings: the search's console shows neither. Its HTTP calls give up quickly."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    for name, value in HTTP_SETTINGS.items():
        os.environ.setdefault(name, value)


def open_experiment(uri: str, name: str, run_folder: Path | None = None) -> tuple[Any, str]:
    """(client, experiment id) of experiment ``name`` at ``uri``, created if new (artifacts:
    see `_artifact_location`). A ValueError names the URI (without its password) when the
    store cannot be opened."""
    _quiet_mlflow()
    from mlflow import MlflowClient
    from mlflow.entities import LifecycleStage

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SQLAlchemy's deprecation warnings
            client = MlflowClient(tracking_uri=uri)
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                return client, client.create_experiment(
                    name, artifact_location=_artifact_location(uri, run_folder))
    except Exception as err:  # a wrong URI, a server that is down, a refused file store
        first = _first_line(err, uri)
        raise ValueError(f"cannot open the MLflow tracking store {masked_uri(uri)}: "
                         f"{type(err).__name__}: {first}") from None
    if experiment.lifecycle_stage == LifecycleStage.DELETED:
        raise ValueError(f"MLflow experiment {name!r} at {masked_uri(uri)} is deleted: restore "
                         f"it (mlflow experiments restore) or delete it for good (mlflow gc)")
    return client, experiment.experiment_id


class MLflowTracker(Callback):
    """One MLflow run per trial Tune trains (see the module's docstring). A failure to log
    (a server that went away) is printed once per trial and never stops the search."""

    def __init__(self, run_name: str):
        self.run_name = run_name  # the study's name and the MLflow experiment's
        self.search_id = uuid.uuid4().hex  # kept with the experiment: a resume finds its runs
        self._transient()

    def _transient(self) -> None:
        self._client: Any = None
        self._experiment: str | None = None
        self._study: Any = None
        self._runs: dict[str, tuple[str, float]] = {}  # Tune trial id -> (run id, last step)
        self._warned: set[str] = set()
        self._paused_until = 0.0  # time.monotonic() before which the store is not called

    def __getstate__(self) -> dict[str, Any]:
        return {"run_name": self.run_name, "search_id": self.search_id}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._transient()

    # ------------------------------------------------------------------ the store
    def _open(self) -> None:
        if self._client is None:
            self._client, self._experiment = open_experiment(TRACKING_URIS[self.run_name],
                                                             self.run_name)

    def _frozen(self, number: int) -> Any:
        """The study's record of trial ``number`` (its decisions and status)."""
        import optuna

        if self._study is None:
            self._study = optuna.load_study(study_name=self.run_name,
                                            storage=STORAGES[self.run_name])
        return self._study._storage.get_trial(
            self._study._storage.get_trial_id_from_study_id_trial_number(
                self._study._study_id, number))

    def _find(self, trial: Any) -> tuple[str, float] | None:
        """(run id, last logged step) of ``trial``'s run, by this driver or an earlier one (a
        resumed search: found by its search id and trial number); None if it has none."""
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        self._open()
        found = self._client.search_runs(
            [self._experiment], max_results=1,
            filter_string=f"tags.`{TAG_SEARCH}` = '{self.search_id}' and "
                          f"tags.`{TAG_TRIAL}` = '{trial.config[NUMBER]}'")
        if not found:
            return None
        run_id = found[0].info.run_id
        history = self._client.get_metric_history(run_id, "val_loss")
        self._runs[trial.trial_id] = (run_id, max((m.step for m in history), default=-1))
        if found[0].info.status != "RUNNING":
            self._client.update_run(run_id, status="RUNNING")
        return self._runs[trial.trial_id]

    def _run_of(self, trial: Any) -> tuple[str, float]:
        """The MLflow run of ``trial``: found, or new with the trial's decisions (the Optuna
        parameters) and training seed, its tags and its spec."""
        known = self._find(trial)
        if known is not None:
            return known
        from mlflow.entities import Param

        number = trial.config[NUMBER]
        frozen = self._frozen(number)
        spec = ArchSpec.from_json(trial.config[ARCH])
        tags = {TAG_SEARCH: self.search_id, TAG_TRIAL: str(number), TAG_KEY: spec.key,
                TAG_STATUS: "running", TAG_SEED: str(trial.config[TRAIN_SEED])}
        if frozen.user_attrs.get(SEED_PRESET):
            tags[TAG_PRESET] = str(frozen.user_attrs[SEED_PRESET])
        run_id = self._client.create_run(self._experiment, tags=tags,
                                         run_name=trial_folder(number, spec.key)).info.run_id
        params = [Param(k, str(v)) for k, v in sorted(frozen.params.items())]
        params.append(Param(TRAIN_SEED, str(trial.config[TRAIN_SEED])))
        self._client.log_batch(run_id, params=params)
        self._client.log_text(run_id, spec.to_yaml(), SPEC_ARTIFACT)
        self._runs[trial.trial_id] = (run_id, -1)
        return run_id, -1

    def _guarded(self, trial: Any, what: str, action: Any) -> None:
        """Run ``action``; a failure is one line per trial, and the store is left alone for
        PAUSE_SECONDS (the next result of a trial logs what it missed: its whole history
        past the last step logged)."""
        number = trial.config.get(NUMBER, trial.trial_id)
        if time.monotonic() < self._paused_until:
            return
        try:
            action()
        except Exception as err:  # the search goes on without this trial's tracking
            self._paused_until = time.monotonic() + PAUSE_SECONDS
            if f"{number}" not in self._warned:
                self._warned.add(f"{number}")
                uri = TRACKING_URIS.get(self.run_name, "?")
                first = _first_line(err, uri)
                print(f"  mlflow ({masked_uri(uri)}): trial {number}: {what} failed: "
                      f"{type(err).__name__}: {first} (no MLflow call for "
                      f"{PAUSE_SECONDS:.0f} s)", file=sys.stderr)

    # ------------------------------------------------------------------ Tune hooks
    def on_trial_result(self, iteration: int, trials: list, trial: Any,
                        result: dict[str, Any], **info: Any) -> None:
        self._guarded(trial, "logging a result", lambda: self._log(trial, result))

    def _log(self, trial: Any, result: dict[str, Any]) -> None:
        """Log the evaluations of ``result``'s history past the run's last logged step, and
        the numbers measured once after training at the last evaluation's step."""
        from mlflow.entities import Metric

        run_id, last = self._run_of(trial)
        history = result.get("history")
        evaluations = json.loads(history) if isinstance(history, str) else []
        now = int(time.time() * 1000)
        metrics, top = [], last
        for evaluation in evaluations:
            step = evaluation.get("tokens")
            if not isinstance(step, int) or step <= last:
                continue  # logged before (a resumed trial reports its history again)
            top = max(top, step)
            metrics += [Metric(k, float(v), now, step) for k, v in evaluation.items()
                        if k not in NOT_METRICS and _number(v)]
        if result.get("status") == "ok" and evaluations and top > last:
            metrics += [Metric(k, float(result[k]), now, top) for k in FINAL_METRICS
                        if _number(result.get(k))]
        if metrics:
            self._client.log_batch(run_id, metrics=metrics)
        self._runs[trial.trial_id] = (run_id, top)

    def _end(self, trial: Any, failed: bool) -> None:
        known = self._find(trial)
        if known is None:
            return  # nothing reported: the trial trained nothing, it has no run
        run_id, _ = known
        status = self._frozen(trial.config[NUMBER]).user_attrs.get(STATUS) or \
            ("error" if failed else "ok")
        self._client.set_tag(run_id, TAG_STATUS, str(status))
        self._client.set_terminated(run_id, "FAILED" if status in ("error", "diverged")
                                    else "FINISHED")
        self._runs.pop(trial.trial_id, None)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded(trial, "ending its run", lambda: self._end(trial, failed=False))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded(trial, "ending its run", lambda: self._end(trial, failed=True))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Trials still running when the search stops (interrupted) end KILLED; a resumed
        search sets them running again."""
        for trial in trials:
            if trial.trial_id in self._runs:
                run_id, _ = self._runs.pop(trial.trial_id)
                self._guarded(trial, "ending its run",
                              lambda run_id=run_id: self._client.set_terminated(run_id,
                                                                                "KILLED"))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def tracker_callbacks(tracking: Tracking, run_name: str) -> list[Callback]:
    """The Tune callbacks of ``tracking``'s trackers (always one TensorBoard logger: Ray's
    default one is replaced)."""
    callbacks: list[Callback] = [TokensTensorBoard() if "tensorboard" in tracking.trackers
                                 else NoTensorBoard()]
    if "mlflow" in tracking.trackers:
        callbacks.append(MLflowTracker(run_name))
    return callbacks
