"""The report's uncertainty: the confirmation runs (``confirm.csv``) and the search's own
seed-noise estimate, as data (NamedTuples the tests check); no plotting here."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from sla_nas.arch import unit_of
from sla_nas.results import (
    KEY,
    LABEL,
    MIN_NOISE_DOF,
    SEED,
    is_vanilla,
    latest_summary,
    noise_interval,
    search_noise,
    sentence,
)

from ._data import TableInfo

__all__ = ["ConfirmRow", "ConfirmInfo", "NoiseInfo", "get_confirm_info", "get_noise_info",
           "with_confirmation"]


class ConfirmRow(NamedTuple):
    label: str
    key: str
    n: int
    mean: float
    low: float  # 95 % interval of the mean over seeds (NaN for one seed)
    high: float
    vs: float | None  # paired difference to vanilla (None for vanilla itself)
    vs_low: float | None
    vs_high: float | None
    p: float | None
    beats: bool  # better than vanilla beyond noise
    worse: bool  # worse than vanilla beyond noise


class ConfirmInfo(NamedTuple):
    metric: str
    mode: str
    tokens: int
    seeds: tuple[int, ...]
    rows: tuple[ConfirmRow, ...]  # best first
    sentence: str


def get_confirm_info(run_dir: str | Path, metric: str, mode: str, task: str
                      ) -> ConfirmInfo | None:
    """The confirmation at the longest budget confirm.csv holds (None without one)."""
    latest = latest_summary(run_dir, metric, mode)
    if latest is None:
        return None
    table, out, tokens = latest
    rows = []
    for _, r in out.iterrows():
        base = is_vanilla(r[LABEL])
        vs = None if base else float(r["vs_baseline"])
        rows.append(ConfirmRow(
            r[LABEL], r[KEY], int(r["n_seeds"]), float(r["mean"]), float(r["low"]),
            float(r["high"]), vs,
            None if base else float(r["vs_baseline_low"]),
            None if base else float(r["vs_baseline_high"]),
            None if base else float(r["vs_baseline_p"]),
            not base and bool(r["beats_baseline"]), not base and bool(r["behind_baseline"])))
    return ConfirmInfo(metric, mode, tokens, tuple(sorted(int(s) for s in set(table[SEED]))),
                       tuple(rows), sentence(out, metric, mode, unit_of(metric, task)))


class NoiseInfo(NamedTuple):
    metric: str
    unpaired: float
    paired: float
    n_architectures: int
    text: str
    dof: int = 0  # degrees of freedom of ``paired`` (0: no paired estimate)
    dof_unpaired: int = 0
    known: bool = False  # the estimate the band shows has MIN_NOISE_DOF or more


def get_noise_info(frame: pd.DataFrame, metric: str) -> NoiseInfo:
    """The search's own seed-noise estimate (seed architectures run with several seeds), with
    its degrees of freedom and, from `MIN_NOISE_DOF` on, its 95 % interval; below that the text
    says the noise is not yet known (a standard deviation from 1 degree of freedom can be
    anything from under half to 32 times the estimate)."""
    noise = search_noise(frame, metric) if len(frame) else {
        "unpaired": math.nan, "paired": math.nan, "n_architectures": 0, "n_runs": 0, "dof": 0,
        "dof_unpaired": 0}
    n = int(noise["n_architectures"])
    dof, dof_unpaired = int(noise["dof"]), int(noise["dof_unpaired"])
    paired = math.isfinite(noise["paired"])
    shown, shown_dof = (noise["paired"], dof) if paired else (noise["unpaired"], dof_unpaired)
    known = n > 0 and shown_dof >= MIN_NOISE_DOF
    if n == 0:
        text = ("This search trained no architecture with several seeds (search.seed_runs), "
                "so it has no estimate of its own seed noise.")
    else:
        parts = [f"{noise['unpaired']:.4f} between seeds ({_dof(dof_unpaired)})"]
        if paired:
            parts.insert(0, f"{noise['paired']:.4f} paired (the seed's shared luck removed; "
                            f"{_dof(dof)})")
        text = (f"Seed noise of {metric} measured in this search: {', '.join(parts)}, from "
                f"{int(noise['n_runs'])} runs of {n} seed architecture{'s' if n > 1 else ''}. ")
        kind = "paired " if paired else ""
        low, high = noise_interval(shown, shown_dof)
        if known:
            text += f"95 % interval of the {kind}noise: {low:.4f} to {high:.4f}."
        else:
            text += (f"With {_dof(shown_dof)} the {kind}noise is not yet known (its 95 % "
                     f"interval runs from {low:.4f} to {high:.4f}); {MIN_NOISE_DOF} or more "
                     f"take more seed presets or a larger search.seed_runs.")
    return NoiseInfo(metric, float(noise["unpaired"]), float(noise["paired"]), n, text, dof,
                     dof_unpaired, known)


def _dof(dof: int) -> str:
    return f"{dof} degree{'' if dof == 1 else 's'} of freedom"


def with_confirmation(table: TableInfo, confirm: ConfirmInfo | None) -> TableInfo:
    """The top table with the confirmed mean, its interval and the paired difference to
    vanilla for the architectures that were confirmed (empty cells for the others)."""
    if confirm is None:
        return table
    by_key: dict[str, Any] = {r.key: r for r in confirm.rows}
    key_col = table.columns.index(KEY)
    columns = (*table.columns, f"confirmed {confirm.metric}", "confirmed ± (95 %)",
               "Δ vs vanilla", "Δ low", "Δ high")
    rows = []
    for row in table.rows:
        c = by_key.get(row[key_col])
        extra = (None,) * 5 if c is None else (
            c.mean, (c.high - c.low) / 2 if math.isfinite(c.low) else None, c.vs, c.vs_low,
            c.vs_high)
        rows.append((*row, *extra))
    return TableInfo(columns, tuple(rows))
