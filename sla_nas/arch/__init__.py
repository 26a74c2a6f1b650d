"""The architecture: what a Transformer's cross-layer connectivity is, as data.

An `ArchSpec` holds the dimensions and, for every layer and head group, one gene for the K
stream and one for the V stream (which layers' states it reads, reprojected or reused, and
how several sources combine). `presets` returns published architectures as specs, `cost`
computes their parameters, KV cache and FLOPs analytically, `metrics` is the registry of
every metric (measured or analytic, its better direction and unit), and `labels` names genes
in the short notation the terminal, the exports and the report share. Nothing here imports
torch or Ray, so a spec can be read, checked and costed anywhere.
"""

from __future__ import annotations

from . import cost, metrics, presets
from ._genes import EMB, SPEC_VERSION, Dims, Gene, GroupGenes, did_you_mean
from ._rules import INDEX_SET_FORMS, check_index_set, parse_index_set, parse_rules
from ._spec import ArchSpec, canonical_gene
from .cost import (
    ADDITIVE_COSTS,
    BYTES_PER_ELEMENT,
    COST_COLUMNS,
    CostRow,
    DecodePrediction,
    additive_costs,
    check_context,
    cost_table,
    decode_reads,
    decode_throughput_ratio,
    estimate,
    gene_cache_tensors,
    gene_costs,
)
from .labels import LEGEND, cell_label, connectivity_table, dims_sentence, gene_label
from .metrics import Metric, metric, unit_of
from .presets import load_arch

__all__ = ["ArchSpec", "Dims", "Gene", "GroupGenes", "EMB", "SPEC_VERSION", "canonical_gene",
           "parse_rules", "estimate", "gene_costs", "additive_costs", "ADDITIVE_COSTS",
           "gene_cache_tensors", "BYTES_PER_ELEMENT",
           "gene_label", "cell_label", "LEGEND", "cost", "presets", "CostRow", "COST_COLUMNS",
           "cost_table", "decode_reads", "decode_throughput_ratio", "DecodePrediction",
           "check_context",
           "load_arch", "connectivity_table", "dims_sentence",
           "did_you_mean", "parse_index_set",
           "check_index_set", "INDEX_SET_FORMS", "metrics", "Metric",
           "metric", "unit_of"]
