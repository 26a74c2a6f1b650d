"""The study's storage through faults: a database server that restarts mid-search, and a run
folder that can no longer be written.

A search talks to its study after every result of every trial. A PostgreSQL or MySQL server
that restarts (an upgrade, a failover) drops every pooled connection: `ReconnectingStorage`
checks a connection before each use (SQLAlchemy's ``pool_pre_ping``) and retries a call that
lost its connection for up to `RETRY_SECONDS`. A fault that outlasts that, or a run folder that
cannot be written (permissions, a full disk, a read-only mount), stops the search with
`SearchStopped`: a message that names the storage or the path, and says that ``--resume``
continues once it is fixed (finished trials are in the study; running ones continue from their
last checkpoint, as after a killed driver).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import optuna

__all__ = ["ReconnectingStorage", "SearchStopped", "masked", "RETRY_SECONDS", "stop_reason"]

RETRY_SECONDS = 60.0  # a restarting server is back within seconds; a failover within a minute


class SearchStopped(ValueError):
    """A fault outside the trials stopped the search; ``--resume`` continues it once fixed
    (a ValueError: the command line prints the message and exits with status 2)."""


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from or during (Tune re-raises a callback's or
    a searcher's exception as a TuneError holding only its text, during the original)."""
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _detail(err: BaseException) -> str:
    """The database driver's own words for ``err`` (Optuna wraps them in a generic message)."""
    from sqlalchemy import exc

    cause = next((e for e in _chain(err) if isinstance(e, exc.DBAPIError)), err)
    text = str(getattr(cause, "orig", None) or cause).strip()
    return (text.splitlines() or [type(err).__name__])[0][:300]


def _lost_connection(err: BaseException) -> bool:
    """True if ``err`` (an Optuna storage error) comes from a database connection that failed,
    not from the call itself: SQLAlchemy's OperationalError (the server went away, refused the
    connection, or is shutting down) or an error that invalidated the connection."""
    from sqlalchemy import exc

    return any(isinstance(e, exc.OperationalError) or
               (isinstance(e, exc.DBAPIError) and e.connection_invalidated)
               for e in _chain(err))


class ReconnectingStorage(optuna.storages.RDBStorage):
    """An `RDBStorage` (for a database server, not SQLite) whose calls outlive a restart of
    the server: connections are checked before use, and a call whose connection failed is
    retried with a growing pause for up to ``retry_seconds``; after that it raises
    `SearchStopped`. A write whose commit reached the server just before the connection
    dropped may be repeated: setting an attribute or a value again is harmless."""

    def __init__(self, url: str, retry_seconds: float = RETRY_SECONDS, **kwargs: Any):
        engine_kwargs = {"pool_pre_ping": True, **kwargs.pop("engine_kwargs", {})}
        self.retry_seconds = retry_seconds
        super().__init__(url, engine_kwargs=engine_kwargs, **kwargs)

    def _retried(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(optuna.storages.RDBStorage, name)
        deadline, pause = time.monotonic() + self.retry_seconds, 0.25
        retried = False
        while True:
            try:
                return method(self, *args, **kwargs)
            except optuna.exceptions.UpdateFinishedTrialError:
                # the attempt whose connection was lost had committed the trial's end: done
                if retried and name == "set_trial_state_values":
                    return True
                raise
            except Exception as err:
                if isinstance(err, SearchStopped) or not _lost_connection(err):
                    raise
                retried = True
                if time.monotonic() + pause > deadline:
                    raise SearchStopped(
                        f"lost the study storage {masked(self.url)} for over "
                        f"{self.retry_seconds:g} s: {_detail(err)}; the "
                        f"search stopped. Once the database server answers again, continue "
                        f"with --resume (finished trials are kept, running ones continue from "
                        f"their last checkpoint)") from err
                time.sleep(pause)
                pause = min(2 * pause, 5.0)


def _retrying(name: str) -> Any:
    @functools.wraps(getattr(optuna.storages.RDBStorage, name))
    def call(self: ReconnectingStorage, *args: Any, **kwargs: Any) -> Any:
        return self._retried(name, *args, **kwargs)

    return call


# every call of Optuna's storage interface, and the RDBStorage methods that Optuna's cache in
# front of it calls directly
for _name in sorted(optuna.storages.BaseStorage.__abstractmethods__) + [
        "get_n_trials", "get_best_trial", "get_trial_number_from_id", "get_trial_params",
        "get_trial_user_attrs", "get_trial_system_attrs", "_create_new_trial",
        "_get_best_trial_id", "_get_trials", "_set_trial_param"]:
    if hasattr(optuna.storages.RDBStorage, _name):
        setattr(ReconnectingStorage, _name, _retrying(_name))


def stop_reason(err: BaseException, run_root: Path, storage_url: str) -> SearchStopped | None:
    """A `SearchStopped` that says what outside the trials stopped the search (``err``, as
    Tune raised it), or None if nothing did: a path under the run folder that could not be
    written, or the study's storage (its file under the run folder, or its server)."""
    from sqlalchemy import exc

    chain = _chain(err)
    for e in chain:
        if isinstance(e, SearchStopped):
            return e
    for e in chain:
        if isinstance(e, OSError) and e.filename is not None:
            return SearchStopped(
                f"{e.filename}: cannot write ({e.strerror or e}); the search stopped. Make the "
                f"run folder {run_root} writable (permissions, free space), then continue with "
                f"--resume (finished trials are kept, running ones continue from their last "
                f"checkpoint)")
    for e in chain:
        if isinstance(e, exc.OperationalError | optuna.exceptions.StorageInternalError):
            where = storage_url.removeprefix("sqlite:///") if storage_url.startswith(
                "sqlite") else masked(storage_url)
            return SearchStopped(
                f"{where}: the study could not be written ({_detail(e)}); the search stopped. "
                f"Fix the storage (the run folder's permissions or free space, or the database "
                f"server), then continue with --resume (finished trials are kept, running "
                f"ones continue from their last checkpoint)")
    return None
