"""`sla-nas validate`: check a search-space file and summarise what it contains."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from rich.console import Console

from sla_nas.arch import cell_label, estimate
from sla_nas.proxy import plan_evaluations
from sla_nas.space import SearchSpace

__all__ = ["describe", "print_description", "DISTINCT_LIMIT"]

DISTINCT_LIMIT = 20_000  # spaces up to this many points are enumerated to count distinct specs


def _summary(spec: Any) -> dict[str, Any]:
    d = spec.dims
    changed = {f"L{l}": [f"g{g} {label}" for g in range(d.n_groups)
                         if (label := cell_label(spec, l, g)) != "·"] for l in range(d.n_layers)}
    costs = estimate(spec)
    return {"key": spec.key, "kv_cache_bytes_per_token": costs["kv_cache_bytes_per_token"],
            "params": costs["params"], "connectivity": {k: v for k, v in changed.items() if v}}


def describe(path: str | Path, examples: int = 3, seed: int = 0) -> dict[str, Any]:
    """Load and check a space; return its size, distinct count, cost range, seeds, examples."""
    space = SearchSpace.from_yaml(path)
    size = space.size()
    distinct = None
    if size <= DISTINCT_LIMIT:
        distinct = len({spec.key for _, spec in space.enumerate()})
    rng = random.Random(seed)
    seeds = []
    for name, spec in space.seeds:
        params = space.params_for(spec)
        seeds.append({"seed": name, "key": spec.key, "in_space": params is not None,
                      "violations": {k: list(v) for k, v in space.violations(spec).items()}})
    samples = [space.random_spec(rng) for _ in range(examples)]
    return {
        "file": str(path), "name": space.name, "size": size, "distinct": distinct,
        "cost_range": {k: list(v) for k, v in space.cost_range().items()},
        "constraints": {k: v for k, v in space.config.constraints.model_dump().items()
                        if v is not None},
        "objectives": [f"{o.metric} ({o.mode})" for o in space.config.objectives],
        "plan": plan_evaluations(space.config).note,
        "confirm": space.config.confirm.model_dump() if space.config.confirm else None,
        "seeds": seeds,
        "examples": [dict(_summary(s), violations={k: list(v) for k, v in
                                                  space.violations(s).items()})
                     for s in samples],
    }


def print_description(info: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    console.print(f"[bold green]valid[/bold green]: {info['file']} (search '{info['name']}')")
    size = info["size"]
    if size < 10**15:
        console.print(f"  size: {size:,} points")
    else:
        console.print(f"  size: {size:.3e} points (an exact {len(str(size))}-digit integer; "
                      f"--json prints it)")
    if info["distinct"] is not None:
        console.print(f"  distinct architectures after canonicalisation: {info['distinct']:,}")
    else:
        console.print(f"  distinct architectures: not counted (more than {DISTINCT_LIMIT:,} "
                      f"points)")
    for metric, (lo, hi) in info["cost_range"].items():
        console.print(f"  {metric}: {lo:,} .. {hi:,}")
    if info["constraints"]:
        console.print("  constraints: " + ", ".join(f"{k} {v:,}" for k, v in
                                                    info["constraints"].items()))
    console.print("  objectives: " + ", ".join(info["objectives"]))
    console.print(f"  evaluation: {info['plan']}", highlight=False)
    if info["confirm"]:
        c = info["confirm"]
        console.print(f"  confirm: the top {c['top']} and the presets re-trained with "
                      f"{c['seeds']} paired seeds" + (f" at {c['tokens']:,} tokens"
                                                       if c["tokens"] else ""), highlight=False)
    for seed in info["seeds"]:
        where = "in the space" if seed["in_space"] else "outside the space"
        over = f", over {', '.join(seed['violations'])}" if seed["violations"] else ""
        console.print(f"  seed {seed['seed']} ({seed['key']}): {where}{over}")
    console.print("  examples:")
    for ex in info["examples"]:
        wiring = "; ".join(f"{layer}: {', '.join(cells)}" for layer, cells in
                           ex["connectivity"].items()) or "vanilla"
        over = f"  [red]over {', '.join(ex['violations'])}[/red]" if ex["violations"] else ""
        if len(wiring) > 200:
            wiring = wiring[:197] + "..."
        console.print(f"    {ex['key']}  KV {ex['kv_cache_bytes_per_token']:,} B/token, "
                      f"{ex['params']:,} params{over}\n      {wiring}", soft_wrap=True)
