"""The configuration of an sla-nas architecture for Hugging Face transformers.

Written by ``sla-nas export --format hf`` next to ``modeling_sla_nas.py``; it needs transformers
only, not sla-nas. It holds the model's dimensions (the fields of sla-nas's ``Dims``), the gene
table the model is built from (``genes[l][g] = [K gene, V gene]`` of head group g in layer l,
each ``{sources, mode, combine, weights, learned}``), and, for reference, the whole sla-nas
``ArchSpec`` it came from (``spec``, as ``ArchSpec.from_dict`` reads it) and its key.
"""

from __future__ import annotations

from typing import Any

try:
    from transformers import PreTrainedConfig
except ImportError:  # transformers releases that spell it PretrainedConfig only
    from transformers import PretrainedConfig as PreTrainedConfig

__all__ = ["SlaNasConfig"]


class SlaNasConfig(PreTrainedConfig):
    """An sla-nas decoder-only Transformer whose attention may read K and V across layers."""

    model_type = "sla_nas"
    # the names other tools look for, read from this model's own fields
    attribute_map = {"hidden_size": "d_model", "num_hidden_layers": "n_layers",
                     "num_attention_heads": "n_heads", "num_key_value_heads": "n_kv_heads",
                     "intermediate_size": "d_ff", "max_position_embeddings": "seq_len"}

    def __init__(self, vocab_size: int = 256, d_model: int = 16, n_layers: int = 1,
                 n_heads: int = 2, n_kv_heads: int = 2, n_groups: int = 2, d_ff: int = 64,
                 seq_len: int = 16, norm: str = "layernorm", pos: str = "learned",
                 tie_embeddings: bool = True, genes: list[Any] | None = None,
                 spec: dict[str, Any] | None = None, spec_key: str | None = None,
                 **kwargs: Any):
        self.vocab_size, self.d_model, self.n_layers = vocab_size, d_model, n_layers
        self.n_heads, self.n_kv_heads, self.n_groups = n_heads, n_kv_heads, n_groups
        self.d_ff, self.seq_len, self.norm, self.pos = d_ff, seq_len, norm, pos
        self.tie_embeddings = bool(tie_embeddings)
        self.genes = genes  # None: every group reads its own layer (plain attention)
        self.spec, self.spec_key = spec, spec_key
        kwargs["tie_word_embeddings"] = self.tie_embeddings  # one setting, two names
        super().__init__(**kwargs)
