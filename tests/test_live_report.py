"""The live report (``search: {report_every: N}``): the key in the space file, the page of a
run folder whose search is still running, the callback that rewrites it (its background
build, its failures, its pickling), and a real search that rewrites report.html as it goes."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
from test_report import run_folder, synthetic_frame

from sla_nas import results as R
from sla_nas.report import build_report
from sla_nas.results import RunPaths, load_results
from sla_nas.search import _live
from sla_nas.search._live import LiveReport
from sla_nas.space import SearchSpace, SpaceError

from search_helpers import write_space

LIVE = re.compile(r"<p class='live'>Search in progress: (\d+) of (\d+) trials trained\.")


def live_line(page: str) -> tuple[int, int] | None:
    found = LIVE.findall(page)
    assert len(found) <= 1
    return (int(found[0][0]), int(found[0][1])) if found else None


# ---------------------------------------------------------------------- the space file
@pytest.mark.parametrize("value", [-1, 2.5, True, "3", [1], 10**7])
def test_report_every_must_be_a_count_of_trials(tmp_path, value):
    path = write_space(tmp_path, "bad", search={"report_every": value})
    with pytest.raises(SpaceError) as err:
        SearchSpace.from_yaml(path)
    message = str(err.value)
    assert message.startswith(f"{path}:")
    assert "search.report_every: expected a number of finished trials from 1 to 1,000,000 " \
           "(0 or absent: no live report), got " in message


@pytest.mark.parametrize(("value", "read"), [(None, 0), (0, 0), (1, 1), (25, 25)])
def test_report_every_absent_or_zero_is_off(tmp_path, value, read):
    search = {} if value is None else {"report_every": value}
    assert SearchSpace.from_yaml(write_space(tmp_path, "ok", search=search)
                                 ).config.search.report_every == read
    path = tmp_path / "empty.yaml"  # `report_every:` with no value reads as null: off
    path.write_text("search:\n  report_every:\n")
    assert SearchSpace.from_yaml(path).config.search.report_every == 0


# ---------------------------------------------------------------------- the page mid-search
def partial_run(tmp_path: Path) -> Path:
    """The hand-made run as a search leaves it mid-way: trials 7 and 8 still running."""
    frame = synthetic_frame()
    running = frame[R.TRIAL] >= 7
    frame.loc[running, R.STATUS] = "running"
    frame.loc[running, [R.MESSAGE, "val_loss", "train_loss", R.TOKENS, R.WALL_SECONDS,
                        R.HISTORY, R.CURVE]] = None
    return run_folder(tmp_path, frame=frame)


def test_a_page_built_mid_search_says_how_far_it_has_come(tmp_path):
    run = partial_run(tmp_path)
    assert not (run / "winners.csv").exists() and not (run / "confirm.csv").exists()
    page = build_report(run, in_progress=12).read_text()
    # ok 0, 1, 4, 6 and pruned 2 have trained; 3 infeasible, 5 duplicate; 7, 8 running
    assert live_line(page) == (5, 12)
    assert "<span style='background:#1f77b4'>running 2</span>" in page
    assert "<span>9 trials</span>" in page and "Best so far" in page
    assert live_line(build_report(run).read_text()) is None  # as `sla-nas report` writes it
    with pytest.raises(ValueError, match="in_progress"):
        build_report(run, in_progress=0)


# ---------------------------------------------------------------------- the callback
def test_the_callback_rewrites_the_page_every_n_ended_trials(tmp_path):
    run = partial_run(tmp_path)
    live = LiveReport(RunPaths(run), every=2, n_trials=12, quiet=False)
    live.on_trial_complete(0, [], None)
    live.wait()
    assert live.built == 0 and not (run / "report.html").exists()
    live.on_trial_error(0, [], None)  # a failed trial has ended too
    live.wait()
    assert live.built == 1 and live_line((run / "report.html").read_text()) == (5, 12)
    for _ in range(4):  # two more builds asked for, perhaps merged into one
        live.on_trial_complete(0, [], None)
    live.wait()
    assert 2 <= live.built <= 3
    assert not list(run.glob(".*.tmp")) and not list(run.glob("*.tmp"))
    live.on_experiment_end([])  # the last page: the search has ended, no progress line
    assert live_line((run / "report.html").read_text()) is None


def test_a_page_that_cannot_be_built_is_one_line_and_the_search_goes_on(tmp_path, capsys):
    run = partial_run(tmp_path)
    (run / "report.html").mkdir()  # something in the way of the page
    live = LiveReport(RunPaths(run), every=1, n_trials=12, quiet=False)
    for _ in range(3):
        live.on_trial_complete(0, [], None)
        live.wait()
    live.on_experiment_end([])
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"  live report not written: {run / 'report.html'}: a folder, where "
                     f"sla-nas writes a file"]
    assert live.built == 0 and (run / "report.html").is_dir()
    quiet = LiveReport(RunPaths(run), every=1, n_trials=12, quiet=True)
    quiet.on_trial_complete(0, [], None)
    quiet.wait()
    assert capsys.readouterr().err == ""


def test_the_callback_pickles_without_its_thread(tmp_path):
    """Tune pickles callbacks with the experiment and restores them on --resume."""
    live = LiveReport(RunPaths(partial_run(tmp_path)), every=3, n_trials=12, quiet=True)
    live.on_trial_complete(0, [], None)
    back = pickle.loads(pickle.dumps(live))
    assert (back.paths, back.every, back.n_trials, back.quiet) == (live.paths, 3, 12, True)
    assert back.built == 0 and back._ended == 0 and back._thread is None
    with pytest.raises(ValueError, match="report_every"):
        LiveReport(live.paths, every=0, n_trials=12, quiet=True)


# ---------------------------------------------------------------------- a real search
@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_a_search_with_report_every_rewrites_the_page_as_it_goes(tmp_path, monkeypatch):
    from sla_nas.search import SearchOptions, run_search

    pages: list[tuple[int | None, tuple[int, int] | None, int]] = []

    def recording(run_dir, top=10, in_progress=None):
        path = build_report(run_dir, top=top, in_progress=in_progress)
        rows = len(load_results(run_dir))
        pages.append((in_progress, live_line(path.read_text()), rows))
        return path

    monkeypatch.setattr(_live, "build_report", recording)
    space = write_space(tmp_path, "live", search={"report_every": 1, "n_trials": 4})
    outcome = run_search(space, SearchOptions(results=tmp_path / "results", quiet=True))
    trained = int(outcome.frame[R.STATUS].isin(R.TRAINED_STATUSES).sum())
    assert trained == 4
    mid = [p for p in pages if p[0] is not None]
    assert mid and pages[-1][0] is None and len(pages) == len(mid) + 1
    for _, line, _rows in mid:  # each page says how many were trained when it was built
        assert line is not None and line[1] == 4 and 1 <= line[0] <= 4
    assert [line[0] for _, line, _ in mid] == sorted(line[0] for _, line, _ in mid)
    page = outcome.paths.report.read_text()  # the last: complete, no progress line
    assert live_line(page) is None and pages[-1][2] == len(outcome.frame)
    assert f"<span>{len(outcome.frame)} trials</span>" in page
