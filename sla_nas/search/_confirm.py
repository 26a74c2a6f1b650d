"""`run_confirm`: re-train a search's winners and seed presets with paired seeds, on Ray.

A plain Tune run over (architecture, seed) jobs: no sampler, no scheduler. Each finished run
is appended to ``confirm.csv`` as it ends (nothing is lost if the driver dies; a rerun trains
only what is missing). See `sla_nas.results.candidates` for what is re-trained and why.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune
from ray.tune import Callback

from sla_nas.arch import ArchSpec, metrics
from sla_nas.proxy import Budget
from sla_nas.results import (
    CONFIRM_TOKENS,
    KEY,
    LABEL,
    NODE_ID,
    SEARCH_TRIAL,
    SEED,
    SPEC,
    STATUS,
    TOKENS_TRAINED,
    TRAINING,
    WALL_SECONDS,
    RunPaths,
    append_confirm,
    candidates,
    confirm_seeds,
    load_confirm,
    objective_of,
    sentence,
    summary,
)
from sla_nas.space import SearchSpace

from ._ray import check_resources, connect, node_loss_is_no_failure, quiet_tune
from ._trainable import ARCH, NUMBER, TRAIN_SEED, TrialSetup, run_trial

__all__ = ["ConfirmOptions", "ConfirmOutcome", "run_confirm"]


@dataclass(frozen=True)
class ConfirmOptions:
    top: int = 3  # winners to re-train
    seeds: int = 3  # paired training seeds per architecture
    tokens: int | None = None  # default: twice the search's budget
    presets: tuple[str, ...] | None = None  # default: the space's seeds (vanilla always)
    max_failures: int = 0
    address: str | None = None  # a Ray cluster; default: $RAY_ADDRESS, else a local Ray
    device: str | None = None  # overrides the space's train.device (auto, cpu, cuda, cuda:N)
    precision: str | None = None  # overrides the space's train.precision


@dataclass
class ConfirmOutcome:
    table: pd.DataFrame  # the confirmation runs used (confirm.csv rows of this budget)
    summary: pd.DataFrame  # per architecture, best first (see confirmation.summary)
    sentence: str
    metric: str
    tokens: int


def _space_of_run(paths: RunPaths) -> SearchSpace:
    """The run's space, read from the file the search started with when it is still there
    unchanged, so that relative task paths (corpus, train, val) resolve as they did for the
    search; else the run folder's copy."""
    original = paths.read_info().get("space_file")
    if original and Path(original).is_file() and \
            Path(original).read_text() == paths.space.read_text():
        return SearchSpace.from_yaml(original)
    return SearchSpace.from_yaml(paths.space)


def run_confirm_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """Tune's trainable for one (architecture, seed) job."""
    run_trial(config["job"], setup)


def confirm_dirname(trial: Any) -> str:
    job = trial.config["job"]
    return f"{ArchSpec.from_json(job[ARCH]).key}-seed{job[TRAIN_SEED]}"


class ConfirmRecorder(Callback):
    """Appends every ended run to confirm.csv (pickled with the experiment: paths only)."""

    def __init__(self, run_dir: Path, labels: dict[str, tuple[str, int | None]], tokens: int):
        self.run_dir, self.labels, self.tokens = run_dir, labels, tokens

    def _record(self, trial: Any, status: str | None = None) -> None:
        job, result = trial.config["job"], trial.last_result or {}
        key = ArchSpec.from_json(job[ARCH]).key
        label, search_trial = self.labels[key]
        append_confirm(self.run_dir, [{
            KEY: key, LABEL: label, SEARCH_TRIAL: search_trial, SEED: job[TRAIN_SEED],
            CONFIRM_TOKENS: self.tokens, STATUS: status or result.get("status", "error"),
            **{m: result.get(m) for m in metrics.QUALITY},
            TOKENS_TRAINED: result.get("tokens_trained"), "data_digest": result.get(
                "data_digest"),
            WALL_SECONDS: result.get("time_total_s"), NODE_ID: result.get("node_id"),
            **{name: result.get(name) for name in TRAINING}, SPEC: job[ARCH]}])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._record(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._record(trial, "error")


def run_confirm(run_dir: str | Path, options: ConfirmOptions = ConfirmOptions(),
                log: Callable[[str], None] | None = None) -> ConfirmOutcome:
    """Re-train the winners and presets of the run in ``run_dir`` (Ray must be initialised,
    or a local one is started) and summarise them."""
    if options.device is not None and not re.fullmatch(r"auto|cpu|cuda|cuda:\d+|mps",
                                                         options.device):
        raise ValueError(f"--device: expected auto, cpu, cuda, cuda:N or mps, got "
                         f"{options.device!r}")
    if options.precision not in (None, "fp32", "bf16", "fp16"):
        raise ValueError(f"--precision: expected fp32, bf16 or fp16, got {options.precision!r}")
    paths = RunPaths(Path(run_dir))
    space = _space_of_run(paths)
    config = space.config
    metric, mode = objective_of(space)
    # twice the search's own budget, with its --tokens override
    searched = paths.read_info().get("overrides", {}).get("tokens") or config.budget.tokens
    tokens = options.tokens or 2 * searched
    chosen = candidates(paths.root, options.top, list(options.presets) if options.presets
                        else None)
    seeds = confirm_seeds(space, options.seeds)
    done = load_confirm(paths.root)
    finished = {(k, int(s)) for k, s, t, st in zip(done[KEY], done[SEED], done[CONFIRM_TOKENS],
                                                   done[STATUS]) if t == tokens and st == "ok"}
    jobs = [{ARCH: c.spec.to_json(), TRAIN_SEED: s, NUMBER: i}
            for i, (c, s) in enumerate((c, s) for c in chosen for s in seeds)
            if (c.spec.key, s) not in finished]
    if log is not None:
        log(f"confirm {len(chosen)} architectures x {len(seeds)} seeds {seeds} at "
            f"{tokens:,} tokens: {len(jobs)} runs to train, "
            f"{len(chosen) * len(seeds) - len(jobs)} already in confirm.csv")
    if jobs:
        setup = TrialSetup.from_space(space, Budget(
            tokens=tokens, eval_at=(tokens,), batch_size=config.budget.batch_size,
            lr=config.budget.lr, schedule=config.budget.schedule))
        setup = dataclasses.replace(setup, decode=None)  # re-measures quality only, no speed
        if (options.device or "").startswith("cuda") and config.search.gpus_per_trial == 0:
            raise ValueError(f"--device {options.device} needs search.gpus_per_trial above 0 in "
                             f"{paths.space}, so that Ray reserves a GPU for each run")
        if options.device is not None or options.precision is not None:
            setup = dataclasses.replace(setup, device=options.device or setup.device,
                                        precision=options.precision or setup.precision)
        started = connect(options.address)
        try:
            check_resources(config.search.cpus_per_trial, config.search.gpus_per_trial,
                            paths.space)
            trainable = tune.with_resources(
                tune.with_parameters(run_confirm_trial, setup=setup),
                {"cpu": config.search.cpus_per_trial, "gpu": config.search.gpus_per_trial})
            labels = {c.spec.key: (c.label, c.search_trial) for c in chosen}
            tuner = tune.Tuner(
                trainable, param_space={"job": tune.grid_search(jobs)},
                tune_config=tune.TuneConfig(max_concurrent_trials=config.search.concurrency,
                                            reuse_actors=True,
                                            trial_dirname_creator=confirm_dirname,
                                            trial_name_creator=confirm_dirname),
                run_config=tune.RunConfig(
                    name=time.strftime("%Y%m%d-%H%M%S"),
                    storage_path=str((paths.root / "confirm").resolve()), verbose=0,
                    failure_config=tune.FailureConfig(max_failures=options.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    callbacks=[ConfirmRecorder(paths.root, labels, tokens)]))
            with quiet_tune(), node_loss_is_no_failure([]):  # a lost node: retried
                tuner.fit()
        finally:
            if started:
                import ray

                ray.shutdown()
    table = load_confirm(paths.root)
    keys = {c.spec.key: c.label for c in chosen}
    table = table[(table[CONFIRM_TOKENS] == tokens) & table[KEY].isin(keys) &
                  table[SEED].isin(seeds)].drop_duplicates([KEY, SEED], keep="last")
    result = summary(table, keys, metric, mode)
    unit = metrics.unit_of(metric, config.task.name)
    return ConfirmOutcome(table, result, sentence(result, metric, mode, unit), metric, tokens)


def options_from_space(space: SearchSpace) -> ConfirmOptions | None:
    """The space's ``confirm:`` block as options (None without one)."""
    block = space.config.confirm
    if block is None:
        return None
    return dataclasses.replace(ConfirmOptions(), top=block.top, seeds=block.seeds,
                               tokens=block.tokens, presets=tuple(block.presets)
                               if block.presets is not None else None)
