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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sla_nas.arch import ArchSpec, metrics, presets
from sla_nas.space import SearchSpace

from ._baseline import is_vanilla, joined_label
from ._run_folder import RunPaths
from ._stats import compare
from ._table import KEY, SEED, SPEC, TRIAL, load_results
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
    if not path.exists():
        return pd.DataFrame(columns=[KEY, LABEL, SEARCH_TRIAL, SEED, CONFIRM_TOKENS, "status"])
    return pd.read_csv(path)


def append_confirm(run_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    """Add finished runs to ``confirm.csv`` (replaced atomically)."""
    path = RunPaths(Path(run_dir)).confirm_csv
    table = pd.concat([load_confirm(run_dir), pd.DataFrame(rows)], ignore_index=True)
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)


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
    """A plain sentence for the top of a report: what the confirmation shows."""
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
        return text + f" (over {seeds} paired seeds)"
    gain = -best["vs_baseline"] if mode == "min" else best["vs_baseline"]
    half = (best["vs_baseline_high"] - best["vs_baseline_low"]) / 2
    if bool(best.get("beats_baseline")):
        text = (f"the best architecture ({best[LABEL]}{among}) beats vanilla by {gain:.3f} ± "
                f"{half:.3f}{unit} over {seeds} paired seeds (95 % interval, "
                f"p = {best['vs_baseline_p']:.2g})")
    elif math.isfinite(half):
        text = (f"the best architecture ({best[LABEL]}{among}) is within noise of vanilla: "
                f"{abs(gain):.3f} ± {half:.3f}{unit} {'better' if gain >= 0 else 'worse'} "
                f"over {seeds} paired seeds (95 % interval, p = {best['vs_baseline_p']:.2g})")
    else:
        text = f"the best architecture ({best[LABEL]}) needs 2 or more seeds to judge"
    if tied > 1:
        text += f"; the top {tied} are not separated (each is within noise of the next)"
    return text
