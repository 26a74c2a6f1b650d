"""`sla-nas validate`: check a search-space file and summarise what it contains."""

from __future__ import annotations

import dataclasses
import math
import os
import random
from pathlib import Path
from typing import Any

from rich.console import Console

from sla_nas.arch import cell_label, estimate, presets
from sla_nas.proxy import Budget, make_task
from sla_nas.results import search_plan
from sla_nas.space import DECODE, SearchSpace, check_search

__all__ = ["describe", "print_description", "DISTINCT_LIMIT", "trained_tokens",
           "resource_plan", "compute_plan"]

DISTINCT_LIMIT = 20_000  # spaces up to this many points are enumerated to count distinct specs


def _summary(spec: Any) -> dict[str, Any]:
    d = spec.dims
    changed = {f"L{l}": [f"g{g} {label}" for g in range(d.n_groups)
                         if (label := cell_label(spec, l, g)) != "·"] for l in range(d.n_layers)}
    costs = estimate(spec)
    return {"key": spec.key, "kv_cache_bytes_per_token": costs["kv_cache_bytes_per_token"],
            "params": costs["params"], "connectivity": {k: v for k, v in changed.items() if v}}


def trained_tokens(budget: Budget, seq_len: int) -> int:
    """Tokens one `train_proxy` run of ``budget`` trains: the main run's steps and, with WSD,
    the cooldown branch of every evaluation (``cooldown`` x its step, at least one step)."""
    main, _, points = budget.plan(seq_len)
    branches = sum(max(1, round(budget.cooldown * p)) for p in points) \
        if budget.schedule == "wsd" else 0
    return (main + branches) * budget.batch_size * seq_len


def _visible_gpus() -> int:
    import torch  # imported already for the evaluation plan

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resource_plan(space: SearchSpace, node_cpus: int | None = None,
                  node_gpus: int | None = None) -> dict[str, Any]:
    """What one trial asks Ray for and how many run at once on a node of ``node_cpus`` CPUs
    and ``node_gpus`` GPUs (default: this machine's CPUs and visible CUDA GPUs), at most
    ``search.concurrency``; 0 when such a node cannot hold one trial."""
    search, train = space.config.search, space.config.train
    cpus = (os.cpu_count() or 1) if node_cpus is None else node_cpus
    gpus = _visible_gpus() if node_gpus is None else node_gpus
    fit = [math.floor(cpus / search.cpus_per_trial + 1e-9)]
    if search.gpus_per_trial > 0:
        fit.append(math.floor(gpus / search.gpus_per_trial + 1e-9))
    return {"trial": {"cpu": search.cpus_per_trial, "gpu": search.gpus_per_trial,
                      "device": train.device, "precision": train.precision,
                      "compile": train.compile},
            "node": {"cpus": cpus, "gpus": gpus,
                     "given": node_cpus is not None or node_gpus is not None},
            "concurrency": search.concurrency,
            "at_once": min(search.concurrency, *fit)}


def _range(flops_per_token: tuple[int, int], tokens: tuple[int, int]) -> list[int]:
    return [flops_per_token[0] * tokens[0], flops_per_token[1] * tokens[1]]


def compute_plan(space: SearchSpace, slots: int, tflops: float | None = None,
                 cost_range: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    """Training FLOPs (the cost model's ``train_flops_per_token`` x the tokens `train_proxy`
    trains, cooldown branches included; evaluations' forward passes not counted) of one
    trial of the smallest and the largest architecture, of all trials, and of the
    confirmation; with ``tflops``, the wall time at that many TFLOP/s per trial slot and,
    for the search, ``slots`` trials at once. ``cost_range``: the space's, if known."""
    config = space.config
    plan = search_plan(space)[0]
    budget = Budget(tokens=plan.budget, eval_at=plan.eval_at,
                    batch_size=config.budget.batch_size, lr=config.budget.lr,
                    schedule=config.budget.schedule)
    seq_lens = sorted({d.seq_len for d in space.dims_choices})
    per_token = tuple((cost_range or space.cost_range())["train_flops_per_token"])
    tokens = [trained_tokens(budget, n) for n in seq_lens]
    trial = _range(per_token, (min(tokens), max(tokens)))
    n_trials = config.search.n_trials
    out: dict[str, Any] = {
        "tflops": tflops, "slots": slots, "train_flops_per_token": list(per_token),
        "trial_tokens": [min(tokens), max(tokens)], "trial": trial, "n_trials": n_trials,
        "search": [n_trials * trial[0], n_trials * trial[1]],
        "scheduler": plan.scheduler, "confirm": None}
    if config.confirm is not None:
        c = config.confirm
        dims = space.dims_choices[0]
        ctokens = c.tokens or 2 * plan.budget
        cbudget = Budget(tokens=ctokens, eval_at=(ctokens,), batch_size=budget.batch_size,
                         lr=budget.lr, schedule=budget.schedule)
        # the presets `sla_nas.results.candidates` re-trains: the space's seeds, vanilla always
        named = [s for _, s in space.seeds] if c.presets is None else [
            presets.get(n, **dataclasses.asdict(dims)) for n in c.presets]
        named.append(presets.get(presets.VANILLA, **dataclasses.asdict(dims)))
        specs = {spec.key: spec for spec in named}
        run_tokens = [trained_tokens(cbudget, n) for n in seq_lens]
        fixed = sum(estimate(s)["train_flops_per_token"] * trained_tokens(cbudget, dims.seq_len)
                    for s in specs.values())
        top = _range(per_token, (min(run_tokens), max(run_tokens)))
        out["confirm"] = {"architectures": c.top + len(specs), "top": c.top,
                          "presets": len(specs), "seeds": c.seeds, "tokens": ctokens,
                          "run_tokens": [min(run_tokens), max(run_tokens)],
                          "flops": [c.seeds * (c.top * top[0] + fixed),
                                    c.seeds * (c.top * top[1] + fixed)]}
    out["one_shot"] = _one_shot_plan(space, plan.budget, budget, seq_lens, per_token, trial,
                                     out["search"])
    if tflops:
        rate = tflops * 1e12
        out["trial_seconds"] = [f / rate for f in trial]
        out["search_seconds"] = [f / rate / max(1, slots) for f in out["search"]]
        if out["confirm"] is not None:
            out["confirm"]["seconds"] = [f / rate / max(1, slots)
                                         for f in out["confirm"]["flops"]]
    return out


def _one_shot_plan(space: SearchSpace, budget_tokens: int, budget: Budget, seq_lens: list[int],
                   per_token: tuple[int, int], trial: list[int], multi: list[int]
                   ) -> dict[str, Any] | None:
    """A one-shot search's training FLOPs: the supernet (each step trains one sampled
    architecture, cooldown branches included) plus the top candidates and the seed runs
    trained standalone; beside it ``multi``, the multi-trial plan's. Scoring candidates
    (forward passes only) is not counted."""
    search = space.config.search
    if search.strategy != "one-shot":
        return None
    shot = search.one_shot
    tokens = shot.supernet_tokens or 4 * budget_tokens
    net = dataclasses.replace(budget, tokens=tokens, eval_at=None, eval_every=None)
    net_tokens = max(trained_tokens(net, n) for n in seq_lens)
    seeds = len({spec.key for _, spec in space.seeds if space.params_for(spec) is not None})
    runs = shot.top + seeds * search.seed_runs
    supernet = _range(per_token, (net_tokens, net_tokens))
    total = [supernet[i] + runs * trial[i] for i in range(2)]
    return {"supernet_tokens": tokens, "supernet_trained": net_tokens, "supernet": supernet,
            "candidates": shot.candidates, "top": shot.top, "seed_runs": seeds * search.seed_runs,
            "finetune_tokens": shot.finetune_tokens, "flops": total, "multi_trial": multi}


def describe(path: str | Path, examples: int = 3, seed: int = 0, tflops: float | None = None,
             node_cpus: int | None = None, node_gpus: int | None = None) -> dict[str, Any]:
    """Load and check a space; return its size, distinct count, cost range, seeds, examples,
    the resource plan and the compute plan."""
    if tflops is not None and not tflops > 0:
        raise ValueError(f"--tflops must be positive, got {tflops}")
    if node_gpus is not None and node_gpus < 0:
        raise ValueError(f"--node-gpus must be 0 or more, got {node_gpus}")
    space = SearchSpace.from_yaml(path)
    check_search(space, make_task)  # what `sla-nas search` checks before its first trial
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
    costs = space.cost_range()
    return {
        "file": str(path), "name": space.name, "size": size, "distinct": distinct,
        "cost_range": {k: list(v) for k, v in costs.items()},
        "constraints": {k: v for k, v in space.config.constraints.model_dump().items()
                        if v is not None},
        "objectives": [_objective(o, space) for o in space.config.objectives],
        "plan": (plan := search_plan(space))[0].note,
        "fidelity": plan[1],
        "confirm": space.config.confirm.model_dump() if space.config.confirm else None,
        "seeds": seeds,
        "examples": [dict(_summary(s), violations={k: list(v) for k, v in
                                                  space.violations(s).items()})
                     for s in samples],
        "resources": (resources := resource_plan(space, node_cpus, node_gpus)),
        "compute": compute_plan(space, resources["at_once"], tflops, costs),
    }


def _objective(objective: Any, space: SearchSpace) -> str:
    """An objective as `sla-nas validate` shows it; ``decode_speedup`` with the batch,
    context and cache budget it is measured at."""
    text = f"{objective.metric} ({objective.mode})"
    if objective.metric != DECODE:
        return text
    contexts = sorted({space.decode_context(dims) for dims in space.dims_choices})
    context = " or ".join(map(str, contexts))
    if objective.context is None:
        context = f"seq_len {context}"
    if objective.cache_budget_mb is None:
        return f"{text} at batch {objective.batch} and context {context}"
    return (f"{text} at context {context} with a {objective.cache_budget_mb:g} MiB cache "
            f"budget, each model at the largest batch whose cache fits (and at batch "
            f"{objective.batch})")


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
    console.print("  objectives: " + "; ".join(info["objectives"]), highlight=False)
    console.print(f"  evaluation: {info['plan']}", highlight=False)
    if info.get("fidelity"):
        console.print(f"  [yellow]budget: {info['fidelity']}[/yellow]", highlight=False)
    if info["confirm"]:
        c = info["confirm"]
        console.print(f"  confirm: the top {c['top']} and the presets re-trained with "
                      f"{c['seeds']} paired seeds" + (f" at {c['tokens']:,} tokens"
                                                       if c["tokens"] else ""), highlight=False)
    for seed in info["seeds"]:
        where = "in the space" if seed["in_space"] else "outside the space"
        over = f", over {', '.join(seed['violations'])}" if seed["violations"] else ""
        console.print(f"  seed {seed['seed']} ({seed['key']}): {where}{over}")
    _print_plans(info, console)
    console.print("  examples:")
    for ex in info["examples"]:
        wiring = "; ".join(f"{layer}: {', '.join(cells)}" for layer, cells in
                           ex["connectivity"].items()) or "vanilla"
        over = f"  [red]over {', '.join(ex['violations'])}[/red]" if ex["violations"] else ""
        if len(wiring) > 200:
            wiring = wiring[:197] + "..."
        console.print(f"    {ex['key']}  KV {ex['kv_cache_bytes_per_token']:,} B/token, "
                      f"{ex['params']:,} params{over}\n      {wiring}", soft_wrap=True)


def _flops(pair: list[int]) -> str:
    return f"{pair[0]:.3g}" if pair[0] == pair[1] else f"{pair[0]:.3g} .. {pair[1]:.3g}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.3g} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} days"


def _durations(pair: list[float]) -> str:
    low, high = map(_duration, pair)
    return low if low == high else f"{low} .. {high}"


def _print_plans(info: dict[str, Any], console: Console) -> None:
    r, c = info["resources"], info["compute"]
    t, node = r["trial"], r["node"]
    gpus = f"{t['gpu']:g} GPU" if t["gpu"] else "no GPU"
    where = "a node" if node["given"] else "this machine"
    console.print(f"  resources: one trial asks {t['cpu']:g} CPU, {gpus} (device {t['device']}, "
                  f"{t['precision']}, {'compiled' if t['compile'] else 'eager'}); "
                  f"{r['at_once']} at once on {where} with {node['cpus']} CPUs and "
                  f"{node['gpus']} GPUs (search.concurrency {r['concurrency']})"
                  + ("" if r["at_once"] else ": [red]such a node cannot hold one trial[/red]"),
                  highlight=False, soft_wrap=True)
    tokens = c["trial_tokens"]
    span = "smallest .. largest architecture, " if c["trial"][0] != c["trial"][1] else ""
    console.print(f"  compute: {_flops(c['trial'])} training FLOPs per trial ({span}"
                  f"{tokens[0]:,}"
                  + ("" if tokens[0] == tokens[1] else f" .. {tokens[1]:,}")
                  + " tokens trained, cooldowns included)", highlight=False, soft_wrap=True)
    stops = " (at most: the scheduler stops some early)" if c["scheduler"] != "fifo" else ""
    console.print(f"    search: {c['n_trials']} trials, {_flops(c['search'])} FLOPs{stops}",
                  highlight=False, soft_wrap=True)
    if c.get("one_shot") is not None:
        o = c["one_shot"]
        tune = f", {o['finetune_tokens']:,} tokens of fine-tuning each" \
            if o["finetune_tokens"] else ""
        console.print(f"    one-shot: a supernet of {o['supernet_tokens']:,} tokens "
                      f"({_flops(o['supernet'])} FLOPs) scores {o['candidates']:,} candidates"
                      f"{tune}, then the top {o['top']} and {o['seed_runs']} seed runs train "
                      f"standalone: {_flops(o['flops'])} FLOPs in all, against "
                      f"{_flops(o['multi_trial'])} for the multi-trial plan above (scoring's "
                      f"forward passes not counted)", highlight=False, soft_wrap=True)
    if c["confirm"] is not None:
        k = c["confirm"]
        console.print(f"    confirm: up to {k['architectures']} architectures (top {k['top']} "
                      f"and {k['presets']} presets) x {k['seeds']} seeds at {k['tokens']:,} "
                      f"tokens, {_flops(k['flops'])} FLOPs", highlight=False, soft_wrap=True)
    if c["tflops"]:
        console.print(f"    at {c['tflops']:g} TFLOP/s per trial slot: a trial "
                      f"{_durations(c['trial_seconds'])}; the search "
                      f"{_durations(c['search_seconds'])} with {max(1, c['slots'])} at once"
                      + (f"; the confirmation {_durations(c['confirm']['seconds'])}"
                         if c["confirm"] is not None else ""), highlight=False, soft_wrap=True)
