"""Winners of a run: fully trained architectures ranked over their seeds, the best or the
Pareto set, the search's own seed-noise estimate and the one-sentence verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sla_nas.arch import ArchSpec

from ._baseline import is_vanilla
from ._table import FIDELITY, KEY, N_SEEDS, SEED, SEED_PRESET, SPEC, STATUS, TRIAL

__all__ = ["finished_ok", "ranked", "pareto_mask", "winners", "spec_of", "search_noise",
           "verdict"]


def finished_ok(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials trained to the full budget, one row per architecture (its first trial). A
    one-shot search's supernet scores (fidelity ``supernet``) are no training of their own:
    never winners, baselines or noise estimates."""
    ok = frame[frame[STATUS] == "ok"]
    if FIDELITY in ok:
        ok = ok[ok[FIDELITY].ne("supernet")]
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
    is that more than luck?

    The winner is the best of N fully trained architectures, each measured once with noise;
    even N equally good architectures would crown one that looks E[max of N standard
    normals] x sigma better than its true value (`stats.expected_max`), and beat vanilla's own
    noisy draw by more than `stats.luck_quantile` x sigma one time in 20. So the gain is
    compared with that luck, not with one sigma. The sigma is the search's own estimate
    (`search_noise`) and is quoted with its degrees of freedom and 95 % interval; with fewer
    than `MIN_NOISE_DOF` the sentence says the noise is not yet known and quotes no ratio."""
    from ._stats import MIN_NOISE_DOF, expected_max, luck_quantile, noise_interval

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
    n = len(ok)
    gain = (base[metric] - best[metric]) * (1 if mode == "min" else -1)
    text = (f"the best architecture {best[KEY]} beats the vanilla seed by {gain:.4f} in "
            f"{metric} ({best[metric]:.4f} against {base[metric]:.4f})")
    noise = search_noise(frame, metric)
    paired = bool(np.isfinite(noise["paired"]))
    sigma = noise["paired"] if paired else noise["unpaired"]
    dof = int(noise["dof"] if paired else noise["dof_unpaired"])
    if not np.isfinite(sigma) or dof < 1:
        return text + (f", one training seed each: for the best of {n} fully trained, a "
                       f"difference this size may be seed noise until confirmed (sla-nas "
                       f"confirm)")
    kind = "paired " if paired else ""
    if sigma <= 0:
        return text + (f"; the {kind}seed runs of this search agree exactly, so it has no "
                       f"measure of its noise: for the best of {n} fully trained, a difference "
                       f"this size may be luck until confirmed (sla-nas confirm)")
    runs = int(noise["n_runs"])
    rests = f"{dof} degree{'s' if dof != 1 else ''} of freedom from {runs} seed runs"
    if dof < MIN_NOISE_DOF:
        return (text + f"; the {kind}seed noise is not yet known: its estimate in this search "
                f"({sigma:.4f}) has {rests} ({MIN_NOISE_DOF} or more are needed: more seed "
                f"presets or search.seed_runs), so nothing here tells the gain from the luck "
                f"of being the best of {n} (sla-nas confirm)")
    low, high = noise_interval(sigma, dof)
    e_max = expected_max(n)
    luck = e_max * sigma
    rare = luck_quantile(n) * sigma  # vanilla's own draw included
    if gain > rare:
        judgement = ("beyond that: more than luck alone gives one time in 20, though the noise "
                     "level is itself an estimate; only fresh seeds tell whether it is real")
    elif gain > luck:
        judgement = ("within that: more than the expected luck, but luck alone gives as much "
                     "more often than one time in 20")
    else:
        judgement = "within that: no more than luck alone gives"
    return (text + f"; the {kind}seed noise measured in this search is {sigma:.4f} ({rests}; "
            f"95 % interval {low:.4f} to {high:.4f}), and luck alone makes the best of {n} "
            f"look {e_max:.2f} noise widths, {luck:.4f}, better than it is, and beat vanilla "
            f"by more than {rare:.4f} one time in 20: the gain is {judgement} (sla-nas "
            f"confirm)")
