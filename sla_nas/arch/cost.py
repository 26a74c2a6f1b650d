"""Analytic costs of a spec (docs/CONNECTIVITY.md), exact where a number can be exact.

* ``params``: exactly ``sum(p.numel() for p in build_model(spec).parameters())``.
* ``kv_cache_bytes_per_token``: the K/V tensors some layer has to keep per token at inference.
  A select/mix gene keeps one tensor if it owns a projection (a mix keeps its mixed result),
  none if it only reuses; a concat keeps one per own projection (every source when
  reprojected, the own layer's when reusing).
* ``train_flops_per_token``: 3x the forward FLOPs (backward ~ 2x forward), matmuls counted as
  2 FLOPs per multiply-add: every projection as the model runs it, the LM head, and attention
  with each query reading on average (seq_len + 1) / 2 positions of every token set.
* ``decode_bytes_per_token``: what one decoding step reads at full context: the weights it
  multiplies with plus every cached K/V vector its attention reads. Reuse does not reduce
  what is read, only what is stored; a reuse-only mix re-reads its ingredients.
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

from ._spec import ArchSpec, Dims, Gene
from .metrics import unit_of

BYTES_PER_ELEMENT = 2  # fp16/bf16 cache and weights

__all__ = ["estimate", "gene_costs", "additive_costs", "ADDITIVE_COSTS", "gene_cache_tensors",
           "BYTES_PER_ELEMENT", "CostRow", "COST_COLUMNS", "cost_table"]


def gene_cache_tensors(gene: Gene, layer: int) -> int:
    """How many (group_kv_dim)-vectors per token this gene adds to the KV cache."""
    if gene.combine == "concat":
        return len(gene.sources) if gene.mode == "reproject" else int(layer in gene.sources)
    return int(gene.owns_projection(layer))


def gene_costs(dims: Dims, layer: int, stream: str, gene: Gene) -> tuple[int, int, float]:
    """What one gene adds: (cached K/V vectors per token, parameters, forward multiply-adds
    per token). Attention work is booked on the K gene of each group."""
    gd, D = dims.group_kv_dim, dims.d_model
    owns = gene.owns_projection(layer)
    params = (gd * D if owns else 0) + (len(gene.sources) if gene.learned else 0)
    inputs = 1 if gene.mode == "reuse" or gene.combine == "mix" else len(gene.sources)
    macs = float(inputs * gd * D if owns else 0)
    if stream == "k":  # per query: q.k and a.v over (T+1)/2 positions of each token set
        sets = len(gene.sources) if gene.combine == "concat" else 1
        macs += 2 * dims.q_heads_per_group * dims.head_dim * sets * (dims.seq_len + 1) / 2
    return gene_cache_tensors(gene, layer), params, macs


ADDITIVE_COSTS = ("kv_cache_bytes_per_token", "params", "train_flops_per_token")


def additive_costs(dims: Dims, layer: int, stream: str, gene: Gene,
                   bytes_per_element: int = BYTES_PER_ELEMENT) -> dict[str, float]:
    """What one gene adds to each cost that adds up over genes (`ADDITIVE_COSTS`), in the units
    of `estimate`: KV-cache bytes, parameters and training FLOPs (3 x 2 per multiply-add) per
    token. A search space's cost range is the base architecture's plus these per gene."""
    vectors, params, macs = gene_costs(dims, layer, stream, gene)
    return {"kv_cache_bytes_per_token": vectors * dims.group_kv_dim * bytes_per_element,
            "params": params, "train_flops_per_token": 3 * 2 * macs}


def estimate(spec: ArchSpec, bytes_per_element: int = BYTES_PER_ELEMENT) -> dict[str, int]:
    """Costs of ``spec``; cache and decode bytes at ``bytes_per_element`` (2: fp16/bf16)."""
    d = spec.dims
    D, L, V, T, gd = d.d_model, d.n_layers, d.vocab_size, d.seq_len, d.group_kv_dim

    params = V * D + (T * D if d.pos == "learned" else 0) + (0 if d.tie_embeddings else V * D)
    params += D + (D if spec.uses_embedding else 0)  # final norm, embedding-source norm
    params += L * (2 * D + 2 * D * D + 2 * D * d.d_ff)  # norms, W_Q, W_O, MLP
    macs = D * V + L * (2 * D * D + 2 * D * d.d_ff)  # LM head, W_Q, W_O, MLP
    cache_vectors = read_vectors = 0

    @cache
    def tensor_reads(layer: int, g: int, s: str) -> int:
        """Cached vectors read to obtain the one K/V tensor a select/mix gene attended with."""
        gene = spec.gene(layer, g, s)
        if gene_cache_tensors(gene, layer):
            return 1
        return sum(tensor_reads(src, g, s) for src in gene.sources)

    for l, g, s, gene in spec.genes():
        vectors, gene_params, gene_macs = gene_costs(d, l, s, gene)
        cache_vectors += vectors
        params += gene_params
        macs += gene_macs
        if gene.combine == "mix":
            read_vectors += tensor_reads(l, g, s)
        else:
            read_vectors += sum(1 if gene.mode == "reproject" or src == l
                                else tensor_reads(src, g, s) for src in gene.sources)
    pos_table = T * D if d.pos == "learned" else 0
    # every weight is read once, except the embeddings: one token row (and one position row);
    # a tied LM head reads the whole table again
    weight_read = (params - V * D - pos_table + (V * D if d.tie_embeddings else 0)
                   + D + (D if pos_table else 0))
    return {
        "params": params,
        "kv_cache_bytes_per_token": cache_vectors * gd * bytes_per_element,
        "train_flops_per_token": int(round(3 * 2 * macs)),
        "decode_bytes_per_token": (weight_read + T * read_vectors * gd) * bytes_per_element,
        "decode_kv_bytes_per_token": T * read_vectors * gd * bytes_per_element,
    }


class CostRow(NamedTuple):
    """One cost of a spec next to vanilla attention's at the same dimensions."""

    metric: str  # the key of `estimate`
    this: int
    vanilla: int
    ratio: float  # this / vanilla
    unit: str  # what it counts, from the metric registry, e.g. "bytes/token"

    def cells(self) -> tuple[str, str, str, str, str]:
        """The row as text under `COST_COLUMNS`: counts with thousands separators, the ratio
        to 3 decimals; every rendering of the table (terminal, markdown, HTML) shows these."""
        return (self.metric, f"{self.this:,}", f"{self.vanilla:,}", f"{self.ratio:.3f}",
                self.unit)


COST_COLUMNS = ("cost", "this", "vanilla", "ratio", "unit")  # the headings of `CostRow.cells`


def cost_table(spec: ArchSpec, bytes_per_element: int = BYTES_PER_ELEMENT) -> list[CostRow]:
    """Every cost of `estimate` for ``spec`` and for vanilla attention at its dimensions: the
    one table that ``sla-nas show``, the model card, the exported docstring and the report
    render, each in its own format."""
    costs = estimate(spec, bytes_per_element)
    base = estimate(ArchSpec.create(spec.dims), bytes_per_element)
    return [CostRow(k, v, base[k], v / base[k], unit_of(k)) for k, v in costs.items()]
