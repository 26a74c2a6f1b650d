"""The architecture spec: one frozen, validated, canonical value per architecture.

An `ArchSpec` holds the model dimensions and, for every layer ``l`` and head group ``g``, a
`Gene` for the K stream and one for the V stream (docs/CONNECTIVITY.md):

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ._genes import (
    DIM_LIMITS,
    EMB,
    SPEC_VERSION,
    STREAMS,
    Dims,
    Gene,
    GroupGenes,
    _check_keys,
    _fail,
    _fmt_sources,
    _int,
    _short,
)
from ._reading import load_json, load_yaml, read_text_bounded
from ._rules import parse_rules

__all__ = ["ArchSpec", "Dims", "Gene", "GroupGenes", "EMB", "SPEC_VERSION", "parse_rules",
           "canonical_gene"]


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
        return cls.from_genes(dims, parse_rules(rules, dims, "genes"))

    @classmethod
    def from_genes(cls, dims: Dims, genes: Iterable[tuple[tuple[int, int, str], Gene]],
                   base: ArchSpec | None = None) -> ArchSpec:
        """A canonical spec from ``((layer, group, stream), gene)`` assignments, applied in
        order on top of ``base`` (default: every group reads its own layer)."""
        table = ([list(groups) for groups in base.layers] if base is not None else
                 [[GroupGenes(Gene((l,)), Gene((l,))) for _ in range(dims.n_groups)]
                  for l in range(dims.n_layers)])
        for (l, g, stream), gene in genes:
            table[l][g] = dataclasses.replace(table[l][g], **{stream: gene})
        return cls(dims, _canonicalise(dims, tuple(tuple(row) for row in table)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchSpec:
        _check_keys(data, ("version", "dims", "genes"), "")
        version = data.get("version")
        if version != SPEC_VERSION:
            raise _fail("version", f"this sla-nas reads spec version {SPEC_VERSION}, "
                        f"got {_short(version)}")
        raw_dims = data.get("dims")
        if raw_dims is None:
            raise _fail("dims", "missing")
        _check_keys(raw_dims, [f.name for f in dataclasses.fields(Dims)], "dims")
        for name, limit in DIM_LIMITS.items():  # before Dims.create computes defaults from them
            if raw_dims.get(name) is not None:
                _int(raw_dims[name], f"dims.{name}", maximum=limit)
        try:
            dims = Dims.create(**raw_dims)
        except TypeError as err:  # a None or other non-number slipped into a default slot
            raise _fail("dims", str(err)) from None
        genes = data.get("genes") or []
        if not isinstance(genes, list):
            raise _fail("genes", f"expected a list of rules, got {_short(genes)}")
        return cls.create(dims, genes)

    @classmethod
    def from_yaml(cls, text: str, source: str = "spec") -> ArchSpec:
        """A spec from YAML text: no aliases (their expansion is unbounded), no key given
        twice, no number of more digits than any dimension has. Errors (ValueError) start with
        ``source`` and the line where the text is at fault."""
        return cls._from_data(load_yaml(text, source) or {}, source)

    @classmethod
    def from_json(cls, text: str, source: str = "spec") -> ArchSpec:
        """A spec from JSON text (as `to_json` writes it); errors start with ``source``."""
        return cls._from_data(load_json(text, source), source)

    @classmethod
    def load(cls, path: str | Path) -> ArchSpec:
        """Read a spec file (JSON if its name ends in ``.json``, else YAML): a regular file of
        at most 1 MiB of UTF-8 text, read only after that is checked, so a FIFO, a device or a
        huge file ends in an error naming the file instead of a wait."""
        path = Path(path)
        text = read_text_bounded(path, what="spec file")
        if path.suffix.lower() == ".json":
            return cls.from_json(text, str(path))
        return cls.from_yaml(text, str(path))

    @classmethod
    def _from_data(cls, data: Any, source: str) -> ArchSpec:
        try:
            return cls.from_dict(data)
        except ValueError as err:
            message = str(err)
            if len(message) > 400:  # a value quoted whole somewhere: one line, not megabytes
                message = f"{message[:400]}... (cut)"
            raise ValueError(f"{source}: {message}") from None
        except RecursionError:
            raise ValueError(f"{source}: nested too deeply to be a spec") from None

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
        """Write the spec (JSON for a ``.json`` path, else YAML) through a fresh temporary file
        (`atomic_write`: never through a symlink planted in the folder)."""
        from ._writing import atomic_write

        atomic_write(path, self.to_json() if str(path).endswith(".json") else self.to_yaml())

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
        return ArchSpec.from_genes(self.dims, parse_rules(rules, self.dims, "genes"), self)


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
