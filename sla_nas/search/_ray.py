"""Ray for the search and confirmation runs: connecting (embedded or to a cluster) and
keeping Tune's console output to what the search prints itself."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["connect", "connect_or_explain", "quiet_tune", "check_resources", "unplaceable",
           "node_loss_is_no_failure", "NODE_DEATH_WAIT_SECONDS"]

# how long a trial's actor error waits for the cluster to tell whether the trial's node died:
# the head marks a silent node dead after its health checks fail (about 15 s at Ray's
# defaults), and the trial's own process may die of its node's death before that
NODE_DEATH_WAIT_SECONDS = 30.0


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


def _amount(value: float) -> str:
    return f"{value:g}"


def unplaceable(cpus: float, gpus: float, nodes: list[dict[str, Any]]) -> str | None:
    """Why no node of ``nodes`` (`ray.nodes()` entries) can hold one trial that asks for
    ``cpus`` CPUs and ``gpus`` GPUs; None when one can. Ray would keep such trials pending
    forever, so the run ends before its first trial instead."""
    alive = [n for n in nodes if n.get("Alive", n.get("alive", True))]
    shapes = [(n.get("NodeManagerAddress", "?"), float(n.get("Resources", {}).get("CPU", 0)),
               float(n.get("Resources", {}).get("GPU", 0))) for n in alive]
    if any(c >= cpus and g >= gpus for _, c, g in shapes):
        return None
    has = "; ".join(f"node {ip}: {_amount(c)} CPUs, {_amount(g)} GPUs" for ip, c, g in shapes) \
        or "no alive node"
    asks = f"search.cpus_per_trial {_amount(cpus)}, search.gpus_per_trial {_amount(gpus)}"
    if gpus > 0 and not any(g >= gpus for _, _, g in shapes):
        if not any(g > 0 for _, _, g in shapes):
            way = ("set search.gpus_per_trial: 0 (and train.device: auto or cpu) to train on "
                   "CPUs, or connect to a cluster with GPU nodes (ray start --num-gpus N on "
                   "each, or --address)")
        else:
            way = (f"lower search.gpus_per_trial to at most "
                   f"{_amount(max(g for _, _, g in shapes))} (a fraction such as 0.5 shares a "
                   f"GPU between trials)")
    else:
        way = (f"lower search.cpus_per_trial to at most {_amount(max(c for _, c, _ in shapes))}"
               if shapes else "start Ray nodes first (ray start)")
    return (f"one trial asks for {asks}, and no node of the Ray cluster can hold it ({has}); "
            f"its trials would wait forever: {way}")


def check_resources(cpus: float, gpus: float, where: str | Path) -> None:
    """Raise ValueError when no node of the connected Ray cluster can run one trial."""
    import ray

    why = unplaceable(cpus, gpus, ray.nodes())
    if why is not None:
        raise ValueError(f"{where}: {why}")


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


def _node_died(node: str, wait: float) -> bool:
    """True once the cluster counts ``node`` dead, waiting up to ``wait`` seconds for that."""
    import ray

    deadline = time.monotonic() + wait
    while True:
        if any(n["NodeID"] == node and not n.get("Alive", True) for n in ray.nodes()):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _lost_node(trial: Any, error: Any) -> str | None:
    """The id of the node whose death ended ``trial``'s process (``error``: Tune's exception),
    or None when the trial failed by itself: its code raised (a ``RayTaskError``), or its
    process died while its node lives (killed for memory, say)."""
    from ray.exceptions import RayActorError, RayTaskError

    if not isinstance(error, RayActorError) or isinstance(error, RayTaskError):
        return None
    node = (getattr(trial, "last_result", None) or {}).get("node_id")
    if node is None:  # no result yet: the node is unknown, the error counts as Tune counts it
        return None
    # Ray's message does not reliably say that the node went (it reports the worker's exit),
    # and the cluster takes a while to count a node dead: a process killed on a live node
    # (for memory, say) therefore holds the driver up to this wait, once, before it counts
    return node if _node_died(node, NODE_DEATH_WAIT_SECONDS) else None


@contextlib.contextmanager
def node_loss_is_no_failure(lost: list[tuple[str, str]]) -> Iterator[None]:
    """While the search runs, a trial whose node died is retried from its last checkpoint
    without counting against ``--max-failures``: losing a node is not the trial's fault, and
    at the default of 0 retries Tune would record the trial as failed. Tune counts every death
    of a trial's process as a failure except a preemption the cluster announced
    (`Trial.handle_error`); this wraps that method to uncount a death whose node is dead, and
    appends (Tune trial id, node id) to ``lost``. A Tune without that method keeps its own
    counting."""
    from ray.tune.experiment import Trial

    original = getattr(Trial, "handle_error", None)
    if original is None:
        yield
        return

    def handle_error(trial: Any, exc: Any = None) -> None:
        before = trial.run_metadata.num_failures
        node = _lost_node(trial, exc)
        original(trial, exc)
        if node is not None and trial.run_metadata.num_failures > before:
            trial.run_metadata.num_failures = before
            trial.run_metadata.invalidate_cache()
            lost.append((trial.trial_id, node))

    Trial.handle_error = handle_error
    try:
        yield
    finally:
        Trial.handle_error = original
