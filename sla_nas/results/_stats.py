"""How sure is a ranking? Paired statistics over training seeds (no Ray, no plotting).

A confirmation trains every architecture with the same training seeds; seed ``s`` fixes the
data order, the evaluation set and the initial value of every weight two architectures share
(common random numbers, see `sla_nas.train`). Differences between two architectures are
therefore taken seed by seed, which removes each seed's shared luck: the paired standard
deviation is smaller than the unpaired one (0.008 against 0.008-0.016 nats/byte at the default
proxy size: README, "How far to trust a proxy"). Intervals are Student-t 95 % intervals of
the mean paired difference with n - 1 degrees of freedom for n paired seeds; p-values are
two-sided paired t-tests (both from `scipy.stats.ttest_rel`).

A noise level estimated from few runs is itself uncertain: `seed_noise` says how many degrees
of freedom its estimate has, `noise_interval` gives the chi-square 95 % interval of it, and
below `MIN_NOISE_DOF` the sentences built on it say the noise is not yet known. Two more
numbers turn an estimate into advice: `expected_max` (the luck a search's winner has from being
the best of N noisy runs) and `seeds_to_resolve` (how many paired seeds a difference needs).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import integrate as _integrate
from scipy import stats as _stats

__all__ = ["Summary", "Paired", "summarise", "paired", "compare", "seed_noise", "CONFIDENCE",
           "MIN_NOISE_DOF", "POWER", "SEEDS_CAP", "expected_max", "luck_quantile", "noise_interval",
           "seeds_to_resolve"]

CONFIDENCE = 0.95
MIN_NOISE_DOF = 3  # fewer degrees of freedom: a noise estimate is not yet a noise level
POWER = 0.8  # the power `seeds_to_resolve` plans for (two-sided test at 1 - CONFIDENCE)
SEEDS_CAP = 1000  # `seeds_to_resolve` searches no further


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
    ranking (best first by mean), each with its seed count and the standard deviation of the
    seed-by-seed differences (``vs_baseline_n``, ``vs_baseline_std``, ``vs_next_n``,
    ``vs_next_std``: what `seeds_to_resolve` needs). Flags say whether the architecture is
    distinguishable from the baseline and from the runner-up below it."""
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
                        "vs_baseline_n", "vs_baseline_std"]] = [d.mean, d.low, d.high, d.p, d.n,
                                                                 d.std]
            out.loc[i, "beats_baseline"] = d.distinguishable and sign * d.mean < 0
            out.loc[i, "behind_baseline"] = d.distinguishable and sign * d.mean > 0
        if i + 1 < len(out):
            d = _paired_or_none(table, row[key], out.loc[i + 1, key], key, seed, metric)
            out.loc[i, ["vs_next", "vs_next_low", "vs_next_high", "vs_next_p", "vs_next_n",
                        "vs_next_std"]] = [d.mean, d.low, d.high, d.p, d.n, d.std]
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
    """The seed noise of architectures trained with several seeds, and how much data it rests on.

    ``unpaired``: the pooled standard deviation over seeds, with ``dof_unpaired`` degrees of
    freedom (runs minus architectures). ``paired``: the per-architecture noise left once each
    seed's shared shift is removed, the residual standard deviation of the additive model
    ``metric ~ architecture + seed`` (least squares), with ``dof`` degrees of freedom (runs
    minus the rank of that model: (k - 1)(n - 1) for k architectures sharing n seeds). On a
    complete table it equals the pooled standard deviation of all pairwise seed-by-seed
    differences divided by sqrt(2); unlike that pooling it stays exact, and its degrees of
    freedom honest, when some seeds are missing. NaN (``dof`` 0) where no two architectures
    share two seeds. ``n_architectures`` and ``n_runs`` count what both rest on."""
    repeated = table.groupby(key).filter(lambda g: g[seed].nunique() >= 2)
    repeated = repeated.drop_duplicates([key, seed])
    out = {"unpaired": math.nan, "paired": math.nan, "n_architectures": 0, "n_runs": 0,
           "dof": 0, "dof_unpaired": 0}
    if repeated.empty:
        return out
    groups = [g[metric].astype(float) for _, g in repeated.groupby(key)]
    dof = sum(len(g) - 1 for g in groups)
    out["unpaired"] = math.sqrt(sum(((g - g.mean()) ** 2).sum() for g in groups) / dof)
    out["n_architectures"], out["n_runs"] = len(groups), sum(len(g) for g in groups)
    out["dof_unpaired"] = dof
    ss, dof = _additive_residual(repeated, key, seed, metric)
    if dof > 0:
        out["paired"], out["dof"] = math.sqrt(ss / dof), dof
    return out


def _additive_residual(table: pd.DataFrame, key: str, seed: str, metric: str
                       ) -> tuple[float, int]:
    """Residual sum of squares and degrees of freedom of ``metric ~ key + seed`` (one
    indicator column per architecture and per seed, least squares). Residuals below 1e-12 of
    the values are rounding, not noise: runs that differ by a constant give exactly 0."""
    design = np.hstack([pd.get_dummies(table[key]).to_numpy(float),
                        pd.get_dummies(table[seed]).to_numpy(float)])
    y = table[metric].to_numpy(float)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    ss = float(residual @ residual)
    if ss <= len(y) * (1e-12 * float(np.abs(y).max())) ** 2:
        ss = 0.0
    return ss, len(y) - int(np.linalg.matrix_rank(design))


def noise_interval(sigma: float, dof: int) -> tuple[float, float]:
    """The `CONFIDENCE` interval of a standard deviation estimated as ``sigma`` with ``dof``
    degrees of freedom (chi-square: ``dof * sigma^2 / true^2`` follows chi2(dof)); NaNs
    without degrees of freedom. With 1 degree of freedom it spans a factor of about 70."""
    if dof < 1 or not math.isfinite(sigma):
        return math.nan, math.nan
    tail = (1 - CONFIDENCE) / 2
    return (sigma * math.sqrt(dof / _stats.chi2.ppf(1 - tail, dof)),
            sigma * math.sqrt(dof / _stats.chi2.ppf(tail, dof)))


def expected_max(n: int) -> float:
    """E[max of ``n`` independent standard normals], by numerical integration of
    x n phi(x) Phi(x)^(n-1): the gain, in noise widths, that the best of ``n`` equally good
    architectures shows from luck alone (0 for one, 1/sqrt(pi) for two, 1.6292 for 12)."""
    if n < 1:
        raise ValueError(f"expected_max needs at least one draw, got {n=}")
    if n == 1:
        return 0.0

    def density(x: float) -> float:
        return x * n * _stats.norm.pdf(x) * math.exp((n - 1) * _stats.norm.logcdf(x))

    value, _ = _integrate.quad(density, -np.inf, np.inf, limit=200)
    return float(value)


def luck_quantile(n: int, q: float = CONFIDENCE) -> float:
    """The ``q`` quantile, in noise widths, of the gain over vanilla that the best of ``n``
    equally good architectures shows from luck alone: max of the ``n - 1`` others minus
    vanilla's own draw, D = max(Z_1..Z_{n-1}) - Z_0, whose distribution function is
    P(D <= x) = integral of phi(z) Phi(x + z)^(n - 1) dz (numerical integration, then a root).
    A gain above it happens by luck at most one time in 1 / (1 - q)."""
    if n < 2:
        raise ValueError(f"luck_quantile needs vanilla and at least one other, got {n=}")

    def below(x: float) -> float:
        value, _ = _integrate.quad(
            lambda z: _stats.norm.pdf(z) * math.exp((n - 1) * _stats.norm.logcdf(x + z)),
            -np.inf, np.inf, limit=200)
        return value - q

    from scipy.optimize import brentq

    return float(brentq(below, -10.0, 20.0, xtol=1e-9))


def _power(n: int, effect: float) -> float:
    """Power of a two-sided paired t-test at level 1 - `CONFIDENCE` with ``n`` seeds when the
    true mean difference is ``effect`` standard deviations (noncentral t, n - 1 df)."""
    df = n - 1
    critical = _stats.t.ppf(1 - (1 - CONFIDENCE) / 2, df)
    shift = effect * math.sqrt(n)
    # the lower tail P(T < -c; shift) as P(T > c; -shift): scipy's cdf there is NaN once the
    # tail is far below 1e-15, its sf is 0
    return float(_stats.nct.sf(critical, df, shift) + _stats.nct.sf(critical, df, -shift))


def seeds_to_resolve(difference: float, std: float, cap: int = SEEDS_CAP) -> int | None:
    """How many paired seeds a paired t-test (two-sided, level 1 - `CONFIDENCE`) needs to
    find a mean difference of ``difference`` with `POWER` when the seed-by-seed differences
    have standard deviation ``std`` (power from `scipy.stats.nct`); None when even ``cap``
    seeds are not enough (or the difference is 0). Planning advice: ``difference`` and
    ``std`` are estimates, and so is the answer."""
    if not (math.isfinite(difference) and math.isfinite(std)) or std < 0:
        raise ValueError(f"seeds_to_resolve needs a finite difference and spread, got "
                         f"{difference=}, {std=}")
    if difference == 0:
        return None
    if std == 0:
        return 2
    effect = abs(difference) / std
    if _power(cap, effect) < POWER:
        return None
    low, high = 1, cap  # power(low) < POWER <= power(high); power grows with n
    while high - low > 1:
        mid = (low + high) // 2
        if _power(mid, effect) >= POWER:
            high = mid
        else:
            low = mid
    return high
