"""What a search run leaves behind, read without Ray: the run folder's layout, the trials table
(one row per trial, column names as constants) and the winners (best, or the Pareto set).

The Optuna study is the record: every trial carries its architecture, status, metrics, costs
and learning curve as user attributes, and `trials_frame` turns a study into the table that
``trials.csv`` / ``trials.parquet`` hold. Those files are rewritten after every finished trial,
so `load_results` works on a running search too.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._schema import COST_METRICS, METRICS, check_run_name
from .spec import ArchSpec

__all__ = ["RunPaths", "trials_frame", "ERROR_ATTR", "write_tables", "load_results", "ranked",
           "pareto_mask",
           "finished_ok", "valid_run_name", "TRIAL", "TUNE_ID", "KEY", "STATUS", "STATE",
           "MESSAGE", "REUSED_FROM", "SEED", "SEED_PRESET", "TOKENS", "TOKENS_TRAINED",
           "WALL_SECONDS", "NODE_ID", "SPEC", "CHECKPOINT", "HISTORY", "CURVE", "STARTED",
           "FINISHED",
           "PARAM_PREFIX", "TRAINED_METRICS", "STATUSES", "TRAINED_STATUSES",
           "winners", "verdict", "valid_key", "search_noise", "N_SEEDS"]

# ---------------------------------------------------------------------- columns
TRIAL = "trial"  # the Optuna trial number: 0, 1, 2, ... in the order trials were proposed
TUNE_ID = "tune_trial_id"
KEY = "arch_key"  # ArchSpec.key: equal keys are the same architecture
STATUS = "status"  # see STATUSES
STATE = "optuna_state"  # COMPLETE | PRUNED | FAIL | RUNNING | WAITING
MESSAGE = "message"
REUSED_FROM = "reused_from"  # duplicate: the trial whose result it reuses
SEED = "train_seed"  # data order and weight seed of the proxy training
SEED_PRESET = "seed_preset"  # the seed architecture's name, if the trial is one
TOKENS = "tokens"  # the complete-run length its last evaluation stands for
TOKENS_TRAINED = "tokens_trained"  # optimizer steps x batch tokens, cooldowns included
WALL_SECONDS = "wall_seconds"
NODE_ID = "node_id"  # the Ray node that ran it
SPEC = "spec_json"
CHECKPOINT = "checkpoint"  # the trial's last Tune checkpoint (model.pt inside), run-relative
HISTORY = "history_json"  # honest evaluations: [{tokens, val_loss, ...}, ...]
CURVE = "curve_json"  # running training loss: [[tokens, loss], ...]
STARTED, FINISHED = "started", "finished"
N_SEEDS = "n_seeds"  # ranked(): training seeds an architecture's mean is over
PARAM_PREFIX = "param:"  # one column per searched decision, e.g. "param:L3.g1.kv_src"
TRAINED_METRICS = ("val_loss", "val_acc", "train_loss", "tokens_per_s")
COSTS = (*COST_METRICS, "decode_kv_bytes_per_token")

TRAINED_STATUSES = ("ok", "pruned", "diverged", "error")  # trials Tune ran
STATUSES = {
    "ok": "trained to the full budget",
    "pruned": "stopped early by the scheduler (its last honest evaluation is kept)",
    "infeasible": "over a constraint: never trained",
    "duplicate": "an architecture already evaluated in this study: its result is reused",
    "diverged": "a non-finite loss ended the training",
    "error": "the trial raised an exception",
    "running": "being trained",
    "waiting": "a duplicate of a running trial, waiting for its result",
    "queued": "a seed or grid point waiting to be proposed",
    "abandoned": "proposed or queued, but never trained (the driver stopped, or the search "
                 "ended first)",
}

_KEY = re.compile(r"^[0-9a-f]{12}$")


def valid_run_name(name: str) -> str:
    """A run name becomes a folder and a study name: letters, digits, ``.``, ``_``, ``-``."""
    try:
        return check_run_name(name)
    except ValueError as err:
        raise ValueError(f"run name {name!r}: {err}") from None


def valid_key(key: Any) -> str:
    """An architecture key read from a file: exactly 12 hex digits (safe in a path)."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(f"{key!r} is not an architecture key (12 hex digits)")
    return key


@dataclass(frozen=True)
class RunPaths:
    """The files of one run folder ``results/<name>/`` (DESIGN.md section 5)."""

    root: Path

    @property
    def space(self) -> Path:
        return self.root / "space.yaml"  # the space file as run

    @property
    def run_info(self) -> Path:
        return self.root / "run.json"  # command-line overrides, versions, storage

    def read_info(self) -> dict[str, Any]:
        """``run.json`` as a dict ({} when the run has none)."""
        if not self.run_info.is_file():
            return {}
        info = json.loads(self.run_info.read_text())
        return info if isinstance(info, dict) else {}

    @property
    def study_db(self) -> Path:
        return self.root / "study.db"

    @property
    def tune(self) -> Path:
        return self.root / "tune"  # Ray Tune's experiment folder

    @property
    def trials_csv(self) -> Path:
        return self.root / "trials.csv"

    @property
    def trials_parquet(self) -> Path:
        return self.root / "trials.parquet"

    @property
    def best(self) -> Path:
        return self.root / "best.yaml"

    @property
    def pareto(self) -> Path:
        return self.root / "pareto"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def exported(self) -> Path:
        return self.root / "exported"

    @property
    def confirm_csv(self) -> Path:
        return self.root / "confirm.csv"

    def sqlite_url(self) -> str:
        return f"sqlite:///{self.study_db.resolve()}"


# ---------------------------------------------------------------------- the table
def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


ERROR_ATTR = "error:"  # study user attribute "error:<trial number>": why a trial failed


def trials_frame(study: Any) -> pd.DataFrame:
    """One row per trial of an Optuna study, columns as the constants above."""
    rows = []
    errors = {int(k.removeprefix(ERROR_ATTR)): v for k, v in study.user_attrs.items()
              if k.startswith(ERROR_ATTR)}
    for t in study.get_trials(deepcopy=False):
        a = dict(t.user_attrs)
        if t.number in errors:
            a[MESSAGE] = errors[t.number]
        row: dict[str, Any] = {
            TRIAL: t.number, TUNE_ID: a.get(TUNE_ID), KEY: a.get(KEY),
            STATUS: a.get(STATUS, {"RUNNING": "running", "WAITING": "queued"}.get(
                t.state.name, t.state.name.lower())),
            STATE: t.state.name, MESSAGE: a.get(MESSAGE), REUSED_FROM: a.get(REUSED_FROM),
            SEED: a.get(SEED), SEED_PRESET: a.get(SEED_PRESET)}
        for metric in (*TRAINED_METRICS, *COSTS):
            row[metric] = a.get(metric)
        row.update({TOKENS: a.get(TOKENS), TOKENS_TRAINED: a.get(TOKENS_TRAINED),
                     WALL_SECONDS: a.get(WALL_SECONDS), NODE_ID: a.get(NODE_ID),
                     CHECKPOINT: a.get("checkpoint"),
                     STARTED: t.datetime_start, FINISHED: t.datetime_complete,
                     SPEC: a.get("spec"), HISTORY: _json_or_none(a.get("history")),
                     CURVE: _json_or_none(a.get("curve"))})
        for name, value in t.params.items():
            row[PARAM_PREFIX + name] = str(value)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=[TRIAL, TUNE_ID, KEY, STATUS, STATE, MESSAGE])
    for metric in (*TRAINED_METRICS, *COSTS, TOKENS, TOKENS_TRAINED, WALL_SECONDS):
        if metric in frame:
            frame[metric] = pd.to_numeric(frame[metric], errors="coerce")
    for column in (REUSED_FROM, SEED):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame.sort_values(TRIAL).reset_index(drop=True)


def _replace(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)  # readers never see half a file


def write_tables(frame: pd.DataFrame, paths: RunPaths) -> None:
    """``trials.csv`` and ``trials.parquet``, each replaced atomically."""
    _replace(paths.trials_csv, lambda p: frame.to_csv(p, index=False))
    _replace(paths.trials_parquet, lambda p: frame.to_parquet(p, index=False))


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """The trials table of a run folder (finished or still running)."""
    paths = RunPaths(Path(run_dir))
    if paths.trials_parquet.exists():
        return pd.read_parquet(paths.trials_parquet)
    if paths.trials_csv.exists():
        return pd.read_csv(paths.trials_csv)
    if not paths.root.is_dir():
        raise ValueError(f"{paths.root}: no such run folder")
    raise ValueError(f"{paths.root}: no trials.parquet or trials.csv yet (has the search "
                     f"finished its first trial?)")


# ---------------------------------------------------------------------- winners
def finished_ok(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials trained to the full budget, one row per architecture (its first trial)."""
    ok = frame[frame[STATUS] == "ok"]
    return ok.drop_duplicates(subset=[KEY, SEED], keep="first")


def ranked(frame: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Fully trained architectures, best first by ``metric`` averaged over the training seeds
    each was trained with (``n_seeds``): one row per architecture, its first trial's row."""
    ok = finished_ok(frame).copy()
    ok[metric] = pd.to_numeric(ok[metric], errors="coerce").astype(float)
    ok = ok[np.isfinite(ok[metric])]
    first = ok.drop_duplicates(subset=[KEY], keep="first").copy()
    first[metric] = first[KEY].map(ok.groupby(KEY)[metric].mean())
    first[N_SEEDS] = first[KEY].map(ok.groupby(KEY)[SEED].nunique())
    return first.sort_values([metric, TRIAL], ascending=[mode == "min", True])


def pareto_mask(values: list[list[float]], modes: list[str]) -> list[bool]:
    """Which rows are not dominated (no other row is at least as good everywhere and better
    somewhere); rows with equal values are all kept."""
    signed = [[v if m == "min" else -v for v, m in zip(row, modes)] for row in values]
    out = []
    for i, a in enumerate(signed):
        dominated = any(all(b_j <= a_j for a_j, b_j in zip(a, b)) and
                        any(b_j < a_j for a_j, b_j in zip(a, b))
                        for j, b in enumerate(signed) if j != i)
        out.append(not dominated)
    return out


def winners(frame: pd.DataFrame, objectives: list[tuple[str, str]]) -> pd.DataFrame:
    """The best architecture (one objective) or the Pareto set (several), best first by the
    first objective."""
    metric, mode = objectives[0]
    ok = ranked(frame, metric, mode)
    if len(objectives) == 1 or ok.empty:
        return ok.head(1)
    mask = pareto_mask(ok[[m for m, _ in objectives]].values.tolist(), [m for _, m in objectives])
    return ok[mask]


def spec_of(row: pd.Series) -> ArchSpec:
    return ArchSpec.from_json(row[SPEC])


def metric_names() -> tuple[str, ...]:
    return METRICS


def search_noise(frame: pd.DataFrame, metric: str = "val_loss") -> dict[str, float]:
    """The search's own estimate of seed noise: the spread of the seed architectures that
    were trained with several training seeds (``search.seed_runs``); see `stats.seed_noise`."""
    from .stats import seed_noise

    ok = finished_ok(frame)
    ok = ok[ok[SEED_PRESET].notna() & pd.to_numeric(ok[metric], errors="coerce").notna()]
    return seed_noise(ok, KEY, SEED, metric)


def verdict(frame: pd.DataFrame, objectives: list[tuple[str, str]]) -> str:
    """One plain sentence: does the best architecture beat the vanilla seed, by how much, and
    how that compares with the seed noise the search measured."""
    metric, mode = objectives[0]
    ok = ranked(frame, metric, mode)
    if ok.empty:
        return "no trial finished its full budget, so there is no best architecture"
    best = ok.iloc[0]
    base = ok[ok[SEED_PRESET] == "vanilla"] if SEED_PRESET in ok else ok.iloc[0:0]
    if base.empty:
        return (f"the best architecture is {best[KEY]} ({metric} {best[metric]:.4f}); the "
                f"vanilla seed was not evaluated, so there is nothing to compare it with")
    base = base.iloc[0]
    if best[KEY] == base[KEY]:
        return (f"no architecture beat the vanilla seed: vanilla is the best "
                f"({metric} {base[metric]:.4f}) of {len(ok)} fully trained")
    gain = (base[metric] - best[metric]) * (1 if mode == "min" else -1)
    text = (f"the best architecture {best[KEY]} beats the vanilla seed by {gain:.4f} in "
            f"{metric} ({best[metric]:.4f} against {base[metric]:.4f})")
    noise = search_noise(frame, metric)
    sigma = noise["paired"] if np.isfinite(noise["paired"]) else noise["unpaired"]
    if not np.isfinite(sigma) or sigma <= 0:
        return text + (", one training seed each: a difference this size may be seed noise "
                       "until confirmed (sla-nas confirm)")
    kind = "paired " if np.isfinite(noise["paired"]) else ""
    ratio = gain / sigma
    runs = int(noise["n_runs"])
    if ratio < 2:
        judgement = "within that noise"
    else:
        judgement = (f"larger than that noise, an estimate that rests on {runs} seed runs; only "
                     f"fresh seeds tell whether it is real")
    return (text + f"; the {kind}seed noise measured in this search is {sigma:.4f}: the gain "
            f"is {ratio:.1f}x it, {judgement} (sla-nas confirm)")
