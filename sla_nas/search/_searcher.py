"""`SpaceSearch`: Ray Tune's `OptunaSearch` over a `SearchSpace`, telling Optuna what happened.

Ray's `OptunaSearch` tells every ended trial as COMPLETE with its last value (so a sampler
learns from truncated losses as if they were final). This subclass tells Optuna the truth:

* a trial stopped early by the scheduler is PRUNED, after its honest intermediate values were
  reported (single objective; Optuna keeps no intermediate values for several objectives);
* a sample over a constraint is told COMPLETE with its constraint excess set (Optuna's
  samplers treat it as infeasible) and never reaches Tune: nothing is trained;
* an architecture already evaluated in this study (same canonical key and training seed) is
  told the earlier result and marked a duplicate; a duplicate of a running trial waits for it;
* a trial that raised or diverged is FAIL, with its message.

Every trial's architecture, status, metrics, costs and curves go into the study's user
attributes: the study is the record the trials table is built from. The key, the spec, the
costs and the fidelity are set when a trial is asked, and its status as it ends, so Optuna
Dashboard on the study (``optuna-dashboard sqlite:///results/NAME/study.db``) shows a running
search; `describe_study` names the objectives and records the search's settings there.
"""

from __future__ import annotations

import functools
import json
import math
import pickle
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FixedTrial, TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sla_nas.arch import ArchSpec, estimate
from sla_nas.results import (
    FIDELITY,
    KEY,
    MESSAGE,
    NODE_ID,
    NODES,
    REUSED_FROM,
    SEED,
    SEED_PRESET,
    STATUS,
    TOKENS,
    TOKENS_TRAINED,
    TRAINED_METRICS,
    TRAINING,
    TUNE_ID,
    WALL_SECONDS,
)
from sla_nas.space import SearchSpace, suggest_arch

from ._trainable import (
    ARCH,
    ATTEMPT,
    BUDGET_TOKENS,
    NUMBER,
    RESUME_FROM,
    SEED_RUN,
    TRAIN_SEED,
    trial_folder,
)

__all__ = ["SpaceSearch", "MAX_SKIPS", "STORAGES", "close_unstarted", "describe_study",
           "STANDALONE", "SUPERNET", "describe_trial", "tell_infeasible"]

# study name -> its storage, in the driver only: Tune pickles the searcher and the callbacks
# into the run folder, and a storage URL may carry a password, so they keep only the name
STORAGES: dict[str, optuna.storages.BaseStorage] = {}
MAX_SKIPS = 200  # proposals in a row that need no training before the space counts as spent
REUSABLE = ("ok", "pruned", "diverged")  # outcomes a duplicate may reuse (not errors)
STANDALONE = "standalone"  # fidelity: the architecture trained on its own, from scratch
SUPERNET = "supernet"  # fidelity: scored with a one-shot search's shared supernet weights


def describe_trial(ot_trial: optuna.Trial, space: SearchSpace, spec: ArchSpec, seed: int,
                   fidelity: str = STANDALONE) -> None:
    """Set a trial's key, spec, seed, costs, status (running) and fidelity as it is asked,
    and its constraint excess (> 0: infeasible, in units of the limit)."""
    costs = estimate(spec)
    for name, value in {KEY: spec.key, "spec": spec.to_json(), SEED: seed,
                        STATUS: "running", FIDELITY: fidelity, **costs}.items():
        ot_trial.set_user_attr(name, value)
    for name, limit in space.config.constraints.model_dump().items():
        if limit is not None:
            metric = name.removeprefix("max_")
            ot_trial.set_constraint(metric, (costs[metric] - limit) / max(limit, 1))


def tell_infeasible(study: optuna.Study, ot_trial: optuna.Trial, spec: ArchSpec,
                    over: dict[str, tuple[int, int]], objectives: list[tuple[str, str]]
                    ) -> None:
    """Tell a sample over a constraint COMPLETE with its costs (the worst value for a
    measured objective): its constraint excess makes it infeasible to the samplers."""
    costs = estimate(spec)
    values = [costs[m] if m in costs else (math.inf if mode == "min" else -math.inf)
              for m, mode in objectives]
    ot_trial.set_user_attr(STATUS, "infeasible")
    ot_trial.set_user_attr(MESSAGE, "; ".join(f"{m} {v:,} > {limit:,}"
                                              for m, (v, limit) in over.items()))
    study.tell(ot_trial, values)


def close_unstarted(study: optuna.Study, known: set[int], message: str,
                    states: tuple[TrialState, ...] = (TrialState.RUNNING,)) -> None:
    """Mark the study's trials in ``states`` (RUNNING: proposed; WAITING: queued) that no Tune
    trial holds (ids not in ``known``) FAIL with status ``abandoned``."""
    storage = study._storage
    for frozen in study.get_trials(deepcopy=False, states=states):
        if frozen._trial_id not in known:
            storage.set_trial_user_attr(frozen._trial_id, STATUS, "abandoned")
            storage.set_trial_user_attr(frozen._trial_id, MESSAGE, message)
            storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL)


def describe_study(study: optuna.Study, space: SearchSpace,
                   objectives: list[tuple[str, str]], budget_tokens: int, n_trials: int,
                   scheduler: str) -> None:
    """Name the study's objectives (Optuna Dashboard and ``trials_dataframe`` show the names,
    not "Objective 0") and record what a viewer of the study alone needs to read it: the
    space file, the objectives with their directions, the budget. Idempotent: a resumed search
    sets the same values again. Nothing secret: the storage URL is never written."""
    with warnings.catch_warnings():  # experimental since Optuna 3.2, unchanged through 5.0
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric for metric, _ in objectives])
    config = space.config
    for name, value in {
            "space_file": space.path.name, "task": config.task.name,
            "objectives": [{"metric": metric, "mode": mode} for metric, mode in objectives],
            "budget_tokens": budget_tokens, "n_trials": n_trials,
            "sampler": config.search.sampler, "scheduler": scheduler}.items():
        study.set_user_attr(name, value)


def define_space(trial: optuna.Trial, space: SearchSpace) -> None:
    """Ray's define-by-run entry point (module level: the searcher is pickled)."""
    suggest_arch(trial, space)


class SpaceSearch(OptunaSearch):
    """Optuna define-by-run search over ``space``; ``objectives`` are (metric, mode) pairs."""

    def __init__(self, space: SearchSpace, objectives: list[tuple[str, str]],
                 sampler: optuna.samplers.BaseSampler, storage: optuna.storages.BaseStorage,
                 study_name: str, train_seed: int, budget_tokens: int, tune_dir: Path,
                 seeds: list[tuple[str, dict[str, Any], int]], scheduler: str):
        metrics, modes = [m for m, _ in objectives], [m for _, m in objectives]
        single = len(objectives) == 1
        super().__init__(space=functools.partial(define_space, space=space),
                         metric=metrics[0] if single else metrics,
                         mode=modes[0] if single else modes, sampler=sampler,
                         storage=storage, study_name=study_name)
        self.search_space, self.objectives = space, objectives
        self.train_seed, self.budget_tokens = train_seed, budget_tokens
        self.tune_dir, self.scheduler = tune_dir, scheduler
        self.exhausted = False
        self._attempts: dict[int, str] = {}  # trial number -> its last attempt's id
        self._running: dict[tuple[str, int], int] = {}  # (key, seed) -> trial number
        self._waiting: dict[tuple[str, int], list[optuna.Trial]] = {}
        self._sources: dict[tuple[str, int], int] = {}  # (key, seed) -> the trial to reuse
        for name, params, seed in seeds:  # the seed architectures come first
            attrs = {SEED_PRESET: name, SEED: seed} if name else {SEED: seed}
            self._ot_study.enqueue_trial(params, user_attrs=attrs)

    # ------------------------------------------------------------------ proposing
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        for _ in range(MAX_SKIPS):
            config = super().suggest(trial_id)
            ot_trial = self._ot_trials.pop(trial_id)
            spec = self.search_space.sample(FixedTrial(ot_trial.params))
            seed = ot_trial.user_attrs.get(SEED, self.train_seed)  # seeds may be repeated
            key = (spec.key, seed)
            self._describe(ot_trial, spec, seed)
            over = self.search_space.violations(spec)
            if over:
                self._tell_infeasible(ot_trial, spec, over)
            elif key in self._sources:
                self._tell_copy(ot_trial, self._sources[key])
            elif key in self._running:
                ot_trial.set_user_attr(STATUS, "waiting")
                ot_trial.set_user_attr(MESSAGE, f"same architecture as running trial "
                                                f"{self._running[key]}")
                self._waiting.setdefault(key, []).append(ot_trial)
            else:
                self._ot_trials[trial_id] = ot_trial
                self._running[key] = ot_trial.number
                ot_trial.set_user_attr(TUNE_ID, trial_id)
                resume = ot_trial.user_attrs.get(RESUME_FROM)
                return {**config, ARCH: spec.to_json(), NUMBER: ot_trial.number,
                        TRAIN_SEED: seed, SEED_RUN: SEED_PRESET in ot_trial.user_attrs,
                        **({RESUME_FROM: str(self.tune_dir / resume)} if resume else {})}
        self.exhausted = True  # the sampler keeps proposing what needs no training
        return Searcher.FINISHED

    def _describe(self, ot_trial: optuna.Trial, spec: ArchSpec, seed: int) -> None:
        describe_trial(ot_trial, self.search_space, spec, seed)

    def _tell_infeasible(self, ot_trial: optuna.Trial, spec: ArchSpec,
                         over: dict[str, tuple[int, int]]) -> None:
        tell_infeasible(self._ot_study, ot_trial, spec, over, self.objectives)

    def _tell_copy(self, ot_trial: optuna.Trial, source_number: int) -> None:
        """Tell ``ot_trial`` the outcome of the trial that trained the same architecture."""
        source = self._ot_study.get_trials(deepcopy=False)[source_number]
        for name in (*TRAINED_METRICS, *TRAINING, TOKENS, "history", "curve", "checkpoint"):
            if name in source.user_attrs:
                ot_trial.set_user_attr(name, source.user_attrs[name])
        ot_trial.set_user_attr(STATUS, "duplicate")
        ot_trial.set_user_attr(REUSED_FROM, source_number)
        ot_trial.set_user_attr(MESSAGE, f"same architecture as trial {source_number} "
                                        f"({source.user_attrs.get(STATUS)}): result reused, "
                                        f"not trained")
        if source.state == TrialState.PRUNED and not isinstance(self.metric, list):
            for step, value in source.intermediate_values.items():
                ot_trial.report(value, step)
        self._ot_study.tell(ot_trial, source.values if source.state == TrialState.COMPLETE
                            else None, state=source.state)

    # ------------------------------------------------------------------ results
    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id not in self._completed_trials and trial_id in self._ot_trials:
            self._record_attempt(self._ot_trials[trial_id], result)
            self._report(self._ot_trials[trial_id], result)

    def _record_attempt(self, ot_trial: optuna.Trial, result: dict[str, Any]) -> None:
        """Append the node of a new attempt (a first start, a retry after a lost node or a
        failure, a restart after the driver's) to the trial's ``nodes``. The last attempt's
        id is kept in the study too, so a snapshot older than the attempt adds nothing twice."""
        attempt, node = result.get(ATTEMPT), result.get("node_id")
        if attempt is None or node is None or self._attempts.get(ot_trial.number) == attempt:
            return
        self._attempts[ot_trial.number] = attempt
        attrs = self._ot_study._storage.get_trial(ot_trial._trial_id).user_attrs
        if attrs.get(ATTEMPT) != attempt:
            ot_trial.set_user_attr(NODES, [*attrs.get(NODES, ()), node])
            ot_trial.set_user_attr(ATTEMPT, attempt)

    def _report(self, ot_trial: optuna.Trial, result: dict[str, Any]) -> None:
        """An honest intermediate value, at the run length it stands for."""
        if isinstance(self.metric, list):
            return  # Optuna keeps no intermediate values for several objectives
        value, step = result.get(self.metric), result.get(BUDGET_TOKENS)
        if step is None or value is None or not math.isfinite(value):
            return
        with warnings.catch_warnings():  # a resumed trial may report a step again
            warnings.simplefilter("ignore")
            ot_trial.report(value, step)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or trial_id in self._completed_trials:
            return
        self._completed_trials.add(trial_id)
        frozen = self._ot_study._storage.get_trial(ot_trial._trial_id)
        key = (frozen.user_attrs[KEY], frozen.user_attrs[SEED])
        self._running.pop(key, None)
        if not frozen.state.is_finished():  # else: told before a driver restart
            if result and not error:  # Tune skips on_trial_result for a result it stops on
                self._record_attempt(ot_trial, result)
                self._report(ot_trial, result)
            status, state, values, attrs = self._outcome(ot_trial, result, error)
            for name, value in {**attrs, STATUS: status}.items():
                ot_trial.set_user_attr(name, value)
            self._ot_study.tell(ot_trial, values, state=state)
            frozen = self._ot_study._storage.get_trial(ot_trial._trial_id)
        status = frozen.user_attrs.get(STATUS)
        if status in REUSABLE:
            self._sources.setdefault(key, ot_trial.number)
        for waiting in self._waiting.pop(key, []):
            if status in REUSABLE:
                self._tell_copy(waiting, ot_trial.number)
            else:
                waiting.set_user_attr(STATUS, "error")
                waiting.set_user_attr(MESSAGE, f"same architecture as trial {ot_trial.number}, "
                                               f"which failed; not trained")
                self._ot_study.tell(waiting, state=TrialState.FAIL)

    def _outcome(self, ot_trial: optuna.Trial, result: dict[str, Any] | None, error: bool
                 ) -> tuple[str, TrialState, list[float] | None, dict[str, Any]]:
        """(status, Optuna state, values, user attributes) of an ended trial."""
        attrs: dict[str, Any] = {}
        if result:
            attrs = {name: result[name] for name in TRAINED_METRICS if name in result}
            attrs.update({TOKENS: result.get("tokens"), TOKENS_TRAINED: result.get(
                "tokens_trained"), WALL_SECONDS: result.get("time_total_s"),
                NODE_ID: result.get("node_id"),
                **{name: result[name] for name in TRAINING if name in result},
                **{name: json.loads(result[name]) for name in ("history", "curve")
                   if isinstance(result.get(name), str)}})
            if result.get("checkpoint_dir_name"):
                attrs["checkpoint"] = f"tune/{self._dirname(ot_trial)}/" \
                                      f"{result['checkpoint_dir_name']}"
        if error:  # why: recorded by SearchProgress.on_trial_error, which Tune calls next
            attrs[MESSAGE] = "the trial raised an exception"
            return "error", TrialState.FAIL, None, attrs
        if not result or result.get(BUDGET_TOKENS) is None:
            attrs[MESSAGE] = "ended before its first evaluation"
            return "error", TrialState.FAIL, None, attrs
        if result.get("status") == "diverged":
            attrs[MESSAGE] = (f"diverged (a non-finite training loss) after "
                              f"{result.get('tokens_trained', 0):,} tokens")
            return "diverged", TrialState.FAIL, None, attrs
        if result[BUDGET_TOKENS] < self.budget_tokens:
            attrs[MESSAGE] = f"stopped by {self.scheduler} at {result[BUDGET_TOKENS]:,} tokens"
            return "pruned", TrialState.PRUNED, None, attrs
        return "ok", TrialState.COMPLETE, [float(result[m]) for m, _ in self.objectives], attrs

    def _dirname(self, ot_trial: optuna.Trial) -> str:
        return trial_folder(ot_trial.number, ot_trial.user_attrs[KEY])

    # ------------------------------------------------------------------ pickling, resuming
    def _requeue_checkpointed(self, known: set[int]) -> None:
        """A trial whose first checkpoint reached the storage just before the driver stopped,
        but not Tune's experiment snapshot, is unknown to the restored Tune: queue its
        architecture again to continue from that checkpoint (its trial becomes abandoned)."""
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen._trial_id in known or KEY not in frozen.user_attrs:
                continue
            folder = self.tune_dir / trial_folder(frozen.number, frozen.user_attrs[KEY])
            checkpoints = sorted(folder.glob("checkpoint_*"))
            if not checkpoints:
                continue
            attrs = {k: frozen.user_attrs[k] for k in (SEED_PRESET, SEED)
                     if k in frozen.user_attrs}
            self._ot_study.enqueue_trial(frozen.params, user_attrs={
                **attrs, RESUME_FROM: str(checkpoints[-1].relative_to(self.tune_dir))})
            self._ot_study._storage.set_trial_user_attr(
                frozen._trial_id, MESSAGE, "its first checkpoint reached the storage just "
                "before the driver stopped, but Tune had not recorded the trial: queued again "
                "to continue from that checkpoint")
            self._ot_study._storage.set_trial_user_attr(frozen._trial_id, STATUS, "abandoned")
            self._ot_study._storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_storage"] = state["_ot_study"] = None
        state["_ot_trials"] = {tid: t._trial_id for tid, t in self._ot_trials.items()}
        state["_waiting"] = {key: [t._trial_id for t in ts] for key, ts in self._waiting.items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("_attempts", {})  # a snapshot of a run begun before attempts
        storage = STORAGES.get(self._study_name)
        if storage is None:
            raise RuntimeError(f"the storage of study {self._study_name!r} is not registered "
                               f"in this process (sla_nas.search.STORAGES)")
        self._storage = storage
        self._ot_study = optuna.load_study(study_name=self._study_name, storage=storage,
                                           sampler=self._sampler,
                                           pruner=optuna.pruners.NopPruner())
        self._ot_trials = {tid: optuna.Trial(self._ot_study, i)
                           for tid, i in state["_ot_trials"].items()}
        self._waiting = {key: [optuna.Trial(self._ot_study, i) for i in ids]
                         for key, ids in state["_waiting"].items()}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__getstate__(), f)

    def restore(self, checkpoint_path: str) -> None:
        """After a driver restart: reattach the study, rebuild what it knows better than this
        snapshot, and mark trials proposed after the snapshot (which Tune never started)
        abandoned."""
        with open(checkpoint_path, "rb") as f:
            self.__setstate__(pickle.load(f))
        known = {t._trial_id for t in self._ot_trials.values()}
        known |= {t._trial_id for ts in self._waiting.values() for t in ts}
        self._sources, self._running = {}, {}
        for frozen in self._ot_study.get_trials(deepcopy=False):
            key = (frozen.user_attrs.get(KEY), frozen.user_attrs.get(SEED))
            if frozen.user_attrs.get(FIDELITY) == SUPERNET:
                continue  # a one-shot search's supernet score: no standalone result to reuse
            if frozen.state.is_finished() and frozen.user_attrs.get(STATUS) in REUSABLE:
                self._sources.setdefault(key, frozen.number)
        self._requeue_checkpointed(known)
        close_unstarted(self._ot_study, known, "proposed just before the driver stopped; "
                        "never trained")
        for trial_id, ot_trial in self._ot_trials.items():
            if trial_id not in self._completed_trials:
                attrs = ot_trial.user_attrs
                self._running[(attrs[KEY], attrs[SEED])] = ot_trial.number
        for key in list(self._waiting):
            if key in self._sources:  # its twin finished after the snapshot
                for ot_trial in self._waiting.pop(key):
                    self._tell_copy(ot_trial, self._sources[key])
