"""A readable text picture of a spec in the terminal: layers x head groups with K and V
sources, and its costs next to vanilla's (the tables of `sla_nas.arch`, drawn with rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from sla_nas.arch import (
    COST_COLUMNS,
    LEGEND,
    ArchSpec,
    connectivity_table,
    cost_table,
    dims_sentence,
)

__all__ = ["render"]


def render(spec: ArchSpec, title: str = "", console: Console | None = None) -> None:
    """Print the connectivity table, the legend, the dimensions and the costs next to
    vanilla's."""
    console = console or Console()
    header, rows = connectivity_table(spec)
    table = Table(title=f"{title}  (key {spec.key})".strip(), title_justify="left")
    table.add_column(header[0], justify="right")
    for name in header[1:]:
        table.add_column(name, justify="center")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(LEGEND, style="dim", markup=False)
    console.print(f"dims: {dims_sentence(spec.dims)}", style="dim", markup=False)
    costs = Table(title="costs, next to vanilla attention at the same dimensions",
                  title_justify="left")
    costs.add_column("")  # the first of COST_COLUMNS names the rows: left blank here
    for name in COST_COLUMNS[1:-1]:
        costs.add_column(name, justify="right")
    costs.add_column(COST_COLUMNS[-1], style="dim")
    for row in cost_table(spec):
        costs.add_row(*row.cells())
    console.print(costs)
