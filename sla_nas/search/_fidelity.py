"""`run_fidelity`: measure, on a user's own space, how far its search can be trusted.

The space's seed architectures and K drawn from it (the space's sampler, a fixed seed, over
the constraints, no duplicates) are trained with S paired training seeds to the longest
budget, on Ray like a search (``address``, resources, retries). Every honest evaluation on the
way (a complete shorter WSD run) is appended to ``fidelity_runs.csv`` as it is reported, so a
killed run loses nothing: ``resume`` trains only what is missing, each unfinished run
continuing from its last checkpoint. `sla_nas.results.analyse` turns the runs into
``fidelity.json``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import Callback

from sla_nas.arch import (
    MAX_TOKENS,
    ArchSpec,
    atomic_write,
    check_model_size,
    load_json,
    metrics,
    read_text_bounded,
)
from sla_nas.proxy import Budget
from sla_nas.results import (
    FIDELITY_BUDGET,
    KEY,
    SEED,
    STATUS,
    analyse,
    append_fidelity_runs,
    fidelity_budgets,
    load_fidelity_runs,
    objective_of,
    space_identity,
    valid_run_name,
    write_fidelity,
)
from sla_nas.space import SearchSpace

from ._ray import check_resources, connect, node_loss_is_no_failure, quiet_tune
from ._run import _sampler
from ._trainable import (
    ARCH,
    BUDGET_TOKENS,
    NUMBER,
    TRAIN_SEED,
    TrialSetup,
    run_trial,
    trial_folder,
)

__all__ = ["FidelityOptions", "FidelityOutcome", "run_fidelity", "MAX_FIDELITY_RUNS"]

PLAN_FILE = "fidelity_plan.json"
TUNE_NAME = "tune"
MAX_FIDELITY_RUNS = 10_000  # architectures x seeds: a bound on what the options may ask for
MIN_ARCHITECTURES = 3  # a Kendall tau of two is +-1, nothing more


@dataclass(frozen=True)
class FidelityOptions:
    k: int = 8  # architectures drawn from the space, besides its seeds
    seeds: int = 3  # paired training seeds per architecture
    longest: int | None = None  # default: 4x the search budget
    tokens: int | None = None  # the search budget measured against (default budget.tokens)
    results: Path = Path("results")
    name: str | None = None  # default: <space name>-fidelity
    address: str | None = None
    resume: bool = False
    max_failures: int = 0
    quiet: bool = False


@dataclass
class FidelityOutcome:
    folder: Path
    result: dict[str, Any]  # as written to fidelity.json
    trained: int  # runs trained by this call
    notes: list[str] = field(default_factory=list)


def _draw(space: SearchSpace, k: int, seed: int, taken: set[str]) -> list[ArchSpec]:
    """``k`` distinct feasible architectures by the space's sampler with ``seed`` (with no
    results told, every sampler proposes from its prior: TPE and GP start at random)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(sampler=_sampler(space, seed))
    out: list[ArchSpec] = []
    for _ in range(200 * max(1, k)):
        if len(out) == k:
            break
        trial = study.ask()
        spec = space.sample(trial)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if spec.key not in taken and not space.violations(spec):
            taken.add(spec.key)
            out.append(spec)
    return out


def _plan(space: SearchSpace, options: FidelityOptions, search_tokens: int, longest: int
          ) -> dict[str, Any]:
    config = space.config
    entries, taken = [], set()
    for name, spec in space.seeds:
        if spec.key not in taken:
            taken.add(spec.key)
            entries.append({"label": name, "spec": spec.to_json()})
    for i, spec in enumerate(_draw(space, options.k, config.search.seed, taken), 1):
        entries.append({"label": f"drawn {i}", "spec": spec.to_json()})
    smallest = config.budget.batch_size * max(d.seq_len for d in space.dims_choices)
    return {"search_tokens": search_tokens, "longest": longest,
            "budgets": list(fidelity_budgets(search_tokens, longest, smallest)),
            "seeds": [config.search.seed + i for i in range(options.seeds)],
            "architectures": entries, "drawn": options.k}


def _check(options: FidelityOptions, search_tokens: int, longest: int) -> None:
    if options.k < 0:
        raise ValueError(f"--k must be 0 or more, got {options.k}")
    if options.seeds < 2:
        raise ValueError(f"--seeds must be 2 or more (paired seeds measure the noise), got "
                         f"{options.seeds}")
    if (options.k + 16) * options.seeds > MAX_FIDELITY_RUNS:
        raise ValueError(f"--k {options.k} x --seeds {options.seeds} asks for more than "
                         f"{MAX_FIDELITY_RUNS:,} training runs")
    if longest < search_tokens:
        raise ValueError(f"--longest {longest:,} is shorter than the search budget of "
                         f"{search_tokens:,} tokens it is measured against")


class FidelityRecorder(Callback):
    """Appends every reported evaluation of a run to fidelity_runs.csv as it is reported
    (pickled with the experiment: paths and labels only) and prints a line per ended run."""

    def __init__(self, folder: Path, labels: dict[str, str], metric_names: list[str],
                 progress: bool, total: int):
        self.folder, self.labels, self.names = folder, labels, metric_names
        self.progress, self.total, self.done = progress, total, 0

    def on_trial_result(self, iteration: int, trials: list, trial: Any,
                        result: dict[str, Any], **info: Any) -> None:
        job = trial.config["job"]
        key = ArchSpec.from_json(job[ARCH]).key
        if BUDGET_TOKENS not in result:
            return
        append_fidelity_runs(self.folder, [{
            KEY: key, "label": self.labels[key], SEED: job[TRAIN_SEED],
            FIDELITY_BUDGET: result[BUDGET_TOKENS], STATUS: result.get("status"),
            "node_id": result.get("node_id"), **{m: result.get(m) for m in self.names}}],
            self.names)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, (trial.last_result or {}).get("status", "ok"))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, "error")

    def _ended(self, trial: Any, status: str) -> None:
        self.done += 1
        if not self.progress:
            return
        job = trial.config["job"]
        key = ArchSpec.from_json(job[ARCH]).key
        value = (trial.last_result or {}).get(self.names[0])
        shown = f"{self.names[0]} {value:.4f}" if isinstance(value, float) else ""
        print(f"  run {self.done:>3}/{self.total}  {status:<8} {key} ({self.labels[key]}), "
              f"seed {job[TRAIN_SEED]}  {shown}", file=sys.stderr, flush=True)


def _prepare(space_path: Path, folder: Path, options: FidelityOptions) -> None:
    text = read_text_bounded(space_path, what="space file")
    if options.resume:
        if not (folder / PLAN_FILE).exists():
            raise ValueError(f"{folder}: nothing to resume (no {PLAN_FILE})")
        if read_text_bounded(folder / "space.yaml", what="space file") != text:
            raise ValueError(f"{space_path} differs from the space this measurement started "
                             f"with ({folder / 'space.yaml'}); resume with that file, or "
                             f"start another with --name")
        return
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"{folder} already holds a fidelity measurement; add --resume to "
                         f"continue it, or --name NAME to start another")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "space.yaml", text)


def _finished(runs: Any, longest: int) -> set[tuple[str, int]]:
    """(architecture key, seed) of the runs that reached the longest budget."""
    return {(k, int(s)) for k, s, b, st in zip(runs[KEY], runs[SEED], runs[FIDELITY_BUDGET],
                                                runs[STATUS]) if int(b) == longest and st == "ok"}


def _read_plan(path: Path) -> dict[str, Any]:
    """The plan a measurement started with, checked (it decides what is trained)."""
    plan = load_json(read_text_bounded(path, what="fidelity plan"), path)
    try:
        ok = (isinstance(plan, dict) and
              all(isinstance(plan[k], int) and 0 < plan[k] <= MAX_TOKENS
                  for k in ("search_tokens", "longest")) and
              isinstance(plan["drawn"], int) and
              isinstance(plan["budgets"], list) and 0 < len(plan["budgets"]) <= 64 and
              all(isinstance(b, int) and 0 < b <= plan["longest"] for b in plan["budgets"]) and
              isinstance(plan["seeds"], list) and 0 < len(plan["seeds"]) <= MAX_FIDELITY_RUNS and
              all(isinstance(x, int) and 0 <= x < 2**31 for x in plan["seeds"]) and
              isinstance(plan["architectures"], list) and
              0 < len(plan["architectures"]) * len(plan["seeds"]) <= MAX_FIDELITY_RUNS and
              all(isinstance(e, dict) and isinstance(e.get("label"), str) and
                  isinstance(e.get("spec"), str) for e in plan["architectures"]))
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise ValueError(f"{path}: not a plan sla-nas fidelity wrote (search_tokens, longest, "
                         f"budgets, seeds, architectures)")
    for i, entry in enumerate(plan["architectures"]):
        try:
            entry["spec"] = ArchSpec.from_json(entry["spec"])
        except ValueError as err:
            raise ValueError(f"{path}: architectures[{i}]: {err}") from None
        check_model_size(entry["spec"], path)
    return plan


def run_fidelity(space_path: str | Path, options: FidelityOptions = FidelityOptions(),
                 log: Callable[[str], None] | None = None,
                 bootstrap: int | None = None) -> FidelityOutcome:
    """Measure (or with ``options.resume``, finish measuring) the fidelity of a space's
    proxies and write ``fidelity.json`` in ``results/<name>``."""
    space_path = Path(space_path)
    space = SearchSpace.from_yaml(space_path)
    config = space.config
    metric, mode = objective_of(space)
    search_tokens = options.tokens or config.budget.tokens
    longest = options.longest or 4 * search_tokens
    _check(options, search_tokens, longest)
    if config.budget.schedule != "wsd":
        raise ValueError(f"{space.path}: budget.schedule: sla-nas fidelity reads shorter runs "
                         f"from the WSD cooldown branches; a {config.budget.schedule} "
                         f"schedule's intermediate evaluations are not complete runs (use wsd)")
    name = valid_run_name(options.name or f"{space.name}-fidelity")
    folder = options.results / name
    fresh = not options.resume
    _prepare(space_path, folder, options)
    notes: list[str] = []
    try:
        if fresh:
            plan = _plan(space, options, search_tokens, longest)
            atomic_write(folder / PLAN_FILE, json.dumps(plan, indent=2))
            plan = _read_plan(folder / PLAN_FILE)
        else:
            plan = _read_plan(folder / PLAN_FILE)
        drawn = sum(1 for e in plan["architectures"] if e["label"].startswith("drawn"))
        if drawn < plan["drawn"]:
            notes.append(f"the space holds only {drawn} feasible architectures besides its "
                         f"seeds ({plan['drawn']} asked for)")
        specs = [(e["label"], e["spec"]) for e in plan["architectures"]]
        if len(specs) < MIN_ARCHITECTURES:
            raise ValueError(f"{space_path}: {len(specs)} architectures ({len(specs) - drawn} "
                             f"seeds, {drawn} drawn) cannot be ranked; fidelity needs at least "
                             f"{MIN_ARCHITECTURES} (raise --k)")
        labels = {spec.key: label for label, spec in specs}
        budgets, seeds = tuple(plan["budgets"]), plan["seeds"]
        finished = _finished(load_fidelity_runs(folder), plan["longest"])
        jobs = [{ARCH: spec.to_json(), TRAIN_SEED: s, NUMBER: i}
                for i, (spec, s) in enumerate((spec, s) for _, spec in specs for s in seeds)
                if (spec.key, s) not in finished]
        if log is not None:
            log(f"fidelity of {space_path}: {len(specs)} architectures ({len(specs) - drawn} "
                f"seeds, {drawn} drawn) x {len(seeds)} paired seeds {seeds}, evaluated at "
                f"{', '.join(f'{b:,}' for b in budgets)} tokens: {len(jobs)} runs to train, "
                f"{len(specs) * len(seeds) - len(jobs)} already in the folder")
        if jobs:
            _train(space, folder, plan, jobs, labels, metric, options)
    except BaseException:
        if fresh and not load_fidelity_runs(folder).shape[0]:
            shutil.rmtree(folder, ignore_errors=True)  # nothing measured: leave no folder
        raise
    runs = load_fidelity_runs(folder)
    result = analyse(runs, metric, mode, plan["search_tokens"],
                     **({"bootstrap": bootstrap} if bootstrap is not None else {}))
    result.update(space=space.name, space_file=str(space_path), identity=json.loads(
        json.dumps(space_identity(space), default=str)),
                  labels=labels, unit=metrics.unit_of(metric, config.task.name),
                  written=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    missing = len(specs) * len(seeds) - len(_finished(runs, plan["longest"]))
    if missing:
        notes.append(f"{missing} of {len(specs) * len(seeds)} runs did not finish (see "
                     f"fidelity_runs.csv); the analysis uses the architectures evaluated at "
                     f"every budget with every seed; --resume trains the rest")
    result["notes"] = notes
    write_fidelity(folder, result)
    return FidelityOutcome(folder, result, len(jobs), notes)


def _train(space: SearchSpace, folder: Path, plan: dict[str, Any], jobs: list[dict[str, Any]],
           labels: dict[str, str], metric: str, options: FidelityOptions) -> None:
    config = space.config
    tune_dir = (folder / TUNE_NAME).resolve()
    # the search's own warmup (a tenth of its budget, not of the longest run): every
    # evaluation up to the search budget is then the very run a search trial trains
    budget = Budget(tokens=plan["longest"], eval_at=tuple(plan["budgets"]),
                    batch_size=config.budget.batch_size, lr=config.budget.lr,
                    schedule=config.budget.schedule,
                    warmup_tokens=plan["search_tokens"] / 10)  # as `Budget` does for it
    setup = TrialSetup.from_space(space, budget, trial_root=str(tune_dir / "runs"))
    setup = dataclasses.replace(setup, decode=None)  # ranks quality, not speed
    started = connect(options.address)
    try:
        check_resources(config.search.cpus_per_trial, config.search.gpus_per_trial, space.path)
        trainable = tune.with_resources(
            tune.with_parameters(_run_job, setup=setup),
            {"cpu": config.search.cpus_per_trial, "gpu": config.search.gpus_per_trial})
        names = [metric] + [m for m in metrics.QUALITY if m != metric]
        tuner = tune.Tuner(
            trainable, param_space={"job": tune.grid_search(jobs)},
            tune_config=tune.TuneConfig(max_concurrent_trials=config.search.concurrency,
                                        reuse_actors=True, trial_dirname_creator=_dirname,
                                        trial_name_creator=_dirname),
            run_config=tune.RunConfig(
                name="runs", storage_path=str(tune_dir), verbose=0,
                failure_config=tune.FailureConfig(max_failures=options.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[FidelityRecorder(folder, labels, names, not options.quiet,
                                            len(jobs))]))
        with quiet_tune(), node_loss_is_no_failure([]):  # a lost node: retried
            tuner.fit()
    finally:
        if started:
            import ray

            ray.shutdown()


def _run_job(config: dict[str, Any], setup: TrialSetup) -> None:
    """Tune's trainable for one (architecture, seed) run."""
    run_trial(config["job"], setup)


def _dirname(trial: Any) -> str:
    job = trial.config["job"]
    return trial_folder(job[NUMBER], ArchSpec.from_json(job[ARCH]).key)
