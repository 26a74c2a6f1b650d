"""The data behind ``report.html``, without plotly.

Optuna's visualization pattern (data first, then the picture): every
``_get_..._info`` function turns the trials table into a NamedTuple of plain numbers and strings
that the tests check exactly; `sla_nas.report` only draws them. Values that a later issue may
want to show with error bars (several training seeds per architecture) carry a spread already
(`MarginalRow.std`), so bands are an addition to the picture, not a change of the data.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from sla_nas.arch import (
    COST_COLUMNS,
    EMB,
    ArchSpec,
    CostRow,
    cost_table,
    error_line,
    gene_label,
)
from sla_nas.results import (
    COSTS,
    CURVE,
    HISTORY,
    KEY,
    MESSAGE,
    N_SEEDS,
    PARAM_PREFIX,
    SEED,
    SEED_PRESET,
    SPEC,
    STATUS,
    STATUSES,
    TOKENS,
    TRAINED_METRICS,
    TRAINED_STATUSES,
    TRIAL,
    WALL_SECONDS,
    RunPaths,
    finished_ok,
    pareto_mask,
    ranked,
    source_of,
    verdict,
    winners,
)
from sla_nas.space import parse_space_yaml

Objectives = list[tuple[str, str]]  # [(metric, "min" | "max"), ...] as in the space file

MIN_IMPORTANCE_TRIALS = 6  # fewer fully trained trials: importances would be noise
IMPORTANCE_TOP = 5  # PED-ANOVA asks for at least this many trials in the top quantile
MIN_CHOICE_TRIALS = 2  # a choice's mean over fewer trials says nothing about its effect
PARETO_COSTS = ("kv_cache_bytes_per_token", "params")  # always drawn against the loss


def run_objectives(paths: RunPaths) -> tuple[str, Objectives]:
    """The space's name and objectives, from the run's ``space.yaml``. Only the schema is
    read (not `SearchSpace`): seeds written as spec files relative to the original space file
    need not resolve here."""
    if not paths.space.exists():
        return paths.root.name, [("val_loss", "min")]
    config, _ = parse_space_yaml(paths.space)
    return (config.name or paths.root.name), [(o.metric, o.mode) for o in config.objectives]


def with_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The table with every column the report reads, empty where a young or older run has
    none yet (a table written before any trial ended holds only the first few)."""
    needed = [TRIAL, KEY, STATUS, MESSAGE, SEED, SEED_PRESET, *TRAINED_METRICS, *COSTS, TOKENS,
              WALL_SECONDS, SPEC, HISTORY, CURVE]
    missing = [c for c in needed if c not in frame]
    return frame.assign(**{c: None for c in missing}) if missing else frame


def primary_objective(objectives: Objectives) -> tuple[str, str]:
    """The first trained objective (a loss or accuracy): what "better" means in the pictures
    of trials, curves and choices. A search always has one (costs alone need no search)."""
    for metric, mode in objectives:
        if metric in TRAINED_METRICS:
            return metric, mode
    return "val_loss", "min"


def _finite(value: Any) -> float | None:
    if value is None or value is pd.NA:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _text(value: Any) -> str | None:
    """A table cell as text, or None when empty (CSV turns a "128" choice into 128.0)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def architectures(frame: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """The fully trained architectures in trial order, one row each (its first trial's) with
    ``metric`` averaged over the training seeds it ran with (`results.ranked`, which ranks
    the winners the same way; ``N_SEEDS`` says over how many)."""
    return ranked(frame, metric, mode).sort_values(TRIAL)


def param_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(PARAM_PREFIX)]


# ---------------------------------------------------------------------- summary
class SummaryInfo(NamedTuple):
    run: str
    space: str
    objectives: tuple[tuple[str, str], ...]
    n_trials: int
    counts: dict[str, int]  # trials per status, in the order of results.STATUSES
    verdict: str  # results.verdict: one plain sentence
    started: str | None  # from run.json


def get_summary_info(frame: pd.DataFrame, objectives: Objectives, run: str, space: str,
                      started: str | None = None) -> SummaryInfo:
    found = frame[STATUS].value_counts() if len(frame) else pd.Series(dtype=int)
    order = [s for s in STATUSES if s in found] + sorted(set(found.index) - set(STATUSES))
    return SummaryInfo(run, space, tuple(objectives), len(frame),
                       {s: int(found[s]) for s in order}, verdict(frame, objectives), started)


# ---------------------------------------------------------------------- best so far
class TrialPoints(NamedTuple):
    """The trials of one status: their objective value (None: they have none)."""

    status: str
    trials: tuple[int, ...]
    values: tuple[float | None, ...]
    notes: tuple[str, ...]  # hover text: key, seed, why it ended so


class HistoryInfo(NamedTuple):
    metric: str
    mode: str
    groups: tuple[TrialPoints, ...]  # one per status present, in results.STATUSES order
    best_trials: tuple[int, ...]  # the fully trained trials, in trial order ...
    best_values: tuple[float, ...]  # ... and the best architecture's mean over seeds so far
    y_range: tuple[float, float] | None  # where to cut the axis, if other values lie far off


def _y_range(groups: list[TrialPoints]) -> tuple[float, float] | None:
    """The range of the fully trained values padded by 15 %, when some other value (a pruned
    trial's, from a much shorter run) lies more than three such ranges away and would flatten
    them; else None (show everything)."""
    full = [v for g in groups if g.status in ("ok", "duplicate") for v in g.values
            if v is not None]
    every = [v for g in groups for v in g.values if v is not None]
    if not full:
        return None
    lo, hi = min(full), max(full)
    pad = max(hi - lo, 1e-3 * max(abs(hi), 1.0)) * 0.15
    reach = 3 * (hi - lo + 2 * pad)
    if lo - reach <= min(every) and max(every) <= hi + reach:
        return None
    return lo - pad, hi + pad


def _note(row: pd.Series) -> str:
    parts = [f"trial {int(row[TRIAL])}", str(row.get(KEY) or "")]
    if _text(row.get(SEED_PRESET)):
        parts.append(f"seed {row[SEED_PRESET]}")
    if _text(row.get(MESSAGE)):
        parts.append(str(row[MESSAGE]))
    return " · ".join(p for p in parts if p)


def get_history_info(frame: pd.DataFrame, objectives: Objectives) -> HistoryInfo:
    """Every trial by status, with its objective value where it has one (a pruned trial's is
    at its last rung: a shorter run, not comparable with the full ones), and after each fully
    trained trial the best architecture as known then: by its mean over the training seeds
    trained so far, as `results.ranked` ranks (so the best can get worse when another seed of
    the leader comes in)."""
    metric, mode = primary_objective(objectives)
    rows = frame.sort_values(TRIAL)
    groups = []
    statuses = [s for s in STATUSES if s in set(rows[STATUS])]
    statuses += sorted(set(rows[STATUS]) - set(statuses))
    for status in statuses:
        part = rows[rows[STATUS] == status]
        groups.append(TrialPoints(
            status, tuple(int(t) for t in part[TRIAL]),
            tuple(_finite(v) for v in part[metric]) if metric in part else (None,) * len(part),
            tuple(_note(r) for _, r in part.iterrows())))
    ok = finished_ok(rows)
    ok = ok[np.isfinite(pd.to_numeric(ok[metric], errors="coerce").astype(float))]
    seen: dict[str, list[float]] = {}
    best = []
    for key, value in zip(ok[KEY], ok[metric].astype(float)):
        seen.setdefault(key, []).append(value)
        means = [sum(v) / len(v) for v in seen.values()]
        best.append(min(means) if mode == "min" else max(means))
    return HistoryInfo(metric, mode, tuple(groups), tuple(int(t) for t in ok[TRIAL]),
                       tuple(best), _y_range(groups))


# ---------------------------------------------------------------------- pareto
class ParetoInfo(NamedTuple):
    """Fully trained architectures: ``y_metric`` (the loss, mean over seeds) against one cost."""

    x_metric: str
    x_mode: str
    y_metric: str
    y_mode: str
    trials: tuple[int, ...]
    keys: tuple[str, ...]
    x: tuple[float, ...]
    y: tuple[float, ...]
    front: tuple[bool, ...]  # not dominated in this (x, y) plane
    winner: tuple[bool, ...]  # the run's best (one objective) or its Pareto set (several)
    seeds: tuple[str | None, ...]  # the seed preset's name, if the point is one


def pareto_axes(objectives: Objectives) -> list[tuple[str, str]]:
    """The costs to draw the loss against: KV cache and parameters, then any other objective."""
    primary = primary_objective(objectives)[0]
    axes = [(m, "min") for m in PARETO_COSTS]
    for metric, mode in objectives:
        if metric != primary and metric not in dict(axes):
            axes.append((metric, mode))
    return [(m, dict(objectives).get(m, mode)) for m, mode in axes]


def get_pareto_info(frame: pd.DataFrame, objectives: Objectives, x_metric: str,
                     x_mode: str = "min") -> ParetoInfo:
    y_metric, y_mode = primary_objective(objectives)
    ok = architectures(frame, y_metric, y_mode)
    if x_metric in TRAINED_METRICS:  # measured, so averaged over the seeds too
        ok[x_metric] = ok[KEY].map(ranked(frame, x_metric, x_mode).set_index(KEY)[x_metric])
    ok = ok[np.isfinite(pd.to_numeric(ok[x_metric], errors="coerce").astype(float))]
    x = [float(v) for v in ok[x_metric]]
    y = [float(v) for v in ok[y_metric]]
    front = pareto_mask([[a, b] for a, b in zip(x, y)], [x_mode, y_mode]) if len(ok) else []
    best = set(winners(frame, objectives)[TRIAL].astype(int))
    return ParetoInfo(x_metric, x_mode, y_metric, y_mode, tuple(int(t) for t in ok[TRIAL]),
                      tuple(str(k) for k in ok[KEY]), tuple(x), tuple(y), tuple(front),
                      tuple(int(t) in best for t in ok[TRIAL]),
                      tuple(_text(s) for s in ok[SEED_PRESET]) if SEED_PRESET in ok
                      else (None,) * len(ok))


# ---------------------------------------------------------------------- connectivity
class CellInfo(NamedTuple):
    """One stream (K or V) of one head group of one layer."""

    layer: int
    group: int
    stream: str  # "k" | "v"
    label: str  # arch.gene_label: the text `sla-nas show` prints
    sources: tuple[int, ...]  # layers, EMB (-1) for the token embedding
    mode: str  # reproject | reuse
    combine: str  # select | concat | mix
    reach: int  # layers back to the farthest source: 0 own layer, layer + 1 the embedding
    embedding: bool
    where: str  # its farthest source in words: "own layer", "2 layers back", "embedding"


class ArchInfo(NamedTuple):
    rank: int  # 1 = best by the primary objective (a Pareto set comes first)
    trial: int
    key: str
    seed: str | None
    winner: bool
    n_seeds: int  # training seeds its values are means over
    values: dict[str, float | None]  # the objectives and the costs drawn elsewhere
    n_layers: int
    n_groups: int
    cells: tuple[CellInfo, ...]


class ConnectivityInfo(NamedTuple):
    archs: tuple[ArchInfo, ...]
    max_reach: int  # the colour scale runs 1 .. max_reach for every picture alike


def _where(reach: int, embedding: bool) -> str:
    if embedding:
        return "embedding"
    return f"{reach} layer{'s' * (reach != 1)} back" if reach else "own layer"


def arch_cells(spec: ArchSpec) -> tuple[CellInfo, ...]:
    cells = []
    for l, g, stream, gene in spec.genes():
        embedding = EMB in gene.sources
        reach = l + 1 if embedding else max(l - s for s in gene.sources)
        cells.append(CellInfo(l, g, stream, gene_label(gene, l), tuple(gene.sources), gene.mode,
                              gene.combine, reach, embedding, _where(reach, embedding)))
    return tuple(cells)


def top_rows(frame: pd.DataFrame, objectives: Objectives, top: int) -> pd.DataFrame:
    """The architectures worth a look: the run's winners (its best, or its Pareto set) first,
    then the rest of the fully trained ones by the primary objective; every trained metric
    the mean over the architecture's training seeds."""
    metric, mode = primary_objective(objectives)
    best = winners(frame, objectives)
    rest = ranked(frame, metric, mode)
    rows = pd.concat([best, rest[~rest[TRIAL].isin(best[TRIAL])]]).head(top).copy()
    ok = finished_ok(frame)
    for m in (m for m in TRAINED_METRICS if m in frame):
        rows[m] = rows[KEY].map(pd.to_numeric(ok[m], errors="coerce").groupby(ok[KEY]).mean())
    return rows


def get_connectivity_info(frame: pd.DataFrame, objectives: Objectives,
                           top: int = 10) -> ConnectivityInfo:
    rows = top_rows(frame, objectives, top)
    best = set(winners(frame, objectives)[TRIAL].astype(int))
    shown = [m for m, _ in objectives] + [c for c in PARETO_COSTS if c not in dict(objectives)]
    archs = []
    for rank, (_, row) in enumerate(rows.iterrows(), start=1):
        spec = row_spec(frame, row)
        archs.append(ArchInfo(rank, int(row[TRIAL]), str(row[KEY]), _text(row.get(SEED_PRESET)),
                              int(row[TRIAL]) in best, int(row[N_SEEDS]),
                              {m: _finite(row.get(m)) for m in shown}, spec.dims.n_layers,
                              spec.dims.n_groups, arch_cells(spec)))
    reach = max((c.reach for a in archs for c in a.cells if not c.embedding), default=0)
    return ConnectivityInfo(tuple(archs), reach)


class CostsInfo(NamedTuple):
    """The costs of the top architecture next to vanilla attention's at its dimensions."""

    trial: int
    key: str
    rows: tuple[CostRow, ...]  # `sla_nas.arch.cost_table`

    @property
    def columns(self) -> tuple[str, ...]:
        return COST_COLUMNS


def get_costs_info(frame: pd.DataFrame, objectives: Objectives) -> CostsInfo | None:
    """None until an architecture is fully trained."""
    rows = top_rows(frame, objectives, 1)
    if rows.empty:
        return None
    row = rows.iloc[0]
    return CostsInfo(int(row[TRIAL]), str(row[KEY]),
                     tuple(cost_table(row_spec(frame, row))))


# ---------------------------------------------------------------------- which choices matter
class ImportanceInfo(NamedTuple):
    metric: str
    params: tuple[str, ...]  # most important first; empty when there is too little to say
    importances: tuple[float, ...]  # Optuna's PED-ANOVA importances, summing to 1
    n_archs: int  # fully trained architectures, each valued by its mean over seeds
    target_quantile: float  # importance of reaching this best fraction of them
    note: str  # why there are no importances, else ""


def study_from_frame(frame: pd.DataFrame, metric: str, mode: str) -> Any:
    """An in-memory Optuna study with one trial per fully trained architecture: the searched
    decisions as categorical parameters (the observed choices) and ``metric`` (its mean over
    seeds) as the value. Built from the table, so it needs neither ``study.db`` nor the
    study's storage."""
    import optuna

    ok = architectures(frame, metric, mode)
    columns = param_columns(ok)
    choices = {c: sorted({t for t in map(_text, ok[c]) if t is not None}) for c in columns}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    trials = []
    for _, row in ok.iterrows():
        params = {c.removeprefix(PARAM_PREFIX): _text(row[c]) for c in columns
                  if _text(row[c]) is not None}
        trials.append(optuna.trial.create_trial(
            params=params, value=float(row[metric]),
            distributions={name: optuna.distributions.CategoricalDistribution(
                choices[PARAM_PREFIX + name]) for name in params}))
    study.add_trials(trials)
    return study


def get_importance_info(frame: pd.DataFrame, objectives: Objectives) -> ImportanceInfo:
    import optuna

    metric, mode = primary_objective(objectives)
    ok = architectures(frame, metric, mode)
    n = len(ok)
    quantile = min(0.5, max(0.1, IMPORTANCE_TOP / max(n, 1)))
    varied = [c for c in param_columns(ok) if ok[c].map(_text).dropna().nunique() > 1]
    note = ""
    if n < MIN_IMPORTANCE_TRIALS:
        note = (f"only {n} fully trained architecture{'s' * (n != 1)}: importances need at "
                f"least {MIN_IMPORTANCE_TRIALS}")
    elif not varied:
        note = "no searched decision took more than one value among the fully trained trials"
    if note:
        return ImportanceInfo(metric, (), (), n, quantile, note)
    study = study_from_frame(ok, metric, mode)
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
    with warnings.catch_warnings():  # small studies: "regimes with few trials" and the like
        warnings.simplefilter("ignore")
        found = optuna.importance.get_param_importances(
            study, evaluator=evaluator, params=[c.removeprefix(PARAM_PREFIX) for c in varied])
    return ImportanceInfo(metric, tuple(found), tuple(float(v) for v in found.values()), n,
                          quantile, "")


class MarginalRow(NamedTuple):
    param: str  # the searched decision, e.g. "L3.g1.kv_src"
    value: str  # one of its choices
    count: int  # fully trained architectures that made this choice
    mean: float  # the mean of their objective (each its mean over seeds)
    std: float  # their sample standard deviation (nan for a single trial)
    delta: float  # mean minus the mean over all fully trained trials


class MarginalInfo(NamedTuple):
    metric: str
    mode: str
    overall_mean: float
    n_archs: int
    rows: tuple[MarginalRow, ...]  # decisions by the spread of the deltas of their choices
    # made by MIN_CHOICE_TRIALS or more, largest first (then by name); within one, choices in
    # name order. Decisions seen with one choice only are left out.


def get_marginal_info(frame: pd.DataFrame, objectives: Objectives) -> MarginalInfo:
    """Per searched decision and choice: the mean objective of the fully trained
    architectures that made it, against the mean of all. A rough view (the sampler correlates
    the choices), which the importances complement."""
    metric, mode = primary_objective(objectives)
    ok = architectures(frame, metric, mode)
    values = ok[metric].astype(float)
    overall = float(values.mean()) if len(ok) else math.nan
    blocks = []
    for column in param_columns(ok):
        choice = ok[column].map(_text)
        seen = choice.dropna()
        if seen.nunique() < 2:
            continue
        rows = []
        for value in sorted(seen.unique()):
            part = values[choice == value]
            std = float(part.std(ddof=1)) if len(part) > 1 else math.nan
            rows.append(MarginalRow(column.removeprefix(PARAM_PREFIX), value, len(part),
                                    float(part.mean()), std, float(part.mean()) - overall))
        counted = [r.delta for r in rows if r.count >= MIN_CHOICE_TRIALS]
        spread = max(counted) - min(counted) if counted else 0.0
        blocks.append((-spread, rows[0].param, rows))
    blocks.sort(key=lambda b: (b[0], b[1]))
    return MarginalInfo(metric, mode, overall, len(ok),
                        tuple(r for _, _, rows in blocks for r in rows))


# ---------------------------------------------------------------------- learning curves
class CurveInfo(NamedTuple):
    trial: int
    key: str
    status: str  # ok | pruned | diverged | error | running
    tokens: tuple[int, ...]  # the run length each honest evaluation stands for
    values: tuple[float, ...]  # the metric at those evaluations
    train_tokens: tuple[int, ...]  # the running training loss ...
    train_loss: tuple[float, ...]  # ... of the main (never cooled-down) run


class CurvesInfo(NamedTuple):
    metric: str
    mode: str
    curves: tuple[CurveInfo, ...]  # in trial order; duplicates left out (their source's)
    winners: tuple[int, ...]  # every trial (each seed) of the run's best or Pareto set


def _bad_cell(frame: pd.DataFrame, row: pd.Series, column: str, expected: str,
              found: Any) -> ValueError:
    return ValueError(f"{source_of(frame)}: column {column}, trial {row[TRIAL]}: expected "
                      f"{expected}, got {found!r:.60}")


def _value(frame: pd.DataFrame, row: pd.Series, entry: Any, name: str) -> float | None:
    """``entry[name]`` of one evaluation in a history cell: a finite number, or None when
    missing or not finite; anything else is the file's fault."""
    if not isinstance(entry, dict):
        raise _bad_cell(frame, row, HISTORY, "a list of objects (evaluations)", entry)
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad_cell(frame, row, HISTORY, f"a number at {name!r}", value)
    return float(value) if math.isfinite(value) else None


def _number(frame: pd.DataFrame, row: pd.Series, entry: Any, name: str) -> int:
    value = _value(frame, row, entry, name)
    if value is None:
        raise _bad_cell(frame, row, HISTORY, f"a number at {name!r} of every evaluation",
                        entry.get(name))
    return int(value)


def _pair(frame: pd.DataFrame, row: pd.Series, point: Any) -> tuple[float, float]:
    """One ``[tokens, loss]`` point of a curve cell."""
    if not (isinstance(point, list) and len(point) == 2 and
            all(isinstance(v, int | float) and not isinstance(v, bool) for v in point[:1]) and
            math.isfinite(point[0]) and (point[1] is None or isinstance(point[1], int | float))):
        raise _bad_cell(frame, row, CURVE, "[tokens, loss] pairs of numbers", point)
    return point[0], point[1] if point[1] is not None else math.nan


def row_spec(frame: pd.DataFrame, row: pd.Series) -> ArchSpec:
    """The architecture of a trials-table row; a spec that does not parse is a ValueError
    naming the file, the column and the trial."""
    try:
        return ArchSpec.from_json(row[SPEC])
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as err:
        first = error_line(err)
        raise ValueError(f"{source_of(frame)}: column {SPEC}, trial {row[TRIAL]}: not an "
                         f"architecture spec: {first}") from None


def get_curves_info(frame: pd.DataFrame, objectives: Objectives) -> CurvesInfo:
    metric, mode = primary_objective(objectives)
    curves = []
    trained = frame[frame[STATUS].isin((*TRAINED_STATUSES, "running"))].sort_values(TRIAL)
    for _, row in trained.iterrows():
        history = json.loads(row[HISTORY]) if _text(row.get(HISTORY)) else []
        points = [(_number(frame, row, h, "tokens"), value) for h in history
                  if (value := _value(frame, row, h, metric)) is not None]
        curve = json.loads(row[CURVE]) if _text(row.get(CURVE)) else []
        train = [(int(t), float(v)) for t, v in (_pair(frame, row, c) for c in curve)
                 if _finite(v) is not None]
        if not points and not train:
            continue
        curves.append(CurveInfo(int(row[TRIAL]), str(row[KEY]), str(row[STATUS]),
                                tuple(t for t, _ in points), tuple(v for _, v in points),
                                tuple(t for t, _ in train), tuple(v for _, v in train)))
    keys = set(winners(frame, objectives)[KEY])
    best = tuple(c.trial for c in curves if c.key in keys and c.status == "ok")
    return CurvesInfo(metric, mode, tuple(curves), best)


# ---------------------------------------------------------------------- top table
class TableInfo(NamedTuple):
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]  # plain Python values; None for an empty cell


def get_table_info(frame: pd.DataFrame, objectives: Objectives, top: int = 10) -> TableInfo:
    """The top architectures (as `top_rows`) with every metric and cost they have; trained
    metrics are means over the ``n_seeds`` training seeds."""
    rows = top_rows(frame, objectives, top)
    best = set(winners(frame, objectives)[TRIAL].astype(int))
    metrics = [m for m in TRAINED_METRICS if m in rows and rows[m].notna().any()]
    numbers = [*metrics, *(c for c in COSTS if c in rows), TOKENS, WALL_SECONDS]
    columns = ("rank", TRIAL, KEY, SEED_PRESET, "winner", N_SEEDS, *numbers)
    out = []
    for rank, (_, row) in enumerate(rows.iterrows(), start=1):
        values = [_finite(row.get(c)) for c in numbers]
        values = [int(v) if v is not None and c in (*COSTS, TOKENS) else v
                  for c, v in zip(numbers, values)]
        out.append((rank, int(row[TRIAL]), str(row[KEY]), _text(row.get(SEED_PRESET)),
                    int(row[TRIAL]) in best, int(row[N_SEEDS]), *values))
    return TableInfo(columns, tuple(out))
