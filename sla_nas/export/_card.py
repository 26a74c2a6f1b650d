"""The words of an export: the docstring of its ``model.py`` and its model card
``README.md``, rendered from the Jinja2 templates in ``templates/`` (package data) with the
tables of `sla_nas.arch` (connectivity, costs next to vanilla's) and the provenance."""

from __future__ import annotations

import platform
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from sla_nas import __version__
from sla_nas.arch import (
    COST_COLUMNS,
    LEGEND,
    ArchSpec,
    connectivity_table,
    cost_table,
    dims_sentence,
)
from sla_nas.model import WEIGHTS_FILE

__all__ = ["Provenance", "docstring", "model_card", "WEIGHTS_FILE"]


@dataclass(frozen=True)
class Provenance:
    """Where an exported model comes from: the run, the trial and its weights."""

    run: str  # the run folder's name
    space_file: str  # the space file the search ran (a copy is space.yaml in the run folder)
    started: str
    search_seed: int
    objectives: list[tuple[str, str]]
    task: str
    budget_tokens: int
    trial: int
    status: str
    train_seed: int
    rank: int
    weights: str  # where the weights come from, one sentence
    metrics: dict[str, float] = field(default_factory=dict)  # the trial's search metrics
    seed_mean: dict[str, Any] | None = None  # {n_seeds, metric: mean} if trained with several
    vanilla: dict[str, Any] | None = None  # the vanilla seed's row: status and metrics
    seed_preset: str | None = None  # the preset's name if the trial was a seed architecture
    versions: dict[str, str] = field(default_factory=dict)  # of the search (run.json)
    confirmed: dict[str, Any] | None = None  # its sla-nas confirm result, if it was confirmed


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4f}"


def _metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {_number(v)}" for k, v in metrics.items()) or "none recorded"


def _wrap(text: str, width: int = 96, hang: int = 0) -> str:
    """``text`` wrapped to ``width``; continuation lines indented by ``hang``."""
    return "\n".join(textwrap.wrap(text, width, subsequent_indent=" " * hang,
                                   break_on_hyphens=False))


def _aligned(table: tuple[Sequence[str], Sequence[Sequence[str]]], align: str = "") -> str:
    """A (header, rows) table as plain-text columns, two spaces apart; ``align`` has one
    letter per column, ``l`` or ``r`` (default: all left)."""
    header, rows = table
    width = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) if a == "r" else c.ljust(w)
                               for c, w, a in zip(row, width, align.ljust(len(row), "l")))
                     .rstrip() for row in [header, *rows])


_ENV = jinja2.Environment(loader=jinja2.PackageLoader("sla_nas.export", "templates"),
                          autoescape=False, undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
_ENV.filters.update(wrap=_wrap, aligned=_aligned, metrics=_metrics, repr=repr,
                    thousands="{:,}".format)


def _legend(width: int) -> str:
    """`LEGEND`'s entries packed into lines of at most ``width`` (an entry is never split)."""
    lines = [""]
    for part in (p.strip() for p in LEGEND.split("   ") if p.strip()):
        joined = f"{lines[-1]}   {part}" if lines[-1] else part
        if lines[-1] and len(joined) > width:
            lines.append(part)
        else:
            lines[-1] = joined
    return "\n".join(lines)


def _costs(spec: ArchSpec) -> tuple[list[str], list[list[str]]]:
    return list(COST_COLUMNS), [list(row.cells()) for row in cost_table(spec)]


def _means(prov: Provenance) -> dict[str, float]:
    return {k: v for k, v in (prov.seed_mean or {}).items() if k != "n_seeds"}


def _common(spec: ArchSpec, prov: Provenance) -> dict[str, Any]:
    """What both templates show: the tables, the dimensions and where the model came from."""
    return {"spec": spec, "prov": prov, "weights_file": WEIGHTS_FILE,
            "dims": dims_sentence(spec.dims), "connectivity": connectivity_table(spec),
            "costs": _costs(spec), "means": _means(prov),
            "seed_note": (f"; the seed architecture {prov.seed_preset}"
                          if prov.seed_preset else ""),
            "versions": ", ".join(f"{k} {v}" for k, v in prov.versions.items())
            or "unknown versions",
            "version": __version__, "python": platform.python_version()}


def docstring(spec: ArchSpec, prov: Provenance) -> str:
    """The generated model.py's docstring, triple quotes included: what the file is, how to
    load its weights, its dimensions, connectivity and costs, and its provenance."""
    mean_note = (f" (this trial; mean over {prov.seed_mean['n_seeds']} training seeds: "
                 f"{_metrics(_means(prov))})" if prov.seed_mean else "")
    text = _ENV.get_template("model_docstring.py.j2").render(
        **_common(spec, prov), legend=_legend(92), mean_note=mean_note,
        space_name=Path(prov.space_file).name)
    return "\n".join(line.rstrip() for line in text.rstrip("\n").split("\n"))


def model_card(spec: ArchSpec, prov: Provenance, folder_name: str) -> str:
    """The model card: what it is, its costs next to vanilla's, the search it came from."""
    vanilla = prov.vanilla or {}
    compared = vanilla.get("status") == "ok"
    other = vanilla.get("metrics", {}) if compared else {}
    head = (f"vanilla seed (trial {vanilla['trial']})" if compared else
            f"vanilla seed ({vanilla.get('status') or 'not in the search'})")
    result = (["metric", f"this (trial {prov.trial})", head],
              [[name, _number(value), "" if other.get(name) is None else _number(other[name])]
               for name, value in prov.metrics.items()])
    return _ENV.get_template("model_card.md.j2").render(
        **_common(spec, prov), folder_name=folder_name, legend=LEGEND, result=result,
        paired=compared and vanilla.get("train_seed") == prov.train_seed,
        objectives=", ".join(f"{m} ({mode})" for m, mode in prov.objectives))
