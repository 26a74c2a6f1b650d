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
* ``decode_reads`` splits those reads into the weights (once per step, whatever the batch) and
  each sequence's cache reads at a given context; ``decode_throughput_ratio`` turns them into
  the predicted decode tokens/s against vanilla when both fill one cache budget.
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

from ._spec import ArchSpec, Dims, Gene
from .metrics import unit_of

BYTES_PER_ELEMENT = 2  # fp16/bf16 cache and weights

__all__ = ["estimate", "gene_costs", "additive_costs", "ADDITIVE_COSTS", "gene_cache_tensors",
           "BYTES_PER_ELEMENT", "CostRow", "COST_COLUMNS", "cost_table", "decode_reads",
           "DecodePrediction", "decode_throughput_ratio", "check_context"]


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


class _Tally(NamedTuple):
    """What `estimate` and `decode_reads` count, in elements and vectors (no bytes yet)."""

    params: int
    macs: float  # forward multiply-adds per token
    cache_vectors: int  # (group_kv_dim)-vectors a token leaves in the cache
    read_vectors: int  # (group_kv_dim)-vectors per cached token that one decode step reads
    weight_read: int  # weight elements one decode step reads


def _tally(spec: ArchSpec) -> _Tally:
    d = spec.dims
    D, L, V, T = d.d_model, d.n_layers, d.vocab_size, d.seq_len

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
    return _Tally(params, macs, cache_vectors, read_vectors, weight_read)


def estimate(spec: ArchSpec, bytes_per_element: int = BYTES_PER_ELEMENT) -> dict[str, int]:
    """Costs of ``spec``; cache and decode bytes at ``bytes_per_element`` (2: fp16/bf16)."""
    t = _tally(spec)
    weights, cache_reads = _split_reads(spec, t, spec.dims.seq_len, bytes_per_element)
    return {
        "params": t.params,
        "kv_cache_bytes_per_token": t.cache_vectors * spec.dims.group_kv_dim * bytes_per_element,
        "train_flops_per_token": int(round(3 * 2 * t.macs)),
        "decode_bytes_per_token": weights + cache_reads,
        "decode_kv_bytes_per_token": cache_reads,
    }


def decode_reads(spec: ArchSpec, context: int,
                 bytes_per_element: int = BYTES_PER_ELEMENT) -> tuple[int, int]:
    """What one decoding step reads, split the way batching splits it: (the weight bytes, read
    once for the whole batch, with one embedding row; the cache bytes each sequence reads when
    it holds ``context`` tokens). At ``context = seq_len`` the two add up to `estimate`'s
    ``decode_bytes_per_token`` and the second is its ``decode_kv_bytes_per_token``. A reuse
    layer stores nothing but reads its producer's entry again, so sharing lowers what is
    stored, not what a sequence reads."""
    if context < 0:
        raise ValueError(f"context must be >= 0 tokens, got {context}")
    return _split_reads(spec, _tally(spec), context, bytes_per_element)


def _split_reads(spec: ArchSpec, t: _Tally, context: int,
                 bytes_per_element: int) -> tuple[int, int]:
    return (t.weight_read * bytes_per_element,
            context * t.read_vectors * spec.dims.group_kv_dim * bytes_per_element)


def check_context(dims: Dims, context: int, where: str = "") -> None:
    """Refuse a context a model of ``dims`` cannot decode at: below 1, or past the learned
    positions (which end at ``seq_len``; rotary ones go on). ``where``: what the message adds
    after the seq_len, e.g. which dimension choice of a space."""
    if not isinstance(context, int) or isinstance(context, bool) or context < 1:
        raise ValueError(f"context must be a positive number of tokens, got {context!r}")
    if dims.pos == "learned" and context > dims.seq_len:
        raise ValueError(f"context {context} is past the learned positions, which end at "
                         f"seq_len {dims.seq_len}{where}: use a context <= {dims.seq_len} "
                         f"(only rope models decode further)")


class DecodePrediction(NamedTuple):
    """The cost model's decode throughput of a spec against vanilla at the same dimensions,
    both serving as many sequences as their caches fit into one budget. A decode step is taken
    to be memory bound: its time is proportional to the bytes it reads, the weights once plus
    every sequence's cache reads (`decode_reads`); tokens/s is then batch / step bytes."""

    batch: int  # the most sequences whose caches (``context`` tokens each) fit the budget
    vanilla_batch: int
    weight_bytes: int  # W: read once per step, whatever the batch
    vanilla_weight_bytes: int
    read_bytes: int  # R: the cache bytes one sequence reads per step at ``context``
    vanilla_read_bytes: int
    step_bytes: int  # W + batch * R
    vanilla_step_bytes: int
    ratio: float  # (batch / step_bytes) / (vanilla_batch / vanilla_step_bytes)

    def step_ratio_at(self, batch: int) -> float:
        """The predicted step-time ratio to vanilla when both decode ``batch`` sequences:
        (W + batch R) / (W_vanilla + batch R_vanilla)."""
        return ((self.weight_bytes + batch * self.read_bytes)
                / (self.vanilla_weight_bytes + batch * self.vanilla_read_bytes))


def decode_throughput_ratio(spec: ArchSpec, cache_budget_bytes: int, context: int,
                            bytes_per_element: int = BYTES_PER_ELEMENT) -> DecodePrediction:
    """Predicted decode tokens/s of ``spec`` over vanilla's when each serves as many sequences
    of ``context`` tokens as its KV cache fits into ``cache_budget_bytes``. A smaller cache buys
    a larger batch; whether that pays depends on what dominates a step: for cla2 (half the
    cache, the same reads) the ratio is 2 (W + M) / (W' + 2 M), M being vanilla's cache reads at
    its batch: about 2x where the weights dominate, about 1x where the cache does."""
    if context < 1:
        raise ValueError(f"context must be >= 1 token, got {context}")
    vanilla = ArchSpec.create(spec.dims)
    per_seq = estimate(spec, bytes_per_element)["kv_cache_bytes_per_token"] * context
    vanilla_per_seq = estimate(vanilla, bytes_per_element)["kv_cache_bytes_per_token"] * context
    vanilla_batch = cache_budget_bytes // vanilla_per_seq
    if vanilla_batch < 1:
        raise ValueError(f"a cache budget of {cache_budget_bytes:,} bytes holds no vanilla "
                         f"sequence of {context} tokens: one needs {vanilla_per_seq:,} bytes; "
                         f"raise the budget or shorten the context")
    batch = cache_budget_bytes // per_seq  # every spec caches something in layer 0
    w, r = decode_reads(spec, context, bytes_per_element)
    wv, rv = decode_reads(vanilla, context, bytes_per_element)
    step, vanilla_step = w + batch * r, wv + vanilla_batch * rv
    return DecodePrediction(batch, vanilla_batch, w, wv, r, rv, step, vanilla_step,
                            (batch / step) / (vanilla_batch / vanilla_step))


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
