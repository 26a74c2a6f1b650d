"""How far a search on *this* space can be trusted: what `sla-nas fidelity` measured.

`sla-nas fidelity SPACE` (the Ray part lives in `sla_nas.search`) trains the space's seed
architectures and K architectures drawn from it, S paired training seeds each, to the longest
budget (default 4x the search's), and records every honest evaluation on the way (each a
complete shorter WSD run: `sla_nas.train`) in ``fidelity_runs.csv``. `analyse` turns those
runs into what a search needs to know:

* **Kendall tau between every pair of budgets** (rankings by the mean over seeds), with a 95 %
  bootstrap interval that resamples architectures and seeds (the same resampled seeds for
  every architecture, so pairs stay paired);
* **the paired seed noise** at every budget: the residual standard deviation of
  ``loss[arch, seed] = arch effect + seed effect + noise``, with its (A - 1)(S - 1) degrees of
  freedom;
* **the pairs apart beyond that noise** (pooled paired t-test, 95 %) at every budget, and how
  many of them keep their order at the longest budget;
* **a recommendation**: the shortest budget whose ranking holds at the longest (tau at least
  `TAU_TARGET`: a search budget) and the shortest budget whose ranking holds at the search's
  own budget (where early-stopping rungs may go).

``fidelity.json`` holds all of it; ``search: {fidelity: PATH}`` makes a search place its rungs
by it (`search_evidence`) instead of the project-wide constant.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats as _stats

from sla_nas.arch import atomic_write, load_json, read_text_bounded, regular_file
from sla_nas.space import SearchSpace

from ._table import KEY, SEED, STATUS

if TYPE_CHECKING:  # sla_nas.proxy imports torch: only where a plan is made
    from sla_nas.proxy import EvalPlan, RankEvidence

__all__ = ["FIDELITY_FILE", "FIDELITY_RUNS", "FIDELITY_VERSION", "FIDELITY_BUDGET", "analyse",
           "fidelity_budgets", "load_fidelity_runs", "append_fidelity_runs", "write_fidelity",
           "load_fidelity", "Fidelity", "search_evidence", "search_plan", "fidelity_sentences",
           "space_identity"]

FIDELITY_FILE = "fidelity.json"
FIDELITY_RUNS = "fidelity_runs.csv"
FIDELITY_VERSION = 1
FIDELITY_BUDGET = "budget_tokens"  # the complete-run length an evaluation stands for
LABEL = "label"
BOOTSTRAP = 1000
MAX_FILE_BYTES = 16 * 2**20  # a fidelity.json is a few KB; refuse to read anything huge
MAX_RUNS_BYTES = 1 << 30  # fidelity_runs.csv: a line per evaluation


def fidelity_budgets(search_tokens: int, longest: int, smallest: int) -> tuple[int, ...]:
    """The evaluation points: the search budget halved three times (none shorter than four
    batches of ``smallest`` tokens), and doubled up to ``longest``, which is always last."""
    points = {search_tokens, longest}
    t = search_tokens // 2
    while t >= 4 * smallest and t >= search_tokens // 8:
        points.add(t)
        t //= 2
    t = search_tokens * 2
    while t < longest:
        points.add(t)
        t *= 2
    return tuple(sorted(p for p in points if p <= longest))


# ---------------------------------------------------------------------- the runs table
RUN_COLUMNS = (KEY, LABEL, SEED, FIDELITY_BUDGET, STATUS, "node_id")


def load_fidelity_runs(folder: str | Path) -> pd.DataFrame:
    """``fidelity_runs.csv``: one row per reported evaluation (a line cut short by a crash
    is skipped)."""
    path = Path(folder) / FIDELITY_RUNS
    if not path.exists():
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    regular_file(path, MAX_RUNS_BYTES, "fidelity runs table")
    try:
        table = pd.read_csv(path, on_bad_lines="skip")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a table sla-nas fidelity wrote ({str(err)[:200]})"
                         ) from None
    missing = set(RUN_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"{path}: missing column {', '.join(sorted(missing))}")
    for column in (SEED, FIDELITY_BUDGET):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    return table.dropna(subset=[SEED, FIDELITY_BUDGET]).astype({SEED: int, FIDELITY_BUDGET: int})


def append_fidelity_runs(folder: str | Path, rows: list[dict[str, Any]],
                         metric_names: list[str]) -> None:
    """Append evaluations to ``fidelity_runs.csv`` (the header first, when it is new): one
    short write per evaluation, so a killed run loses at most the line it was writing."""
    path = Path(folder) / FIDELITY_RUNS
    columns = [*RUN_COLUMNS, *metric_names]
    new = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                 0o644)
    with os.fdopen(fd, "a", newline="") as out:
        writer = csv.DictWriter(out, columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------------- statistics
def _means(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """(architecture x seed) of ``metric`` at one budget, complete rows only."""
    wide = table.pivot_table(index=KEY, columns=SEED, values=metric, aggfunc="last")
    return wide.dropna(axis=0, how="any")


def _noise(wide: pd.DataFrame) -> tuple[float, int]:
    """Residual std of the two-way additive model (architecture + seed) and its dof."""
    a, s = wide.shape
    dof = (a - 1) * (s - 1)
    if dof < 1:
        return math.nan, 0
    x = wide.to_numpy(float)
    resid = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + x.mean()
    return float(math.sqrt((resid ** 2).sum() / dof)), dof


def _apart(wide: pd.DataFrame, sigma: float, dof: int, sign: int) -> dict[tuple[str, str], int]:
    """Pairs whose mean paired difference exceeds the pooled 95 % t bound: (a, b) -> +1 if a
    ranks ahead of b, -1 if behind (``sign`` is 1 for a metric to minimise)."""
    if dof < 1 or not sigma > 0:
        return {}
    bound = _stats.t.ppf(0.975, dof) * sigma * math.sqrt(2 / wide.shape[1])
    means = wide.mean(axis=1)
    out = {}
    keys = list(means.index)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            d = sign * (means[a] - means[b])
            if abs(d) > bound:
                out[(a, b)] = 1 if d < 0 else -1
    return out


def _holds(tau: dict[str, Any], target: float) -> bool:
    """A ranking holds when its tau reaches ``target`` and its bootstrap interval excludes zero:
    with a few architectures a tau of 1 happens by chance (3 of them rank alike one time in
    six), and a recommendation built on it would place rungs on noise."""
    return (math.isfinite(tau["tau"]) and tau["tau"] >= target and math.isfinite(tau["low"])
            and tau["low"] > 0)


def _tau(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(_stats.kendalltau(x, y).statistic)


def analyse(runs: pd.DataFrame, metric: str, mode: str, search_tokens: int,
            bootstrap: int = BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """What the runs say (see the module docstring); plain data, as written to
    ``fidelity.json``. Only (architecture, seed) pairs evaluated at every budget count."""
    from sla_nas.proxy import TAU_TARGET
    if metric not in runs.columns or runs.empty:
        raise ValueError(f"no evaluation of {metric} was recorded: no run reported before it "
                         f"ended (see the runs' errors; --resume retrains them)")
    ok = runs[runs[STATUS].isin(("ok", "running"))].copy()
    ok[metric] = pd.to_numeric(ok[metric], errors="coerce")
    ok = ok[np.isfinite(ok[metric])].drop_duplicates([KEY, SEED, FIDELITY_BUDGET], keep="last")
    budgets = sorted(int(b) for b in ok[FIDELITY_BUDGET].unique())
    if not budgets:
        raise ValueError("no finished evaluation to analyse")
    cube = {b: _means(ok[ok[FIDELITY_BUDGET] == b], metric) for b in budgets}
    keys = sorted(set.intersection(*(set(w.index) for w in cube.values())))
    seeds = sorted(set.intersection(*(set(w.columns) for w in cube.values())))
    if len(keys) < 3 or len(seeds) < 1:
        raise ValueError(f"fidelity needs at least 3 architectures evaluated at every budget "
                         f"with the same seeds; have {len(keys)} architectures, "
                         f"{len(seeds)} seeds")
    cube = {b: w.loc[keys, seeds] for b, w in cube.items()}
    arr = np.stack([cube[b].to_numpy(float) for b in budgets])  # (budget, arch, seed)
    sign = 1 if mode == "min" else -1
    rng = np.random.default_rng(seed)
    n_a, n_s = len(keys), len(seeds)
    draws = [(rng.integers(0, n_a, n_a), rng.integers(0, n_s, n_s)) for _ in range(bootstrap)]
    means = arr.mean(2)
    taus = []
    for i, b1 in enumerate(budgets):
        for b2 in budgets[i + 1:]:
            j = budgets.index(b2)
            point = _tau(means[i], means[j])
            boot = []
            for archs, ss in draws:
                m = arr[:, archs][:, :, ss].mean(2)
                boot.append(_tau(m[i], m[j]))
            boot = np.array([t for t in boot if np.isfinite(t)])
            low, high = (np.quantile(boot, [0.025, 0.975]) if len(boot) else (math.nan,) * 2)
            taus.append({"a": b1, "b": b2, "tau": point, "low": float(low),
                         "high": float(high)})
    longest = budgets[-1]
    final = _apart(cube[longest], *_noise(cube[longest]), sign)
    per_budget = []
    for b in budgets:
        sigma, dof = _noise(cube[b])
        apart = _apart(cube[b], sigma, dof, sign)
        kept = sum(1 for pair, order in apart.items()
                   if sign * (cube[longest].loc[pair[0]].mean() -
                              cube[longest].loc[pair[1]].mean()) * order < 0)
        confirmed = sum(1 for pair, order in apart.items() if final.get(pair) == order)
        per_budget.append({"tokens": b, "noise": sigma, "dof": dof,
                           "pairs_apart": len(apart), "kept_at_longest": kept,
                           "apart_at_longest_too": confirmed,
                           "mean": {k: float(v) for k, v in cube[b].mean(axis=1).items()}})
    holding = {(t["a"], t["b"]) for t in taus if _holds(t, TAU_TARGET)}

    def shortest_holding(target: int) -> int | None:
        return next((b for b in budgets if b < target and (b, target) in holding), None)

    holds = shortest_holding(longest)
    return {"version": FIDELITY_VERSION, "metric": metric, "mode": mode,
            "search_tokens": search_tokens, "longest": longest, "budgets": budgets,
            "architectures": keys, "seeds": [int(s) for s in seeds], "tau": taus,
            "budget": per_budget, "pairs": n_a * (n_a - 1) // 2, "tau_target": TAU_TARGET,
            "bootstrap": bootstrap,
            "recommendation": {
                "search_tokens": longest if holds is None else holds,
                "search_holds": holds is not None,
                "min_rung_tokens": shortest_holding(search_tokens)
                if search_tokens in budgets else None}}


# ---------------------------------------------------------------------- fidelity.json
def space_identity(space: SearchSpace) -> dict[str, Any]:
    """What a fidelity measurement is only valid for: the dimensions, the task and how each
    proxy trains (not the search's decisions or constraints, which may change)."""
    config = space.config
    return {"dims": [dataclasses.asdict(d) for d in space.dims_choices],
            "task": config.task.model_dump(exclude={"corpus", "train", "val"}),
            "task_files": space.task_options(),
            "batch_size": config.budget.batch_size, "lr": config.budget.lr,
            "schedule": config.budget.schedule, "train": config.train.model_dump()}


def write_fidelity(folder: str | Path, result: dict[str, Any]) -> Path:
    return atomic_write(Path(folder) / FIDELITY_FILE,
                        json.dumps(_plain(result), indent=2, allow_nan=False))


def _plain(value: Any) -> Any:
    """JSON's values: numpy scalars as Python's, a NaN (an undefined tau) as null."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _nan(value: Any) -> Any:
    """null back to NaN in the numeric fields of a fidelity.json."""
    if isinstance(value, dict):
        return {k: (math.nan if v is None and k in _NUMERIC else _nan(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_nan(v) for v in value]
    return value


_NUMERIC = {"tau", "low", "high", "noise"}


@dataclass(frozen=True)
class Fidelity:
    """A ``fidelity.json`` read back: the measurement and where it came from."""

    path: Path
    data: dict[str, Any]

    @property
    def recommendation(self) -> dict[str, Any]:
        return self.data["recommendation"]

    def min_rung_for(self, budget: int) -> int | None | str:
        """The shortest measured budget whose ranking holds at ``budget`` (None: none does);
        ``"unmeasured"`` where ``budget`` is not one of the measured budgets."""
        if budget not in self.data["budgets"]:
            return "unmeasured"
        rows = {(t["a"], t["b"]): t for t in self.data["tau"]}
        return next((b for b in self.data["budgets"] if b < budget and (b, budget) in rows
                     and _holds(rows[(b, budget)], self.data["tau_target"])), None)


def load_fidelity(path: str | Path, space: SearchSpace | None = None) -> Fidelity:
    """Read and check a ``fidelity.json``; with ``space``, refuse one measured on other
    dimensions, another task or another way of training."""
    path = Path(path)
    where = f"{space.path}: search.fidelity: " if space is not None else ""
    if not path.exists():
        raise ValueError(f"{where}{path} is not a file (run sla-nas fidelity SPACE first)")
    try:
        data = _nan(load_json(read_text_bounded(path, MAX_FILE_BYTES, "fidelity file"), path))
    except ValueError as err:
        raise ValueError(f"{where}{err}") from None
    if not _well_formed(data):
        raise ValueError(f"{where}{path}: not a fidelity.json of version {FIDELITY_VERSION} "
                         f"that sla-nas fidelity wrote (budgets, tau, budget, recommendation, "
                         f"identity)")
    if space is not None:
        mine = json.loads(json.dumps(space_identity(space), default=str))
        for name, value in mine.items():
            if data["identity"].get(name) != value:
                raise ValueError(
                    f"{where}{path} was measured with another {name} "
                    f"({_short(data['identity'].get(name))}; this space: {_short(value)}): "
                    f"measure this space with sla-nas fidelity")
    return Fidelity(path, data)


def _well_formed(data: Any) -> bool:
    """Every field the plan, the sentences and the report read, with its type."""
    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 10**13

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    try:
        rec, budgets = data["recommendation"], data["budgets"]
        return (data.get("version") == FIDELITY_VERSION and isinstance(data["identity"], dict)
                and isinstance(budgets, list) and 0 < len(budgets) <= 64
                and all(count(b) for b in budgets) and budgets == sorted(budgets)
                and count(data["longest"]) and data["longest"] == budgets[-1]
                and count(data["search_tokens"]) and number(data["tau_target"])
                and isinstance(data["pairs"], int) and isinstance(data["metric"], str)
                and isinstance(data["architectures"], list) and isinstance(data["seeds"], list)
                and isinstance(data["tau"], list) and len(data["tau"]) <= 64 * 64
                and all(count(t["a"]) and count(t["b"]) and number(t["tau"]) and number(t["low"])
                        and number(t["high"]) for t in data["tau"])
                and isinstance(data["budget"], list) and len(data["budget"]) == len(budgets)
                and all(count(r["tokens"]) and number(r["noise"]) and isinstance(r["dof"], int)
                        and isinstance(r["pairs_apart"], int)
                        and isinstance(r["kept_at_longest"], int) for r in data["budget"])
                and isinstance(rec, dict) and count(rec["search_tokens"])
                and isinstance(rec["search_holds"], bool)
                and (rec["min_rung_tokens"] is None or count(rec["min_rung_tokens"])))
    except (KeyError, TypeError, AttributeError):
        return False


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def search_evidence(space: SearchSpace, budget: int) -> tuple[RankEvidence | None, str | None]:
    """The rung evidence a search of ``space`` at ``budget`` tokens uses: from its
    ``search.fidelity`` file if it names one (None without), and a note on the budget the
    measurement recommends when the search's is shorter (None if not)."""
    from sla_nas.proxy import RankEvidence

    path = space.fidelity_path()
    if path is None:
        return None, None
    fid = load_fidelity(path, space)
    rung = fid.min_rung_for(budget)
    if rung == "unmeasured":
        raise ValueError(f"{space.path}: search.fidelity: {path} measured budgets "
                         f"{', '.join(f'{b:,}' for b in fid.data['budgets'])}; this search's "
                         f"budget of {budget:,} tokens is not one of them (measure it, or "
                         f"search at a measured budget)")
    source = f"the fidelity measured on this space ({path.name})"
    note = None
    rec = fid.recommendation
    if rec["search_holds"] and budget < rec["search_tokens"]:
        note = (f"{path.name}: a budget of {budget:,} tokens was not shown to rank "
                f"architectures like {fid.data['longest']:,}; from {rec['search_tokens']:,} "
                f"tokens on, the ranking holds (tau at least {fid.data['tau_target']}, its "
                f"interval above zero)")
    elif not rec["search_holds"]:
        note = (f"{path.name}: no measured budget shorter than {fid.data['longest']:,} tokens "
                f"was shown to rank architectures like it (tau at least "
                f"{fid.data['tau_target']}, its interval above zero): this search's ranking "
                f"may not hold at longer training")
    return RankEvidence(rung, source), note


def search_plan(space: SearchSpace, tokens: int | None = None) -> tuple[EvalPlan, str | None]:
    """The evaluation plan of a search of ``space`` (``tokens`` overrides its budget): rungs
    placed by its ``search.fidelity`` measurement if it names one, else by the project-wide
    constant; and the measurement's note on the budget (None if it has none)."""
    from sla_nas.proxy import PROJECT_EVIDENCE, plan_evaluations

    evidence, note = search_evidence(space, tokens or space.config.budget.tokens)
    return plan_evaluations(space.config, tokens, evidence or PROJECT_EVIDENCE), note


# ---------------------------------------------------------------------- sentences
def fidelity_sentences(result: dict[str, Any], unit: str = "") -> list[str]:
    """What the measurement says, in plain sentences (the CLI and the report print them)."""
    unit = f" {unit}" if unit else ""
    longest, search = result["longest"], result["search_tokens"]
    rows = {r["tokens"]: r for r in result["budget"]}
    out = []
    tau = next((t for t in result["tau"] if t["a"] == search and t["b"] == longest), None)
    n_a, n_s = len(result["architectures"]), len(result["seeds"])
    if tau is not None and math.isfinite(tau["tau"]):
        out.append(f"At the search budget ({search:,} tokens) the {n_a} architectures rank "
                   f"like at {longest:,} with Kendall tau {tau['tau']:.2f} (95 % bootstrap "
                   f"interval {tau['low']:.2f} to {tau['high']:.2f}, over architectures and "
                   f"{n_s} seeds)" + (
                       "; the interval reaches below zero: too few architectures or seeds to "
                       "rely on this ranking's fidelity." if tau["low"] < 0 else "."))
    last = rows[longest]
    if last["dof"] >= 3:
        out.append(f"The paired seed noise at {longest:,} tokens is {last['noise']:.4f}"
                   f"{unit} ({last['dof']} degrees of freedom); {last['pairs_apart']} of "
                   f"{result['pairs']} pairs are apart beyond it.")
    else:
        out.append(f"With {last['dof']} degrees of freedom the seed noise at {longest:,} "
                   f"tokens is not yet known (measure more seeds or architectures).")
    here = rows.get(search)
    if here is not None and here["pairs_apart"]:
        out.append(f"Of the {here['pairs_apart']} pairs apart beyond noise at {search:,} tokens, "
                   f"{here['kept_at_longest']} keep their order at {longest:,}.")
    rec = result["recommendation"]
    if rec["search_holds"]:
        out.append(f"Recommended search budget: {rec['search_tokens']:,} tokens, the shortest "
                   f"whose ranking holds at {longest:,} (tau at least {result['tau_target']}, "
                   f"its interval above zero).")
    else:
        out.append(f"No budget shorter than {longest:,} tokens was shown to rank like it (tau "
                   f"at least {result['tau_target']} with its interval above zero): at these "
                   f"budgets this measurement cannot tell signal from noise.")
    if rec["min_rung_tokens"] is not None:
        out.append(f"Early-stopping rungs may go from {rec['min_rung_tokens']:,} tokens "
                   f"(ranks like the search budget); `search: {{fidelity: PATH}}` uses this.")
    else:
        out.append(f"No shorter budget ranks like the search budget of {search:,} tokens: a "
                   f"search that uses this file places no rung of its own (FIFO, unless its "
                   f"search.grace_tokens places them).")
    return out
