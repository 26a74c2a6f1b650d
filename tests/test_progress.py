"""The search's progress display (no Ray run): the status line on a terminal, plain trial lines
elsewhere (CI, a pipe), nothing with --quiet."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from rich.console import Console

from sla_nas.results import KEY, REUSED_FROM, STATUS, TRIAL, RunPaths
from sla_nas.search import _progress

FRAME = pd.DataFrame({
    TRIAL: [0, 1, 2, 3, 4, 5],
    KEY: ["aaaa", "bbbb", "cccc", "dddd", "aaaa", "eeee"],
    STATUS: ["ok", "ok", "pruned", "error", "duplicate", "running"],
    "val_loss": [2.5, 2.25, 3.0, float("nan"), 2.5, float("nan")],
    "message": ["", "", "stopped at the 3000-token rung", "boom", "", ""],
    REUSED_FROM: pd.array([None, None, None, None, 0, None], dtype="Int64"),  # as trials_frame
})


def progress_on(monkeypatch, tmp_path, terminal: bool, quiet: bool = False):
    """A SearchProgress whose console writes to a buffer (a terminal or not)."""
    out = io.StringIO()
    monkeypatch.setattr(_progress, "Console", lambda **_: Console(
        file=out, force_terminal=terminal, width=200, color_system=None))
    progress = _progress.SearchProgress(RunPaths(tmp_path / "run"), "study", 8,
                                        [("val_loss", "min")], quiet=quiet)
    progress._frame = FRAME
    progress._running = 1
    return progress, out


def status_line(progress) -> str:
    text = io.StringIO()
    Console(file=text, width=200, color_system=None).print(
        progress._bar.make_tasks_table(progress._bar.tasks))
    return text.getvalue()


def test_a_terminal_shows_counts_best_and_times(monkeypatch, tmp_path):
    progress, _ = progress_on(monkeypatch, tmp_path, terminal=True)
    try:
        progress._show()
        line = status_line(progress)
    finally:
        progress.close()
    # trained: ok, ok, pruned, error (not the duplicate, not the running one)
    assert "4/8 trained · 1 running · 1 pruned · 1 failed · 1 duplicate" in line
    assert "best bbbb val_loss 2.2500" in line
    assert "0:00:00 elapsed, -:--:-- left" in line  # no rate yet: one sample


def test_the_time_left_follows_the_rate_of_completions(monkeypatch, tmp_path):
    clock = [100.0]
    progress, _ = progress_on(monkeypatch, tmp_path, terminal=True)
    progress._get_console()  # opens the status line
    try:
        bar = progress._bar
        bar.get_time = lambda: clock[0]
        job = bar.task_ids[0]
        bar.update(job, completed=1)  # the first completion: where the rate is measured from
        clock[0] += 60.0
        bar.update(job, completed=3)  # two more in a minute: 5 left take 2.5 minutes
        assert bar.tasks[0].time_remaining == pytest.approx(150.0)
        assert "0:02:30 left" in status_line(progress)
    finally:
        progress.close()


def test_without_a_terminal_each_ended_trial_is_one_line(monkeypatch, tmp_path):
    progress, out = progress_on(monkeypatch, tmp_path, terminal=False)
    progress._print_new()
    progress._show()
    assert progress._bar is None  # no status line in CI logs
    lines = out.getvalue().splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["trial", "0", "ok"], ["trial", "1", "ok"], ["trial", "2", "pruned"],
        ["trial", "3", "error"], ["trial", "4", "duplicate"]]
    assert lines[2].endswith("stopped at the 3000-token rung")
    assert lines[3].endswith("boom") and lines[4].endswith("same as trial 0")


def test_quiet_prints_nothing(monkeypatch, tmp_path):
    progress, out = progress_on(monkeypatch, tmp_path, terminal=True, quiet=True)
    progress._print_new()
    progress._show()
    progress.close()
    assert out.getvalue() == "" and progress._bar is None
