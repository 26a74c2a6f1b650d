"""Limits on what sla-nas accepts from files and arguments before it allocates anything.

A run folder, an export or a command line can carry any number: a tampered ``arch.yaml`` with
``d_model: 1000000`` would make ``build_model`` ask for a terabyte, and ``--tokens 10**30``
would make a training plan of more steps than fit in memory. These are checked here, from the
cost model's arithmetic (`estimate`), before a model, a plan or a table is built, so the
answer is a one-line error that names the file instead of a machine out of memory.
"""

from __future__ import annotations

import operator
import os

from ._spec import ArchSpec
from .cost import estimate

__all__ = ["MAX_TOKENS", "check_tokens", "check_model_size", "model_bytes_limit"]

MAX_TOKENS = 10**13  # ten trillion: beyond any proxy (or real) training run this project runs
FP32 = 4  # bytes per parameter of the fp32 master weights


def check_tokens(value: int, what: str = "--tokens") -> int:
    """``value`` if it is a token count between 1 and `MAX_TOKENS`, else a ValueError naming
    ``what`` (the option or key)."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a whole number of tokens, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 1.5e6 from a script: a whole number written as a float
    try:
        value = operator.index(value)  # int, numpy integers; not bool-like text or 2.5
    except TypeError:
        raise ValueError(f"{what}: expected a whole number of tokens, got "
                         f"{value!r:.80}") from None
    if not 1 <= value <= MAX_TOKENS:
        shown = f"{value:.3g}" if value > MAX_TOKENS else str(value)  # 10**30 is 31 digits
        raise ValueError(f"{what}: expected between 1 and {MAX_TOKENS:,} tokens, got {shown}")
    return value


def model_bytes_limit() -> int:
    """The most bytes a model's weights (times the copies a use needs) may take: half this
    machine's physical memory (``SLA_NAS_MAX_MODEL_BYTES`` overrides it)."""
    override = os.environ.get("SLA_NAS_MAX_MODEL_BYTES")
    if override:
        return int(override)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): a fixed 8 GiB
        return 8 << 30


def check_model_size(spec: ArchSpec, source: object, copies: int = 1) -> int:
    """The parameter count of ``spec``, checked by the cost model before any tensor exists:
    ``copies`` fp32 copies of its weights (1 to load, 4 to train: weights, gradients and
    Adam's two moments) must fit in `model_bytes_limit`. ``source`` (the file or option the
    spec came from) starts the message."""
    params = estimate(spec)["params"]
    need, limit = params * FP32 * copies, model_bytes_limit()
    if need > limit:
        use = "to train" if copies >= 4 else "to load"
        raise ValueError(f"{source}: architecture {spec.key} has {params:,} parameters "
                         f"({need / 2**30:,.1f} GiB {use} in fp32) from d_model "
                         f"{spec.dims.d_model}, n_layers {spec.dims.n_layers}, vocab_size "
                         f"{spec.dims.vocab_size}, d_ff {spec.dims.d_ff}; expected at most "
                         f"{limit / 2**30:,.1f} GiB (half this machine's memory; "
                         f"SLA_NAS_MAX_MODEL_BYTES sets another limit)")
    return params
