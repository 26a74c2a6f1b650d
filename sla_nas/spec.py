"""The architecture spec: one frozen, validated, canonical value per architecture.

An `ArchSpec` holds the model dimensions and, for every layer ``l`` and head group ``g``, a
`Gene` for the K stream and one for the V stream (DESIGN.md section 2):

* ``sources``: layers ``<= l`` whose hidden state (``reproject``) or computed K/V (``reuse``)
  the group reads; ``EMB`` (written ``e``) is the token-embedding output, normed by its own norm.
* ``mode``: ``reproject`` applies this layer's own W_K/W_V to each source's normed hidden state;
  ``reuse`` reads each source layer's already computed K/V of the same group: the one it
  attended with, or for a concat its own-state projection (the own layer ``l``, if listed,
  means this layer's own projection; a reuse gene without ``l`` owns no weight).
* ``combine``: ``select`` (one source), ``concat`` (attend over the union of the sources' tokens,
  causal per source) or ``mix`` (weighted sum of the sources, fixed or learned weights; a mix
  of one source is a learned or fixed gain, which canonicalisation can produce).

Specs are built through `ArchSpec.create` or `ArchSpec.from_dict`, which normalise equivalent
encodings to one canonical spec; the constructor only validates. This module imports neither
torch nor ray.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ArchSpec", "Dims", "Gene", "GroupGenes", "EMB", "SPEC_VERSION", "parse_rules",
           "canonical_gene"]

SPEC_VERSION = 1
EMB = -1  # the token-embedding source, written "e"
MODES = ("reproject", "reuse")
COMBINES = ("select", "concat", "mix")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope")
STREAMS = ("k", "v")


def _fail(path: str, message: str) -> ValueError:
    return ValueError(f"{path}: {message}" if path else message)


def _check_keys(data: Mapping[str, Any], allowed: Iterable[str], path: str) -> None:
    if not isinstance(data, Mapping):
        raise _fail(path, f"expected a mapping, got {type(data).__name__} {data!r}")
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            import difflib

            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _fail(path, f"unknown key {key!r}{hint}; expected one of {allowed}")


def _int(value: Any, path: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"expected an integer, got {value!r}")
    if value < minimum:
        raise _fail(path, f"must be >= {minimum}, got {value}")
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
            _int(getattr(self, name), f"dims.{name}")
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
            raise _fail("dims.norm", f"expected one of {list(NORMS)}, got {self.norm!r}")
        if self.pos not in POSITIONS:
            raise _fail("dims.pos", f"expected one of {list(POSITIONS)}, got {self.pos!r}")
        if self.pos == "rope" and self.head_dim % 2:
            raise _fail("dims.pos", f"rope needs an even head_dim, got {self.head_dim}")
        if not isinstance(self.tie_embeddings, bool):
            raise _fail("dims.tie_embeddings", f"expected true/false, got {self.tie_embeddings!r}")

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
            raise ValueError(f"mode: expected one of {list(MODES)}, got {self.mode!r}")
        if self.combine not in COMBINES:
            raise ValueError(f"combine: expected one of {list(COMBINES)}, got {self.combine!r}")
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
                                 f"got {self.weights!r}")
            if not all(isinstance(w, float) and math.isfinite(w) for w in self.weights):
                raise ValueError(f"weights: must be finite numbers, got {list(self.weights)}")
            if n == 1 and self.weights == (1.0,) and not self.learned:
                raise ValueError("combine: a fixed mix of one source with weight 1 is a select "
                                 "(use Gene.create)")
        elif self.weights is not None or self.learned:
            raise ValueError(f"weights: only a mix has weights, got weights={self.weights!r} "
                             f"learned={self.learned!r} with combine={self.combine!r}")

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
                    raise ValueError(f"weights: must be numbers, got {x!r}")
                merged[s] = merged.get(s, 0.0) + float(x)
            keys = sorted(merged)
            if len(keys) == 1 and merged[keys[0]] == 1.0 and not learned:
                return cls((keys[0],), mode)
            return cls(tuple(keys), mode, "mix", tuple(merged[k] for k in keys), bool(learned))
        if weights is not None or learned:
            raise ValueError(f"weights: only a mix has weights, got combine={combine!r}")
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


@dataclass(frozen=True)
class ArchSpec:
    """An architecture: dimensions plus ``layers[l][g]`` = the K and V genes of group g."""

    dims: Dims
    layers: tuple[tuple[GroupGenes, ...], ...]

    def __post_init__(self) -> None:
        d = self.dims
        if len(self.layers) != d.n_layers:
            raise ValueError(f"layers: expected {d.n_layers} layers, got {len(self.layers)}")
        for l, groups in enumerate(self.layers):
            if len(groups) != d.n_groups:
                raise ValueError(f"layers[{l}]: expected {d.n_groups} head groups, "
                                 f"got {len(groups)}")
            for g, genes in enumerate(groups):
                for stream in STREAMS:
                    self._validate_gene(l, g, stream, genes.stream(stream))
                if (genes.k.combine == "concat") != (genes.v.combine == "concat") or (
                        genes.k.combine == "concat" and genes.k.sources != genes.v.sources):
                    raise ValueError(
                        f"L{l}.g{g}: K and V must attend over the same tokens: a concat in one "
                        f"stream needs a concat over the same sources in the other, got "
                        f"k={genes.k.combine} {_fmt_sources(genes.k.sources)}, "
                        f"v={genes.v.combine} {_fmt_sources(genes.v.sources)}")
        canonical = _canonicalise(self.dims, self.layers)
        if canonical != self.layers:
            raise ValueError("spec is not in canonical form (a reuse of the own layer or of a "
                             "pure reuse); build specs with ArchSpec.create or from_dict")

    def _validate_gene(self, l: int, g: int, stream: str, gene: Gene) -> None:
        where = f"L{l}.g{g}.{stream}"
        for s in gene.sources:
            if s > l:
                raise ValueError(f"{where}.sources: layer {l} cannot read layer {s} above it "
                                 f"(sources must be <= {l} or 'e')")
            if s < EMB:
                raise ValueError(f"{where}.sources: {s} is not a layer (use 'e' for the "
                                 f"embedding)")
        if gene.mode != "reuse":
            return
        if EMB in gene.sources:
            raise ValueError(f"{where}: the embedding computes no K/V to reuse; read 'e' with "
                             f"mode reproject")
        for s in gene.sources:
            if s == l:
                continue
            target = self.layers[s][g].stream(stream)
            if target.combine == "concat" and s not in target.sources:
                raise ValueError(f"{where}: reuses layer {s}, whose {stream.upper()} of group "
                                 f"{g} concatenates {_fmt_sources(target.sources)} without its "
                                 f"own state, so it holds no single K/V to reuse")

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, dims: Dims, rules: Iterable[Mapping[str, Any]] = ()) -> ArchSpec:
        """Build a canonical spec: every group reads its own layer, except where a rule says
        otherwise (rules use the same compact form as the ``genes`` list of a spec file)."""
        table = [[GroupGenes(Gene((l,)), Gene((l,))) for _ in range(dims.n_groups)]
                 for l in range(dims.n_layers)]
        for (l, g, stream), gene in parse_rules(rules, dims, "genes"):
            genes = table[l][g]
            table[l][g] = (dataclasses.replace(genes, k=gene) if stream == "k"
                           else dataclasses.replace(genes, v=gene))
        return cls(dims, _canonicalise(dims, tuple(tuple(row) for row in table)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchSpec:
        _check_keys(data, ("version", "dims", "genes"), "")
        version = data.get("version")
        if version != SPEC_VERSION:
            raise _fail("version", f"this sla-nas reads spec version {SPEC_VERSION}, "
                        f"got {version!r}")
        raw_dims = data.get("dims")
        if raw_dims is None:
            raise _fail("dims", "missing")
        _check_keys(raw_dims, [f.name for f in dataclasses.fields(Dims)], "dims")
        try:
            dims = Dims.create(**raw_dims)
        except TypeError as err:  # a None or other non-number slipped into a default slot
            raise _fail("dims", str(err)) from None
        genes = data.get("genes") or []
        if not isinstance(genes, list):
            raise _fail("genes", f"expected a list of rules, got {genes!r}")
        return cls.create(dims, genes)

    @classmethod
    def from_yaml(cls, text: str) -> ArchSpec:
        return cls.from_dict(yaml.safe_load(text) or {})

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> ArchSpec:
        """Read a spec file (YAML or JSON); errors name the file."""
        path = Path(path)
        try:
            return cls.from_yaml(path.read_text())
        except (ValueError, yaml.YAMLError) as err:
            raise ValueError(f"{path}: {err}") from None

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Compact canonical form: the dims and one rule per layer for the groups that differ
        from the default, groups with equal genes merged."""
        rules: list[dict[str, Any]] = []
        for l, groups in enumerate(self.layers):
            merged: dict[GroupGenes, list[int]] = {}
            for g, genes in enumerate(groups):
                if not (genes.k.is_default(l) and genes.v.is_default(l)):
                    merged.setdefault(genes, []).append(g)
            for genes, gs in merged.items():
                rule: dict[str, Any] = {"layers": [l], "groups": gs}
                if genes.k == genes.v:
                    rule["kv"] = _gene_to_dict(genes.k)
                else:
                    if not genes.k.is_default(l):
                        rule["k"] = _gene_to_dict(genes.k)
                    if not genes.v.is_default(l):
                        rule["v"] = _gene_to_dict(genes.v)
                rules.append(rule)
        return {"version": SPEC_VERSION, "dims": dataclasses.asdict(self.dims), "genes": rules}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() if str(path).endswith(".json") else self.to_yaml())

    @property
    def key(self) -> str:
        """A short stable id of the canonical architecture (trial names, caches, folders)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    # ------------------------------------------------------------------ queries
    def gene(self, layer: int, group: int, stream: str) -> Gene:
        return self.layers[layer][group].stream(stream)

    def genes(self) -> Iterable[tuple[int, int, str, Gene]]:
        for l, groups in enumerate(self.layers):
            for g, genes in enumerate(groups):
                yield l, g, "k", genes.k
                yield l, g, "v", genes.v

    @property
    def uses_embedding(self) -> bool:
        return any(EMB in gene.sources for *_, gene in self.genes())

    def replace(self, rules: Iterable[Mapping[str, Any]]) -> ArchSpec:
        """This spec with more rules applied on top (returns a new canonical spec)."""
        table = [list(groups) for groups in self.layers]
        for (l, g, stream), gene in parse_rules(rules, self.dims, "genes"):
            table[l][g] = dataclasses.replace(table[l][g], **{stream: gene})
        return ArchSpec(self.dims, _canonicalise(self.dims, tuple(tuple(r) for r in table)))


def _gene_to_dict(gene: Gene) -> dict[str, Any]:
    out: dict[str, Any] = {"sources": ["e" if s == EMB else s for s in gene.sources]}
    if gene.mode != "reproject":
        out["mode"] = gene.mode
    if gene.combine != "select":
        out["combine"] = gene.combine
    if gene.weights is not None:
        out["weights"] = list(gene.weights)
    if gene.learned:
        out["learned"] = True
    return out


def _canonicalise(dims: Dims, layers: tuple[tuple[GroupGenes, ...], ...]
                  ) -> tuple[tuple[GroupGenes, ...], ...]:
    """Every gene in canonical form, lower layers first (see `canonical_gene`)."""
    out: list[tuple[GroupGenes, ...]] = []
    for l, groups in enumerate(layers):
        row = []
        for g, genes in enumerate(groups):
            new = GroupGenes(*(canonical_gene(genes.stream(s), l,
                                              lambda src, g=g, s=s: out[src][g].stream(s))
                               for s in STREAMS))
            if genes.k.combine == "concat" and (new.k.combine, new.k.sources) != (
                    new.v.combine, new.v.sources):
                new = genes  # K and V token sets pair up by source: keep the written pairing
            row.append(new)
        out.append(tuple(row))
    return tuple(out)


def canonical_gene(gene: Gene, layer: int, lower: Callable[[int], Gene]) -> Gene:
    """Rewrite a gene to its canonical equivalent: a reuse of only the own layer is the own
    projection (reproject), and a reuse of a layer that itself purely reuses layer t reads t
    directly. ``lower(s)`` gives the canonical gene of lower layer s (same group and stream)."""
    if gene.mode != "reuse":
        return gene
    resolved = []
    for s in gene.sources:
        target = lower(s) if 0 <= s < layer else None
        pure = (target is not None and target.mode == "reuse" and target.combine == "select"
                and target.sources != (s,))
        resolved.append(target.sources[0] if pure else s)
    if gene.combine == "concat" and len(set(resolved)) < len(resolved):
        return gene  # attending twice over one token set is not attending once: keep it
    gene = gene.with_sources(resolved)
    if gene.sources == (layer,):
        gene = gene.with_sources(gene.sources, mode="reproject")
    return gene


# ---------------------------------------------------------------------- compact rules
def _parse_index_set(value: Any, count: int, path: str, what: str) -> list[int]:
    if value is None or value == "all":
        return list(range(count))
    if isinstance(value, str) and "-" in value:
        lo, _, hi = value.partition("-")
        try:
            items = list(range(int(lo), int(hi) + 1))
        except ValueError:
            raise _fail(path, f"expected 'all', an integer, a list or a range 'a-b', "
                        f"got {value!r}") from None
        if not items:
            raise _fail(path, f"the range {value!r} is empty (write it low-high)")
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        raise _fail(path, f"expected 'all', an integer, a non-empty list or a range 'a-b', "
                    f"got {value!r}")
    for i in items:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < count:
            raise _fail(path, f"{what} {i!r} is out of range 0..{count - 1}")
    return sorted(set(items))


def _parse_source(token: Any, layer: int, path: str) -> int:
    if token == "e":
        return EMB
    if token == "l":
        return layer
    if isinstance(token, str) and token.startswith("l-"):
        try:
            back = int(token[2:])
        except ValueError:
            back = -1
        if back >= 0:
            if back > layer:
                raise _fail(path, f"{token!r} reaches below layer 0 from layer {layer}")
            return layer - back
    elif isinstance(token, int) and not isinstance(token, bool) and token >= 0:
        return token
    raise _fail(path, f"expected a layer number, 'l' (own layer), 'l-K' (K layers back) or "
                f"'e' (embedding), got {token!r}")


def _parse_gene(raw: Any, layer: int, path: str) -> Gene:
    _check_keys(raw, ("sources", "mode", "combine", "weights", "learned"), path)
    raw_sources = raw.get("sources")
    if raw_sources is None:
        raise _fail(f"{path}.sources", "missing")
    if not isinstance(raw_sources, list):
        raw_sources = [raw_sources]
    if not raw_sources:
        raise _fail(f"{path}.sources", "must name at least one source, got []")
    sources = [_parse_source(t, layer, f"{path}.sources[{i}]") for i, t in enumerate(raw_sources)]
    for i, s in enumerate(sources):
        if s > layer or s < EMB:
            raise _fail(f"{path}.sources[{i}]", f"layer {layer} cannot read layer {s} "
                        f"(sources must lie in 0..{layer} or be 'e')")
    mode = raw.get("mode", "reproject")
    if mode not in MODES:
        raise _fail(f"{path}.mode", f"expected one of {list(MODES)}, got {mode!r}")
    combine = raw.get("combine")
    if combine is not None and combine not in COMBINES:
        raise _fail(f"{path}.combine", f"expected one of {list(COMBINES)}, got {combine!r}")
    learned = raw.get("learned", False)
    if not isinstance(learned, bool):
        raise _fail(f"{path}.learned", f"expected true/false, got {learned!r}")
    weights = raw.get("weights")
    if weights is not None and not isinstance(weights, list):
        raise _fail(f"{path}.weights", f"expected a list of numbers, got {weights!r}")
    try:
        return Gene.create(sources, mode, combine, weights, learned)
    except ValueError as err:
        raise _fail(path, str(err)) from None


def parse_rules(rules: Iterable[Mapping[str, Any]], dims: Dims, path: str
                ) -> list[tuple[tuple[int, int, str], Gene]]:
    """Expand compact rules into ``((layer, group, stream), gene)`` assignments, in order.

    A rule: ``{layers: all | N | [..] | "a-b", groups: all | N | [..] | "a-b",
    kv | k | v: {sources, mode, combine, weights, learned}}``; sources may be relative
    (``l``, ``l-2``). Later rules override earlier ones."""
    out = []
    for i, rule in enumerate(rules):
        where = f"{path}[{i}]"
        _check_keys(rule, ("layers", "groups", "kv", "k", "v"), where)
        if "kv" in rule and ("k" in rule or "v" in rule):
            raise _fail(where, "give either kv or k/v, not both")
        streams = {s: rule[key] for key in ("kv", "k", "v") if key in rule
                   for s in (("k", "v") if key == "kv" else (key,))}
        if not streams:
            raise _fail(where, "a rule needs a gene under kv, k or v")
        layers = _parse_index_set(rule.get("layers"), dims.n_layers, f"{where}.layers", "layer")
        groups = _parse_index_set(rule.get("groups"), dims.n_groups, f"{where}.groups", "group")
        for l in layers:
            for stream, raw in streams.items():
                key = "kv" if "kv" in rule else stream
                gene = _parse_gene(raw, l, f"{where}.{key}")
                out.extend(((l, g, stream), gene) for g in groups)
    return out
