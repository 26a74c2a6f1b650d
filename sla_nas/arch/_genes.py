"""The parts of a spec: dimensions, genes and the checks they share (docs/CONNECTIVITY.md)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SPEC_VERSION = 1
EMB = -1  # the token-embedding source, written "e"
MODES = ("reproject", "reuse")
COMBINES = ("select", "concat", "mix")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope")
STREAMS = ("k", "v")
# The largest dimensions a spec may give: far above any published model, low enough that the
# tables built from a spec (one gene per layer and group) and the cost model's numbers stay
# small. A spec file or a space is checked against them before anything is built.
DIM_LIMITS = {"vocab_size": 1 << 32, "d_model": 1 << 16, "n_layers": 1024, "n_heads": 1024,
              "n_kv_heads": 1024, "n_groups": 1024, "d_ff": 1 << 20, "seq_len": 1 << 20}
MAX_GENES = 1 << 14  # layers x head groups: 128 x 128; a spec that size takes ~1 s to build


def did_you_mean(word: Any, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` naming the closest of ``choices`` to a misspelt ``word``, or
    "" when none is close: the hint every "unknown ..." message of the package ends with."""
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: a message quotes a hostile value whole
    otherwise (see `sla_nas.arch.short_repr`, which also shortens large containers)."""
    text = repr(value) if not isinstance(value, list | dict) or len(value) <= 16 else \
        f"{type(value).__name__} of {len(value):,} items"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _fail(path: str, message: str) -> ValueError:
    return ValueError(f"{path}: {message}" if path else message)


def _check_keys(data: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
    if not isinstance(data, Mapping):
        raise _fail(path, f"expected a mapping, got {type(data).__name__} {_short(data)}")
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            raise _fail(path, f"unknown key {_short(key)}{did_you_mean(key, allowed)}; "
                        f"expected one of {allowed}")


def _int(value: Any, path: str, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"expected an integer, got {_short(value)}")
    if value < minimum:
        raise _fail(path, f"must be >= {minimum}, got {_short(value)}")
    if maximum is not None and value > maximum:
        raise _fail(path, f"must be <= {maximum:,}, got {_short(value)}")
    return value


@dataclass(frozen=True)
class Dims:
    """Model dimensions. ``n_groups`` head groups partition the ``n_kv_heads`` K/V heads (and
    the query heads that read them); each group carries its own K and V gene."""

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    n_groups: int
    d_ff: int
    seq_len: int
    norm: str = "layernorm"
    pos: str = "learned"
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "n_groups",
                     "d_ff", "seq_len"):
            _int(getattr(self, name), f"dims.{name}", maximum=DIM_LIMITS[name])
        if self.n_layers * self.n_groups > MAX_GENES:
            raise _fail("dims.n_groups", f"n_layers x n_groups = {self.n_layers} x "
                        f"{self.n_groups} is more than {MAX_GENES:,} genes per stream; use "
                        f"fewer layers or head groups")
        if self.d_model % self.n_heads:
            raise _fail("dims.d_model", f"must be divisible by n_heads={self.n_heads}, "
                        f"got d_model={self.d_model}")
        if self.n_heads % self.n_kv_heads:
            raise _fail("dims.n_kv_heads", f"must divide n_heads={self.n_heads}, "
                        f"got n_kv_heads={self.n_kv_heads}")
        if self.n_kv_heads % self.n_groups:
            raise _fail("dims.n_groups", f"must divide n_kv_heads={self.n_kv_heads}, "
                        f"got n_groups={self.n_groups}")
        if self.norm not in NORMS:
            raise _fail("dims.norm", f"expected one of {list(NORMS)}, got {_short(self.norm)}")
        if self.pos not in POSITIONS:
            raise _fail("dims.pos", f"expected one of {list(POSITIONS)}, got {_short(self.pos)}")
        if self.pos == "rope" and self.head_dim % 2:
            raise _fail("dims.pos", f"rope needs an even head_dim, got {self.head_dim}")
        if not isinstance(self.tie_embeddings, bool):
            raise _fail("dims.tie_embeddings",
                        f"expected true/false, got {_short(self.tie_embeddings)}")

    @classmethod
    def create(cls, *, vocab_size: int = 256, d_model: int = 128, n_layers: int = 4,
               n_heads: int = 4, n_kv_heads: int | None = None, n_groups: int | None = None,
               d_ff: int | None = None, seq_len: int = 128, norm: str = "layernorm",
               pos: str = "learned", tie_embeddings: bool = True) -> Dims:
        """Dimensions with defaults: MHA (``n_kv_heads = n_heads``), one group per K/V head,
        ``d_ff = 4 * d_model``."""
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        return cls(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                   n_kv_heads=n_kv_heads, n_groups=n_kv_heads if n_groups is None else n_groups,
                   d_ff=4 * d_model if d_ff is None else d_ff, seq_len=seq_len, norm=norm,
                   pos=pos, tie_embeddings=tie_embeddings)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def q_heads_per_group(self) -> int:
        return self.n_heads // self.n_groups

    @property
    def kv_heads_per_group(self) -> int:
        return self.n_kv_heads // self.n_groups

    @property
    def group_kv_dim(self) -> int:
        """Width of one group's K (or V): its K/V heads times the head dimension."""
        return self.kv_heads_per_group * self.head_dim


@dataclass(frozen=True)
class Gene:
    """Where one head group's K (or V) comes from. Canonical: sources sorted and distinct,
    ``weights`` present exactly for ``mix`` (initial values when ``learned``)."""

    sources: tuple[int, ...]
    mode: str = "reproject"
    combine: str = "select"
    weights: tuple[float, ...] | None = None
    learned: bool = False

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("sources: must name at least one source, got []")
        if list(self.sources) != sorted(set(self.sources)):
            raise ValueError(f"sources: must be sorted and distinct (use Gene.create), "
                             f"got {list(self.sources)}")
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {list(MODES)}, got {_short(self.mode)}")
        if self.combine not in COMBINES:
            raise ValueError(f"combine: expected one of {list(COMBINES)}, "
                             f"got {_short(self.combine)}")
        n = len(self.sources)
        if self.combine == "select" and n != 1:
            raise ValueError(f"combine: select reads exactly one source, got {n}: "
                             f"{_fmt_sources(self.sources)} (use concat or mix)")
        if self.combine == "concat" and n < 2:
            raise ValueError(f"combine: concat needs at least 2 distinct sources, "
                             f"got {_fmt_sources(self.sources)}")
        if self.combine == "mix":
            if self.weights is None or len(self.weights) != n:
                raise ValueError(f"weights: mix needs one weight per source ({n}), "
                                 f"got {_short(self.weights)}")
            if not all(isinstance(w, float) and math.isfinite(w) for w in self.weights):
                raise ValueError(f"weights: must be finite numbers, got {list(self.weights)}")
            if n == 1 and self.weights == (1.0,) and not self.learned:
                raise ValueError("combine: a fixed mix of one source with weight 1 is a select "
                                 "(use Gene.create)")
        elif self.weights is not None or self.learned:
            raise ValueError(f"weights: only a mix has weights, got weights={_short(self.weights)} "
                             f"learned={_short(self.learned)} with combine={_short(self.combine)}")

    @classmethod
    def create(cls, sources: Iterable[int], mode: str = "reproject", combine: str | None = None,
               weights: Iterable[float] | None = None, learned: bool = False) -> Gene:
        """Normalise an encoding: sort and de-duplicate sources (a mix sums the weights of a
        repeated source), default mix weights to 1/n, and reduce a one-source concat (or a mix
        with a single weight of 1) to select. ``combine`` defaults to select for one source."""
        sources = list(sources)
        if combine is None:
            combine = "select" if len(set(sources)) == 1 else "concat"
        if combine == "mix":
            w = [1.0 / len(sources)] * len(sources) if weights is None else list(weights)
            if len(w) != len(sources):
                raise ValueError(f"weights: mix needs one weight per source ({len(sources)}), "
                                 f"got {len(w)}")
            merged: dict[int, float] = {}
            for s, x in zip(sources, w):
                if isinstance(x, bool) or not isinstance(x, (int, float)):
                    raise ValueError(f"weights: must be numbers, got {_short(x)}")
                merged[s] = merged.get(s, 0.0) + float(x)
            keys = sorted(merged)
            if len(keys) == 1 and merged[keys[0]] == 1.0 and not learned:
                return cls((keys[0],), mode)
            return cls(tuple(keys), mode, "mix", tuple(merged[k] for k in keys), bool(learned))
        if weights is not None or learned:
            raise ValueError(f"weights: only a mix has weights, got combine={_short(combine)}")
        keys = sorted(set(sources))
        if combine == "concat" and len(keys) == 1:
            combine = "select"
        return cls(tuple(keys), mode, combine)

    def with_sources(self, sources: Iterable[int], mode: str | None = None) -> Gene:
        return Gene.create(list(sources), self.mode if mode is None else mode, self.combine,
                           self.weights, self.learned)

    def owns_projection(self, layer: int) -> bool:
        """Whether this gene needs this layer's own W_K (or W_V) rows."""
        return self.mode == "reproject" or layer in self.sources

    def is_default(self, layer: int) -> bool:
        return self == Gene((layer,))


@dataclass(frozen=True)
class GroupGenes:
    k: Gene
    v: Gene

    def stream(self, name: str) -> Gene:
        return self.k if name == "k" else self.v


def _fmt_source(s: int) -> str:
    return "e" if s == EMB else str(s)


def _fmt_sources(sources: Iterable[int]) -> str:
    return "[" + ", ".join(_fmt_source(s) for s in sources) + "]"
