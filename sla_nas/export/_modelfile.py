"""The standalone ``model.py`` of an export: `sla_nas.model`, the one model definition, copied
verbatim with this architecture's docstring and table of genes; nothing else in the file
changes (sla_nas/model.py imports only torch and the standard library for this reason)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import sla_nas.model
from sla_nas.arch import ArchSpec, Gene, cell_label
from sla_nas.model import WEIGHTS_FORMAT

from ._card import WEIGHTS_FILE, Provenance, docstring

__all__ = ["model_py", "table_block", "WEIGHTS_FORMAT", "WEIGHTS_FILE", "TEMPLATE"]

TEMPLATE = Path(sla_nas.model.__file__)  # the file every exported model.py is a copy of
_BEGIN, _END = "# ---- architecture (generated) ----\n", "# ---- end of architecture ----\n"


def _py(value: Any) -> str:
    """A Python literal in the project's style (double-quoted strings)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(map(_py, value)) + ("," if len(value) == 1 else "") + ")"
    return repr(value)  # int, float (repr round-trips exactly), bool


def _literal(gene: Gene) -> str:
    """``Gene((0, 2), "reuse", "concat")``: the shortest call that rebuilds ``gene``."""
    args = [_py(tuple(gene.sources))]
    if gene.mode != "reproject" or gene.combine != "select":
        args.append(_py(gene.mode))
    if gene.combine != "select":
        args.append(_py(gene.combine))
    if gene.weights is not None:
        args.append(_py(tuple(gene.weights)))
    if gene.learned:
        args.append("learned=True")
    return f"Gene({', '.join(args)})"


def _describe(spec: ArchSpec, layer: int, group: int) -> str:
    label = cell_label(spec, layer, group)
    return "own layer" if label == "·" else label


def table_block(spec: ArchSpec) -> str:
    """The generated part of model.py: the key, the dimensions and the per-layer gene table."""
    d = spec.dims
    fields = ", ".join(f"{f.name}={_py(getattr(d, f.name))}" for f in dataclasses.fields(d))
    lines = [_BEGIN,
             f'SPEC_KEY = "{spec.key}"  # the architecture\'s sla-nas key; a weights file must '
             f"carry the same\n",
             *_wrap(f"DIMS = Dims({fields})", "            "),
             "# LAYERS[l][g] = (K gene, V gene) of head group g in layer l\n",
             "LAYERS: tuple[tuple[tuple[Gene, Gene], ...], ...] = (\n"]
    for l, groups in enumerate(spec.layers):
        lines.append(f"    (  # layer {l}\n")
        for g, genes in enumerate(groups):
            k, v = _literal(genes.k), _literal(genes.v)
            note = f"# group {g}: {_describe(spec, l, g)}"
            line = f"        ({k}, {v}),  {note}"
            lines += ([line + "\n"] if len(line) <= 100 else
                      [f"        {note}\n", f"        ({k},\n", f"         {v}),\n"])
        lines.append("    ),\n")
    lines += [")\n", _END]
    return "".join(lines)


def _wrap(text: str, indent: str, width: int = 100) -> list[str]:
    """Break a call at its commas to stay within ``width`` columns."""
    lines, current = [], ""
    for part in text.split(", "):
        candidate = f"{current}, {part}" if current else part
        if current and len(candidate) + 1 > width:
            lines.append(current + ",\n")
            current = indent + part
        else:
            current = candidate
    return [*lines, current + "\n"]


def model_py(spec: ArchSpec, prov: Provenance) -> str:
    """The standalone model definition of ``spec``: sla_nas/model.py with this architecture's
    docstring and table."""
    template = TEMPLATE.read_text()
    end_doc = template.index('"""', 3) + 3
    begin, end = template.index(_BEGIN), template.index(_END) + len(_END)
    assert template.count(_BEGIN) == template.count(_END) == 1, "template markers"
    return (docstring(spec, prov) + template[end_doc:begin] + table_block(spec)
            + template[end:])


