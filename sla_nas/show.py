"""A readable text picture of a spec: layers x head groups with K and V sources, and costs."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .cost import estimate
from .spec import EMB, ArchSpec, Gene

__all__ = ["gene_label", "cell_label", "render", "LEGEND"]

LEGEND = ("·  own layer (vanilla)   3  reproject layer 3's state with this layer's W   "
          "↺3  reuse layer 3's K/V   e  token embedding   a+b  concat (attend over both)   "
          "a⊕b  mix (equal weights unless shown; ~ learned)")


def gene_label(gene: Gene, layer: int) -> str:
    """Short text for one gene, e.g. ``·``, ``0``, ``↺2``, ``0+2+·``, ``↺0⊕·``, ``1⊕·~(.7,.3)``."""
    if gene.is_default(layer):
        return "·"

    def one(s: int) -> str:
        if s == layer:
            return "·"
        name = "e" if s == EMB else str(s)
        return f"↺{name}" if gene.mode == "reuse" else name

    if gene.combine == "select":
        return one(gene.sources[0])
    if gene.combine == "concat":
        return "+".join(one(s) for s in gene.sources)
    weights = gene.weights or ()
    uniform = len(set(weights)) == 1 and abs(weights[0] * len(weights) - 1) < 1e-9
    text = "" if uniform else "(" + ",".join(f"{w:g}".lstrip("0") or "0" for w in weights) + ")"
    return "⊕".join(one(s) for s in gene.sources) + ("~" if gene.learned else "") + text


def cell_label(spec: ArchSpec, layer: int, group: int) -> str:
    k, v = (gene_label(spec.gene(layer, group, s), layer) for s in "kv")
    return k if k == v else f"K{k} V{v}"


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
