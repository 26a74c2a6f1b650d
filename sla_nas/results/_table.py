"""The trials table: one row per trial, column names as constants.

The Optuna study is the record: every trial carries its architecture, status, metrics, costs
and learning curve as user attributes, and `trials_frame` turns a study into the table that
``trials.csv`` / ``trials.parquet`` hold. Those files are rewritten after every finished trial,
so `load_results` works on a running search too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from sla_nas.arch import metrics

from ._run_folder import RunPaths

__all__ = ["trials_frame", "ERROR_ATTR", "write_tables", "load_results", "TRIAL", "TUNE_ID",
           "KEY", "STATUS", "STATE",
           "MESSAGE", "REUSED_FROM", "SEED", "SEED_PRESET", "TOKENS", "TOKENS_TRAINED",
           "WALL_SECONDS", "NODE_ID", "DEVICE", "PRECISION", "COMPILE", "COMPILE_SECONDS",
           "TRAINING", "SPEC", "CHECKPOINT", "HISTORY", "CURVE", "STARTED",
           "FINISHED",
           "PARAM_PREFIX", "TRAINED_METRICS", "STATUSES", "TRAINED_STATUSES", "N_SEEDS",
           "COSTS"]

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
DEVICE = "device"  # the device it trained on, as resolved there: "cpu", "cuda:0", ...
PRECISION = "precision"  # fp32 | bf16 | fp16 (autocast; fp32 master weights)
COMPILE = "compile"  # trained with torch.compile
COMPILE_SECONDS = "compile_seconds"  # time spent compiling, apart from tokens_per_s
TRAINING = (DEVICE, PRECISION, COMPILE, COMPILE_SECONDS)  # how it trained: train_proxy's keys
SPEC = "spec_json"
CHECKPOINT = "checkpoint"  # the trial's last Tune checkpoint (model.pt inside), run-relative
HISTORY = "history_json"  # honest evaluations: [{tokens, val_loss, ...}, ...]
CURVE = "curve_json"  # running training loss: [[tokens, loss], ...]
STARTED, FINISHED = "started", "finished"
N_SEEDS = "n_seeds"  # ranked(): training seeds an architecture's mean is over
PARAM_PREFIX = "param:"  # one column per searched decision, e.g. "param:L3.g1.kv_src"
TRAINED_METRICS = metrics.MEASURED  # one column each (`sla_nas.arch.metrics` says what they are)
COSTS = metrics.ANALYTIC  # one column each: `sla_nas.arch.estimate` of the trial's spec

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
                     **{name: a.get(name) for name in TRAINING},
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
    for metric in (*TRAINED_METRICS, *COSTS, TOKENS, TOKENS_TRAINED, WALL_SECONDS,
                   COMPILE_SECONDS):
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


