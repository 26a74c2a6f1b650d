"""The report's fidelity section: what `sla-nas fidelity` measured on the space a search used
(the run folder's ``fidelity.json``, copied there by a search with ``search.fidelity``), as
data (a NamedTuple the tests check); `sla_nas.report._report.plot_fidelity` draws it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

from sla_nas.results import FIDELITY_FILE, fidelity_sentences, load_fidelity

__all__ = ["FidelityInfo", "get_fidelity_info"]


class FidelityInfo(NamedTuple):
    longest: int
    search_tokens: int
    budgets: tuple[int, ...]  # shorter than the longest, each with a tau against it
    tau: tuple[float, ...]
    low: tuple[float, ...]  # 95 % bootstrap interval
    high: tuple[float, ...]
    tau_target: float
    n_architectures: int
    n_seeds: int
    sentences: tuple[str, ...]


def get_fidelity_info(run_dir: str | Path) -> FidelityInfo | None:
    """The run folder's fidelity.json as a section (None without one)."""
    path = Path(run_dir) / FIDELITY_FILE
    if not path.is_file():
        return None
    data = load_fidelity(path).data
    longest = data["longest"]
    rows = sorted((t for t in data["tau"] if t["b"] == longest), key=lambda t: t["a"])
    return FidelityInfo(
        longest, data["search_tokens"], tuple(t["a"] for t in rows),
        tuple(_num(t["tau"]) for t in rows), tuple(_num(t.get("low")) for t in rows),
        tuple(_num(t.get("high")) for t in rows), float(data["tau_target"]),
        len(data.get("architectures", ())), len(data.get("seeds", ())),
        tuple(fidelity_sentences(data, data.get("unit", ""))))


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan
