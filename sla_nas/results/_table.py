"""The trials table: one row per trial, column names as constants.

The Optuna study is the record: every trial carries its architecture, status, metrics, costs
and learning curve as user attributes, and `trials_frame` turns a study into the table that
``trials.csv`` / ``trials.parquet`` hold. Those files are rewritten after every finished trial,
so `load_results` works on a running search too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from sla_nas.arch import atomic_write, error_line, metrics, regular_file

from ._run_folder import RunPaths, valid_key

__all__ = ["trials_frame", "ERROR_ATTR", "write_tables", "load_results", "TRIAL", "TUNE_ID",
           "KEY", "STATUS", "STATE",
           "MESSAGE", "REUSED_FROM", "SEED", "SEED_PRESET", "TOKENS", "TOKENS_TRAINED",
           "WALL_SECONDS", "NODE_ID", "NODES", "DEVICE", "PRECISION", "COMPILE", "COMPILE_SECONDS",
           "TRAINING", "SPEC", "CHECKPOINT", "HISTORY", "CURVE", "STARTED",
           "FINISHED", "FIDELITY",
           "PARAM_PREFIX", "TRAINED_METRICS", "STATUSES", "TRAINED_STATUSES", "N_SEEDS",
           "COSTS", "check_trials", "check_columns", "check_numbers", "read_table",
           "source_of", "MAX_TABLE_BYTES"]

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
NODES = "nodes"  # the Ray node of every attempt, in order, space-separated (a lost node
# or a retried failure makes several)
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
FIDELITY = "fidelity"  # how its metrics were measured: "standalone" (trained on its own)
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
            SEED: a.get(SEED), SEED_PRESET: a.get(SEED_PRESET), FIDELITY: a.get(FIDELITY)}
        for metric in (*TRAINED_METRICS, *COSTS):
            row[metric] = a.get(metric)
        row.update({TOKENS: a.get(TOKENS), TOKENS_TRAINED: a.get(TOKENS_TRAINED),
                     WALL_SECONDS: a.get(WALL_SECONDS), NODE_ID: a.get(NODE_ID),
                     NODES: " ".join(a.get(NODES) or ()) or None,
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


def write_tables(frame: pd.DataFrame, paths: RunPaths) -> None:
    """``trials.csv`` and ``trials.parquet``, each replaced atomically (`atomic_write`: readers
    never see half a file, and a planted symlink is never written through)."""
    atomic_write(paths.trials_csv, lambda f: frame.to_csv(f, index=False))
    atomic_write(paths.trials_parquet, lambda f: frame.to_parquet(f, index=False))


MAX_TABLE_BYTES = 512 << 20  # ~50,000 trials with their curves; a bound on what is read


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """The trials table of a run folder (finished or still running), checked cell by cell
    (`check_trials`): a damaged or edited table is a ValueError naming the file, the column
    and the row. ``frame.attrs["source"]`` is the file it was read from."""
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise ValueError(f"{paths.root}: no such run folder" if not paths.root.exists() else
                         f"{paths.root}: a file; expected a run folder (results/<name>)")
    for path, reader in ((paths.trials_parquet, pd.read_parquet), (paths.trials_csv,
                                                                    pd.read_csv)):
        if path.exists() or path.is_symlink():
            return check_trials(read_table(path, reader, "trials table"), path)
    raise ValueError(f"{paths.root}: no trials.parquet or trials.csv yet (has the search "
                     f"finished its first trial?)")


def read_table(path: Path, reader: Callable[[Any], pd.DataFrame], what: str) -> pd.DataFrame:
    """``reader(path)`` of a regular file of at most `MAX_TABLE_BYTES`; any parse error is a
    ValueError naming the file (never a parser's traceback)."""
    regular_file(path, MAX_TABLE_BYTES, what)
    try:
        frame = reader(path)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 - a third-party parser: any failure is the file's
        first = error_line(err)
        raise ValueError(f"{path}: cannot be read as a {what} sla-nas wrote: {first}") from None
    frame.attrs["source"] = str(path)
    return frame


def source_of(frame: pd.DataFrame, default: object = "the trials table") -> str:
    """The file a table was read from (`load_results`), for messages."""
    return str(frame.attrs.get("source", default))


def _where(path: Path, frame: pd.DataFrame, index: Any, column: str) -> str:
    row = f"row {list(frame.index).index(index) + 1}" if index in frame.index else "a row"
    trial = frame.at[index, TRIAL] if TRIAL in frame.columns else None
    return f"{path}: column {column}, {row}" + (
        f" (trial {trial})" if isinstance(trial, int | float) and trial == trial else "")


def check_columns(frame: pd.DataFrame, columns: Any, path: object) -> None:
    """Refuse a table that lacks one of ``columns``, naming the file and the column."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: no column {missing[0]!r} (expected the columns sla-nas "
                         f"writes; missing: {', '.join(map(str, missing[:6]))})")


def check_numbers(frame: pd.DataFrame, columns: Any, path: Path,
                  integer: tuple[str, ...] = ()) -> None:
    """Turn ``columns`` (those present) into numbers in place; a cell that holds something
    else (not empty, not a number) is a ValueError naming file, column and row."""
    for column in columns:
        if column not in frame.columns or (pd.api.types.is_numeric_dtype(frame[column]) and
                                           not pd.api.types.is_bool_dtype(frame[column]) and
                                           column not in integer):
            continue  # already numbers (as written): left as they are
        try:
            values = pd.to_numeric(frame[column], errors="coerce")
        except (TypeError, ValueError):  # cells that are lists or dicts (a parquet file)
            values = pd.Series([math.nan] * len(frame), index=frame.index)
        bad = values.isna() & frame[column].notna()
        if column in integer:
            bad |= values.notna() & (values != values.round())
        if bad.any():
            index = bad.idxmax()
            kind = "a whole number" if column in integer else "a number"
            raise ValueError(f"{_where(path, frame, index, column)}: expected {kind} or "
                             f"nothing, got {frame.at[index, column]!r:.60}")
        frame[column] = values.astype("Int64") if column in integer else values.astype(float)


def _json_cells(frame: pd.DataFrame, column: str, path: Path, kind: type) -> None:
    if column not in frame.columns:
        return
    for index, cell in frame[column].items():
        if cell is None or (isinstance(cell, float) and math.isnan(cell)) or cell is pd.NA:
            continue
        try:
            value = json.loads(cell) if isinstance(cell, str) else None
        except (ValueError, RecursionError) as err:
            raise ValueError(f"{_where(path, frame, index, column)}: expected JSON "
                             f"({kind.__name__}), got {cell!r:.60} ({err})") from None
        if not isinstance(value, kind):
            raise ValueError(f"{_where(path, frame, index, column)}: expected a JSON "
                             f"{'object' if kind is dict else 'array'}, got {cell!r:.60}")


def check_trials(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The trials table as `trials_frame` wrote it, or a ValueError naming the file, the
    column and the row: the columns every trial has, numbers where numbers belong, a valid
    architecture key, JSON where JSON belongs (spec, history, curve)."""
    check_columns(frame, (TRIAL, KEY, STATUS), path)  # a just-proposed trial has no more
    check_numbers(frame, (TRIAL, SEED, REUSED_FROM), path, integer=(TRIAL, SEED, REUSED_FROM))
    if frame[TRIAL].isna().any():
        index = frame[TRIAL].isna().idxmax()
        raise ValueError(f"{_where(path, frame, index, TRIAL)}: expected the trial's number, "
                         f"found nothing")
    frame[TRIAL] = frame[TRIAL].astype("int64")
    check_numbers(frame, (*TRAINED_METRICS, *COSTS, TOKENS, TOKENS_TRAINED, WALL_SECONDS,
                          COMPILE_SECONDS), path)
    for index, key in frame[KEY].items():
        if key is None or key is pd.NA or (isinstance(key, float) and math.isnan(key)):
            continue  # a trial not proposed yet has no architecture
        try:
            valid_key(key)
        except ValueError:
            raise ValueError(f"{_where(path, frame, index, KEY)}: expected an architecture "
                             f"key (12 hex digits), got {key!r:.60}") from None
    for index, status in frame[STATUS].items():
        if not isinstance(status, str):
            raise ValueError(f"{_where(path, frame, index, STATUS)}: expected a status "
                             f"({', '.join(STATUSES)}), got {status!r:.60}")
    _json_cells(frame, SPEC, path, dict)
    _json_cells(frame, HISTORY, path, list)
    _json_cells(frame, CURVE, path, list)
    return frame


