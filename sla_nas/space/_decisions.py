"""Decision-tree plumbing for search spaces: replaying every path, naming, small helpers."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

from sla_nas.arch import EMB

Choose = Callable[[str, list[Any]], Any]


def _label(sources: tuple[int, ...], layer: int) -> str:
    return "+".join("e" if s == EMB else "l" if s == layer else f"l-{layer - s}"
                    for s in sources)


def _named(params: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Variant parameters (``x_src``, ...) renamed for a unit (``L3.g1.kv_src``, ...)."""
    return {prefix + name[1:]: value for name, value in params.items()}


def _pick(choose: Choose, name: str, values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else choose(name, values)


class _Path:
    """A `Choose` that follows a prefix of recorded choices, then takes first values and
    queues every untaken sibling as a new prefix."""

    def __init__(self, prefix: list[Any], queue: list[list[Any]]):
        self.prefix, self.queue = prefix, queue
        self.taken: list[Any] = []
        self.params: dict[str, Any] = {}

    def __call__(self, name: str, values: list[Any]) -> Any:
        i = len(self.taken)
        if i < len(self.prefix):
            value = self.prefix[i]
        else:
            value = values[0]
            self.queue.extend(self.taken + [v] for v in reversed(values[1:]))
        self.taken.append(value)
        self.params[name] = value
        return value


def _replay(walk: Callable[[Choose], dict]) -> Iterator[tuple[dict[str, Any], dict]]:
    """All outcomes of a decision procedure, in order: rerun it along every path of choices."""
    queue: list[list[Any]] = [[]]
    while queue:
        path = _Path(queue.pop(), queue)
        genes = walk(path)
        yield path.params, genes


def _index_set(value: Any, count: int, what: str) -> list[int]:
    if value == "all":
        return list(range(count))
    if isinstance(value, str) and "-" in value:
        lo, _, hi = value.partition("-")
        if not (lo.strip().isdigit() and hi.strip().isdigit()):
            raise ValueError(f"expected 'all', a number, a list or a range 'a-b', got {value!r}")
        items = list(range(int(lo), int(hi) + 1))
    elif isinstance(value, int):
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        raise ValueError(f"expected 'all', a number, a non-empty list or a range 'a-b', "
                         f"got {value!r}")
    bad = [i for i in items if not 0 <= i < count]
    if bad:
        raise ValueError(f"{what} {bad[0]} is out of range 0..{count - 1}")
    return sorted(set(items))


class _RandomTrial:
    """The part of optuna.Trial that `sample` uses, drawing uniformly."""

    def __init__(self, rng: random.Random):
        self.rng, self.params = rng, {}

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.params[name] = self.rng.choice(choices)
        return self.params[name]
