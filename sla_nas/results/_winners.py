"""Winners of a run: fully trained architectures ranked over their seeds, the best or the
Pareto set, the search's own seed-noise estimate and the one-sentence verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sla_nas.arch import ArchSpec

from ._baseline import is_vanilla
from ._table import KEY, N_SEEDS, SEED, SEED_PRESET, SPEC, STATUS, TRIAL

__all__ = ["finished_ok", "ranked", "pareto_mask", "winners", "spec_of", "search_noise",
           "verdict"]


def finished_ok(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials trained to the full budget, one row per architecture (its first trial)."""
    ok = frame[frame[STATUS] == "ok"]
    return ok.drop_duplicates(subset=[KEY, SEED], keep="first")


def ranked(frame: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """Fully trained architectures, best first by ``metric`` averaged over the training seeds
    each was trained with (``n_seeds``): one row per architecture, its first trial's row."""
    ok = finished_ok(frame).copy()
    ok[metric] = pd.to_numeric(ok[metric], errors="coerce").astype(float)
    ok = ok[np.isfinite(ok[metric])]
    first = ok.drop_duplicates(subset=[KEY], keep="first").copy()
    first[metric] = first[KEY].map(ok.groupby(KEY)[metric].mean())
    first[N_SEEDS] = first[KEY].map(ok.groupby(KEY)[SEED].nunique())
    return first.sort_values([metric, TRIAL], ascending=[mode == "min", True])


def pareto_mask(values: list[list[float]], modes: list[str]) -> list[bool]:
    """Which rows are not dominated (no other row is at least as good everywhere and better
    somewhere); rows with equal values are all kept."""
    signed = [[v if m == "min" else -v for v, m in zip(row, modes)] for row in values]
    out = []
    for i, a in enumerate(signed):
        dominated = any(all(b_j <= a_j for a_j, b_j in zip(a, b)) and
                        any(b_j < a_j for a_j, b_j in zip(a, b))
                        for j, b in enumerate(signed) if j != i)
        out.append(not dominated)
    return out


def winners(frame: pd.DataFrame, objectives: list[tuple[str, str]]) -> pd.DataFrame:
    """The best architecture (one objective) or the Pareto set (several), best first by the
    first objective."""
    metric, mode = objectives[0]
    ok = ranked(frame, metric, mode)
    if len(objectives) == 1 or ok.empty:
        return ok.head(1)
    mask = pareto_mask(ok[[m for m, _ in objectives]].values.tolist(), [m for _, m in objectives])
    return ok[mask]


def spec_of(row: pd.Series) -> ArchSpec:
    return ArchSpec.from_json(row[SPEC])


def search_noise(frame: pd.DataFrame, metric: str = "val_loss") -> dict[str, float]:
    """The search's own estimate of seed noise: the spread of the seed architectures that
    were trained with several training seeds (``search.seed_runs``); see `stats.seed_noise`."""
    from ._stats import seed_noise

    ok = finished_ok(frame)
    ok = ok[ok[SEED_PRESET].notna() & pd.to_numeric(ok[metric], errors="coerce").notna()]
    return seed_noise(ok, KEY, SEED, metric)


def verdict(frame: pd.DataFrame, objectives: list[tuple[str, str]]) -> str:
    """One plain sentence: does the best architecture beat the vanilla seed, by how much, and
    how that compares with the seed noise the search measured."""
    metric, mode = objectives[0]
    ok = ranked(frame, metric, mode)
    if ok.empty:
        return "no trial finished its full budget, so there is no best architecture"
    best = ok.iloc[0]
    base = ok[ok[SEED_PRESET].map(is_vanilla)] if SEED_PRESET in ok else ok.iloc[0:0]
    if base.empty:
        return (f"the best architecture is {best[KEY]} ({metric} {best[metric]:.4f}); the "
                f"vanilla seed was not evaluated, so there is nothing to compare it with")
    base = base.iloc[0]
    if best[KEY] == base[KEY]:
        return (f"no architecture beat the vanilla seed: vanilla is the best "
                f"({metric} {base[metric]:.4f}) of {len(ok)} fully trained")
    gain = (base[metric] - best[metric]) * (1 if mode == "min" else -1)
    text = (f"the best architecture {best[KEY]} beats the vanilla seed by {gain:.4f} in "
            f"{metric} ({best[metric]:.4f} against {base[metric]:.4f})")
    noise = search_noise(frame, metric)
    sigma = noise["paired"] if np.isfinite(noise["paired"]) else noise["unpaired"]
    if not np.isfinite(sigma) or sigma <= 0:
        return text + (", one training seed each: a difference this size may be seed noise "
                       "until confirmed (sla-nas confirm)")
    kind = "paired " if np.isfinite(noise["paired"]) else ""
    ratio = gain / sigma
    runs = int(noise["n_runs"])
    if ratio < 2:
        judgement = "within that noise"
    else:
        judgement = (f"larger than that noise, an estimate that rests on {runs} seed runs; only "
                     f"fresh seeds tell whether it is real")
    return (text + f"; the {kind}seed noise measured in this search is {sigma:.4f}: the gain "
            f"is {ratio:.1f}x it, {judgement} (sla-nas confirm)")
