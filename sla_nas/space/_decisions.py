"""Decision-tree plumbing for search spaces: replaying every path, naming, small helpers."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

from sla_nas.arch import EMB

Choose = Callable[[str, list[Any]], Any]


def sources_label(sources: tuple[int, ...], layer: int) -> str:
    return "+".join("e" if s == EMB else "l" if s == layer else f"l-{layer - s}"
                    for s in sources)


def named(params: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Variant parameters (``x_src``, ...) renamed for a unit (``L3.g1.kv_src``, ...)."""
    return {prefix + name[1:]: value for name, value in params.items()}


def pick(choose: Choose, name: str, values: list[Any]) -> Any:
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


def replay(walk: Callable[[Choose], dict]) -> Iterator[tuple[dict[str, Any], dict]]:
    """All outcomes of a decision procedure, in order: rerun it along every path of choices."""
    queue: list[list[Any]] = [[]]
    while queue:
        path = _Path(queue.pop(), queue)
        genes = walk(path)
        yield path.params, genes


class RandomTrial:
    """The part of optuna.Trial that `sample` uses, drawing uniformly."""

    def __init__(self, rng: random.Random):
        self.rng, self.params = rng, {}

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        self.params[name] = self.rng.choice(choices)
        return self.params[name]
