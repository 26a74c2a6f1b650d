"""A readable text picture of a spec in the terminal: layers x head groups with K and V
sources, and its costs next to vanilla's."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from sla_nas.arch import LEGEND, ArchSpec, cell_label, estimate

__all__ = ["render"]


def render(spec: ArchSpec, title: str = "", console: Console | None = None) -> None:
    """Print the connectivity table, the legend and the costs next to vanilla's."""
    console = console or Console()
    d = spec.dims
    table = Table(title=f"{title}  (key {spec.key})".strip(), title_justify="left")
    table.add_column("layer", justify="right")
    for g in range(d.n_groups):
        table.add_column(f"group {g}", justify="center")
    for l in range(d.n_layers):
        table.add_row(str(l), *(cell_label(spec, l, g) for g in range(d.n_groups)))
    console.print(table)
    console.print(f"[dim]{LEGEND}[/dim]")
    console.print(f"[dim]dims: {d.n_layers} layers, d_model {d.d_model}, {d.n_heads} heads, "
                  f"{d.n_kv_heads} K/V heads in {d.n_groups} groups, d_ff {d.d_ff}, "
                  f"seq {d.seq_len}, vocab {d.vocab_size}, {d.norm}, {d.pos} positions"
                  f"{', tied' if d.tie_embeddings else ''}[/dim]")
    costs, base = estimate(spec), estimate(ArchSpec.create(d))
    ct = Table(title="costs", title_justify="left")
    ct.add_column("")
    ct.add_column("this", justify="right")
    ct.add_column("vanilla", justify="right")
    ct.add_column("ratio", justify="right")
    for key, value in costs.items():
        ct.add_row(key, f"{value:,}", f"{base[key]:,}", f"{value / base[key]:.3f}")
    console.print(ct)
