"""The compact rule form of a spec's genes (``layers``, ``groups``, ``kv``/``k``/``v``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ._genes import COMBINES, EMB, MODES, Dims, Gene, _check_keys, _fail, _short

__all__ = ["parse_rules", "parse_index_set", "check_index_set", "INDEX_SET_FORMS"]


INDEX_SET_FORMS = "'all', an integer, a list or a range 'a-b'"


def _index_items(value: Any, what: str) -> list[int] | range | None:
    """The indices an index set names as written (None for 'all'), or why it is malformed."""
    if isinstance(value, str) and value == "all":
        return None
    if isinstance(value, bool) or (isinstance(value, list)
                                   and any(isinstance(i, bool) for i in value)):
        raise ValueError(f"true/false is not a {what} index: expected {INDEX_SET_FORMS}, "
                         f"got {_short(value)}")
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", value)
        if match is None:
            raise ValueError(f"expected {INDEX_SET_FORMS}, got {_short(value)}")
        if max(len(match[1]), len(match[2])) > 9:
            raise ValueError(f"the range {_short(value)} reaches beyond any {what}")
        lo, hi = int(match[1]), int(match[2])
        if hi < lo:
            raise ValueError(f"the range {_short(value)} is empty (write it low-high)")
        return range(lo, hi + 1)  # not listed: "0-999999999" is checked by its ends
    if isinstance(value, list) and value and all(isinstance(i, int) for i in value):
        return value
    if isinstance(value, list) and not value:
        raise ValueError(f"an empty list names no {what}: write 'all' or at least one, got []")
    raise ValueError(f"expected {INDEX_SET_FORMS}, got {_short(value)}")


def check_index_set(value: Any, what: str = "layer") -> None:
    """Raise ValueError if ``value`` is not an index set in form (see `parse_index_set`);
    for a file read before the number of layers or groups is known."""
    _index_items(value, what)


def parse_index_set(value: Any, count: int, what: str = "layer") -> list[int]:
    """The indices an index set names, sorted and distinct, each in ``0..count-1``.

    An index set is ``all``, one index ``N``, a list ``[a, b, ...]`` or a range ``"a-b"``
    (both ends included); spec rules and search spaces both write their ``layers`` and
    ``groups`` this way. YAML's true/false are not indices (Python would read them as 1/0):
    they are an error. ``what`` ("layer", "group") names an index in the messages, which
    carry no key path: the caller prefixes where the value was."""
    items = _index_items(value, what)
    if items is None:
        return list(range(count))
    # a range is checked by its first index past the end, without listing it
    checked = [items[0], max(items[0], min(items[-1], count))] if isinstance(items, range) \
        else items
    for i in checked:
        if not 0 <= i < count:
            raise ValueError(f"{what} {i} is out of range 0..{count - 1}")
    return sorted(set(items))


def _index_set(value: Any, count: int, path: str, what: str) -> list[int]:
    try:
        return parse_index_set(value, count, what)
    except ValueError as err:
        raise _fail(path, str(err)) from None


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
                raise _fail(path, f"{_short(token)} reaches below layer 0 from layer "
                            f"{layer}")
            return layer - back
    elif isinstance(token, int) and not isinstance(token, bool) and token >= 0:
        return token
    raise _fail(path, f"expected a layer number, 'l' (own layer), 'l-K' (K layers back) or "
                f"'e' (embedding), got {_short(token)}")


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
        raise _fail(f"{path}.mode", f"expected one of {list(MODES)}, got {_short(mode)}")
    combine = raw.get("combine")
    if combine is not None and combine not in COMBINES:
        raise _fail(f"{path}.combine", f"expected one of {list(COMBINES)}, "
                    f"got {_short(combine)}")
    learned = raw.get("learned", False)
    if not isinstance(learned, bool):
        raise _fail(f"{path}.learned", f"expected true/false, got {_short(learned)}")
    weights = raw.get("weights")
    if weights is not None and not isinstance(weights, list):
        raise _fail(f"{path}.weights", f"expected a list of numbers, "
                    f"got {_short(weights)}")
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
        layers = _index_set(rule.get("layers", "all"), dims.n_layers, f"{where}.layers", "layer")
        groups = _index_set(rule.get("groups", "all"), dims.n_groups, f"{where}.groups", "group")
        for l in layers:
            for stream, raw in streams.items():
                key = "kv" if "kv" in rule else stream
                gene = _parse_gene(raw, l, f"{where}.{key}")
                out.extend(((l, g, stream), gene) for g in groups)
    return out
