"""The report's one-shot section: how a one-shot search's supernet scores (trials with fidelity
``supernet``) rank the architectures it also trained standalone, as data (a NamedTuple the
tests check); `sla_nas.report._report.plot_one_shot` draws it.

A supernet score is a held-out loss with shared weights: its level is not a standalone loss's,
only its order is meant to be. So the section says how well the orders agree (Kendall's tau
over the architectures that have both) and shows each architecture's score against its
standalone loss (mean over its fully trained seeds).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pandas as pd

from sla_nas.results import FIDELITY, KEY, SEED_PRESET, STATUS, finished_ok

__all__ = ["OneShotInfo", "get_one_shot_info", "SUPERNET"]

SUPERNET = "supernet"  # the fidelity of a trial scored with the supernet's shared weights


class OneShotInfo(NamedTuple):
    metric: str
    keys: tuple[str, ...]  # architectures with a supernet score and a standalone value
    labels: tuple[str, ...]  # the seed preset's name, else the key
    supernet: tuple[float, ...]  # the supernet score (the metric with shared weights)
    standalone: tuple[float, ...]  # the metric trained standalone, mean over seeds
    n_seeds: tuple[int, ...]
    tau: float  # Kendall's tau-b between the two; NaN with fewer than 2 or constant values
    n_scored: int  # architectures the supernet scored in all


def get_one_shot_info(frame: pd.DataFrame, metric: str) -> OneShotInfo | None:
    """Supernet score against standalone ``metric`` per architecture having both; None when
    the table has no supernet rows or no architecture has both."""
    if FIDELITY not in frame or metric not in frame or not len(frame):
        return None
    values = pd.to_numeric(frame[metric], errors="coerce")
    scored = frame[frame[FIDELITY].eq(SUPERNET) & frame[STATUS].eq("ok") & values.notna()]
    if not len(scored):
        return None
    first = scored.drop_duplicates(subset=[KEY], keep="first")  # in the order scored
    score = pd.Series(pd.to_numeric(first[metric]).to_numpy(), index=first[KEY].to_numpy())
    trained = finished_ok(frame[frame[FIDELITY].ne(SUPERNET)])  # fully trained standalone
    trained = trained[pd.to_numeric(trained[metric], errors="coerce").notna()]
    by_key = pd.to_numeric(trained[metric]).groupby(trained[KEY])
    mean, count = by_key.mean(), by_key.size()
    keys = [k for k in score.index if k in mean.index]
    if not keys:
        return None
    names = {}
    if SEED_PRESET in trained:
        names = {k: v for k, v in zip(trained[KEY], trained[SEED_PRESET])
                 if isinstance(v, str) and v}
    sup = tuple(float(score[k]) for k in keys)
    alone = tuple(float(mean[k]) for k in keys)
    return OneShotInfo(metric, tuple(keys), tuple(names.get(k, k) for k in keys), sup, alone,
                       tuple(int(count[k]) for k in keys), _tau(sup, alone), len(score))


def _tau(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)
