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
from ._genes import DIM_LIMITS, EMB, MAX_GENES, SPEC_VERSION, Dims, Gene, GroupGenes, did_you_mean
from ._limits import MAX_TOKENS, check_model_size, check_tokens, model_bytes_limit
from ._reading import (
    MAX_NUMBER_DIGITS,
    MAX_SPEC_BYTES,
    HugeNumber,
    load_json,
    load_yaml,
    load_yaml_nodes,
    read_text_bounded,
    short_repr,
)
from ._rules import INDEX_SET_FORMS, check_index_set, parse_index_set, parse_rules
from ._spec import ArchSpec, canonical_gene
from ._writing import atomic_write, check_write_target, error_line, make_folder, regular_file
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
           "metric", "unit_of", "read_text_bounded", "load_yaml", "load_yaml_nodes", "load_json",
           "short_repr",
           "HugeNumber", "MAX_SPEC_BYTES", "MAX_NUMBER_DIGITS", "DIM_LIMITS", "MAX_GENES",
           "atomic_write", "check_write_target", "error_line", "make_folder", "regular_file",
           "MAX_TOKENS",
           "check_tokens", "check_model_size", "model_bytes_limit"]
