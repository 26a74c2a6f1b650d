"""The live report: ``search: {report_every: N}`` rewrites ``report.html`` every N finished
trials, so a long search can be watched in a browser without running a command.

A Ray Tune callback placed after `SearchProgress`, which has just rewritten the trials table
when a trial ends: the page is built from that table (`sla_nas.report.build_report` reads only
the run folder) with a line saying how far the search has come. A build takes about a second
on a small run and grows with the trials, and Tune's driver loop calls callbacks between its
scheduling steps, so the page is built on a background thread: trials are never held up by it.
Requests that arrive while a page is being built are merged into one more build. A failure to
build is one line on stderr and the search goes on. When the search ends the page is written
once more without the line (`sla-nas search` then writes its final report, as without
``report_every``). Tune pickles callbacks with the experiment: the thread is not kept.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from ray.tune import Callback

from sla_nas.report import build_report
from sla_nas.results import RunPaths

__all__ = ["LiveReport"]


class LiveReport(Callback):
    """Rewrites ``paths.report`` every ``every`` ended trials while the search runs."""

    def __init__(self, paths: RunPaths, every: int, n_trials: int, quiet: bool):
        if every < 1:
            raise ValueError(f"report_every must be >= 1 for a live report, got {every}")
        self.paths, self.every, self.n_trials, self.quiet = paths, every, n_trials, quiet
        self._transient()

    def _transient(self) -> None:
        self._ended = 0  # trials ended since this driver started
        self._lock = threading.Lock()
        self._wanted = False  # a build asked for and not yet started
        self._thread: threading.Thread | None = None
        self._told: set[str] = set()  # failures already reported: each one line, once
        self.built = 0  # pages written while the search ran

    def __getstate__(self) -> dict[str, Any]:
        keep = ("paths", "every", "n_trials", "quiet")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._transient()

    # ------------------------------------------------------------------ building
    def _build(self, in_progress: int | None) -> None:
        try:
            build_report(self.paths.root, in_progress=in_progress)
        except Exception as err:  # the search matters more than its page
            line = f"live report not written: {err}"  # the error names the file
            if line not in self._told and not self.quiet:
                print(f"  {line}", file=sys.stderr, flush=True)
            self._told.add(line)
            return
        if in_progress is not None:
            self.built += 1

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._wanted:
                    self._thread = None
                    return
                self._wanted = False
            self._build(self.n_trials)

    def request(self) -> None:
        """Build the page soon, on the background thread (started if none is running)."""
        with self._lock:
            self._wanted = True
            if self._thread is not None:
                return  # it builds once more before it stops
            self._thread = threading.Thread(target=self._work, name="sla-nas-live-report",
                                            daemon=True)
            self._thread.start()

    def wait(self) -> None:
        """Until no build is running or asked for."""
        while True:
            with self._lock:
                thread = self._thread
            if thread is None:
                return
            thread.join()

    # ------------------------------------------------------------------ Tune hooks
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended += 1
        if self._ended % self.every == 0:
            self.request()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.on_trial_complete(iteration, trials, trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """No page built mid-search may land after this one, which has no progress line."""
        self.wait()
        self._build(None)
