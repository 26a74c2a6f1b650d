"""The search as a user runs it, each in fresh processes: the command line on the embedded
default, a cluster of two raylets on localhost with ``--address``, its worker raylet killed
with SIGKILL mid-trial, a driver killed with SIGKILL and ``--resume``d, a study in a real
PostgreSQL server started for the test (and restarted mid-search), and a run folder made
unwritable mid-search.

One machine cannot show unshared storage or network faults between nodes; what it shows is
placement across raylets, a lost node, driver restarts and a real database server. The
clusters are stopped by their own port: ``ray stop`` would end every Ray on the machine."""

from __future__ import annotations

import contextlib
import json
import os
import re
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
import psutil
import pytest

from sla_nas import ArchSpec
from sla_nas.results import (
    KEY,
    MESSAGE,
    NODE_ID,
    NODES,
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
        _stop_cluster(port)
    frame = load_results(tmp_path / "results" / "cluster")
    trained = frame[frame[STATUS] == "ok"]
    assert len(trained) == 6
    assert trained[NODE_ID].nunique() == 2  # both raylets trained trials


def _cluster_processes(port: int) -> list[psutil.Process]:
    """The processes of the test cluster whose head listens on ``port``: its GCS, raylets,
    agents and workers all name that address (``ray stop`` would end every Ray on the
    machine, other tests' too)."""
    pattern = re.compile(rf"(:|port=){port}\b")
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid != os.getpid() and pattern.search(" ".join(proc.info["cmdline"] or [])):
                found.append(proc)
    return found


def _stop_cluster(port: int) -> None:
    procs = _cluster_processes(port)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def _raylets(port: int) -> dict[int, str]:
    """pid -> node id of the raylets of the test cluster whose head listens on ``port``."""
    found = {}
    for proc in _cluster_processes(port):
        with contextlib.suppress(psutil.Error):
            line = proc.cmdline()
            if line and line[0].endswith("/raylet"):
                found[proc.pid] = next(a.split("=", 1)[1] for a in line
                                       if a.startswith("--node_id="))
    return found


def _kill_with_children(pid: int) -> None:
    """SIGKILL a process and everything it started (a raylet: its trials' worker processes)."""
    proc = psutil.Process(pid)
    for each in [*proc.children(recursive=True), proc]:
        with contextlib.suppress(psutil.NoSuchProcess):
            each.send_signal(signal.SIGKILL)


def test_a_lost_node_s_trials_continue_from_their_checkpoint_on_the_other(tmp_path):
    """The worker raylet and its trials' processes are killed with SIGKILL while a trial there
    has a checkpoint; at the default --max-failures 0 the trial continues on the head node
    from that checkpoint and the search ends with exactly its planned trials, each told once."""
    port = free_port()
    # the head declares a silent node dead after 3 failed health checks 0.5 s apart
    env = clean_env(tmp_path) | {"RAY_health_check_period_ms": "500",
                                 "RAY_health_check_timeout_ms": "500",
                                 "RAY_health_check_failure_threshold": "3"}
    common = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"]
    n_trials = 4
    driver = None
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
                        *common], env=env, check=True, capture_output=True, timeout=120)
        head = set(_raylets(port))
        subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", *common], env=env,
                       check=True, capture_output=True, timeout=120)
        (worker_pid, worker), = ((p, n) for p, n in _raylets(port).items() if p not in head)
        space = write_space(tmp_path, "lost", search={"n_trials": n_trials, "concurrency": 2},
                            budget={"tokens": 40000, "eval_every": 10000})
        run_dir = tmp_path / "results" / "lost"
        driver = subprocess.Popen(
            [sys.executable, str(REPO / "run_search.py"), str(space), "--address",
             f"127.0.0.1:{port}", "--results", str(tmp_path / "results")],
            cwd=tmp_path, env=clean_env(tmp_path), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        caught = None
        deadline = time.monotonic() + 240
        while caught is None and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.1)
            try:
                table = load_results(run_dir)
            except (ValueError, OSError):
                continue
            for _, row in table[table[STATUS] == "running"].iterrows():
                folder = run_dir / "tune" / f"trial-{row[TRIAL]:04d}-{row[KEY]}"
                rows = _progress(folder)
                # checkpoints 0..2 follow evaluations 1..3 of 4 (one checkpoint kept)
                if "node_id" in rows and (rows["node_id"] == worker).any() and any(
                        (folder / f"checkpoint_00000{i}").exists() for i in range(3)):
                    caught = row[TRIAL]
                    break
        assert caught is not None, "no trial on the worker node was caught between evaluations"
        _kill_with_children(worker_pid)
        stdout, stderr = driver.communicate(timeout=300)
        assert driver.returncode == 0, stderr[-3000:]
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        _stop_cluster(port)
    frame = _check_complete(run_dir, n_trials, f"sqlite:///{run_dir / 'study.db'}")
    # the caught trial ran on the worker, then on the head, continuing from its checkpoint
    row = frame.set_index(TRIAL).loc[caught]
    head_node = next(iter(_node_ids(frame) - {worker}))
    assert row[NODES].split() == [worker, head_node] and row[NODE_ID] == head_node
    folder = run_dir / "tune" / f"trial-{caught:04d}-{row[KEY]}"
    last = json.loads((folder / "result.json").read_text().splitlines()[-1])
    assert last["status"] == "ok" and last["resumed_step"] > 0
    assert f"trial {caught} lost its node {worker[:12]}" in stderr
    others = frame[(frame[STATUS] == "ok") & (frame[TRIAL] != caught)]
    assert (others[NODES].str.split().str.len() == 1).all()  # one attempt each


def _node_ids(frame: pd.DataFrame) -> set[str]:
    return {n for nodes in frame[NODES].dropna() for n in nodes.split()}


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


class Postgres:
    """A PostgreSQL server for one test: its URL, and pg_ctl to restart it."""

    def __init__(self, data: Path, port: int, as_postgres: list[str]):
        self.data, self.port, self.as_postgres = data, port, as_postgres
        self.url = f"postgresql+psycopg2://postgres:s3cret-pw@127.0.0.1:{port}/postgres"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run([*self.as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(self.data / "db"),
                        *args], check=True, capture_output=True, timeout=120)

    def log(self) -> str:
        return (self.data / "log").read_text()


@pytest.fixture
def postgres_server():
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
    server = Postgres(data, free_port(), as_postgres)
    subprocess.run([*as_postgres, str(PG_BIN / "initdb"), "-D", str(data / "db"), "-A",
                    "trust", "-U", "postgres"], check=True, capture_output=True, timeout=120)
    server.pg_ctl("-w", "-o", f"-p {server.port} -k {data} -c listen_addresses=127.0.0.1",
                  "-l", str(data / "log"), "start")
    try:
        yield server
    finally:
        subprocess.run([*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(data / "db"), "-m",
                        "fast", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def postgres(postgres_server):
    return postgres_server.url


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


def _start_driver(tmp_path: Path, space: Path, *more: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "run_search.py"), str(space),
                             "--results", str(tmp_path / "results"), "--quiet", *more],
                            cwd=tmp_path, env=clean_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait_mid_search(run_dir: Path, driver: subprocess.Popen, finished: int) -> pd.DataFrame:
    """The trials table once ``finished`` trials have finished and another is between two
    evaluations."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.1)
        try:
            table = load_results(run_dir)
        except (ValueError, OSError):
            continue
        if (table[STATUS] == "ok").sum() < finished:
            continue
        for _, row in table[table[STATUS] == "running"].iterrows():
            folder = run_dir / "tune" / f"trial-{row[TRIAL]:04d}-{row[KEY]}"
            if any((folder / f"checkpoint_00000{i}").exists() for i in range(3)):
                return table
    raise AssertionError(f"no trial was caught between two evaluations "
                         f"({driver.poll()=}, {driver.stderr.read() if driver.poll() else ''})")


def _check_complete(run_dir: Path, n_trials: int, storage: str, stopped: bool = False
                    ) -> pd.DataFrame:
    """Exactly ``n_trials`` trained, each once, each told to Optuna once, none left open;
    ``stopped``: a proposal the stopped driver never started may be left ``abandoned``."""
    frame = load_results(run_dir)
    trained = frame[frame[STATUS].isin(TRAINED_STATUSES)]
    assert len(trained) == n_trials and (trained[STATUS] == "ok").all(), \
        frame[[TRIAL, STATUS, MESSAGE]]
    assert trained[KEY].is_unique
    left = ("running", "waiting", "queued") + (() if stopped else ("abandoned",))
    assert not frame[STATUS].isin(left).any(), frame[[TRIAL, STATUS, MESSAGE]]
    study = optuna.load_study(study_name=run_dir.name, storage=storage)
    assert [t.number for t in study.trials] == list(frame[TRIAL])
    complete = [t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
                and t.user_attrs.get(STATUS) == "ok"]
    assert complete == sorted(trained[TRIAL])
    for folder in run_dir.glob("tune/trial-*"):  # no trial restarted from scratch
        rows = _progress(folder)
        steps = rows["step"].tolist() if "step" in rows else []
        assert steps == sorted(steps), (folder.name, steps)
    return frame


def test_a_postgresql_restart_mid_search_loses_nothing(tmp_path, postgres_server):
    """The database server restarts (fast shutdown: every connection cut) while trials run;
    the search reconnects and ends with its planned trials, each told once."""
    space = write_space(tmp_path, "pgrestart", search={"n_trials": 4, "concurrency": 2},
                        budget={"tokens": 40000, "eval_every": 10000})
    run_dir = tmp_path / "results" / "pgrestart"
    driver = _start_driver(tmp_path, space, "--storage", postgres_server.url)
    try:
        _wait_mid_search(run_dir, driver, finished=0)
        postgres_server.pg_ctl("-m", "fast", "-w", "-l", str(postgres_server.data / "log"),
                               "restart")
        _, stderr = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stderr[-3000:]
    log = postgres_server.log()
    assert "terminating connection due to administrator command" in log  # the search's own
    assert log.count("database system is ready to accept connections") == 2
    _check_complete(run_dir, 4, postgres_server.url)


@contextlib.contextmanager
def _unwritable(folder: Path):
    """``folder`` can no longer take new files, for this user: root ignores permissions, so as
    root the folder is made immutable (chattr +i; where the file system has no such flag, the
    test skips)."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)
        return
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"running as root, and chattr +i is not available here: {done.stderr}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True, capture_output=True)


def test_an_unwritable_run_folder_stops_the_search_and_resume_loses_nothing(tmp_path):
    space = write_space(tmp_path, "locked", search={"n_trials": 4, "concurrency": 2},
                        budget={"tokens": 40000, "eval_every": 10000})
    run_dir = tmp_path / "results" / "locked"
    driver = _start_driver(tmp_path, space)
    try:
        _wait_mid_search(run_dir, driver, finished=1)
        with _unwritable(run_dir):
            _, stderr = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 2, stderr[-3000:]
    message = stderr.strip().splitlines()[-1]  # one line: the path, what to do
    assert f"error: {run_dir}" in message and "--resume" in message, stderr[-3000:]
    before = load_results(run_dir)
    finished = before[before[STATUS] == "ok"].set_index(TRIAL)
    time.sleep(3)  # the embedded Ray's processes end with their driver
    resumed = run_cli([str(REPO / "run_search.py"), str(space), "--results",
                       str(tmp_path / "results"), "--resume", "--quiet"], cwd=tmp_path,
                      home=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = _check_complete(run_dir, 4, f"sqlite:///{run_dir / 'study.db'}", stopped=True)
    for number, row in finished.iterrows():  # every finished trial kept as it was
        again = after.set_index(TRIAL).loc[number]
        assert again[STATUS] == "ok" and again["val_loss"] == row["val_loss"]
