"""``sla-nas bench``: decoding speed with the KV cache, an architecture beside vanilla of the
same dimensions measured in the same process (`sla_nas.proxy.compare_decode`), as a table or
as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sla_nas.arch import (
    ArchSpec,
    check_model_size,
    decode_throughput_ratio,
    estimate,
    load_arch,
    presets,
)

__all__ = ["run_bench"]


def _target(args: argparse.Namespace, dims: dict[str, int]) -> tuple[ArchSpec, Any]:
    """The spec and, for an exported folder, its trained model (None otherwise)."""
    if args.arch not in presets.names() and Path(args.arch).is_dir():
        if dims:
            raise ValueError(f"{args.arch}: dimension flags apply to presets only; an exported "
                             f"folder carries its own dims")
        from sla_nas.export import load_exported

        model, spec = load_exported(args.arch)
        return spec, model
    return load_arch(args.arch, **dims), None


MAX_STEPS = 100_000  # timed decode steps: a median needs far fewer


def _check_memory(spec: ArchSpec, args: argparse.Namespace) -> None:
    """Refuse, from the cost model and before any tensor exists, models (this one and vanilla)
    whose weights would not fit in memory (the cache and logits are checked by
    `compare_decode` once the models exist), and more timed steps than a median needs."""
    if args.steps > MAX_STEPS:
        raise ValueError(f"--steps: expected at most {MAX_STEPS:,} timed steps, got "
                         f"{args.steps:,}")
    check_model_size(spec, args.arch, copies=2)  # this architecture and vanilla


def run_bench(args: argparse.Namespace, dims: dict[str, int]) -> None:
    """Measure, then print the table (or ``--json``); progress lines go to stderr."""
    import torch

    from sla_nas.proxy import MIB, PRECISION_DTYPES, PREFILL_BATCH, compare_decode, resolve_device

    spec, model = _target(args, dims)
    if args.threads:
        torch.set_num_threads(args.threads)
    context = spec.dims.seq_len if args.context is None else args.context
    _check_memory(spec, args)
    device = resolve_device(args.device)
    dtype = PRECISION_DTYPES[args.dtype]
    result = compare_decode(spec, batch=args.batch, context=context,
                            cache_budget_mb=args.cache_budget_mb, device=str(device),
                            dtype=dtype, steps=args.steps, model=model,
                            log=lambda note: print(f"  {note}", file=sys.stderr))
    per_element = dtype.itemsize
    cost = {"architecture": estimate(spec, per_element)["kv_cache_bytes_per_token"],
            "vanilla": estimate(ArchSpec.create(spec.dims),
                                per_element)["kv_cache_bytes_per_token"]}
    info = {"arch": args.arch, "key": spec.key, "device": str(device), "dtype": args.dtype,
            "batch": args.batch, "context": context, "steps": args.steps,
            "prefill_batch": min(args.batch, PREFILL_BATCH),
            "cache_budget_mb": args.cache_budget_mb,
            "architecture": asdict(result.arch), "vanilla": asdict(result.vanilla),
            "architecture_at_budget": None if result.arch_at_budget is None
            else asdict(result.arch_at_budget),
            "vanilla_at_budget": None if result.vanilla_at_budget is None
            else asdict(result.vanilla_at_budget),
            "cost_model_kv_cache_bytes_per_token": cost,
            "ratios": result.ratios(), "speedup": result.speedup(),
            "cost_model_budget_ratio": None if result.arch_at_budget is None
            else decode_throughput_ratio(spec, int(args.cache_budget_mb * MIB), context,
                                         per_element).ratio}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_table(info)


def _mib(size: float) -> str:
    return f"{size / 2 ** 20:,.3f}"


def _print_table(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    a, v, ratios = info["architecture"], info["vanilla"], info["ratios"]
    B, T = info["batch"], info["context"]
    table = Table(title=f"decoding {info['arch']} (key {info['key']}) beside vanilla, on "
                  f"{info['device']} in {info['dtype']}", title_justify="left")
    for name in ("", "this architecture", "vanilla", "ratio"):
        table.add_column(name, justify="left" if not name else "right")

    def row(label: str, this: str, base: str, ratio: float | None) -> None:
        table.add_row(label, this, base, "" if ratio is None else f"{ratio:.3f}")

    row(f"prefill tokens/s ({info['prefill_batch']} x {T} tokens)",
        f"{a['prefill_tokens_per_s']:,.0f}", f"{v['prefill_tokens_per_s']:,.0f}",
        ratios["prefill_tokens_per_s"])
    row(f"decode tokens/s ({B} at context {T})", f"{a['decode_tokens_per_s']:,.0f}",
        f"{v['decode_tokens_per_s']:,.0f}", ratios["decode_tokens_per_s"])
    row("decode step ms (median)", f"{a['step_seconds'] * 1e3:.3f}",
        f"{v['step_seconds'] * 1e3:.3f}", a["step_seconds"] / v["step_seconds"])
    cost = info["cost_model_kv_cache_bytes_per_token"]
    row("cache bytes/token (cost model)",
        f"{a['cache_bytes_per_token']:,} ({cost['architecture']:,})",
        f"{v['cache_bytes_per_token']:,} ({cost['vanilla']:,})", ratios["cache_bytes_per_token"])
    row(f"cache MiB ({B} x {T} tokens)", _mib(a["cache_bytes"]), _mib(v["cache_bytes"]),
        a["cache_bytes"] / v["cache_bytes"])
    row("weights MiB", _mib(a["weight_bytes"]), _mib(v["weight_bytes"]),
        a["weight_bytes"] / v["weight_bytes"])
    peak = "peak MiB (measured)" if a["peak_measured"] else \
        f"weights + cache MiB (no peak on {info['device']})"
    row(peak, _mib(a["peak_bytes"]), _mib(v["peak_bytes"]), ratios["peak_bytes"])
    ab, vb = info["architecture_at_budget"], info["vanilla_at_budget"]
    if ab is not None:
        row(f"batch, cache in {info['cache_budget_mb']:g} MiB", f"{ab['batch']:,}",
            f"{vb['batch']:,}", ratios["budget_batch"])
        row("decode tokens/s at that batch", f"{ab['decode_tokens_per_s']:,.0f}",
            f"{vb['decode_tokens_per_s']:,.0f}", ratios["budget_decode_tokens_per_s"])
        row("  the cost model's prediction", "", "", info["cost_model_budget_ratio"])
    console = Console()
    console.print(table)
    console.print(f"decode: median of {info['steps']} steps, each attending over {T} positions "
                  f"per sequence; ratio: this architecture / vanilla; decode_speedup "
                  f"{info['speedup']:.3f}", style="dim", markup=False)
