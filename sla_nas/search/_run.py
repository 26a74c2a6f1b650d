"""Running a search: the run folder, the study, the sampler, Tune, and what is written at
the end."""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sla_nas import __version__
from sla_nas.arch import ArchSpec, atomic_write, metrics
from sla_nas.proxy import Budget, EvalPlan
from sla_nas.results import (
    FIDELITY_FILE,
    KEY,
    SPEC,
    STATUS,
    TRAINED_STATUSES,
    TRIAL,
    TUNE_ID,
    RunPaths,
    search_plan,
    trials_frame,
    valid_run_name,
    verdict,
    winners,
    write_tables,
)
from sla_nas.space import SearchSpace, check_search

__all__ = ["SearchOptions", "SearchOutcome", "run_search"]

from ._confirm import ConfirmOutcome, options_from_space, run_confirm
from ._ray import check_resources, connect_or_explain, node_loss_is_no_failure, quiet_tune
from ._searcher import MAX_SKIPS, STORAGES
from ._storage import ReconnectingStorage, masked, stop_reason
from ._trackers import TRACKING_URIS, choose_tracking, open_experiment, tracker_callbacks

TUNE_NAME = "tune"


@dataclass(frozen=True)
class SearchOptions:
    """How to run a search (the space file says what to search)."""

    address: str | None = None  # a Ray cluster; default: RAY_ADDRESS, else embedded
    storage: str | None = None  # an Optuna storage URL; default: results/<name>/study.db
    resume: bool = False
    max_failures: int = 0  # retries of a failed trial, from its last checkpoint
    results: Path = Path("results")
    name: str | None = None  # default: the space's name
    n_trials: int | None = None  # overrides search.n_trials
    tokens: int | None = None  # overrides budget.tokens
    quiet: bool = False
    confirm: bool = True  # run the space's confirm: block, if it has one
    trackers: tuple[str, ...] | None = None  # overrides search.trackers (--tracker)
    mlflow_uri: str | None = None  # overrides search.mlflow_uri (--mlflow-uri)


@dataclass
class SearchOutcome:
    """What a finished search returns: where its files are and what it found."""

    paths: RunPaths
    objectives: list[tuple[str, str]]
    frame: Any  # pandas.DataFrame: the trials table
    winners: Any  # pandas.DataFrame: the best trial, or the Pareto set
    plan: EvalPlan
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False
    confirmed: ConfirmOutcome | None = None  # with a confirm: block in the space

    @property
    def verdict(self) -> str:
        return verdict(self.frame, self.objectives)


# ---------------------------------------------------------------------- preparing a run
def _check_objectives(space: SearchSpace) -> list[tuple[str, str]]:
    """The space's objectives, after every check `sla-nas validate` makes too (the
    objectives, the grid's size, the task at every dimension choice: `check_search`)."""
    from sla_nas.proxy import make_task

    return check_search(space, make_task)


def _prepare_dir(space_path: Path, paths: RunPaths, options: SearchOptions,
                 tracking: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create (or, resuming, check) the run folder; return the run's recorded settings."""
    text = space_path.read_text()
    if options.resume:
        if not paths.run_info.exists() or not paths.tune.exists():
            raise ValueError(f"{paths.root}: nothing to resume (no run.json or tune/ folder)")
        if paths.space.read_text() != text:
            raise ValueError(f"{space_path} differs from the space this run started with "
                             f"({paths.space}); resume with that file, or start a new run "
                             f"with --name")
        info = paths.read_info()  # checked: a ValueError names run.json and the key
        info["overrides"] = info.get("overrides") or {}
        for name in ("n_trials", "tokens"):
            given = getattr(options, name)
            if given is not None and given != info["overrides"].get(name):
                raise ValueError(f"--{name.replace('_', '-')} {given} differs from the run's "
                                 f"{info['overrides'].get(name)}; a resumed search keeps its "
                                 f"settings")
        return info
    if paths.root.exists() and any(paths.root.iterdir()):
        raise ValueError(f"{paths.root} already holds a run; add --resume to continue it, or "
                         f"--name NAME (or remove the folder) to start another")
    paths.root.mkdir(parents=True, exist_ok=True)
    atomic_write(paths.space, text)
    import optuna
    import ray
    import torch

    info = {"name": paths.root.name, "space_file": str(space_path),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "overrides": {"n_trials": options.n_trials, "tokens": options.tokens},
            "storage": masked(options.storage) if options.storage else "study.db",
            "trackers": tracking or {"trackers": [], "mlflow_uri": None},
            "versions": {"sla_nas": __version__, "torch": torch.__version__,
                         "ray": ray.__version__, "optuna": optuna.__version__,
                         "python": platform.python_version()}}
    atomic_write(paths.run_info, json.dumps(info, indent=2))
    return info


def _open_storage(paths: RunPaths, options: SearchOptions, name: str) -> Any:
    import optuna

    url = options.storage or paths.sqlite_url()
    try:  # a database server may restart mid-search: its connections are retried
        storage = optuna.storages.RDBStorage(url, engine_kwargs={
            "connect_args": {"timeout": 60}}) if url.startswith("sqlite") else \
            ReconnectingStorage(url)
    except Exception as err:  # a wrong URL, a missing driver, a server that is down
        raise ValueError(f"cannot open the study storage {masked(url)}: {err}") from None
    exists = name in optuna.study.get_all_study_names(storage)
    if options.resume and not exists:
        raise ValueError(f"no study {name!r} in {masked(url)} to resume")
    if not options.resume and exists:
        raise ValueError(f"{masked(url)} already holds a study {name!r}; add --resume to "
                         f"continue it, or --name NAME to start another")
    STORAGES[name] = storage
    return storage


def _sampler(space: SearchSpace, seed: int) -> Any:
    import optuna

    name = space.config.search.sampler
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":  # group: conditional decisions are modelled jointly
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                              constant_liar=True)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)  # random, and grid after its queue


GRID_LIMIT = 20_000


def _seed_points(space: SearchSpace, notes: list[str]
                 ) -> list[tuple[str, dict[str, Any], int]]:
    """(name, parameters, training seed) to enqueue: every seed architecture once per seed of
    ``search.seed_runs`` (their spread is the search's own estimate of seed noise), and for
    ``sampler: grid`` every other distinct point."""
    config = space.config.search
    first, keys = [], set()
    for name, spec in space.seeds:
        params = space.params_for(spec)
        if params is None:
            notes.append(f"seed {name} lies outside the space and is not evaluated")
        elif spec.key not in keys:
            keys.add(spec.key)
            first.append((name, params))
    points = [(name, params, config.seed + run) for run in range(config.seed_runs)
              for name, params in first]
    if config.sampler == "grid":
        if space.size() > GRID_LIMIT:
            raise ValueError(f"{space.path}: search.sampler: grid enumerates the space, which "
                             f"has {space.size():,} points (at most {GRID_LIMIT:,}); use tpe")
        for params, spec in space.enumerate():
            if spec.key not in keys:
                keys.add(spec.key)
                points.append(("", params, config.seed))
    return points


# ---------------------------------------------------------------------- the search
def run_search(space_path: str | Path, options: SearchOptions = SearchOptions(),
               log: Callable[[str], None] | None = None,
               trainable: Callable[..., None] | None = None) -> SearchOutcome:
    """Run (or with ``options.resume``, continue) the search a space file describes;
    ``log`` gets the plan and notes before the trials start. ``trainable`` replaces the
    function Tune runs per trial (`run_trial(config, setup)`), e.g. to wrap it."""
    space_path = Path(space_path)
    space = SearchSpace.from_yaml(space_path)
    objectives = _check_objectives(space)
    name = valid_run_name(options.name or space.name)
    paths = RunPaths(options.results / name)
    if options.resume:
        options = dataclasses.replace(options, **{
            k: v for k, v in paths.read_info().get("overrides", {}).items()
            if v is not None and getattr(options, k) is None})
    config = space.config
    plan, fidelity_note = search_plan(space, options.tokens)
    setup_budget = Budget(tokens=plan.budget, eval_at=plan.eval_at,
                          batch_size=config.budget.batch_size, lr=config.budget.lr,
                          schedule=config.budget.schedule)
    from ._trainable import TrialSetup

    setup = TrialSetup.from_space(space, setup_budget, trial_root=str(paths.tune.resolve()))
    notes: list[str] = [plan.note] + ([fidelity_note] if fidelity_note else [])
    one_shot = config.search.strategy == "one-shot"
    if one_shot:  # the seed presets' runs (no grid points): trained beside the top candidates
        seeds = [p for p in _seed_points(space, notes) if p[0]]
    else:
        seeds = [] if options.resume else _seed_points(space, notes)
    n_trials = options.n_trials or config.search.n_trials
    if one_shot:
        pass  # the standalone trials are counted once the candidates are scored
    elif config.search.sampler == "grid":  # the grid's points are all the trials there are
        n_trials = min(n_trials, len(_seed_points(space, [])))
    if config.search.sampler != "grid" and len(seeds) > n_trials:
        notes.append(f"only the first {n_trials} of {len(seeds)} seed runs fit in {n_trials} "
                     f"trials: " + ", ".join(f"{n} (seed {s})" for n, _, s in seeds[n_trials:])
                     + " not evaluated")
        seeds = seeds[:n_trials]
    for note in notes if log is not None else ():
        log(note)
    started_notes = len(notes)
    tracking = choose_tracking(config.search, options.trackers, options.mlflow_uri,
                               paths.read_info().get("trackers") if options.resume else None,
                               options.resume, str(paths.run_info))
    _prepare_dir(space_path, paths, options, tracking.record())
    if one_shot:  # Tune's folder comes in phase 3; --resume needs it from the start
        paths.tune.mkdir(exist_ok=True)
    if space.fidelity_path() is not None and not options.resume:  # the report shows it
        shutil.copyfile(space.fidelity_path(), paths.root / FIDELITY_FILE)
    try:
        storage = _open_storage(paths, options, name)
        TRACKING_URIS[name] = tracking.uri(paths)
        if "mlflow" in tracking.trackers:  # a wrong URI ends the run before any training
            open_experiment(TRACKING_URIS[name], name, paths.root)
        started = connect_or_explain(options.address)
        try:  # trials no node can hold would wait forever: end before the first
            check_resources(config.search.cpus_per_trial, config.search.gpus_per_trial,
                            space_path)
        except BaseException:
            if started:
                import ray

                ray.shutdown()
            raise
    except BaseException:
        if not options.resume:  # a run that never started leaves no folder in the way
            shutil.rmtree(paths.root, ignore_errors=True)
        raise
    confirmed = None
    try:
        try:
            fit_options = options
            if one_shot:  # phases 1 and 2; phase 3 is the Tune search below
                from ._one_shot import prepare_one_shot

                seeds, resume_tune, n_trials = prepare_one_shot(
                    space, objectives, setup, storage, name, _sampler(space, config.search.seed),
                    plan.budget, seeds, paths, log or (lambda _: None))
                fit_options = dataclasses.replace(options, resume=resume_tune)
            frame, interrupted = _fit(space, objectives, plan, setup, seeds, storage, paths,
                                      fit_options, name, trainable, n_trials, notes,
                                      tracker_callbacks(tracking, name))
            best = winners(frame, objectives)
            _write_winners(best, paths, multi=len(objectives) > 1)
        except OSError as err:  # the tables or the winners could not be written
            raise stop_reason(err, paths.root, "") or err from None
        confirm = options_from_space(space) if options.confirm else None
        if confirm is not None and not interrupted:
            confirmed = run_confirm(paths.root, dataclasses.replace(
                confirm, max_failures=options.max_failures), log=log)
    finally:
        if started:
            import ray

            ray.shutdown()
    trained = int(_standalone(frame)[STATUS].isin(TRAINED_STATUSES).sum())
    if interrupted:
        notes.append(f"interrupted after {trained} of {n_trials} trained trials; continue with "
                     f"--resume (finished trials are kept, running ones continue from their "
                     f"last checkpoint)")
    elif trained < n_trials:
        notes.append(f"the search stopped after {trained} of {n_trials} trained trials: the "
                     f"sampler proposed only architectures already evaluated or over a "
                     f"constraint {MAX_SKIPS} times in a row (the space is spent)")
    for note in notes[started_notes:] if log is not None else ():
        log(note)
    return SearchOutcome(paths, objectives, frame, best, plan, notes, interrupted, confirmed)


def _fit(space: SearchSpace, objectives: list[tuple[str, str]], plan: EvalPlan, setup: Any,
         seeds: list, storage: Any, paths: RunPaths, options: SearchOptions, name: str,
         function: Callable[..., None] | None, n_trials: int, notes: list[str],
         trackers: list[Any] | None = None) -> Any:
    import optuna
    from ray import tune

    from ._progress import SearchProgress
    from ._searcher import SpaceSearch, close_unstarted, describe_study
    from ._trainable import run_trial, trial_dirname

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = space.config.search
    trainable = tune.with_resources(tune.with_parameters(function or run_trial, setup=setup),
                                    {"cpu": config.cpus_per_trial,
                                     "gpu": config.gpus_per_trial})
    tune_dir = paths.tune.resolve()
    if options.resume:
        # a failed trial stays failed (its result is recorded); unfinished ones continue
        tuner = tune.Tuner.restore(str(tune_dir), trainable=trainable,
                                   resume_unfinished=True, resume_errored=False)
    else:
        searcher = SpaceSearch(space, objectives, _sampler(space, config.seed),
                               storage, name, config.seed, plan.budget, tune_dir, seeds,
                               plan.scheduler)
        scheduler = _scheduler(plan, objectives)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher, scheduler=scheduler, num_samples=n_trials,
                max_concurrent_trials=config.concurrency, reuse_actors=True,
                trial_dirname_creator=trial_dirname, trial_name_creator=trial_dirname),
            run_config=tune.RunConfig(
                name=TUNE_NAME, storage_path=str(paths.root.resolve()), verbose=0,
                failure_config=tune.FailureConfig(max_failures=options.max_failures),
                # one checkpoint per trial: Tune then snapshots the experiment whenever a
                # trial checkpoints, so a restarted driver never points at a deleted one
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[SearchProgress(paths, name, n_trials, objectives, options.quiet),
                           *_live_report(config.report_every, paths, n_trials, options.quiet),
                           *(trackers or ())]))  # TensorBoard, MLflow: search.trackers
    # the objectives' names and the settings, for Optuna Dashboard (again on --resume: same)
    describe_study(optuna.load_study(study_name=name, storage=storage), space, objectives,
                   plan.budget, n_trials, plan.scheduler)
    lost: list[tuple[str, str]] = []  # (Tune trial id, node id) per trial a lost node stopped
    try:
        with quiet_tune(), node_loss_is_no_failure(lost):
            grid = tuner.fit()
    except Exception as err:  # a fault outside the trials: a message, and --resume
        stopped = stop_reason(err, paths.root, options.storage or paths.sqlite_url())
        if stopped is None:
            raise
        raise stopped from None
    study = optuna.load_study(study_name=name, storage=storage)
    frame = trials_frame(study)
    numbers = dict(zip(frame[TUNE_ID], frame[TRIAL])) if TUNE_ID in frame else {}
    for tune_id, node in lost:
        notes.append(f"trial {numbers.get(tune_id, tune_id)} lost its node {node[:12]}: "
                     f"continued from its last checkpoint on another node (not counted as a "
                     f"failure)")
    unfinished = len(grid) - grid.num_terminated - grid.num_errors
    trained = int(_standalone(frame)[STATUS].isin(TRAINED_STATUSES).sum())
    interrupted = unfinished > 0 or (trained < n_trials and not _spent(_standalone(frame)))
    if not interrupted:  # a proposal the ended search never started, seeds or grid points
        close_unstarted(study, set(), "the search ended before it was trained",  # never asked
                        states=(optuna.trial.TrialState.RUNNING,
                                optuna.trial.TrialState.WAITING))
        frame = trials_frame(study)
    write_tables(frame, paths)
    return frame, interrupted


def _live_report(every: int, paths: RunPaths, n_trials: int, quiet: bool) -> list[Any]:
    """``search.report_every``: the callback that rewrites report.html during the search
    (after SearchProgress, which refreshes the trials table the page is built from)."""
    if not every:
        return []
    from ._live import LiveReport

    return [LiveReport(paths, every, n_trials, quiet)]


def _standalone(frame: Any) -> Any:
    """The trials Tune trains: a one-shot search's supernet scores left out."""
    from ._one_shot import standalone_rows

    return standalone_rows(frame)


def _spent(frame: Any) -> bool:
    """True if the search ended because the sampler proposed only what needs no training."""
    tail = frame.sort_values(TRIAL)[STATUS].tail(MAX_SKIPS)
    return len(tail) == MAX_SKIPS and tail.isin(("infeasible", "duplicate", "waiting")).all()


def _scheduler(plan: EvalPlan, objectives: list[tuple[str, str]]) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    from ._schedulers import SeedsRunASHA, SeedsRunMedian
    from ._trainable import BUDGET_TOKENS

    metric, mode = next(((m, d) for m, d in objectives
                         if m in metrics.QUALITY), (None, None))
    if metric is None:  # only costs: nothing trained to stop a trial on
        return FIFOScheduler()
    if plan.scheduler == "asha":
        return SeedsRunASHA(time_attr=BUDGET_TOKENS, metric=metric, mode=mode,
                             max_t=plan.budget, grace_period=plan.rungs[0],
                             reduction_factor=plan.reduction_factor)
    if plan.scheduler == "median":
        return SeedsRunMedian(time_attr=BUDGET_TOKENS, metric=metric, mode=mode,
                                  grace_period=plan.rungs[0], min_samples_required=3)
    return FIFOScheduler()


def _write_winners(best: Any, paths: RunPaths, multi: bool) -> None:
    if best.empty:
        return
    if not multi:
        ArchSpec.from_json(best.iloc[0][SPEC]).save(paths.best)
        return
    paths.pareto.mkdir(exist_ok=True)
    for old in paths.pareto.glob("*.yaml"):
        old.unlink()
    for rank, (_, row) in enumerate(best.iterrows(), 1):
        ArchSpec.from_json(row[SPEC]).save(paths.pareto / f"rank-{rank}-{row[KEY]}.yaml")
