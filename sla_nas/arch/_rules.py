"""The compact rule form of a spec's genes (``layers``, ``groups``, ``kv``/``k``/``v``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._genes import COMBINES, EMB, MODES, Dims, Gene, _check_keys, _fail

__all__ = ["parse_rules"]


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
