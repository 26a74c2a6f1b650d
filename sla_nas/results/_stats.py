"""How sure is a ranking? Paired statistics over training seeds (no Ray, no plotting).

A confirmation trains every architecture with the same training seeds; seed ``s`` fixes the
data order, the evaluation set and the initial value of every weight two architectures share
(common random numbers, see `sla_nas.train`). Differences between two architectures are
therefore taken seed by seed, which removes each seed's shared luck: the paired standard
deviation is smaller than the unpaired one (0.008 against 0.008-0.016 nats/byte at the default
proxy size: README, "How far to trust a proxy"). Intervals are Student-t 95 % intervals of
the mean paired difference; p-values are two-sided paired t-tests (both from
`scipy.stats.ttest_rel`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
from scipy import stats as _stats

__all__ = ["Summary", "Paired", "summarise", "paired", "compare", "seed_noise", "CONFIDENCE"]

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """One architecture over seeds: the mean, its spread and a 95 % interval of the mean."""

    key: str
    n: int
    mean: float
    std: float  # sample standard deviation (n - 1); NaN for one seed
    low: float = math.nan  # Student-t interval of the mean; NaN for one seed
    high: float = math.nan


@dataclass(frozen=True)
class Paired:
    """``a`` minus ``b`` seed by seed: the mean difference, its spread and a 95 % interval."""

    a: str
    b: str
    n: int
    mean: float
    std: float
    low: float
    high: float
    p: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def distinguishable(self) -> bool:
        """The interval excludes zero (and there are at least two seeds)."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)


@contextmanager
def _quiet() -> Iterator[None]:
    """scipy warns of precision loss when values are nearly identical; the interval it then
    gives is as narrow as the data, which is what it should say."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        yield


def summarise(values: pd.Series, key: str) -> Summary:
    """Mean, sample standard deviation and the `CONFIDENCE` Student-t interval of the mean
    (scipy's one-sample t-test against 0: only its interval is used)."""
    v = values.astype(float)
    mean = float(v.mean())
    if len(v) < 2:
        return Summary(key, len(v), mean, math.nan)
    std = float(v.std(ddof=1))
    if std == 0:
        return Summary(key, len(v), mean, std, mean, mean)
    with _quiet():
        low, high = _stats.ttest_1samp(v, 0.0).confidence_interval(CONFIDENCE)
    return Summary(key, len(v), mean, std, float(low), float(high))


def paired(table: pd.DataFrame, a: str, b: str, key: str = "arch_key", seed: str = "train_seed",
           metric: str = "val_loss") -> Paired:
    """Seed-by-seed difference ``a - b`` of ``metric`` over the seeds both were trained with:
    scipy's paired t-test (`scipy.stats.ttest_rel`), its two-sided p-value and its
    `CONFIDENCE` interval of the mean difference."""
    x = table[table[key] == a].set_index(seed)[metric].astype(float)
    y = table[table[key] == b].set_index(seed)[metric].astype(float)
    both = pd.concat([x.rename("a"), y.rename("b")], axis=1, join="inner").dropna()
    n = len(both)
    if n == 0:
        raise ValueError(f"{a} and {b} share no training seed")
    d = both["a"] - both["b"]
    mean = float(d.mean())
    if n < 2:
        return Paired(a, b, n, mean, math.nan, math.nan, math.nan, math.nan)
    std = float(d.std(ddof=1))
    if std == 0:  # identical differences: scipy's t is undefined (0/0) or infinite
        return Paired(a, b, n, mean, std, mean, mean, 1.0 if mean == 0 else 0.0)
    with _quiet():
        test = _stats.ttest_rel(both["a"], both["b"])
        low, high = test.confidence_interval(CONFIDENCE)
    return Paired(a, b, n, mean, std, float(low), float(high), float(test.pvalue))


def compare(table: pd.DataFrame, baseline: str, metric: str = "val_loss", mode: str = "min",
            key: str = "arch_key", seed: str = "train_seed") -> pd.DataFrame:
    """Per architecture: mean, std and the interval of the mean over seeds (``low``,
    ``high``), and the paired difference to ``baseline`` and to the next architecture in the
    ranking (best first by mean). Flags say whether the architecture is distinguishable from
    the baseline and from the runner-up below it."""
    rows = []
    for k, group in table.groupby(key, sort=False):
        s = summarise(group[metric], str(k))
        rows.append({key: k, "n_seeds": s.n, "mean": s.mean, "std": s.std, "low": s.low,
                     "high": s.high})
    if not rows:
        return pd.DataFrame(columns=[key, "n_seeds", "mean", "std", "low", "high"])
    out = pd.DataFrame(rows).sort_values("mean", ascending=mode == "min").reset_index(drop=True)
    sign = 1 if mode == "min" else -1
    for i, row in out.iterrows():
        if row[key] != baseline:
            d = _paired_or_none(table, row[key], baseline, key, seed, metric)
            out.loc[i, ["vs_baseline", "vs_baseline_low", "vs_baseline_high", "vs_baseline_p",
                        "vs_baseline_n"]] = [d.mean, d.low, d.high, d.p, d.n]
            out.loc[i, "beats_baseline"] = d.distinguishable and sign * d.mean < 0
            out.loc[i, "behind_baseline"] = d.distinguishable and sign * d.mean > 0
        if i + 1 < len(out):
            d = _paired_or_none(table, row[key], out.loc[i + 1, key], key, seed, metric)
            out.loc[i, ["vs_next", "vs_next_low", "vs_next_high", "vs_next_p"]] = [
                d.mean, d.low, d.high, d.p]
            out.loc[i, "ahead_of_next"] = d.distinguishable and sign * d.mean < 0
    return out


def _paired_or_none(table: pd.DataFrame, a: str, b: str, key: str, seed: str,
                    metric: str) -> Paired:
    """`paired`, or NaNs with n = 0 where the two share no seed (an unfinished confirmation)."""
    try:
        return paired(table, a, b, key, seed, metric)
    except ValueError:
        return Paired(a, b, 0, math.nan, math.nan, math.nan, math.nan, math.nan)


def seed_noise(table: pd.DataFrame, key: str = "arch_key", seed: str = "train_seed",
               metric: str = "val_loss") -> dict[str, float]:
    """The seed noise of architectures trained with several seeds: the pooled standard
    deviation over seeds (``unpaired``) and, where two or more architectures share seeds,
    the pooled standard deviation of their seed-by-seed differences divided by sqrt(2)
    (``paired``: the per-architecture noise left once each seed's shared shift is removed),
    with how many architectures and runs they rest on."""
    repeated = table.groupby(key).filter(lambda g: g[seed].nunique() >= 2)
    out = {"unpaired": math.nan, "paired": math.nan, "n_architectures": 0, "n_runs": 0}
    if repeated.empty:
        return out
    groups = [g[metric].astype(float) for _, g in repeated.groupby(key)]
    dof = sum(len(g) - 1 for g in groups)
    out["unpaired"] = math.sqrt(sum(((g - g.mean()) ** 2).sum() for g in groups) / dof)
    out["n_architectures"], out["n_runs"] = len(groups), sum(len(g) for g in groups)
    keys = list(repeated[key].unique())
    diffs = []
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            d = paired(repeated, a, b, key, seed, metric)
            if d.n >= 2:
                diffs.append((d.std ** 2, d.n - 1))
    if diffs:
        out["paired"] = math.sqrt(sum(v * n for v, n in diffs) / sum(n for _, n in diffs) / 2)
    return out
