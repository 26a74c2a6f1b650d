"""A one-shot search (``search.strategy: one-shot``): one supernet trained, thousands of wirings
scored with its shared weights, a few trained standalone.

1. **Supernet.** `sla_nas.proxy.train_supernet` trains the space's weight-sharing supernet for
   ``one_shot.supernet_tokens`` (default 4x the proxy budget) as one Ray task with a trial's
   resources (``cpus_per_trial``, ``gpus_per_trial``; so ``--address`` and GPUs work). It is a
   task, not a Tune trial: it needs no scheduler, no searcher and no sampled config, and its
   resumption is `train_supernet`'s own checkpoint, ``supernet/`` in the run folder (written at
   each of its honest WSD evaluations), which the task reads on ``--resume``.
2. **Candidates.** In the driver (no Ray), the space's Optuna sampler proposes
   ``one_shot.candidates`` architectures in the search's study, ask and tell; each is scored
   with the supernet's weights on the task's held-out set (`sla_nas.proxy.score`, after
   ``finetune_tokens`` of its own) and told as a trial with fidelity ``supernet``. A sample over
   a constraint is infeasible and a repeated architecture a duplicate, as in a multi-trial
   search; ``MAX_SKIPS`` of them in a row end the phase (the space is spent).
3. **Standalone.** The ``top`` candidates by supernet score (distinct, feasible, not a seed
   preset) and the space's seed presets (``search.seed_runs`` each) are enqueued and trained by
   Tune exactly as a multi-trial search's trials (fidelity ``standalone``); the winners,
   ``confirm:`` and the export come from those rows only (`sla_nas.results.finished_ok` leaves
   supernet rows out).

The study records the phase: ``one_shot_top`` (the points chosen for phase 3) is set once
phase 2 is over, so a resumed search after a SIGKILL continues the phase it was in: the
supernet from its last checkpoint, the candidates from the last told one (a candidate being
scored when the driver stopped is marked abandoned), the standalone trials as Tune resumes
them. Nothing is trained or scored twice.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sla_nas.arch import atomic_write, metrics
from sla_nas.results import (
    FIDELITY,
    KEY,
    MESSAGE,
    REUSED_FROM,
    STATUS,
    WALL_SECONDS,
    RunPaths,
    trials_frame,
    write_tables,
)
from sla_nas.space import SearchSpace

from ._searcher import MAX_SKIPS, SUPERNET, describe_trial, tell_infeasible

__all__ = ["OneShotSettings", "one_shot_settings", "prepare_one_shot", "SUPERNET_DIR",
           "SUPERNET_RECORD", "TOP_ATTR", "standalone_rows"]

SUPERNET_DIR = "supernet"  # in the run folder: train_supernet's checkpoint and its record
SUPERNET_RECORD = "supernet.json"  # train_supernet's record, once it has finished
TOP_ATTR = "one_shot_top"  # study attribute: the points phase 3 trains (phase 2 is over)


@dataclass(frozen=True)
class OneShotSettings:
    """``search.one_shot`` with its defaults resolved for a proxy budget of ``budget``."""

    supernet_tokens: int
    candidates: int
    top: int
    finetune_tokens: int
    score_tokens: int | None = None
    split_projections: bool = False
    sampling: str = "balanced"


def one_shot_settings(space: SearchSpace, budget_tokens: int) -> OneShotSettings:
    """The space's one-shot settings; ``supernet_tokens`` defaults to 4x ``budget_tokens``
    (the proxy budget a standalone trial trains)."""
    section = space.config.search.one_shot  # the schema fills it in for strategy one-shot
    return OneShotSettings(section.supernet_tokens or 4 * budget_tokens, section.candidates,
                           section.top, section.finetune_tokens, section.score_tokens,
                           section.split_projections, section.sampling)


def _scored_metric(objectives: list[tuple[str, str]]) -> tuple[str, str]:
    """The objective the supernet's score ranks by: the first quality metric."""
    return next((m, d) for m, d in objectives if m in metrics.QUALITY)


# ---------------------------------------------------------------------- phase 1: supernet
def _supernet_job(space: SearchSpace, setup: Any, budget: Any, seed: int, folder: str,
                  settings: OneShotSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train (or resume, or just load) the supernet where Ray placed this task; its weights
    (on the CPU) and `train_supernet`'s record."""
    import torch

    from sla_nas.proxy import train_supernet

    from ._trainable import trial_device

    torch.set_num_threads(setup.threads)
    device = trial_device(setup.device, "the one-shot search's supernet")
    task = setup.make_task(space.dims_choices[0])
    net, record = train_supernet(space, task, budget, seed, checkpoint=folder, device=device,
                                 precision=setup.precision, sampling=settings.sampling,
                                 split_projections=settings.split_projections)
    weights = {"model": {k: v.detach().to("cpu") for k, v in net.state_dict().items()},
               "created": net.created()}
    return weights, record


def _train_supernet(space: SearchSpace, setup: Any, settings: OneShotSettings,
                    paths: RunPaths, log: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """Phase 1 as one Ray task; the supernet in the driver, and the record."""
    import ray

    from sla_nas.proxy import SUPERNET_STATE, Budget, Supernet

    config = space.config
    budget = Budget(tokens=settings.supernet_tokens, batch_size=config.budget.batch_size,
                    lr=config.budget.lr, schedule=config.budget.schedule)
    folder = paths.root / SUPERNET_DIR
    folder.mkdir(exist_ok=True)
    if (folder / SUPERNET_RECORD).exists():
        log("one-shot: loading the supernet trained before")
    else:
        resumed = (folder / SUPERNET_STATE).exists()
        log(f"one-shot: {'continuing' if resumed else 'training'} the supernet for "
            f"{settings.supernet_tokens:,} tokens ({config.search.cpus_per_trial:g} CPU, "
            f"{config.search.gpus_per_trial:g} GPU)")
    job = ray.remote(num_cpus=config.search.cpus_per_trial,
                     num_gpus=config.search.gpus_per_trial)(_supernet_job)
    weights, record = ray.get(job.remote(space, setup, budget, config.search.seed,
                                         str(folder.resolve()), settings))
    if record["status"] != "ok":
        raise ValueError(f"the supernet diverged (a non-finite training loss) after "
                         f"{record['tokens_trained']:,} tokens; lower budget.lr and start again")
    atomic_write(folder / SUPERNET_RECORD, json.dumps(record, indent=1, default=str))
    net = Supernet(space, config.search.seed, split_projections=settings.split_projections)
    net.ensure_created(weights["created"])
    net.load_state_dict(weights["model"])
    log(f"one-shot: supernet trained ({record['tokens_trained']:,} architecture-tokens, "
        f"{record['train_seconds']:.0f} s of steps); mean held-out loss of the seeds "
        f"{record['val_loss']:.4f}")
    return net, record


# ---------------------------------------------------------------------- phase 2: candidates
def _abandon_running(study: Any) -> None:
    """Candidates asked but never told (the driver stopped while scoring them)."""
    from optuna.trial import TrialState

    storage = study._storage
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if frozen.user_attrs.get(FIDELITY) == SUPERNET:
            storage.set_trial_user_attr(frozen._trial_id, STATUS, "abandoned")
            storage.set_trial_user_attr(frozen._trial_id, MESSAGE, "being scored when the "
                                        "driver stopped; scored again as a new trial")
            storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL)


def _score_candidates(space: SearchSpace, objectives: list[tuple[str, str]], study: Any,
                      net: Any, setup: Any, settings: OneShotSettings, paths: RunPaths,
                      log: Callable[[str], None]) -> int:
    """Phase 2: ask, score and tell until ``candidates`` are scored or the space is spent;
    the number scored."""
    import torch
    from optuna.trial import TrialState

    from sla_nas.proxy import resolve_device

    config = space.config
    _abandon_running(study)
    scored: dict[str, tuple[int, list[float], dict[str, Any]]] = {}
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = frozen.user_attrs
        if attrs.get(FIDELITY) == SUPERNET and attrs.get(STATUS) == "ok":
            scored[attrs[KEY]] = (frozen.number, frozen.values, attrs)
    if not study.user_attrs.get("one_shot_seeds_queued"):  # the seeds are candidates too
        for name, spec in space.seeds:
            params = space.params_for(spec)
            if params is not None and spec.key not in scored:
                study.enqueue_trial(params, user_attrs={MESSAGE: f"seed preset {name}"},
                                    skip_if_exists=True)
        study.set_user_attr("one_shot_seeds_queued", True)
    device = resolve_device(config.train.device)
    net.to(device)
    threads = torch.get_num_threads()
    torch.set_num_threads(setup.threads)  # a trial's share, as the trials train with
    try:
        return _ask_score_tell(space, objectives, study, net,
                               setup.make_task(space.dims_choices[0]), scored, settings, paths,
                               log)
    finally:
        torch.set_num_threads(threads)
        net.to("cpu")


def _ask_score_tell(space: SearchSpace, objectives: list[tuple[str, str]], study: Any, net: Any,
                    task: Any, scored: dict[str, tuple[int, list[float], dict[str, Any]]],
                    settings: OneShotSettings, paths: RunPaths, log: Callable[[str], None]
                    ) -> int:
    """The ask-score-tell loop of phase 2 (``scored``: key -> the trial that scored it)."""
    from sla_nas.arch import estimate
    from sla_nas.proxy import score

    config = space.config
    seed = config.search.seed
    batch = config.budget.batch_size
    started, skips, done = time.perf_counter(), 0, len(scored)
    if done:
        log(f"one-shot: {done} candidates scored before; continuing to "
            f"{settings.candidates}")
    step = max(1, settings.candidates // 10)
    while done < settings.candidates and skips < MAX_SKIPS:
        trial = study.ask()
        spec = space.sample(trial)
        describe_trial(trial, space, spec, seed, SUPERNET)
        over = space.violations(spec)
        if over:
            tell_infeasible(study, trial, spec, over, objectives)
            skips += 1
            continue
        if spec.key in scored:  # told what the first scoring gave: nothing scored twice
            number, values, attrs = scored[spec.key]
            for name in ("val_loss", "val_acc", WALL_SECONDS):
                if name in attrs:
                    trial.set_user_attr(name, attrs[name])
            trial.set_user_attr(STATUS, "duplicate")
            trial.set_user_attr(REUSED_FROM, number)
            trial.set_user_attr(MESSAGE, f"same architecture as trial {number}: its supernet "
                                         f"score reused")
            study.tell(trial, values)
            skips += 1
            continue
        result = score(net, spec, task, batch, score_tokens=settings.score_tokens,
                       finetune_tokens=settings.finetune_tokens,
                       seed=seed, lr=config.budget.lr, precision=config.train.precision)
        costs = estimate(spec)
        values = [float(result[m]) if m in result else float(costs[m]) for m, _ in objectives]
        for name in ("val_loss", "val_acc"):
            if name in result:
                trial.set_user_attr(name, float(result[name]))
        trial.set_user_attr(WALL_SECONDS, result["seconds"])
        trial.set_user_attr(STATUS, "ok")
        if not trial.user_attrs.get(MESSAGE):
            trial.set_user_attr(MESSAGE, "scored with the supernet's weights" + (
                f" after {settings.finetune_tokens:,} tokens of its own" if
                settings.finetune_tokens else ""))
        study.tell(trial, values)
        scored[spec.key] = (trial.number, values, dict(trial.user_attrs))
        done, skips = done + 1, 0
        if done % step == 0 or done == settings.candidates:
            write_tables(trials_frame(study), paths)
            log(f"one-shot: {done} of {settings.candidates} candidates scored "
                f"({time.perf_counter() - started:.0f} s)")
    if done < settings.candidates:
        log(f"one-shot: the space is spent after {done} distinct candidates (the sampler "
            f"proposed only duplicates or infeasible architectures {MAX_SKIPS} times in a "
            f"row)")
    return done


def _top_points(space: SearchSpace, objectives: list[tuple[str, str]], study: Any,
                settings: OneShotSettings) -> list[tuple[str, dict[str, Any], int]]:
    """The ``top`` candidates by supernet score, distinct, feasible, none a seed preset, as
    (name, parameters, training seed) points."""
    from optuna.trial import TrialState

    metric, mode = _scored_metric(objectives)
    seeds = {spec.key for _, spec in space.seeds}
    rows = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get(FIDELITY) == SUPERNET and t.user_attrs.get(STATUS) == "ok"
            and t.user_attrs.get(KEY) not in seeds
            and math.isfinite(t.user_attrs.get(metric, math.nan))]
    rows.sort(key=lambda t: (t.user_attrs[metric] * (1 if mode == "min" else -1), t.number))
    chosen, keys = [], set()
    for t in rows:
        if t.user_attrs[KEY] not in keys:
            keys.add(t.user_attrs[KEY])
            chosen.append(("", dict(t.params), space.config.search.seed))
        if len(chosen) == settings.top:
            break
    return chosen


# ---------------------------------------------------------------------- the whole flow
def prepare_one_shot(space: SearchSpace, objectives: list[tuple[str, str]], setup: Any,
                     storage: Any, name: str, sampler: Any, budget_tokens: int,
                     seeds: list[tuple[str, dict[str, Any], int]], paths: RunPaths,
                     log: Callable[[str], None]) -> tuple[list, bool, int]:
    """Phases 1 and 2 (or, resumed after them, nothing): the points Tune trains standalone
    (seed presets first, then the top candidates), whether Tune resumes its own experiment,
    and the number of standalone trials in all."""
    import optuna
    from ray import tune

    from ._searcher import close_unstarted

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "using an existing study"
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, load_if_exists=True,
        directions=["minimize" if d == "min" else "maximize" for _, d in objectives])
    study.set_user_attr("strategy", "one-shot")
    settings = one_shot_settings(space, budget_tokens)
    chosen = study.user_attrs.get(TOP_ATTR)
    if chosen is None:
        net, _ = _train_supernet(space, setup, settings, paths, log)
        _score_candidates(space, objectives, study, net, setup, settings, paths, log)
        top = _top_points(space, objectives, study, settings)
        chosen = [list(p) for p in [*seeds, *top]]
        study.set_user_attr(TOP_ATTR, chosen)
        write_tables(trials_frame(study), paths)
        log(f"one-shot: training {len(top)} top candidates and {len(seeds)} seed runs "
            f"standalone")
    points = [(n, p, s) for n, p, s in chosen]
    if tune.Tuner.can_restore(str(paths.tune.resolve())):
        return points, True, len(points)
    # Tune has no experiment to restore: standalone trials the study holds from a start that
    # stopped before Tune's first snapshot are closed, and every point is queued afresh
    from optuna.trial import TrialState

    close_unstarted(study, {t._trial_id for t in study.get_trials(deepcopy=False)
                            if t.user_attrs.get(FIDELITY) == SUPERNET},
                    "queued for standalone training just before the driver stopped; queued "
                    "again", states=(TrialState.RUNNING, TrialState.WAITING))
    return points, False, len(points)


def standalone_rows(frame: Any) -> Any:
    """The rows of trials Tune trained (a one-shot search's supernet scores left out)."""
    return frame[frame[FIDELITY].ne(SUPERNET)] if FIDELITY in frame else frame


