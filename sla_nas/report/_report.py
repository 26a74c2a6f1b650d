"""A run folder -> ``report.html``: one self-contained file that opens anywhere, offline.

``build_report(RUN_DIR)`` (``sla-nas report RUN_DIR``) reads the trials table (`load_results`,
which works on a running search too) and the objectives of ``space.yaml``, and writes a summary
sentence, the best value over the trials, the loss against the costs, the connectivity and the
costs of the top architectures, which choices matter, the learning curves and a sortable table
(and, for a one-shot search, its supernet scores against standalone losses with Kendall's tau).
Optuna's visualization style: the ``_get_..._info`` functions of `sla_nas.report._data` compute
the numbers, the ``plot_...`` functions here draw them and ``templates/report.html.j2`` lays
out the page and says how to read each part. This is the only module that imports plotly;
plotly.js is inlined once, so the page fetches nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from sla_nas.arch import atomic_write, check_write_target, metrics
from sla_nas.results import STATUS, TRAINED_STATUSES, RunPaths, load_results
from sla_nas.space import parse_space_yaml

from . import _data
from ._data import CellInfo
from ._fidelity import FidelityInfo, get_fidelity_info
from ._noise import (
    ConfirmInfo,
    get_confirm_info,
    get_noise_info,
    with_confirmation,
)
from ._one_shot import OneShotInfo, get_one_shot_info
from ._page import fmt, render_page, sortable

__all__ = ["load_results", "build_report", "plot_history", "plot_pareto", "plot_connectivity",
           "plot_importances", "plot_marginal", "plot_learning_curves", "plot_fidelity",
           "plot_one_shot"]

STATUS_COLORS = {"ok": "#2ca02c", "pruned": "#ff7f0e", "infeasible": "#7f7f7f",
                 "duplicate": "#17becf", "diverged": "#d62728", "error": "#8c1a1a",
                 "running": "#1f77b4", "waiting": "#aec7e8", "abandoned": "#3b3b3b"}
OWN_COLOR, EMBEDDING_COLOR = "#ececec", "#e07b39"
BORDERS = {"concat": "thick", "mix": "dotted"}
TITLES = {m.name: m.title for m in metrics.REGISTRY.values()}  # axis titles
SHORT = {m.name: m.short for m in metrics.REGISTRY.values()}  # names in dense hover text
_TEMPLATE = "plotly_white"


def _status_color(status: str) -> str:
    return STATUS_COLORS.get(status, "#9467bd")


# ---------------------------------------------------------------------- best so far
def plot_history(info: _data.HistoryInfo, noise: float | None = None,
                 dof: int | None = None) -> go.Figure:
    """Top: each trial's objective value and the running best (a step line over the fully
    trained trials) with a band of ± ``noise`` (the search's seed noise) around it; values
    beyond ``info.y_range`` sit on its edge as triangles (the value in the hover). Bottom:
    every trial's status, so trials without a value are seen too."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.8, 0.2],
                        vertical_spacing=0.04)
    lo, hi = info.y_range or (-math.inf, math.inf)
    for group in info.groups:
        color = _status_color(group.status)
        points = [(t, v, n) for t, v, n in zip(group.trials, group.values, group.notes)
                  if v is not None]
        if points:
            hollow = "-open" if group.status != "ok" else ""
            ys = [min(max(v, lo), hi) for _, v, _ in points]
            symbols = [f"circle{hollow}" if y == v else f"triangle-{'up' if v > y else 'down'}"
                       f"{hollow}" for y, (_, v, _) in zip(ys, points)]
            fig.add_trace(go.Scatter(
                x=[t for t, _, _ in points], y=ys, mode="markers", cliponaxis=False,
                name=group.status + (" (at its last rung)" if group.status == "pruned" else ""),
                legendgroup=group.status, hovertemplate="%{hovertext}<extra></extra>",
                hovertext=[f"{n}<br>{info.metric} {v:.4f}" for _, v, n in points],
                marker={"color": color, "size": 9, "symbol": symbols,
                        "line": {"width": 2 if hollow else 0}}), row=1, col=1)
        fig.add_trace(go.Scatter(
            x=list(group.trials), y=[group.status] * len(group.trials), mode="markers",
            name=group.status, legendgroup=group.status, showlegend=not points,
            hovertext=list(group.notes), hovertemplate="%{hovertext}<extra></extra>",
            marker={"color": color, "symbol": "line-ns-open", "size": 12,
                    "line": {"width": 2, "color": color}}), row=2, col=1)
    if info.best_trials:
        last = max(t for g in info.groups for t in g.trials)
        xs, ys = [*info.best_trials, last], [*info.best_values, info.best_values[-1]]
        if noise is not None and math.isfinite(noise):
            for sign, fill in ((1, None), (-1, "tonexty")):
                fig.add_trace(go.Scatter(
                    x=xs, y=[y + sign * noise for y in ys], mode="lines", fill=fill,
                    line={"shape": "hv", "width": 0}, fillcolor="rgba(0,0,0,0.10)",
                    name=f"± seed noise ({noise:.4f}" + (
                        f", {dof} df)" if dof is not None else ")"), showlegend=sign < 0,
                    legendgroup="noise", hoverinfo="skip"), row=1, col=1)
        fig.add_trace(go.Scatter(
            x=[*info.best_trials, last], y=[*info.best_values, info.best_values[-1]],
            mode="lines", line={"shape": "hv", "color": "#222", "width": 2},
            name=f"best so far ({info.mode})", hoverinfo="skip"), row=1, col=1)
    fig.update_yaxes(title_text=info.metric, row=1, col=1, range=info.y_range)
    fig.update_yaxes(type="category", row=2, col=1, showgrid=False)
    fig.update_xaxes(title_text="trial (proposal order)", row=2, col=1)
    fig.update_layout(template=_TEMPLATE, height=460, margin={"t": 30, "b": 50},
                      legend={"orientation": "h", "y": 1.08})
    return fig


# ---------------------------------------------------------------------- fidelity
def plot_fidelity(info: FidelityInfo) -> go.Figure:
    """Kendall tau of each shorter budget's ranking against the longest's, with its bootstrap
    interval; the dashed line is the tau a ranking must reach to be trusted."""
    fig = go.Figure(go.Scatter(
        x=list(info.budgets), y=list(info.tau), mode="markers+lines", name="Kendall tau",
        error_y={"type": "data", "symmetric": False,
                 "array": [h - t for h, t in zip(info.high, info.tau)],
                 "arrayminus": [t - lo for t, lo in zip(info.tau, info.low)]},
        hovertemplate="%{x:,} tokens: tau %{y:.2f}<extra></extra>"))
    fig.add_hline(y=info.tau_target, line_dash="dash", line_color="grey",
                  annotation_text=f"tau {info.tau_target}")
    fig.add_vline(x=info.search_tokens, line_dash="dot", line_color="#1f77b4",
                  annotation_text="search budget")
    fig.update_xaxes(type="log", title_text="tokens (a complete shorter run)")
    fig.update_yaxes(range=[-1.05, 1.05], title_text=f"tau vs {info.longest:,} tokens")
    fig.update_layout(height=360, margin={"t": 30, "b": 50}, showlegend=False)
    return fig


# ---------------------------------------------------------------------- one-shot
def plot_one_shot(info: OneShotInfo) -> go.Figure:
    """Each architecture's supernet score against its standalone value (mean over seeds):
    the closer to a rising line, the better the shared weights rank; tau in the title."""
    tau = "n/a" if not math.isfinite(info.tau) else f"{info.tau:.2f}"
    fig = go.Figure(go.Scatter(
        x=list(info.supernet), y=list(info.standalone), mode="markers",
        text=list(info.labels), customdata=list(info.n_seeds),
        marker={"size": 9, "color": "#1f77b4"},
        hovertemplate="%{text}<br>supernet %{x:.4f}<br>standalone %{y:.4f} "
                      "(%{customdata} seeds)<extra></extra>"))
    title = TITLES.get(info.metric, info.metric)
    fig.update_xaxes(title_text=f"supernet score ({title}, shared weights)")
    fig.update_yaxes(title_text=f"standalone {title} (mean over seeds)")
    fig.update_layout(template=_TEMPLATE, height=380, margin={"t": 50, "b": 50},
                      showlegend=False, title={
                          "text": f"Kendall's tau {tau} over {len(info.keys)} architectures",
                          "x": 0.5})
    return fig


# ---------------------------------------------------------------------- confirmation
def plot_confirmation(info: ConfirmInfo) -> go.Figure:
    """Left: each confirmed architecture's mean with its 95 % interval over seeds. Right: its
    seed-by-seed difference to vanilla with the 95 % interval (green: better beyond noise,
    red: worse, grey: within noise); the dashed line is vanilla."""
    rows = list(reversed(info.rows))  # best at the top
    names = [f"{r.label} · {r.key}" for r in rows]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=(f"{info.metric}: mean over {len(info.seeds)} seeds",
                                        "paired difference to vanilla"))
    fig.add_trace(go.Scatter(
        x=[r.mean for r in rows], y=names, mode="markers", name="mean ± 95 % interval",
        marker={"color": "#1f4e8c", "size": 9},
        error_x={"type": "data", "symmetric": False,
                 "array": [r.high - r.mean if math.isfinite(r.high) else 0 for r in rows],
                 "arrayminus": [r.mean - r.low if math.isfinite(r.low) else 0 for r in rows]},
        hovertemplate="%{y}<br>mean %{x:.4f}<extra></extra>"), row=1, col=1)
    diffs = [r for r in rows if r.vs is not None]
    colors = ["#2ca02c" if r.beats else "#d62728" if r.worse else "#7f7f7f" for r in diffs]
    fig.add_trace(go.Scatter(
        x=[r.vs for r in diffs], y=[f"{r.label} · {r.key}" for r in diffs], mode="markers",
        name="Δ vs vanilla ± 95 % interval", marker={"color": colors, "size": 9},
        error_x={"type": "data", "symmetric": False,
                 "array": [r.vs_high - r.vs for r in diffs],
                 "arrayminus": [r.vs - r.vs_low for r in diffs], "color": "#555"},
        hovertext=[f"p = {r.p:.2g}" for r in diffs],
        hovertemplate="%{y}<br>Δ %{x:+.4f}, %{hovertext}<extra></extra>"), row=1, col=2)
    fig.add_vline(x=0, line={"dash": "dash", "color": "#888"}, row=1, col=2)
    fig.update_layout(template=_TEMPLATE, height=120 + 34 * len(rows), showlegend=False,
                      margin={"t": 40, "b": 40, "l": 10})
    return fig


# ---------------------------------------------------------------------- pareto
def plot_pareto(infos: Sequence[_data.ParetoInfo]) -> go.Figure:
    """The loss against each cost, side by side; the front of each plane as a step line, the
    run's winners as stars and the seed presets labelled by name."""
    fig = make_subplots(rows=1, cols=len(infos), shared_yaxes=True, horizontal_spacing=0.05)
    for col, info in enumerate(infos, start=1):
        hover = [f"trial {t} · {k}" + (f" · seed {s}" if s else "")
                 for t, k, s in zip(info.trials, info.keys, info.seeds)]
        front = sorted((x, y) for x, y, f in zip(info.x, info.y, info.front) if f)
        fig.add_trace(go.Scatter(
            x=[x for x, _ in front], y=[y for _, y in front], mode="lines",
            name="front of this plane", legendgroup="front", showlegend=col == 1,
            line={"shape": "hv" if info.x_mode == "min" else "vh", "color": "#1f4e8c"},
            hoverinfo="skip"), row=1, col=col)
        layers = [("fully trained", range(len(info.x)), {"color": "#8fa8c8", "size": 8}),
                  ("on the front", [i for i, f in enumerate(info.front) if f],
                   {"color": "#1f4e8c", "size": 9}),
                  ("the run's winner(s)", [i for i, w in enumerate(info.winner) if w],
                   {"symbol": "star", "size": 16, "color": "#f2b701",
                    "line": {"width": 1, "color": "#333"}}),
                  ("seed presets", [i for i, s in enumerate(info.seeds) if s],
                   {"symbol": "diamond-open", "size": 13, "color": "#c0392b",
                    "line": {"width": 2}})]
        for name, index, marker in layers:
            fig.add_trace(go.Scatter(
                x=[info.x[i] for i in index], y=[info.y[i] for i in index], name=name,
                mode="markers+text" if name == "seed presets" else "markers",
                text=[info.seeds[i] for i in index], textposition="top center",
                legendgroup=name, showlegend=col == 1, marker=marker,
                hovertext=[hover[i] for i in index],
                hovertemplate=f"%{{hovertext}}<br>{info.y_metric} %{{y:.4f}}<br>"
                              f"{info.x_metric} %{{x:,}}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text=TITLES.get(info.x_metric, info.x_metric), row=1, col=col)
    fig.update_yaxes(title_text=infos[0].y_metric, row=1, col=1)
    fig.update_layout(template=_TEMPLATE, height=420, margin={"t": 30},
                      legend={"orientation": "h", "y": 1.1})
    return fig


# ---------------------------------------------------------------------- connectivity
_CELL_X = {"k": 0.0, "v": 1.0}
_GROUP_WIDTH = 2.5  # a group's K and V columns, then a gap


def _reach_colors(max_reach: int) -> dict[int, str]:
    """Colours by how far back a stream reads, one scale for every picture of the figure:
    Viridis lightened towards white, so the hatching and the labels read on every cell."""
    ramp = sample_colorscale("Viridis", [0.15 + 0.7 * (r - 1) / max(max_reach - 1, 1)
                                         for r in range(1, max_reach + 1)], colortype="tuple")
    light = ["rgb({:.0f},{:.0f},{:.0f})".format(*(255 * (0.55 * v + 0.45) for v in c))
             for c in ramp]
    return {0: OWN_COLOR, **dict(zip(range(1, max_reach + 1), light))}


def _fill(cell: CellInfo, reach_colors: dict[int, str]) -> str:
    return EMBEDDING_COLOR if cell.embedding else reach_colors[cell.reach]


def _describe(cell: CellInfo) -> str:
    names = ["e" if s == -1 else ("own" if s == cell.layer else f"L{s}") for s in cell.sources]
    return (f"layer {cell.layer}, group {cell.group}, {cell.stream.upper()}: {cell.label}<br>"
            f"{cell.mode} · {cell.combine} of {', '.join(names)}")


def _cell_box(cell: CellInfo) -> tuple[float, float, float, float]:
    x0 = cell.group * _GROUP_WIDTH + _CELL_X[cell.stream] + 0.04
    return x0, x0 + 0.92, cell.layer - 0.44, cell.layer + 0.44


def plot_connectivity(info: _data.ConnectivityInfo, per_row: int | None = None) -> go.Figure:
    """Small multiples, one per architecture: rows are layers (0 at the top, as `sla-nas show`
    prints them), columns the head groups split into their K and V streams. Colour: how far
    back the stream reads (grey: its own layer); hatched: ``reuse`` (the source's K/V, no own
    weights, nothing cached); thick border: ``concat``, dotted: ``mix``. The text is the
    `sla-nas show` label. One colour scale and one legend for all, so winners compare."""
    groups = max(a.n_groups for a in info.archs)
    cols = min(per_row or max(1, min(5, 12 // groups)), len(info.archs))
    rows = math.ceil(len(info.archs) / cols)
    height = rows * (44 * max(a.n_layers for a in info.archs) + 120) + 60
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.03,
                        subplot_titles=[_arch_title(a) for a in info.archs],
                        vertical_spacing=min(0.3, 95 / height))
    colors, legend = _reach_colors(info.max_reach), set()
    for i, arch in enumerate(info.archs):
        row, col = i // cols + 1, i % cols + 1
        _draw_arch(fig, arch, colors, legend, row, col)
        fig.update_xaxes(tickvals=[g * _GROUP_WIDTH + _CELL_X[s] + 0.5
                                   for g in range(arch.n_groups) for s in "kv"],
                         ticktext=[f"g{g} {s.upper()}" for g in range(arch.n_groups)
                                   for s in "kv"], showgrid=False, zeroline=False,
                         range=[-0.1, arch.n_groups * _GROUP_WIDTH - 0.4], row=row, col=col)
        fig.update_yaxes(tickvals=list(range(arch.n_layers)), autorange="reversed",
                         ticktext=[f"L{l}" for l in range(arch.n_layers)], showgrid=False,
                         zeroline=False, row=row, col=col)
    fig.update_layout(template=_TEMPLATE, height=height, margin={"t": 110, "b": 20},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1 + 60 / height},
                      hoverlabel={"align": "left"})
    fig.update_annotations(font_size=11)
    return fig


def _arch_title(arch: _data.ArchInfo) -> str:
    values = " · ".join(f"{SHORT.get(m, m)} {fmt(v)}" for m, v in arch.values.items()
                        if v is not None)
    seeds = f" · {arch.n_seeds} seeds" if arch.n_seeds > 1 else ""
    return (f"{'★ ' if arch.winner else ''}#{arch.rank} {arch.key}"
            f"{f' ({arch.seed})' if arch.seed else ''}{seeds}<br>"
            f"<span style='font-size:10px'>{values}</span>")


def _outlines(boxes: Sequence[tuple[float, float, float, float]]) -> dict[str, list]:
    """Closed rectangles separated by gaps: one trace draws (and fills) them all."""
    return {"x": [x for x0, x1, _, _ in boxes for x in (x0, x1, x1, x0, x0, None)],
            "y": [y for _, _, y0, y1 in boxes for y in (y0, y0, y1, y1, y0, None)]}


def _draw_arch(fig: go.Figure, arch: _data.ArchInfo, colors: dict[int, str], legend: set[str],
               row: int, col: int) -> None:
    """Fills by where the stream reads, then hatching (reuse) and borders (concat, mix) on top:
    one trace per kind, so a legend click toggles that kind in every picture."""
    kinds: dict[tuple[str, int, str], list[CellInfo]] = {}  # (name, legend rank, colour)
    for c in arch.cells:
        fill = _fill(c, colors)
        kinds.setdefault((c.where, 100 if c.embedding else c.reach, fill), []).append(c)
        if c.mode == "reuse":
            kinds.setdefault(("reuse (hatched)", 101, "#333"), []).append(c)
        if c.combine != "select":
            kinds.setdefault((f"{c.combine} ({BORDERS[c.combine]} border)",
                              102 + (c.combine == "mix"), "#222"), []).append(c)
    for (name, rank, color), cells in kinds.items():
        style: dict[str, Any] = {"fill": "toself", "fillcolor": color, "line": {"width": 0}}
        if rank == 101:
            style.update(fillcolor="rgba(0,0,0,0)", fillpattern={
                "shape": "/", "fgcolor": color, "size": 7, "solidity": 0.25,
                "bgcolor": "rgba(0,0,0,0)"})
        elif rank >= 102:
            style = {"line": {"width": 3, "color": color, "dash": "dot" if name[:3] == "mix"
                              else "solid"}}
        fig.add_trace(go.Scatter(**_outlines([_cell_box(c) for c in cells]), mode="lines",
                                 name=name, legendgroup=name, legendrank=rank, **style,
                                 showlegend=name not in legend, hoverinfo="skip"),
                      row=row, col=col)
        legend.add(name)
    boxes = [_cell_box(c) for c in arch.cells]
    fig.add_trace(go.Scatter(
        x=[(b[0] + b[1]) / 2 for b in boxes], y=[(b[2] + b[3]) / 2 for b in boxes],
        mode="text", showlegend=False,  # long labels shortened: the hover has them whole
        text=[c.label if len(c.label) <= 7 else c.label[:6] + "…" for c in arch.cells],
        textfont={"size": 12 if arch.n_groups < 4 else 10, "color": "#111"},
        hovertext=[_describe(c) for c in arch.cells],
        hovertemplate=f"#{arch.rank} {arch.key}<br>%{{hovertext}}<extra></extra>"),
        row=row, col=col)


# ---------------------------------------------------------------------- which choices matter
def plot_importances(info: _data.ImportanceInfo, top: int = 20) -> go.Figure:
    names, values = list(info.params[:top])[::-1], list(info.importances[:top])[::-1]
    fig = go.Figure(go.Bar(x=values, y=names, orientation="h", marker_color="#4c78a8",
                           text=[f"{v:.3f}" for v in values], textposition="outside",
                           cliponaxis=False, hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    fig.update_layout(template=_TEMPLATE, height=140 + 22 * len(names), margin={"t": 40},
                      title={"text": "parameter importance", "font": {"size": 14}},
                      xaxis_title=f"importance for {info.metric} (PED-ANOVA, top "
                                  f"{info.target_quantile:.0%})")
    return fig


def plot_marginal(info: _data.MarginalInfo, max_rows: int = 40) -> go.Figure:
    """Per decision and choice: the mean objective of the trials that made it minus the mean
    of all, green when better, red when worse, with one standard error; faded when a single
    trial made it. The decisions of largest spread, as many as fit ``max_rows`` bars."""
    rows: list[_data.MarginalRow] = []
    for param in dict.fromkeys(r.param for r in info.rows):
        choices = [r for r in info.rows if r.param == param]
        if not rows or len(rows) + len(choices) <= max_rows:
            rows += choices
    rows.reverse()  # plotly draws the first bar at the bottom
    sign = 1 if info.mode == "min" else -1
    fig = go.Figure(go.Bar(
        x=[r.delta for r in rows], y=[f"{r.param} = {r.value} (n={r.count})" for r in rows],
        orientation="h",
        marker={"color": ["#2ca02c" if sign * r.delta < 0 else "#d62728" for r in rows],
                "opacity": [1.0 if r.count >= _data.MIN_CHOICE_TRIALS else 0.4 for r in rows]},
        error_x={"type": "data", "array": [r.std / math.sqrt(r.count) if r.count > 1 else 0
                                           for r in rows], "color": "#555", "thickness": 1},
        customdata=[[r.mean, r.count] for r in rows],
        hovertemplate=(f"%{{y}}<br>mean {info.metric} %{{customdata[0]:.4f}} over "
                       f"%{{customdata[1]}} architectures<br>%{{x:+.4f}} against all"
                       f"<extra></extra>")))
    fig.update_layout(template=_TEMPLATE, height=140 + 20 * len(rows), margin={"t": 40},
                      title={"text": "marginal effect of each choice", "font": {"size": 14}},
                      xaxis_title=f"mean {info.metric} minus the mean of all "
                                  f"{info.n_archs} ({info.overall_mean:.4f})")
    return fig


# ---------------------------------------------------------------------- learning curves
def _joined(curves: Sequence[_data.CurveInfo], x: str, y: str, **style: Any) -> go.Scatter:
    """Many curves as one trace with gaps between them (hundreds of trials stay fast)."""
    xs, ys, notes = [], [], []
    for c in curves:
        xs += [*getattr(c, x), None]
        ys += [*getattr(c, y), None]
        notes += [f"trial {c.trial} · {c.key} · {c.status}"] * len(getattr(c, x)) + [None]
    return go.Scatter(x=xs, y=ys, hovertext=notes, **style,
                      hovertemplate="%{hovertext}<br>%{x:,} tokens: %{y:.4f}<extra></extra>")


def plot_learning_curves(info: _data.CurvesInfo) -> go.Figure:
    """The honest evaluations of every trained trial against the run length they stand for;
    a trial stopped early ends with a cross. The running training loss is off until clicked
    in the legend (on when every trial has a single evaluation: then it is the only curve)."""
    fig = go.Figure()
    train_visible = True if all(len(c.tokens) <= 1 for c in info.curves) else "legendonly"
    order = list(STATUS_COLORS)
    for status in sorted({c.status for c in info.curves}, key=lambda s: (
            order.index(s) if s in order else len(order), s)):
        color = _status_color(status)
        evaluated = [c for c in info.curves if c.status == status and c.tokens]
        if evaluated:
            fig.add_trace(_joined(evaluated, "tokens", "values", mode="lines+markers",
                                  name=f"{info.metric}: {status}", legendgroup=status,
                                  line={"color": color, "width": 1.5}, marker={"size": 5},
                                  opacity=0.75))
        if evaluated and status != "ok":
            fig.add_trace(go.Scatter(
                x=[c.tokens[-1] for c in evaluated], y=[c.values[-1] for c in evaluated],
                mode="markers", name=f"{status} here", legendgroup=status,
                marker={"symbol": "x", "size": 11, "color": color},
                hovertext=[f"trial {c.trial} · {c.key}: {status} at {c.tokens[-1]:,} tokens"
                           for c in evaluated], hovertemplate="%{hovertext}<extra></extra>"))
        trained = [c for c in info.curves if c.status == status and c.train_tokens]
        if trained:
            fig.add_trace(_joined(trained, "train_tokens", "train_loss", mode="lines",
                                  name=f"training loss: {status}", visible=train_visible,
                                  line={"color": color, "width": 1, "dash": "dot"},
                                  opacity=0.5))
    best = [c for c in info.curves if c.trial in info.winners and c.tokens]
    if best:
        fig.add_trace(_joined(best, "tokens", "values", mode="lines+markers",
                              name="the run's winner(s)", line={"color": "#111", "width": 3}))
    fig.update_layout(template=_TEMPLATE, height=420, margin={"t": 30},
                      xaxis_title="run length (tokens) the evaluation stands for",
                      yaxis_title=info.metric, legend={"orientation": "h", "y": 1.1})
    return fig


# ---------------------------------------------------------------------- the page
def _json(fig: go.Figure | None) -> str | None:
    return None if fig is None else fig.to_json()


def build_report(run_dir: str | Path, top: int = 10, in_progress: int | None = None) -> Path:
    """Write ``RUN_DIR/report.html`` (replaced atomically) and return its path. Works on a
    finished or a running search: it reads only ``trials.parquet`` (or ``.csv``),
    ``space.yaml`` and ``run.json``, never the study or Ray's folder. The data functions
    compute each section, the ``plot_`` functions draw it, ``templates/report.html.j2`` says
    how to read it and lays out the page. ``in_progress``: the search is still running and
    trains this many trials (its ``n_trials``); the page says how many it has trained so far,
    so a reader of a live report (``search.report_every``) never takes it for the result."""
    if top < 1:
        raise ValueError(f"`top` must be >= 1, got {top=}")
    if in_progress is not None and in_progress < 1:
        raise ValueError(f"`in_progress` is the search's number of trials, got {in_progress}")
    paths = RunPaths(Path(run_dir))
    frame = _data.with_columns(load_results(paths.root))
    check_write_target(paths.report)  # before the work, not after it
    space, objectives = _data.run_objectives(paths)
    summary = _data.get_summary_info(frame, objectives, paths.root.resolve().name, space,
                                      paths.read_info().get("started"))
    metric, mode = _data.primary_objective(objectives)
    confirm = get_confirm_info(paths.root, metric, mode,
                                parse_space_yaml(paths.space)[0].task.name)
    noise = get_noise_info(frame, metric)
    history = _data.get_history_info(frame, objectives)
    panes = [_data.get_pareto_info(frame, objectives, metric, mode)
             for metric, mode in _data.pareto_axes(objectives)]
    connectivity = _data.get_connectivity_info(frame, objectives, top)
    importance = _data.get_importance_info(frame, objectives)
    marginal = _data.get_marginal_info(frame, objectives)
    curves = _data.get_curves_info(frame, objectives)
    band = noise.paired if math.isfinite(noise.paired) else noise.unpaired
    fidelity = get_fidelity_info(paths.root)
    one_shot = get_one_shot_info(frame, metric)
    figures = {  # in page order; None: the page says why there is nothing to draw
        "confirmation": plot_confirmation(confirm) if confirm is not None else None,
        "fidelity": plot_fidelity(fidelity) if fidelity is not None else None,
        "one-shot": plot_one_shot(one_shot) if one_shot is not None else None,
        "history": plot_history(history, band, noise.dof if math.isfinite(noise.paired)
                                          else noise.dof_unpaired) if len(frame) else None,
        "pareto": plot_pareto(panes) if panes[0].trials else None,
        "connectivity": plot_connectivity(connectivity) if connectivity.archs else None,
        "importances": plot_importances(importance) if importance.params else None,
        "marginal": plot_marginal(marginal) if marginal.rows else None,
        "curves": plot_learning_curves(curves) if curves.curves else None}
    table = with_confirmation(_data.get_table_info(frame, objectives, top), confirm)
    live = None if in_progress is None else \
        (int(frame[STATUS].isin(TRAINED_STATUSES).sum()) if len(frame) else 0, in_progress)
    text = render_page(
        live=live, summary=summary, confirm=confirm, fidelity=fidelity, noise=noise,
        one_shot=one_shot,
        colors=STATUS_COLORS, history=history,
        connectivity=connectivity, costs=_data.get_costs_info(frame, objectives),
        importance=importance, marginal=marginal, curves=curves, table=sortable(table),
        figures={name: _json(fig) for name, fig in figures.items()},
        plotly_js=get_plotlyjs())
    # atomic: a browser reloading it never sees half a file, and a file or symlink planted
    # in the run folder is never written through
    return atomic_write(paths.report, text)
