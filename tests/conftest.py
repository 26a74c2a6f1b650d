from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """The models under test are tiny: one thread is several times faster than many (and avoids
    oversubscription when tests run next to other work). Opt in per module with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


REPO = Path(__file__).resolve().parents[1]
# Ray caches the auth token of a process's first local cluster: one token for the session
RAY_TEST_TOKEN = secrets.token_hex(16)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for one test module, with token authentication as the embedded search
    uses it (the token in the environment, nothing written to the home folder)."""
    import ray

    os.environ["RAY_AUTH_TOKEN"] = RAY_TEST_TOKEN
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    yield
    ray.shutdown()


def clean_env(home: Path) -> dict[str, str]:
    """The environment of a command a user runs: no Ray settings, a throw-away home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "TUNE_"))}
    return env | {"HOME": str(home), "PYTHONUNBUFFERED": "1"}


def run_cli(args: list[str], cwd: Path, home: Path, timeout: float = 600
            ) -> subprocess.CompletedProcess:
    """``python run_search.py ...`` (or any sla-nas CLI call) in a fresh process."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=clean_env(home),
                          capture_output=True, text=True, timeout=timeout)


def _finished_run(factory: pytest.TempPathFactory, name: str, **sections) -> Path:
    from search_helpers import write_space

    folder = factory.mktemp(name)
    space = write_space(folder, name, **sections)
    done = run_cli([str(REPO / "run_search.py"), str(space), "--results",
                    str(folder / "results"), "--quiet", "--no-export", "--no-report"],
                   cwd=folder, home=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "results" / name


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A real search run folder (one objective): seeds vanilla and cla2 (each at training
    seeds 0 and 1), ASHA with a rung at half the budget (some trials pruned), a KV constraint
    that excludes some samples (vanilla among them), and the duplicates TPE proposes. Shared
    by the tests that read run folders: do not modify."""
    return _finished_run(tmp_path_factory, "finished",
                         search={"n_trials": 10, "scheduler": "asha", "grace_tokens": 3000,
                                 "concurrency": 2, "seed_runs": 2},
                         budget={"eval_every": 2000},
                         constraints={"max_kv_cache_bytes_per_token": 176})


@pytest.fixture(scope="session")
def finished_pareto_run(tmp_path_factory) -> Path:
    """A real search run folder with two objectives (val_loss, KV cache): a Pareto set."""
    return _finished_run(tmp_path_factory, "pareto",
                         search={"n_trials": 8, "sampler": "nsga2", "seed_runs": 2},
                         objectives=[{"metric": "val_loss", "mode": "min"},
                                     {"metric": "kv_cache_bytes_per_token", "mode": "min"}])
