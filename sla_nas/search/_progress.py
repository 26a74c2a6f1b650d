"""What the user sees while a search runs, and the trials table kept up to date on disk.

A Ray Tune callback: after every ended trial it rewrites ``trials.csv`` / ``trials.parquet``
from the study (so nothing finished is lost if the driver dies) and prints one line; on a
terminal a status line shows trials done / running / pruned / failed, the best architecture
so far, the time elapsed and the time left (rich's progress columns: the time left is rich's
estimate from the rate of trials completed since this driver started, so a resumed search does
not count the trials its first driver trained as fast ones). Tune pickles callbacks with the
experiment and restores them on ``--resume``: the console and the study are reopened lazily.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import optuna
from ray.tune import Callback
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sla_nas.results import (
    ERROR_ATTR,
    KEY,
    REUSED_FROM,
    STATUS,
    TRAINED_STATUSES,
    TRIAL,
    RunPaths,
    trials_frame,
    write_tables,
)

from ._searcher import STORAGES
from ._trainable import NUMBER

__all__ = ["SearchProgress"]

REFRESH_SECONDS = 1.0
# rich estimates the time left from the completions within this window: the whole search, as
# trials take minutes each and a 30 s window (rich's default) would rarely hold two of them
SPEED_WINDOW_SECONDS = 7 * 24 * 3600.0


def _last_error(path: str | None) -> str:
    """The exception line of the last failure in a Tune error file."""
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    failure = text.rsplit("Failure #", 1)[-1]
    lines = [line.strip() for line in failure.splitlines()[1:] if line.strip()]
    return lines[-1][:500] if lines else "the trial raised an exception (no error file)"


def _status_bar(console: Console) -> Progress:
    """``3/8 trained · 2 running · 1 pruned ━━━━━━  │ best <key> val_loss 1.2345  │ 0:01:12
    elapsed, 0:02:30 left``: the counts and the best come from the trials table."""
    columns = (MofNCompleteColumn(), TextColumn("trained{task.fields[counts]}"),
               BarColumn(bar_width=20), TextColumn("{task.fields[best]}│"), TimeElapsedColumn(),
               TextColumn("elapsed,"), TimeRemainingColumn(), TextColumn("left"))
    return Progress(*columns, console=console, refresh_per_second=2, transient=True,
                    speed_estimate_period=SPEED_WINDOW_SECONDS)


class SearchProgress(Callback):
    """Keeps the tables current and shows progress (``quiet``: the tables only)."""

    def __init__(self, paths: RunPaths, study_name: str, n_trials: int,
                 objectives: list[tuple[str, str]], quiet: bool):
        self.paths, self.study_name = paths, study_name
        self.n_trials, self.objectives = n_trials, objectives
        self.quiet = quiet
        self._transient()

    def _transient(self) -> None:
        self._console: Console | None = None
        self._bar: Progress | None = None  # only on a terminal
        self._study: optuna.Study | None = None
        self._frame = None
        self._printed: set[int] = set()
        self._last_refresh = 0.0
        self._running = 0

    def __getstate__(self) -> dict[str, Any]:
        keep = ("paths", "study_name", "n_trials", "objectives", "quiet")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._transient()

    # ------------------------------------------------------------------ data
    def refresh_table(self) -> None:
        if self._study is None:
            self._study = optuna.load_study(study_name=self.study_name,
                                            storage=STORAGES[self.study_name])
        self._frame = trials_frame(self._study)
        write_tables(self._frame, self.paths)

    def _status(self) -> dict[str, Any]:
        """The status bar's fields: trials trained (the bar's progress), the other counts, the
        best architecture so far."""
        frame = self._standalone()
        counts = frame[STATUS].value_counts().to_dict() if frame is not None else {}
        trained = sum(counts.get(s, 0) for s in TRAINED_STATUSES)
        parts = [f"{self._running} running"]
        for status in ("pruned", "diverged", "error", "infeasible", "duplicate"):
            if counts.get(status):
                parts.append(f"{counts[status]} {'failed' if status == 'error' else status}")
        best = self._best()
        shown = "" if best is None else \
            f"best {best[KEY]} {self.objectives[0][0]} {best[self.objectives[0][0]]:.4f}  "
        return {"completed": trained, "counts": "".join(f" · {p}" for p in parts),
                "best": shown}

    def _standalone(self) -> Any:
        """The table without a one-shot search's supernet scores (no trials of this bar)."""
        from ._one_shot import standalone_rows

        return None if self._frame is None else standalone_rows(self._frame)

    def _best(self) -> Any:
        frame = self._standalone()
        if frame is None or frame.empty:
            return None
        metric, mode = self.objectives[0]
        ok = frame[(frame[STATUS] == "ok") & frame[metric].notna()]
        if ok.empty:
            return None
        return ok.loc[ok[metric].idxmin() if mode == "min" else ok[metric].idxmax()]

    def _line(self, row: Any) -> str:
        metric = self.objectives[0][0]
        status = row[STATUS]
        value = row.get(metric)
        shown = f"{metric} {value:.4f}" if isinstance(value, float) and math.isfinite(value) \
            else ""
        extra = {"duplicate": f"same as trial {row.get(REUSED_FROM)}",
                 "infeasible": str(row.get("message") or ""),
                 "pruned": str(row.get("message") or ""),
                 "error": str(row.get("message") or ""),
                 "diverged": str(row.get("message") or "")}.get(status, "")
        return f"  trial {row[TRIAL]:>3}  {status:<10} {row[KEY]}  {shown}  {extra}".rstrip()

    # ------------------------------------------------------------------ display
    def _print_new(self) -> None:
        if self.quiet or self._frame is None:
            return
        console = self._get_console()
        for _, row in self._frame.iterrows():
            if row[STATUS] in ("running", "waiting", "queued") or row[TRIAL] in self._printed:
                continue
            self._printed.add(row[TRIAL])
            console.print(self._line(row), highlight=False, soft_wrap=True)

    def _get_console(self) -> Console:
        if self._console is None:
            self._console = Console(stderr=True)
            if self._console.is_terminal:
                self._bar = _status_bar(self._console)
                self._bar.add_task("search", total=self.n_trials, counts="", best="")
                self._bar.start()
        return self._console

    def _show(self) -> None:
        if self.quiet:
            return
        self._get_console()
        if self._bar is not None:
            self._bar.update(self._bar.task_ids[0], **self._status())

    # ------------------------------------------------------------------ Tune hooks
    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._running = sum(1 for t in trials if t.status == "RUNNING")
        now = time.monotonic()
        if now - self._last_refresh >= REFRESH_SECONDS * (5 if self._frame is not None else 1):
            self._last_refresh = now
            self.refresh_table()
            self._print_new()
        self._show()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.refresh_table()
        self._print_new()
        self._show()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Record why the trial failed (Tune wrote it to the trial's error file; the searcher,
        told first, cannot see it), then as for any ended trial."""
        self.refresh_table()  # opens the study
        number = trial.config[NUMBER]
        told = self._study.get_trials(deepcopy=False)[number].user_attrs.get(STATUS)
        if told == "error":  # not a finished trial failing to restart after a driver restart
            message = _last_error(trial.error_file)
            self._study.set_user_attr(f"{ERROR_ATTR}{number}", message)
        self.on_trial_complete(iteration, trials, trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.refresh_table()
        self._print_new()
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
