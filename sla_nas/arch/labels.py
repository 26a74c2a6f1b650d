"""Short names for genes (``·``, ``3``, ``↺3``, ``0+·``, ``↺0⊕·``) shared by the terminal, the
exported model files and the report."""

from __future__ import annotations

from ._genes import EMB, Dims, Gene
from ._spec import ArchSpec

__all__ = ["gene_label", "cell_label", "connectivity_table", "dims_sentence", "LEGEND"]

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
    """One layer's head group: its gene's label, or ``K<label> V<label>`` where K and V
    differ."""
    k, v = (gene_label(spec.gene(layer, group, s), layer) for s in "kv")
    return k if k == v else f"K{k} V{v}"


def connectivity_table(spec: ArchSpec) -> tuple[list[str], list[list[str]]]:
    """The header (``layer``, ``group 0`` ...) and one row per layer of `cell_label`s: the
    connectivity as the terminal, the model card and the exported docstring show it."""
    d = spec.dims
    header = ["layer", *(f"group {g}" for g in range(d.n_groups))]
    rows = [[str(l), *(cell_label(spec, l, g) for g in range(d.n_groups))]
            for l in range(d.n_layers)]
    return header, rows


def dims_sentence(dims: Dims) -> str:
    """The dimensions in one line of words."""
    d = dims
    return (f"{d.n_layers} layers, d_model {d.d_model}, {d.n_heads} heads of {d.head_dim} "
            f"dims, {d.n_kv_heads} K/V heads in {d.n_groups} groups, d_ff {d.d_ff}, seq_len "
            f"{d.seq_len}, vocab {d.vocab_size}, {d.norm}, {d.pos} positions, "
            f"{'tied' if d.tie_embeddings else 'untied'} embeddings")
