"""Ray for the search and confirmation runs: connecting (embedded or to a cluster) and
keeping Tune's console output to what the search prints itself."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["connect", "connect_or_explain", "quiet_tune"]


def connect(address: str | None) -> bool:
    """Connect to ``address`` or start an embedded Ray; True if this call started one."""
    import ray

    if ray.is_initialized():
        return False
    quiet = dict(logging_level=logging.WARNING, log_to_driver=False)
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **quiet)
        return False
    if not {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(os.environ) and \
            not (Path.home() / ".ray" / "auth_token").exists():
        # Ray turns token authentication on for a new local cluster and would write a token to
        # ~/.ray/auth_token; a token in this process's environment is used instead
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, **quiet)
    return True


def connect_or_explain(address: str | None) -> bool:
    try:
        return connect(address)
    except (ConnectionError, RuntimeError, TimeoutError) as err:
        where = address or os.environ.get("RAY_ADDRESS") or "a local Ray"
        raise ValueError(f"cannot connect to Ray at {where}: {err}") from None


@contextlib.contextmanager
def quiet_tune() -> Iterator[None]:
    """Tune's newer output engine prints at any verbosity, and its snapshot-rate warning
    fires for trials of a few seconds: both are off while the search runs."""
    quiet = {"RAY_AIR_NEW_OUTPUT": "0",
             "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
    saved = {k: os.environ.get(k) for k in quiet}
    os.environ.update(quiet)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
