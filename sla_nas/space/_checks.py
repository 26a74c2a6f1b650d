"""Checks of a space beyond its schema: what the schema cannot see alone, and what a search
would otherwise find only after starting.

`SearchSpace` runs the structural ones while it is built (`check_dims_choices` before its
dimension choices are listed, `check_sources` before any source set is, `check_budget` and
`check_name`), so that no hostile number makes it enumerate millions of items first.
`check_search` holds every check ``sla-nas search`` makes before its first trial that does
not depend on the command line: ``sla-nas validate`` runs the same function, so a space it
calls valid is one a search starts on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sla_nas.arch import ArchSpec, estimate, metrics, short_repr

from ._schema import check_run_name

if TYPE_CHECKING:
    from ._space import SearchSpace

__all__ = ["check_dims_choices", "check_model_sizes", "check_sources", "check_budget",
           "check_name", "check_search", "GRID_LIMIT", "MAX_DIMS_CHOICES", "MAX_SOURCE_SETS",
           "MAX_PARAMS"]

MAX_DIMS_CHOICES = 1000  # combinations of the model's dimension lists (each ~4 ms to check)
MAX_SOURCE_SETS = 50_000  # source sets offered over all layers of one model (each is a
# categorical value Optuna stores, and the space folds over every one of them)
GRID_LIMIT = 20_000  # points the grid sampler enumerates
MAX_PARAMS = 10**11  # a vanilla model's parameters: 400 GB of fp32 weights, beyond one node


def check_dims_choices(space: SearchSpace) -> None:
    """The model's dimension lists may not combine into more than `MAX_DIMS_CHOICES`
    models: the space lists and checks every combination."""
    model = space.config.model.model_dump()
    lists = {k: len(v) for k, v in model.items() if isinstance(v, list) and len(v) > 1}
    combos = math.prod(lists.values())
    if combos > MAX_DIMS_CHOICES:
        largest = max(lists, key=lists.__getitem__)
        raise space._error(("model", largest), f"the dimension lists combine into {combos:,} "
                           f"models ({' x '.join(map(str, lists.values()))}), more than the "
                           f"{MAX_DIMS_CHOICES:,} a space may hold; search fewer values")


def check_model_sizes(space: SearchSpace) -> None:
    """Each dimension choice's vanilla model at most `MAX_PARAMS` parameters (the cost
    model's count: nothing is built). Each dimension is bounded alone; their product (a
    vocabulary of 2**32 at d_model 65,536) is bounded here."""
    for dims, fixed in space._dims_params:
        params = estimate(ArchSpec.create(dims))["params"]
        if params > MAX_PARAMS:
            choice = ", ".join(f"{k.removeprefix('model.')}={v}" for k, v in fixed.items())
            raise space._error(("model",), f"the vanilla model has {params:,} parameters"
                               + (f" for the choice {choice}" if choice else "")
                               + f", more than the {MAX_PARAMS:,} any proxy search trains")


def check_sources(space: SearchSpace) -> None:
    """``connectivity.sources.layers`` must name layers of every model of the space, and the
    source sets offered (all subsets of up to ``max_sources`` of a layer's pool) may not
    exceed `MAX_SOURCE_SETS`: ``max_sources: 8`` at 100 layers offers ~10^12 of them."""
    c = space.config.connectivity
    layers = c.sources.layers
    if layers is not None and not layers:
        raise space._error(("connectivity", "sources", "layers"), "an empty list leaves no "
                           "earlier layer to read, so nothing is searched: list at least one "
                           "layer, or omit the key to allow all")
    for dims in space.dims_choices:
        n = dims.n_layers
        if layers is not None and max(layers) >= n:
            beyond = sorted(s for s in set(layers) if s >= n)
            raise space._error(("connectivity", "sources", "layers"), f"layer "
                               f"{short_repr(beyond[0])} is beyond the model's {n} layers "
                               f"(0..{n - 1})" + (f", and {len(beyond) - 1} more" if
                                                  len(beyond) > 1 else ""))
        total = 0
        for layer in range(n):
            pool = len(space.pool(layer))
            total += sum(math.comb(pool, k) for k in range(1, min(c.max_sources, pool) + 1))
            if total > MAX_SOURCE_SETS:
                raise space._error(("connectivity", "max_sources"), f"max_sources "
                                   f"{c.max_sources} offers more than {MAX_SOURCE_SETS:,} "
                                   f"source sets over the {n} layers; lower it or limit "
                                   f"sources.max_distance or sources.layers")


def check_budget(space: SearchSpace) -> None:
    """Every run must train at least one batch: ``budget.tokens`` (and ``confirm.tokens``)
    at least ``batch_size`` sequences of the longest ``seq_len``, and ``eval_every`` no more
    than the budget (an evaluation past the end never happens)."""
    config = space.config
    budget = config.budget
    seq_len = max(d.seq_len for d in space.dims_choices)
    batch = budget.batch_size * seq_len
    if budget.tokens < batch:
        raise space._error(("budget", "tokens"), f"{budget.tokens:,} tokens is less than one "
                           f"batch (batch_size {budget.batch_size} x seq_len {seq_len} = "
                           f"{batch:,}); give at least {batch:,}")
    if budget.eval_every is not None and budget.eval_every > budget.tokens:
        raise space._error(("budget", "eval_every"), f"{budget.eval_every:,} is more than the "
                           f"budget of {budget.tokens:,} tokens: no evaluation would fall "
                           f"inside it; give at most {budget.tokens:,}")
    confirm = config.confirm
    if confirm is not None and confirm.tokens is not None and confirm.tokens < batch:
        raise space._error(("confirm", "tokens"), f"{confirm.tokens:,} tokens is less than "
                           f"one batch (batch_size {budget.batch_size} x seq_len {seq_len} = "
                           f"{batch:,}); give at least {batch:,}")


def check_name(space: SearchSpace) -> None:
    """The run is named ``name:`` or, without it, after the file: that must be a run name."""
    if space.config.name is not None:
        return
    try:
        check_run_name(space.name)
    except ValueError as err:
        raise space._error((), f"the file name {short_repr(space.name)} names the run, but "
                           f"{err}: add a name: key") from None


def check_search(space: SearchSpace, make_task: Callable[..., Any]) -> list[tuple[str, str]]:
    """What ``sla-nas search`` checks before its first trial, besides its command-line
    options and the cluster: the objectives (at least one trained metric, each measured on
    the space's task), the grid sampler's size, and the task itself, built by ``make_task``
    (`sla_nas.proxy.make_task`: the proxy package builds on this one, so its callers hand it
    in) at every dimension choice: a missing corpus or token file, an MQAR too long for
    ``seq_len``. Returns the objectives as (metric, mode) pairs; errors name the file, line
    and key."""
    config = space.config
    objectives = [(o.metric, o.mode) for o in config.objectives]
    if not any(m in metrics.MEASURED for m, _ in objectives):
        raise space._error(("objectives",), f"at least one must be a trained metric "
                           f"({', '.join(sorted(metrics.MEASURED))}); costs alone need no "
                           f"search")
    task = config.task.name
    for i, (m, _) in enumerate(objectives):
        tasks = metrics.REGISTRY[m].tasks
        if tasks is not None and task not in tasks:
            raise space._error(("objectives", i, "metric"), f"{m} is measured on task "
                               f"{' or '.join(tasks)} only, not {task}")
    if config.search.sampler == "grid" and space.size() > GRID_LIMIT:
        raise space._error(("search", "sampler"), f"grid enumerates the space, which has "
                           f"{space.size():,} points (at most {GRID_LIMIT:,}); use tpe")
    _check_task(space, make_task)
    return objectives


def _check_task(space: SearchSpace, make_task: Callable[..., Any]) -> None:
    task = space.config.task
    options: dict[str, Any] = space.task_options()
    key = {"bytes-lm": "corpus", "mqar": "n_pairs", "tokens": "train"}[task.name]
    for dims in space.dims_choices:
        try:
            make_task(task.name, dims.seq_len, vocab_size=dims.vocab_size, **options)
        except (ValueError, OSError) as err:
            message = str(err)
            if task.name == "tokens" and options["val"] is not None and \
                    options["val"] in message and options["train"] not in message:
                key = "val"
            raise space._error(("task", key), message) from None
