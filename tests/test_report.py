"""The report: data functions and the page on a small hand-made trials table and run folder
(exact values), the page of a real search's run folder, and that page in headless Chromium."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from markupsafe import escape

from sla_nas import results as R
from sla_nas.arch import ArchSpec, Dims, cost_table
from sla_nas.report import _data as data
from sla_nas.report import build_report, load_results
from sla_nas.report._noise import get_confirm_info
from sla_nas.results import append_confirm

from search_helpers import write_space

DIMS = Dims.create(vocab_size=256, d_model=16, n_layers=3, n_heads=2, seq_len=16)
ONE = [("val_loss", "min")]
TWO = [("val_loss", "min"), ("kv_cache_bytes_per_token", "min")]


def _spec(*rules: dict[str, Any]) -> ArchSpec:
    return ArchSpec.create(DIMS, rules)


SPECS = {  # one architecture per trial row below
    "V": _spec(),
    "A": _spec({"layers": [1], "groups": [0], "kv": {"sources": [0], "mode": "reuse"}}),
    "B": _spec({"layers": [2], "groups": [1], "kv": {"sources": [1]}}),
    "C": _spec({"layers": [2], "kv": {"sources": [0, "l"], "combine": "concat"}}),
    "D": _spec({"layers": [2], "groups": [0], "kv": {"sources": [0], "mode": "reuse"}}),
    "E": _spec({"layers": [1], "groups": [1], "k": {"sources": ["e"]}}),
    "F": _spec({"layers": [2], "groups": [1], "v": {"sources": [0, "l"], "combine": "mix"}}),
}
#        trial status       arch  val_loss  kv   params seed       a      b      c
ROWS = [(0, "ok", "V", 3.00, 192, 1000, "vanilla", "l", "l", None),
        (1, "ok", "A", 2.90, 160, 990, None, "l-1", "l", "reuse"),
        (2, "pruned", "B", 5.00, 128, 970, None, "l-1", "l-1", "reproject"),
        (3, "infeasible", "C", None, 256, 1100, None, "l", "l", None),
        (4, "ok", "D", 2.95, 128, 980, None, "l-1", "l-1", "reproject"),
        (5, "duplicate", "A", 2.90, 160, 990, None, "l-1", "l", "reuse"),
        (6, "ok", "E", 2.80, 160, 1010, None, "l", "l-1", None),
        (7, "error", "F", None, 160, 1000, None, "l", "l", None),
        (8, "ok", "V", 3.10, 192, 1000, "vanilla", "l", "l", None)]  # vanilla's 2nd seed
# per architecture (mean over its seeds): V 3.05 (2 seeds), A 2.90, D 2.95, E 2.80


def _history(final: float, stop: int) -> str:
    points = [(2000, final + 0.5), (3000, final + 0.2), (6000, final)]
    return json.dumps([{"tokens": t, "val_loss": v, "train_loss": v + 0.1} for t, v in points
                       if t <= stop])


def synthetic_frame() -> pd.DataFrame:
    rows = []
    for trial, status, arch, loss, kv, params, seed, a, b, c in ROWS:
        trained = status in ("ok", "pruned", "duplicate")
        stop = 3000 if status == "pruned" else 6000
        rows.append({
            R.TRIAL: trial, R.KEY: SPECS[arch].key, R.STATUS: status, R.SEED: int(trial == 8),
            R.SEED_PRESET: seed, R.MESSAGE: "boom" if status == "error" else None,
            R.REUSED_FROM: 1 if status == "duplicate" else None,
            "val_loss": loss, "train_loss": None if loss is None else loss + 0.1,
            "kv_cache_bytes_per_token": kv, "params": params,
            R.TOKENS: stop if trained else None, R.WALL_SECONDS: 10.0 if trained else None,
            R.SPEC: SPECS[arch].to_json(),
            R.HISTORY: _history(loss, stop) if trained else None,
            R.CURVE: json.dumps([[1000, 5.0], [2000, 4.0]]) if trained else None,
            "param:a": a, "param:b": b, "param:c": c, "param:d": "l"})
    return pd.DataFrame(rows)


@pytest.fixture
def frame() -> pd.DataFrame:
    return synthetic_frame()


# ---------------------------------------------------------------------- data functions
def test_summary_counts_statuses_in_order_and_says_the_verdict(frame):
    info = data.get_summary_info(frame, ONE, "run", "space", "2026-01-01")
    assert info.counts == {"ok": 5, "pruned": 1, "infeasible": 1, "duplicate": 1, "error": 1}
    assert list(info.counts) == ["ok", "pruned", "infeasible", "duplicate", "error"]
    assert info.n_trials == 9 and info.objectives == (("val_loss", "min"),)
    assert info.verdict == R.verdict(frame, ONE)
    assert info.verdict.startswith(f"the best architecture {SPECS['E'].key} beats the vanilla "
                                   f"seed by 0.2500 in val_loss (2.8000 against 3.0500)")


def test_history_groups_every_status_and_runs_the_best_over_full_trials(frame):
    info = data.get_history_info(frame, ONE)
    assert (info.metric, info.mode) == ("val_loss", "min")
    assert [g.status for g in info.groups] == ["ok", "pruned", "infeasible", "duplicate",
                                               "error"]
    by = {g.status: g for g in info.groups}
    assert by["ok"].trials == (0, 1, 4, 6, 8)
    assert by["ok"].values == (3.0, 2.9, 2.95, 2.8, 3.1)  # each trial's own
    assert by["pruned"].values == (5.0,) and by["infeasible"].values == (None,)
    assert by["error"].trials == (7,) and by["error"].values == (None,)
    assert by["ok"].notes[0] == f"trial 0 · {SPECS['V'].key} · seed vanilla"
    assert by["error"].notes[0] == f"trial 7 · {SPECS['F'].key} · boom"
    assert info.best_trials == (0, 1, 4, 6, 8)
    assert info.best_values == pytest.approx((3.0, 2.9, 2.9, 2.8, 2.8))
    # the pruned 5.0 lies beyond 3 padded ranges (1.17) of the full values 2.8 .. 3.1
    assert info.y_range == pytest.approx((2.755, 3.145))


def test_history_best_is_the_leaders_mean_as_its_seeds_come_in(frame):
    frame.loc[frame[R.TRIAL] == 8, [R.KEY, R.SPEC, "val_loss"]] = [
        SPECS["E"].key, SPECS["E"].to_json(), 3.0]  # the leader's second seed: mean 2.9
    assert data.get_history_info(frame, ONE).best_values == pytest.approx(
        (3.0, 2.9, 2.9, 2.8, 2.9))


def test_history_keeps_every_value_in_view_when_none_lies_far_off(frame):
    frame.loc[frame[R.STATUS] == "pruned", "val_loss"] = 4.0
    assert data.get_history_info(frame, ONE).y_range is None


def test_history_of_a_maximised_metric_runs_the_maximum(frame):
    frame["val_acc"] = frame["val_loss"]
    info = data.get_history_info(frame, [("val_acc", "max")])
    assert info.best_values == pytest.approx((3.0, 3.0, 3.0, 3.0, 3.05))


def test_pareto_marks_the_front_of_each_plane_the_winner_and_the_seeds(frame):
    kv = data.get_pareto_info(frame, ONE, "kv_cache_bytes_per_token")
    assert kv.trials == (0, 1, 4, 6)
    assert kv.x == (192, 160, 128, 160) and kv.y == pytest.approx((3.05, 2.9, 2.95, 2.8))
    assert kv.front == (False, False, True, True)
    assert kv.winner == (False, False, False, True)
    assert kv.seeds == ("vanilla", None, None, None)
    assert kv.keys[0] == SPECS["V"].key
    params = data.get_pareto_info(frame, ONE, "params")
    assert params.x == (1000, 990, 980, 1010)
    assert params.front == (False, True, True, True)


def test_pareto_winners_of_two_objectives_are_the_runs_pareto_set(frame):
    assert data.pareto_axes(TWO) == [("kv_cache_bytes_per_token", "min"), ("params", "min")]
    assert data.get_pareto_info(frame, TWO, "kv_cache_bytes_per_token").winner == (
        False, False, True, True)
    assert data.pareto_axes([("val_loss", "min"), ("tokens_per_s", "max")]) == [
        ("kv_cache_bytes_per_token", "min"), ("params", "min"), ("tokens_per_s", "max")]


def test_primary_objective_is_the_first_trained_metric():
    assert data.primary_objective([("params", "min"), ("val_acc", "max")]) == ("val_acc", "max")


def test_arch_cells_describe_every_stream():
    spec = _spec({"layers": [2], "groups": [1], "kv": {"sources": [0], "mode": "reuse"}},
                 {"layers": [2], "groups": [0], "kv": {"sources": [0, "l"], "combine": "concat"}},
                 {"layers": [1], "groups": [0], "k": {"sources": ["e"]}},
                 {"layers": [1], "groups": [1], "v": {"sources": [0, "l"], "combine": "mix",
                                                     "mode": "reuse", "learned": True}})
    cells = {(c.layer, c.group, c.stream): c for c in data.arch_cells(spec)}
    assert len(cells) == 3 * 2 * 2
    assert cells[0, 0, "k"] == data.CellInfo(0, 0, "k", "·", (0,), "reproject", "select", 0,
                                             False, "own layer")
    assert cells[1, 0, "k"] == data.CellInfo(1, 0, "k", "e", (-1,), "reproject", "select", 2,
                                             True, "embedding")
    assert cells[1, 1, "v"] == data.CellInfo(1, 1, "v", "↺0⊕·~", (0, 1), "reuse", "mix", 1,
                                             False, "1 layer back")
    assert cells[2, 0, "v"] == data.CellInfo(2, 0, "v", "0+·", (0, 2), "reproject", "concat",
                                             2, False, "2 layers back")
    assert cells[2, 1, "k"] == data.CellInfo(2, 1, "k", "↺0", (0,), "reuse", "select", 2,
                                             False, "2 layers back")


def test_connectivity_shows_the_winner_then_the_rest_by_loss(frame):
    info = data.get_connectivity_info(frame, ONE, top=3)
    assert [a.trial for a in info.archs] == [6, 1, 4]
    assert [a.rank for a in info.archs] == [1, 2, 3]
    assert [a.winner for a in info.archs] == [True, False, False]
    best = info.archs[0]
    assert best.key == SPECS["E"].key and best.seed is None and best.n_seeds == 1
    assert best.values == {"val_loss": 2.8, "kv_cache_bytes_per_token": 160.0,
                           "params": 1010.0}
    assert (best.n_layers, best.n_groups, len(best.cells)) == (3, 2, 12)
    assert best.cells == data.arch_cells(SPECS["E"])
    assert info.max_reach == 2  # D's layer 2 reuses layer 0; E's "e" has a colour of its own
    two = data.get_connectivity_info(frame, TWO, top=10)
    assert [a.trial for a in two.archs] == [6, 4, 1, 0]  # the Pareto set first
    assert [a.winner for a in two.archs] == [True, True, False, False]
    assert two.archs[3].seed == "vanilla" and two.archs[3].n_seeds == 2
    assert two.archs[3].values["val_loss"] == pytest.approx(3.05)


def test_marginal_effects_are_means_against_the_overall_mean(frame):
    info = data.get_marginal_info(frame, ONE)
    assert info.n_archs == 4 and info.overall_mean == pytest.approx(2.925)
    got = [(r.param, r.value, r.count) for r in info.rows]
    # b spreads 0.1; a 0; c's choices were made once each (spread 0); d never varied
    assert got == [("b", "l", 2), ("b", "l-1", 2), ("a", "l", 2), ("a", "l-1", 2),
                   ("c", "reproject", 1), ("c", "reuse", 1)]
    assert [r.mean for r in info.rows] == pytest.approx(
        [2.975, 2.875, 2.925, 2.925, 2.95, 2.9])
    assert [r.delta for r in info.rows] == pytest.approx(
        [0.05, -0.05, 0, 0, 0.025, -0.025], abs=1e-12)
    assert [r.std for r in info.rows[:4]] == pytest.approx(
        [0.075 * math.sqrt(2), 0.075 * math.sqrt(2), 0.125 * math.sqrt(2), 0.025 * math.sqrt(2)])
    assert math.isnan(info.rows[4].std)


def test_importances_say_why_when_there_are_too_few_trials(frame):
    info = data.get_importance_info(frame, ONE)
    assert info.params == () and info.n_archs == 4
    assert info.note == "only 4 fully trained architectures: importances need at least 6"


def _importance_frame() -> pd.DataFrame:
    """12 fully trained trials: ``x`` decides the loss, ``y`` is balanced and irrelevant."""
    rows = []
    for i in range(12):
        x, y = "ab"[i % 2], "uv"[(i // 2) % 2]
        rows.append({R.TRIAL: i, R.KEY: f"{i:012x}", R.STATUS: "ok", R.SEED: 0,
                     R.SEED_PRESET: None, "val_loss": (1.0 if x == "a" else 2.0) + i / 1000,
                     "param:x": x, "param:y": y, "param:z": "same"})
    return pd.DataFrame(rows)


def test_importances_rank_the_decision_that_decides_the_loss_first():
    frame = _importance_frame()
    study = data.study_from_frame(frame, "val_loss", "min")
    assert len(study.trials) == 12 and study.direction.name == "MINIMIZE"
    assert study.trials[1].params == {"x": "b", "y": "u", "z": "same"}
    assert study.trials[1].distributions["x"].choices == ("a", "b")
    info = data.get_importance_info(frame, ONE)
    assert info.note == "" and info.n_archs == 12
    assert info.target_quantile == pytest.approx(5 / 12)
    assert info.params == ("x", "y")  # z never varied: left out
    assert sum(info.importances) == pytest.approx(1.0)
    assert info.importances[0] > 0.9


def test_learning_curves_of_trained_trials(frame):
    info = data.get_curves_info(frame, ONE)
    # the duplicate reuses trial 1's curve; the error trial reported nothing
    assert [c.trial for c in info.curves] == [0, 1, 2, 4, 6, 8]
    pruned = info.curves[2]
    assert pruned.status == "pruned" and pruned.key == SPECS["B"].key
    assert pruned.tokens == (2000, 3000) and pruned.values == pytest.approx((5.5, 5.2))
    assert info.curves[0].tokens == (2000, 3000, 6000)
    assert info.curves[0].train_tokens == (1000, 2000)
    assert info.curves[0].train_loss == (5.0, 4.0)
    assert info.winners == (6,)
    assert data.get_curves_info(frame, [("val_loss", "max")]).winners == (0, 8)  # both seeds


def test_table_lists_the_top_with_every_metric_and_cost(frame):
    info = data.get_table_info(frame, ONE, top=2)
    assert info.columns == ("rank", R.TRIAL, R.KEY, R.SEED_PRESET, "winner", R.N_SEEDS,
                            "val_loss", "train_loss", "params", "kv_cache_bytes_per_token",
                            R.TOKENS, R.WALL_SECONDS)
    first, second = info.rows
    assert first == pytest.approx((1, 6, SPECS["E"].key, None, True, 1, 2.8, 2.9, 1010, 160,
                                   6000, 10.0))
    assert second == pytest.approx((2, 1, SPECS["A"].key, None, False, 1, 2.9, 3.0, 990, 160,
                                    6000, 10.0))
    last = data.get_table_info(frame, ONE, top=4).rows[-1]  # two seeds: the means
    assert last == pytest.approx((4, 0, SPECS["V"].key, "vanilla", False, 2, 3.05, 3.15, 1000,
                                  192, 6000, 10.0))


def test_run_objectives_come_from_the_space_file(tmp_path):
    run = run_folder(tmp_path, TWO)
    name, objectives = data.run_objectives(R.RunPaths(run))
    assert name == "synth" and objectives == TWO


def test_costs_of_the_top_architecture_against_vanilla(frame):
    info = data.get_costs_info(frame, ONE)
    assert (info.trial, info.key) == (6, SPECS["E"].key)
    assert info.rows == tuple(cost_table(SPECS["E"]))
    assert data.get_costs_info(frame[frame[R.STATUS] != "ok"], ONE) is None


# ---------------------------------------------------------------------- report.html
SECTIONS = ("history", "pareto", "connectivity", "choices", "curves", "top")


def run_folder(tmp_path: Path, objectives: list[tuple[str, str]] = ONE,
               frame: pd.DataFrame | None = None) -> Path:
    """A run folder as a search leaves it, without running one: the space file as run,
    run.json and the trials table (the hand-made one unless ``frame`` is given)."""
    run = tmp_path / "synth"
    run.mkdir()
    write_space(run, "synth", objectives=[{"metric": m, "mode": d} for m, d in objectives]
                ).rename(run / "space.yaml")
    (run / "run.json").write_text(json.dumps({"started": "2026-01-01T10:00:00"}))
    (synthetic_frame() if frame is None else frame).to_csv(run / "trials.csv", index=False)
    return run


def _check_self_contained(text: str) -> dict[str, dict[str, Any]]:
    """No external resource, plotly.js inlined once, every figure's JSON with data; the
    figures by name."""
    from plotly.offline import get_plotlyjs

    assert text.count(get_plotlyjs()) == 1
    text = text.replace(get_plotlyjs(), "")  # its own strings (modebar links) are not loaded
    assert not re.search(r"<script[^>]*\bsrc=|<link\b|<img\b|<iframe\b", text)
    assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:)?//""", text)
    figures = dict(re.findall(r"<script type='application/json' id='fig-([\w-]+)-data'>"
                              r"(.*?)</script>", text, flags=re.S))
    assert re.findall(r"<div id='fig-([\w-]+)' class='figure'>", text) == list(figures)
    specs = {name: json.loads(f) for name, f in figures.items()}
    for spec in specs.values():
        assert any(len(t.get("x") or t.get("y") or []) for t in spec["data"])
    return specs


def _titles(specs: dict[str, dict[str, Any]]) -> list[str]:
    """The connectivity pictures' titles, first line."""
    return [a["text"].split("<br>")[0] for a in specs["connectivity"]["layout"]["annotations"]]


def _column(text: str, table: str, col: int) -> list[str]:
    """The cells of one column of the first ``<table class='table'>`` (sort keys for the
    sortable one, texts otherwise)."""
    body = text.split(f"<table class='{table}'>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body.split("<tbody>")[1], flags=re.S)
    cells = [re.findall(r"<td(?: data-sort='([^']*)')?>([^<]*)</td>", r) for r in rows]
    return [(c[col][0] if table == "sortable" else c[col][1]) for c in cells]


def test_report_of_a_hand_made_run(tmp_path, frame):
    """Every section from the hand-made trials table, with what each must show."""
    path = build_report(run_folder(tmp_path), top=3)
    assert path.name == "report.html" and not list(path.parent.glob(".*.tmp"))
    text = path.read_text()
    specs = _check_self_contained(text)
    # 4 fully trained architectures: too few for importances (6), the note says so
    assert list(specs) == ["history", "pareto", "connectivity", "marginal", "curves"]
    assert ("<p class='note'>Importances: only 4 fully trained architectures: importances "
            "need at least 6.</p>") in text
    assert re.findall(r"<section id='(\w+)'>", text) == list(SECTIONS)
    assert re.findall(r"<a href='#\w+'>([^<]*)</a>", text) == [
        "Best so far", "Loss against cost", "Connectivity of the top 3", "Which choices matter",
        "Learning curves", "Top 3 architectures"]
    verdict = R.verdict(frame, ONE)
    assert f"<p class='verdict'>{escape(verdict[0].upper() + verdict[1:])}.</p>" in text
    assert "started 2026-01-01T10:00:00" in text and "<b>val_loss (min)</b>" in text
    assert "<span style='background:#ff7f0e'>pruned 1</span>" in text
    assert [len(t["x"]) for t in specs["history"]["data"][:1]] == [5]  # the ok trials
    assert _titles(specs) == [f"★ #1 {SPECS['E'].key}", f"#2 {SPECS['A'].key}",
                              f"#3 {SPECS['D'].key}"]
    seeds = [t for t in specs["pareto"]["data"] if t["name"] == "seed presets"]
    assert [t["text"] for t in seeds] == [["vanilla"], ["vanilla"]]  # KV cache, parameters
    assert "pruned here" in [t["name"] for t in specs["curves"]["data"]]
    # the winner's costs: the rows of sla_nas.arch.cost_table, as the page writes numbers
    costs = cost_table(SPECS["E"])
    assert _column(text, "costs", 0) == [r.metric for r in costs]
    assert _column(text, "costs", 1) == [f"{r.this:,}" for r in costs]
    assert _column(text, "costs", 3) == [f"{r.ratio:.3f}" for r in costs]
    assert _column(text, "costs", 4) == [r.unit for r in costs]
    # the sortable table: the top 3, winner first, numbers as sort keys and formatted text
    assert "<th data-num='1' title='click to sort'>val_loss</th>" in text
    assert "<th data-num='0' title='click to sort'>arch_key</th>" in text
    assert _column(text, "sortable", 1) == ["6", "1", "4"]
    assert _column(text, "sortable", 4) == ["1", "0", "0"]  # winner: a star
    assert "<td data-sort='1'>★</td>" in text and "<td data-sort='1010'>1,010</td>" in text


def test_report_of_all_trials_names_every_seed_run(tmp_path):
    text = build_report(run_folder(tmp_path), top=10).read_text()
    specs = _check_self_contained(text)
    titles = [a["text"] for a in specs["connectivity"]["layout"]["annotations"]]
    assert len(titles) == 4 and titles[3].startswith(f"#4 {SPECS['V'].key} (vanilla) · 2 seeds")
    assert "Top 4 architectures" in text


def test_report_of_two_objectives_draws_each_plane(tmp_path):
    text = build_report(run_folder(tmp_path, TWO)).read_text()
    specs = _check_self_contained(text)
    axes = [specs["pareto"]["layout"][a]["title"]["text"] for a in ("xaxis", "xaxis2")]
    assert axes == ["KV cache bytes/token", "parameters"]
    assert "<b>val_loss (min), kv_cache_bytes_per_token (min)</b>" in text
    assert _titles(specs)[:2] == [f"★ #1 {SPECS['E'].key}", f"★ #2 {SPECS['D'].key}"]


def test_report_with_a_confirmation_leads_with_it(tmp_path):
    run = run_folder(tmp_path)
    append_confirm(run, [
        {"arch_key": SPECS[a].key, "label": label, "search_trial": trial, "train_seed": s,
         "budget_tokens": 12000, "status": "ok", "val_loss": v}
        for a, label, trial, values in (("V", "vanilla", 0, [2.00, 2.10, 1.95]),
                                        ("E", "rank 1", 6, [1.96, 2.05, 1.92]))
        for s, v in zip((1, 2, 3), values)])
    text = build_report(run, top=3).read_text()
    specs = _check_self_contained(text)
    assert list(specs)[0] == "confirmation"
    assert re.findall(r"<section id='(\w+)'>", text) == ["confirmation", *SECTIONS]
    sentence = get_confirm_info(run, "val_loss", "min", "bytes-lm").sentence
    assert f"<p class='verdict'>{escape(sentence[0].upper() + sentence[1:])}.</p>" in text
    assert "Confirmed: 2 architectures re-trained with 3\nfresh paired seeds at 12,000" in text
    assert "<th data-num='1' title='click to sort'>confirmed val_loss</th>" in text


def test_report_escapes_what_a_run_folder_holds(tmp_path):
    """Labels come from the run folder: none may add markup to the page or end a script."""
    frame = synthetic_frame()
    frame.loc[frame[R.TRIAL] == 6, R.SEED_PRESET] = "<img src=x onerror=alert(1)>"
    frame.loc[frame[R.TRIAL] == 7, R.MESSAGE] = "</script><script>alert(2)</script>"
    text = build_report(run_folder(tmp_path, frame=frame)).read_text()
    _check_self_contained(text)  # no <img, every figure's JSON still parses
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "</script><script>alert(2)" not in text


def test_report_of_a_search_that_has_just_started(tmp_path):
    """Nothing trained yet, a CSV table only, holding the few columns a trial has when it is
    proposed: notes instead of empty figures; and a table with no trial at all."""
    run = run_folder(tmp_path, frame=pd.DataFrame({
        R.TRIAL: [0, 1], R.KEY: [SPECS["V"].key, SPECS["V"].key],
        R.STATUS: ["running", "waiting"], R.STATE: ["RUNNING", "RUNNING"],
        R.MESSAGE: [None, "same architecture as running trial 0"]}))
    text = build_report(run, top=3).read_text()
    assert list(_check_self_contained(text)) == ["history"]  # the trials by status
    assert text.count("no architecture has been trained to the full budget yet") == 3
    assert "no trial has reported an evaluation yet" in text
    assert "<table class='costs'>" not in text
    assert "No trial finished its full budget, so there is no best architecture." in text
    pd.DataFrame(columns=[R.TRIAL, R.KEY, R.STATUS]).to_csv(run / "trials.csv", index=False)
    text = build_report(run).read_text()
    assert _check_self_contained(text) == {} and "no trials yet" in text
    with pytest.raises(ValueError, match="top"):
        build_report(run, top=0)
    with pytest.raises(ValueError, match="no such run folder"):
        build_report(tmp_path / "missing")


def _copy(run: Path, tmp_path: Path) -> Path:
    """Run folders of the session fixtures are shared: report into a copy."""
    target = tmp_path / run.name
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("tune"))
    return target


def test_report_of_a_real_run(finished_run, tmp_path):
    """End to end on what a search writes (a parquet table, no study needed)."""
    run = _copy(finished_run, tmp_path)
    (run / "study.db").unlink()  # e.g. a study kept in PostgreSQL: the table is enough
    text = build_report(run).read_text()
    specs = _check_self_contained(text)
    frame = load_results(run)
    archs = R.ranked(frame, "val_loss", "min")  # fully trained, one row per architecture
    assert {"history", "pareto", "connectivity", "marginal", "curves"} <= set(specs)
    assert re.findall(r"<section id='(\w+)'>", text) == list(SECTIONS)
    assert _titles(specs)[0].startswith(f"★ #1 {archs.iloc[0][R.KEY]}")
    assert _column(text, "sortable", 2)[0] == archs.iloc[0][R.KEY]


# ---------------------------------------------------------------------- in a browser
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def _browser_or_skip() -> Any:
    """Playwright's sync API, driving Debian's Chromium. Skipped when either is missing,
    unless SLA_NAS_REQUIRE_BROWSER=1 (CI), where a missing browser is a failure."""
    missing = [] if CHROMIUM.exists() else [f"{CHROMIUM} (apt-get install chromium)"]
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
        sync_playwright = None
    if missing:
        message = "needs " + " and ".join(missing)
        if os.environ.get("SLA_NAS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"SLA_NAS_REQUIRE_BROWSER=1 but the browser test {message}")
        pytest.skip(message)
    return sync_playwright


@pytest.mark.slow
def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    sync_playwright = _browser_or_skip()
    path = build_report(_copy(finished_run, tmp_path))
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri())
            page.wait_for_function(
                "() => { const f = document.querySelectorAll('div.figure'); return f.length > 0"
                " && Array.from(f).every(d => d.classList.contains('js-plotly-plot')); }",
                timeout=30_000)
            n_figures = page.locator("div.figure").count()
            points = page.evaluate(
                "() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => "
                "Math.max(...d.data.map(t => (t.x || t.y || []).length)))")
            page.click("table.sortable th:nth-child(2)")  # trial, ascending
            trials = page.eval_on_selector_all("table.sortable tbody tr td:nth-child(2)",
                                               "cells => cells.map(c => +c.dataset.sort)")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert [u for u in requests if not u.startswith(("file:", "data:", "blob:"))] == []
    assert len(points) == n_figures >= 5 and min(points) > 0  # every figure has data
    assert trials == sorted(trials) and len(trials) > 1
    assert shot.stat().st_size > 100_000
