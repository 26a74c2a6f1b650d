"""Confirming a search's winners: what to re-train, the results table, and what they say.

`sla-nas confirm` (the Ray part lives in `sla_nas.search`) re-trains the top architectures of a
search and the seed presets (vanilla always) with several *fresh* training seeds (the search
chose its winners on its own seed; re-using it would re-use their luck) at a longer budget.
Seed index i is the same training seed for every architecture: the same data order,
evaluation set and initial shared weights, so differences are paired (docs/EVALUATION.md).
Every finished run is appended to ``RUN_DIR/confirm.csv``; a run already there (same
architecture, seed and budget) is never trained again.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sla_nas.arch import ArchSpec, atomic_write, metrics, presets
from sla_nas.space import SearchSpace

from ._baseline import is_vanilla, joined_label
from ._run_folder import RunPaths, valid_key
from ._stats import CONFIDENCE, POWER, SEEDS_CAP, compare, seeds_to_resolve
from ._table import (
    KEY,
    SEED,
    SPEC,
    TRIAL,
    check_columns,
    check_numbers,
    load_results,
    read_table,
)
from ._winners import ranked

__all__ = ["Candidate", "candidates", "confirm_seeds", "load_confirm", "append_confirm",
           "summary", "latest_summary", "sentence", "LABEL", "SEARCH_TRIAL", "CONFIRM_TOKENS",
           "UNITS", "objective_of"]

LABEL = "label"  # "rank 1", "vanilla", ...
SEARCH_TRIAL = "search_trial"  # the search trial an architecture came from (winners)
CONFIRM_TOKENS = "budget_tokens"  # the length of the confirmation runs
UNITS = metrics.TASK_UNITS  # {(task, metric): unit} where a unit depends on the task


@dataclass(frozen=True)
class Candidate:
    label: str
    spec: ArchSpec
    search_trial: int | None


def candidates(run_dir: str | Path, top: int, preset_names: list[str] | None = None
               ) -> list[Candidate]:
    """The top ``top`` architectures of a search by its first objective (mean over seeds) and
    the seed presets (``preset_names``; default the space's seeds), vanilla always; one entry
    per distinct architecture, its first label kept ("rank 1 = vanilla" if they coincide)."""
    paths = RunPaths(Path(run_dir))
    space = SearchSpace.from_yaml(paths.space)
    metric, mode = objective_of(space)
    frame = load_results(paths.root)
    dims = dataclasses.asdict(space.dims_choices[0])
    out: dict[str, Candidate] = {}
    for rank, (_, row) in enumerate(ranked(frame, metric, mode).head(top).iterrows(), 1):
        spec = ArchSpec.from_json(row[SPEC])
        out[spec.key] = Candidate(f"rank {rank}", spec, int(row[TRIAL]))
    named = [(n, s) for n, s in space.seeds] if preset_names is None else [
        (n, presets.get(n, **dims)) for n in preset_names]
    if not any(is_vanilla(n) for n, _ in named):
        named.append((presets.VANILLA, presets.get(presets.VANILLA, **dims)))
    for name, spec in named:
        if spec.key in out:
            first = out[spec.key]
            out[spec.key] = Candidate(joined_label(first.label, name), spec, first.search_trial)
        else:
            out[spec.key] = Candidate(name, spec, None)
    return list(out.values())


def objective_of(space: SearchSpace) -> tuple[str, str]:
    """The first objective that says what training achieved (`metrics.QUALITY`): what a
    confirmation re-measures."""
    return next(((o.metric, o.mode) for o in space.config.objectives
                 if o.metric in metrics.QUALITY), ("val_loss", "min"))


def confirm_seeds(space: SearchSpace, n: int) -> list[int]:
    """``n`` training seeds the search did not choose its winners with: after the search's
    seed and the ``seed_runs`` seeds its seed presets were trained with."""
    config = space.config.search
    return [config.seed + max(1, config.seed_runs) + i for i in range(n)]


def load_confirm(run_dir: str | Path) -> pd.DataFrame:
    """``confirm.csv`` (empty with the right columns if there is none yet)."""
    path = RunPaths(Path(run_dir)).confirm_csv
    if not (path.exists() or path.is_symlink()):
        return pd.DataFrame(columns=[KEY, LABEL, SEARCH_TRIAL, SEED, CONFIRM_TOKENS, "status"])
    table = read_table(path, pd.read_csv, "confirmation table")
    check_columns(table, (KEY, LABEL, SEED, CONFIRM_TOKENS, "status"), path)
    check_numbers(table, (SEED, CONFIRM_TOKENS, SEARCH_TRIAL), path,
                  integer=(SEED, CONFIRM_TOKENS, SEARCH_TRIAL))
    check_numbers(table, (*metrics.MEASURED, *metrics.ANALYTIC), path)
    for column in (KEY, SEED, CONFIRM_TOKENS):
        if table[column].isna().any():
            row = int(table[column].isna().to_numpy().argmax()) + 1
            raise ValueError(f"{path}: column {column}, row {row}: expected a value, found "
                             f"nothing")
    table[[SEED, CONFIRM_TOKENS]] = table[[SEED, CONFIRM_TOKENS]].astype("int64")
    for index, key in table[KEY].items():
        try:
            valid_key(key)
        except ValueError:
            raise ValueError(f"{path}: column {KEY}, row {table.index.get_loc(index) + 1}: "
                             f"expected an architecture key (12 hex digits), got "
                             f"{key!r:.60}") from None
    return table


def append_confirm(run_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    """Add finished runs to ``confirm.csv`` (replaced atomically by `atomic_write`: a crash
    keeps the runs already there, and a planted symlink is never written through)."""
    path = RunPaths(Path(run_dir)).confirm_csv
    table = pd.concat([load_confirm(run_dir), pd.DataFrame(rows)], ignore_index=True)
    atomic_write(path, lambda f: table.to_csv(f, index=False))


def summary(table: pd.DataFrame, labels: dict[str, str], metric: str, mode: str
            ) -> pd.DataFrame:
    """Per architecture: mean and std over seeds, paired difference (and 95 % interval,
    p-value) to vanilla and to the next in the ranking, and whether each is distinguishable."""
    base = next((k for k, label in labels.items() if is_vanilla(label)), None)
    if base is None:
        raise ValueError(f"no vanilla among the labels {sorted(labels.values())}: a "
                         f"confirmation is compared with it")
    ok = table[(table["status"] == "ok") & table[KEY].isin(labels)]
    out = compare(ok, base, metric, mode, KEY, SEED)
    out.insert(0, LABEL, out[KEY].map(labels))
    return out


def latest_summary(run_dir: str | Path, metric: str, mode: str
                   ) -> tuple[pd.DataFrame, pd.DataFrame, int] | None:
    """The confirmation at the longest budget ``confirm.csv`` holds: (its runs, their
    `summary`, the budget), or None without runs that include vanilla."""
    table = load_confirm(run_dir)
    table = table[table["status"] == "ok"] if len(table) else table
    if table.empty or metric not in table:
        return None
    tokens = int(table[CONFIRM_TOKENS].max())
    table = table[table[CONFIRM_TOKENS] == tokens].drop_duplicates([KEY, SEED], keep="last")
    labels = dict(zip(table[KEY], table[LABEL]))
    if not any(is_vanilla(label) for label in labels.values()):
        return None
    return table, summary(table, labels, metric, mode), tokens


def sentence(table: pd.DataFrame, metric: str, mode: str, unit: str = "") -> str:
    """A plain sentence for the top of a report: what the confirmation shows.

    Intervals are paired Student-t intervals with n - 1 degrees of freedom (`compare`). Where
    the best is within noise of vanilla (or vanilla of the runner-up), or the top are not
    separated, it adds what more seeds would buy: how many paired seeds a paired t-test needs
    to show the measured difference with 80 % power at the measured spread
    (`stats.seeds_to_resolve`), i.e. what ``sla-nas confirm --seeds N`` is worth running."""
    if table.empty:
        return "no confirmation runs finished"
    best = table.iloc[0]
    seeds = int(best["n_seeds"])
    if not is_vanilla(best[LABEL]) and "vs_baseline_n" in best:
        seeds = int(best["vs_baseline_n"]) if math.isfinite(best["vs_baseline_n"]) else 0
        if seeds == 0:
            return (f"{best[LABEL]} leads, but shares no finished seed with vanilla yet: "
                    f"nothing can be said about it")
    chosen = int((~table[LABEL].map(is_vanilla)).sum())
    among = f", the best of {chosen}" if chosen > 1 else ""
    tied = 1
    while tied < len(table) and not bool(table.iloc[tied - 1].get("ahead_of_next")):
        tied += 1
    unit = f" {unit}" if unit else ""
    if is_vanilla(best[LABEL]):
        text = f"vanilla is the best of the {len(table)} confirmed architectures"
        runner = table.iloc[1] if len(table) > 1 else None
        if runner is not None and not bool(best.get("ahead_of_next")):
            text += f", but not distinguishable from {runner[LABEL]}"
        text += f" (over {seeds} paired seeds)"
        if runner is not None and not bool(best.get("ahead_of_next")):
            text += _more_seeds(f"to separate vanilla from {runner[LABEL]}", best, "vs_next",
                                unit)
        return text
    gain = -best["vs_baseline"] if mode == "min" else best["vs_baseline"]
    half = (best["vs_baseline_high"] - best["vs_baseline_low"]) / 2
    beats = bool(best.get("beats_baseline"))
    if beats:
        text = (f"the best architecture ({best[LABEL]}{among}) beats vanilla by {gain:.3f} ± "
                f"{half:.3f}{unit} over {seeds} paired seeds (95 % interval, "
                f"p = {best['vs_baseline_p']:.2g})")
    elif math.isfinite(half):
        text = (f"the best architecture ({best[LABEL]}{among}) is within noise of vanilla: "
                f"{abs(gain):.3f} ± {half:.3f}{unit} {'better' if gain >= 0 else 'worse'} "
                f"over {seeds} paired seeds (95 % interval, p = {best['vs_baseline_p']:.2g})")
        text += _more_seeds("to tell it from vanilla", best, "vs_baseline", unit)
    else:
        text = f"the best architecture ({best[LABEL]}) needs 2 or more seeds to judge"
    if tied > 1:
        text += f"; the top {tied} are not separated (each is within noise of the next)"
        if beats and len(table) > 1:
            text += _more_seeds(f"to separate {best[LABEL]} from {table.iloc[1][LABEL]}", best,
                                "vs_next", unit)
    return text


def _more_seeds(goal: str, row: pd.Series, prefix: str, unit: str) -> str:
    """``"; <goal>, if ... a paired t-test needs N seeds ..."``: what a longer confirmation
    buys for the difference ``row[prefix]`` (its seed-by-seed std ``<prefix>_std`` over
    ``<prefix>_n`` seeds), or "" where that cannot be said (fewer than 2 seeds, no
    difference)."""
    diff, std = float(row.get(prefix, math.nan)), float(row.get(f"{prefix}_std", math.nan))
    n = row.get(f"{prefix}_n", math.nan)
    if not (math.isfinite(diff) and math.isfinite(std) and math.isfinite(n)) or diff == 0:
        return ""
    need = seeds_to_resolve(diff, std)
    level = f"{1 - CONFIDENCE:.0%}".replace("%", " %")
    power = f"{POWER:.0%}".replace("%", " %")
    text = (f"; {goal}, if the difference ({_two_digits(abs(diff))}{unit}) and its "
            f"seed-by-seed std ({_two_digits(std)} over {int(n)} seeds) are as measured, a "
            f"paired t-test (two-sided {level}) needs")
    if need is None:
        return f"{text} more than {SEEDS_CAP:,} seeds for {power} power"
    return f"{text} {need} seeds for {power} power (sla-nas confirm --seeds {need})"


def _two_digits(x: float) -> str:
    """Two significant digits, trailing zeros kept (0.010, not 0.01): an estimate's precision."""
    return f"{x:#.2g}".rstrip(".")
