"""The search as a user runs it, each in fresh processes: the command line on the embedded
default, a cluster of two raylets on localhost with ``--address``, a driver killed with SIGKILL
and ``--resume``d, and a study in a real PostgreSQL server started for the test.

One machine cannot show unshared storage or network faults between nodes; what it shows is
placement across raylets, driver restarts and a real database server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from sla_nas import ArchSpec
from sla_nas.results import (
    KEY,
    NODE_ID,
    STATUS,
    TRAINED_STATUSES,
    TRIAL,
    load_results,
)

from conftest import REPO, clean_env, run_cli
from search_helpers import write_space

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).with_name("ray"))
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_command_line_runs_embedded_and_writes_no_token(tmp_path):
    space = write_space(tmp_path, "cli", search={"n_trials": 3})
    done = run_cli([str(REPO / "run_search.py"), str(space), "--results",
                    str(tmp_path / "results")], cwd=tmp_path, home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "FIFO: every trial trains to the full budget" in done.stderr
    assert done.stderr.count(" ok ") >= 3  # a line per finished trial
    assert "vanilla" in done.stdout and "results: " in done.stdout
    assert "Configuration for experiment" not in done.stdout + done.stderr  # Tune stays quiet
    assert not (tmp_path / ".ray").exists()  # the embedded Ray's token lived in the env
    run_dir = tmp_path / "results" / "cli"
    frame = load_results(run_dir)
    assert (frame[STATUS] == "ok").sum() == 3
    # the main job ends with the winner exported and the report written
    best = ArchSpec.load(run_dir / "best.yaml")
    assert [p.name for p in (run_dir / "exported").iterdir()] == [f"rank-1-{best.key}"]
    assert (run_dir / "report.html").stat().st_size > 1_000_000  # plotly.js inlined
    assert f"exported/ (rank-1-{best.key})" in done.stdout


def test_a_cluster_of_two_raylets_runs_trials_on_both(tmp_path):
    port = free_port()
    env = clean_env(tmp_path)
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"]
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
                        *common], env=env, check=True, capture_output=True, timeout=120)
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", *common], env=env,
                       check=True, capture_output=True, timeout=120)
        space = write_space(tmp_path, "cluster", search={"n_trials": 6, "concurrency": 2},
                            budget={"tokens": 20000})
        done = run_cli([str(REPO / "run_search.py"), str(space), "--address",
                        f"127.0.0.1:{port}", "--results", str(tmp_path / "results"), "--quiet"],
                       cwd=tmp_path, home=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
    frame = load_results(tmp_path / "results" / "cluster")
    trained = frame[frame[STATUS] == "ok"]
    assert len(trained) == 6
    assert trained[NODE_ID].nunique() == 2  # both raylets trained trials


def _progress(folder: Path) -> pd.DataFrame:
    path = folder / "progress.csv"
    return pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()


def test_a_killed_driver_resumes_to_exactly_the_planned_trials(tmp_path):
    space = write_space(tmp_path, "killed", search={"n_trials": 6, "concurrency": 2},
                        budget={"tokens": 40000, "eval_every": 10000})
    run_dir = tmp_path / "results" / "killed"
    driver = subprocess.Popen([sys.executable, str(REPO / "run_search.py"), str(space),
                               "--results", str(tmp_path / "results"), "--quiet"],
                              cwd=tmp_path, env=clean_env(tmp_path),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mid_trial = caught_key = None
    deadline = time.monotonic() + 300
    while mid_trial is None and time.monotonic() < deadline:  # two done, one mid-way
        time.sleep(0.1)
        try:
            table = load_results(run_dir)
        except (ValueError, OSError):
            continue
        if (table[STATUS] == "ok").sum() < 2:
            continue
        for _, row in table[table[STATUS] == "running"].iterrows():
            folder = run_dir / "tune" / f"trial-{row[TRIAL]:04d}-{row[KEY]}"
            # checkpoints 0..2 follow evaluations 1..3 of 4 (one checkpoint kept per trial)
            if any((folder / f"checkpoint_00000{i}").exists() for i in range(3)):
                mid_trial, caught_key = folder.name, row[KEY]
                break
    assert mid_trial is not None, "no trial was caught between two evaluations"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = load_results(run_dir)
    finished_before = before[before[STATUS] == "ok"].set_index(TRIAL)
    time.sleep(3)  # the embedded Ray's processes end with their driver

    resumed = run_cli([str(REPO / "run_search.py"), str(space), "--results",
                       str(tmp_path / "results"), "--resume", "--quiet"], cwd=tmp_path,
                      home=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = load_results(run_dir)
    trained = after[after[STATUS].isin(TRAINED_STATUSES)]
    assert len(trained) == 6 and (trained[STATUS] == "ok").all()
    assert trained[KEY].is_unique  # nothing trained twice
    for number, row in finished_before.iterrows():  # every finished trial kept as it was
        again = after.set_index(TRIAL).loc[number]
        assert again[STATUS] == "ok" and again["val_loss"] == row["val_loss"]
    for folder in run_dir.glob("tune/trial-*"):  # no trial restarted from scratch
        rows = _progress(folder)
        steps = rows["step"].tolist() if "step" in rows else []
        assert steps == sorted(steps), (folder.name, steps)
    # the caught architecture finished once, continuing from its checkpoint: in its own Tune
    # trial, or (killed before Tune recorded the trial) in the trial it was queued again as
    final = after[(after[KEY] == caught_key) & (after[STATUS] == "ok")]
    assert len(final) == 1
    folder = run_dir / "tune" / f"trial-{final[TRIAL].item():04d}-{caught_key}"
    last = json.loads((folder / "result.json").read_text().splitlines()[-1])
    assert last["status"] == "ok" and last["resumed_step"] > 0, (mid_trial, folder.name)
    assert not after[STATUS].isin(("running", "waiting", "queued")).any()


@pytest.fixture
def postgres():
    """A PostgreSQL 15 server on loopback for one test (as user postgres when run as root)."""
    if not (PG_BIN / "initdb").exists():
        if os.environ.get("SLA_NAS_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL server binaries not found in {PG_BIN}")
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN}")
    data = Path(tempfile.mkdtemp(prefix="sla-nas-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(data, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run([*as_postgres, str(PG_BIN / "initdb"), "-D", str(data / "db"), "-A",
                    "trust", "-U", "postgres"], check=True, capture_output=True, timeout=120)
    subprocess.run([*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(data / "db"), "-w",
                    "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
                    "-l", str(data / "log"), "start"], check=True, capture_output=True,
                   timeout=120)
    try:
        yield f"postgresql+psycopg2://postgres:s3cret-pw@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(data / "db"), "-m",
                        "fast", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(data, ignore_errors=True)


def test_the_study_can_live_in_postgresql(tmp_path, postgres):
    space = write_space(tmp_path, "pg", search={"n_trials": 3})
    command = [str(REPO / "run_search.py"), str(space), "--storage", postgres, "--quiet"]
    done = run_cli([*command, "--results", str(tmp_path / "results")], cwd=tmp_path,
                   home=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "results" / "pg"
    assert not (run_dir / "study.db").exists()
    study = optuna.load_study(study_name="pg", storage=postgres)
    frame = load_results(run_dir)
    assert [t.number for t in study.trials] == list(frame[TRIAL])
    assert (frame[STATUS] == "ok").sum() == 3
    # the password never lands in the run folder (run.json, Tune's pickles, the tables)
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert b"s3cret-pw" not in path.read_bytes(), path
    assert "***" in (run_dir / "run.json").read_text()
    # a second run of the same name in the same database is refused, not continued
    again = run_cli([*command, "--results", str(tmp_path / "elsewhere")], cwd=tmp_path,
                    home=tmp_path)
    assert again.returncode == 2
    assert "already holds a study 'pg'; add --resume" in again.stderr
